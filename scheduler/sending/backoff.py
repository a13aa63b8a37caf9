"""Retry delays, for the engine's existing imports: the arithmetic and the decision live in the policy.

`campaigns.outcomes` decides what an answer of the platform calls for (requeue after how long, fail
after how many attempts, …) and holds the tenacity wait arithmetic it needs; the engine only applies
its actions. These names are re-exported so nothing else has to decide again.
"""

from __future__ import annotations

from campaigns.outcomes import maintenance_delay_s, pair_rate_delay_s, transient_delay_s

__all__ = ["maintenance_delay_s", "pair_rate_delay_s", "transient_delay_s"]
