"""What a `wacamp worker` adds to cooperate with other workers on one PostgreSQL.

The sender leases (`scheduler.sending.leases.SenderLeases`: one worker per sender, the gate of every pass)
and the reaper (`scheduler.runs.reaper.Reaper`: a dead worker's in-flight rows become `unknown`). On
SQLite only one process sends per database, so there is nothing to add.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from campaigns.core.db import is_sqlite
from campaigns.core.settings import Settings
from scheduler.runs.reaper import Reaper
from scheduler.sending import ledger
from scheduler.sending.leases import SenderLeases


@dataclass(frozen=True)
class ScaleOut:
    """The gate and the reaper of one worker (both None on SQLite)."""

    gate: SenderLeases | None
    reaper: Reaper | None


def scale_out_parts(engine: Engine, settings: Settings) -> ScaleOut:
    """Sender leases and a reaper of `[dispatch] lease_s` on PostgreSQL; nothing on SQLite."""
    if is_sqlite(engine):
        return ScaleOut(gate=None, reaper=None)
    lease_s = settings.dispatch.lease_s
    return ScaleOut(
        gate=SenderLeases.from_settings(engine, settings, owner=ledger.new_owner()),
        reaper=Reaper.for_lease(engine, lease_s=lease_s),
    )
