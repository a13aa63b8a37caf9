"""Staged rollouts (issue #16): who is in which stage (`stages`), how a stage is judged (`guardrails`),
and what happens when its review is due (`review`)."""
