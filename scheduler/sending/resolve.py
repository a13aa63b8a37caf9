"""Settling `unknown` rows by hand: `campaigns resolve [--resend-unknown]`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine

from campaigns.control import CampaignRef, change_state, find_campaign
from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.models import CampaignState
from scheduler.sending import ledger


@dataclass(frozen=True)
class ResolveResult:
    """What `campaigns resolve` found and did."""

    campaign: str
    unknown: int
    eligible: int
    resent: int


def resolve_unknown(engine: Engine, name_or_id: str, *, older_than_s: float, resend: bool) -> ResolveResult:
    """Count `unknown` rows; with `resend`, move those claimed over `older_than_s` ago back to planned.

    The only way an unknown row is ever sent again. A completed campaign becomes planned again so the
    next `campaigns run` sends them.
    """
    now = utcnow()
    cutoff = datetime.fromtimestamp(now.timestamp() - older_than_s, tz=now.tzinfo)
    with write_transaction(engine) as conn:
        ref = CampaignRef.of(find_campaign(conn, name_or_id))
        eligible, unknown = ledger.count_unknown(conn, campaign_id=ref.id, older_than=cutoff)
        resent = 0
        if resend and eligible:
            resent = ledger.resend_unknown(conn, campaign_id=ref.id, older_than=cutoff, now=now)
            change_state(conn, ref.id, CampaignState.PLANNED, now=now, only_from={CampaignState.COMPLETED})
        return ResolveResult(campaign=ref.name, unknown=unknown, eligible=eligible, resent=resent)
