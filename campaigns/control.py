"""The one place that finds a campaign, moves it from state to state, and counts its ledger.

- `find_campaign`: by name, or by id (an int, or text of only digits: names cannot be only digits).
- `change_state`: every write of the ``state`` column goes through it, guarded by `ALLOWED`; a move the
  table does not list raises `IllegalTransition`. The check and the write are one ``UPDATE … WHERE
  state IN (…)``, so a concurrent pause, cancel or resume is never overwritten by a stale read.
- `pause`, `resume`: the person's commands. A running dispatcher polls the campaign's state
  (`dispatch.control_poll_s`), so a pause written here by another process stops it within a second.
- `ledger_counts`: a campaign's ledger rows by state and skipped rows by reason.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from campaigns.core.db import write_transaction
from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import NotFoundError, UserError
from campaigns.core.models import CAMPAIGN_TABLE as CAMPAIGN
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.core.models import Campaign, CampaignState, MessageState

c = CAMPAIGN.c
S = CampaignState

#: Every state change a campaign may make, and who makes it:
#:
#: - draft → planned: the planner wrote the ledger (`planning.planner`)
#: - draft, planned, running, waiting → paused: a person (`pause`), the platform (template paused or
#:   disabled: `scheduler.webhooks.account_events`), a run stopped by a campaign/sender error (dispatcher)
#: - draft, planned, running, waiting, paused → cancelled: a person (`definitions.cancel_campaign`)
#: - planned, running, waiting, completed → running: a run starts (dispatcher; running again after a
#:   crashed run; completed again when `campaigns run` is given a finished campaign)
#: - planned, running, waiting → waiting: a run cut short (tier budget, signal, pass deadline), or the
#:   send window is closed (`scheduler.runs.pass_rules`; waiting → waiting also moves its resume_after)
#: - draft, planned, running, waiting → completed: a run finished every row, or the deadline passed
#:   with nothing in flight (`scheduler.runs.pass_rules`)
#: - paused, waiting → planned: a person resumes it (`resume`); a campaign paused because its template
#:   was PAUSED resumes by itself when the platform approves the template again
#:   (`resume_template_paused`, from `scheduler.webhooks.account_events`)
#: - paused → draft: a person resumes a campaign paused before it was planned (it has no ledger rows)
#: - completed → planned: unknown rows are sent again (`campaigns resolve --resend-unknown`)
#:
#: A cancelled campaign never moves again.
ALLOWED: dict[CampaignState, frozenset[CampaignState]] = {
    S.DRAFT: frozenset({S.PLANNED, S.PAUSED, S.CANCELLED, S.COMPLETED}),
    S.PLANNED: frozenset({S.RUNNING, S.WAITING, S.PAUSED, S.CANCELLED, S.COMPLETED}),
    S.RUNNING: frozenset({S.RUNNING, S.WAITING, S.PAUSED, S.CANCELLED, S.COMPLETED}),
    S.WAITING: frozenset({S.PLANNED, S.RUNNING, S.WAITING, S.PAUSED, S.CANCELLED, S.COMPLETED}),
    S.PAUSED: frozenset({S.DRAFT, S.PLANNED, S.CANCELLED}),
    S.COMPLETED: frozenset({S.PLANNED, S.RUNNING}),
    S.CANCELLED: frozenset(),
}


class IllegalTransition(UserError):
    """The campaign cannot move to that state from the one it is in."""

    def __init__(self, *, name: str, current: str, target: CampaignState, refusal: str | None = None) -> None:
        self.name, self.current, self.target = name, current, target
        template = refusal or "campaign {name!r} is {state}: it cannot become {target}"
        super().__init__(template.format(name=name, state=current, target=target.value))


def may_move(current: CampaignState | str, target: CampaignState) -> bool:
    """Whether `ALLOWED` lets a campaign in `current` move to `target`."""
    return target in ALLOWED.get(S(current), frozenset())


def sources_of(target: CampaignState) -> frozenset[CampaignState]:
    """The states from which a campaign may move to `target`."""
    return frozenset(state for state, targets in ALLOWED.items() if target in targets)


# --------------------------------------------------------------------------------------- lookup


@contextmanager
def _connected(source: Engine | Connection) -> Iterator[Connection]:
    if isinstance(source, Connection):
        yield source
        return
    with source.connect() as conn:
        yield conn


def _id_of(ref: str | int) -> int | None:
    if isinstance(ref, int):
        return ref
    text = ref.strip()
    return int(text) if text.isdigit() else None


def _campaign_row(conn: Connection, ref: str | int) -> Any:
    campaign_id = _id_of(ref)
    if campaign_id is not None:
        return conn.execute(sa.select(CAMPAIGN).where(c.id == campaign_id)).mappings().first()
    text = str(ref)
    row = conn.execute(sa.select(CAMPAIGN).where(c.name == text)).mappings().first()
    if row is None and text.strip() != text:
        row = conn.execute(sa.select(CAMPAIGN).where(c.name == text.strip())).mappings().first()
    return row


def find_campaign(source: Engine | Connection, name_or_id: str | int) -> Campaign:
    """A campaign (a detached row) by name, or by id when given an int or only digits.

    Raises `NotFoundError` (exit 1) when there is none.
    """
    with _connected(source) as conn:
        row = _campaign_row(conn, name_or_id)
    if row is None:
        what = f"with id {name_or_id}" if _id_of(name_or_id) is not None else f"named {name_or_id!r}"
        raise NotFoundError(f"no campaign {what} (see `wacamp campaigns list`)")
    return Campaign.model_validate(dict(row))


@dataclass(frozen=True)
class CampaignRef:
    """What the engine needs to know about a campaign to run or steer it (a snapshot)."""

    id: int
    name: str
    state: str
    sender_name: str
    pause_reason: str | None
    resume_after: datetime | None
    #: The send path ("cloud", "marketing"; None = the sender's API) and its product_policy.
    via: str | None = None
    product_policy: str | None = None
    #: What its frequency cap rule reads (`campaigns.caps.rule_for`).
    category: str = "MARKETING"
    frequency_cap: str | None = None
    cap_policy: str | None = None

    @classmethod
    def of(cls, campaign: Campaign) -> CampaignRef:
        """The snapshot of a campaign found by `find_campaign`."""
        assert campaign.id is not None, "a stored campaign has an id"
        return cls(
            id=campaign.id,
            name=campaign.name,
            state=campaign.state,
            sender_name=campaign.sender_name,
            pause_reason=campaign.pause_reason,
            resume_after=campaign.resume_after,
            via=campaign.via,
            product_policy=campaign.product_policy,
            category=campaign.category,
            frequency_cap=campaign.frequency_cap,
            cap_policy=campaign.cap_policy,
        )


def reload(conn: Connection, campaign_id: int) -> CampaignRef:
    """The campaign's current state, as another process may have changed it."""
    return CampaignRef.of(find_campaign(conn, campaign_id))


# ---------------------------------------------------------------------------------- state changes


def change_state(
    conn: Connection,
    campaign_id: int,
    target: CampaignState,
    *,
    now: datetime,
    pause_reason: str | None = None,
    resume_after: datetime | None = None,
    only_from: Collection[CampaignState] | None = None,
    refusal: str | None = None,
    **columns: Any,
) -> bool:
    """Move a campaign to `target` (pause_reason and resume_after are set, or cleared, with it).

    `only_from`: change it only when it is in one of these states, and otherwise leave it as it is
    and return False (for writers that race with a person's pause or cancel). A move `ALLOWED` does
    not list raises `IllegalTransition` (its text is `refusal` when given, formatted with ``name``,
    ``state`` and ``target``). `columns` are other columns written with it (``finished_at`` …).
    """
    assert "state" not in columns, "the state is `target`"
    sources = sources_of(target) & frozenset(only_from) if only_from is not None else sources_of(target)
    values = {"pause_reason": pause_reason, "resume_after": resume_after, "updated_at": now, **columns}
    statement = (
        sa.update(CAMPAIGN)
        .where(c.id == campaign_id, c.state.in_(sorted(sources)))
        .values(state=target.value, **values)
    )
    if conn.execute(statement).rowcount:
        return True
    row = conn.execute(sa.select(c.name, c.state).where(c.id == campaign_id)).first()
    if row is None:
        raise NotFoundError(f"no campaign with id {campaign_id}")
    if only_from is not None and row.state not in only_from:
        return False
    raise IllegalTransition(name=row.name, current=row.state, target=target, refusal=refusal)


def pause(engine: Engine, name_or_id: str, *, reason: str = "paused by a person") -> CampaignRef:
    """Pause a campaign; a run in progress stops claiming within a second and exits 75."""
    with write_transaction(engine) as conn:
        campaign = CampaignRef.of(find_campaign(conn, name_or_id))
        if campaign.state == S.PAUSED:
            return campaign
        change_state(
            conn,
            campaign.id,
            S.PAUSED,
            now=utcnow(),
            pause_reason=reason,
            refusal="campaign {name!r} is {state}: only a planned, running or waiting one pauses",
        )
        return reload(conn, campaign.id)


def resume(engine: Engine, name_or_id: str) -> CampaignRef:
    """Make a paused or waiting campaign runnable again (`campaigns run` continues where it stopped)."""
    refusal = "campaign {name!r} is {state}, not paused or waiting: nothing to resume"
    with write_transaction(engine) as conn:
        campaign = CampaignRef.of(find_campaign(conn, name_or_id))
        if campaign.state not in (S.PAUSED, S.WAITING):
            raise IllegalTransition(
                name=campaign.name, current=campaign.state, target=S.PLANNED, refusal=refusal
            )
        # A campaign paused before it was ever planned has no ledger: it goes back to draft, not planned
        # (planned with no rows would "complete" at the next run having sent nothing).
        target = S.PLANNED if _has_ledger(conn, campaign.id) else S.DRAFT
        change_state(conn, campaign.id, target, now=utcnow(), refusal=refusal)
        return reload(conn, campaign.id)


def _has_ledger(conn: Connection, campaign_id: int) -> bool:
    return bool(conn.scalar(sa.select(sa.exists().where(MESSAGE.c.campaign_id == campaign_id))))


def template_pause_reason(name: str, language: str, *, event: str, detail: str | None) -> str:
    """The pause_reason of a campaign the platform paused because of its template's status."""
    extra = f": {detail}" if detail and detail != "NONE" else ""
    return f"template {name} ({language}) is {event}{extra}"[:500]


def resume_template_paused(conn: Connection, *, name: str, language: str, now: datetime) -> list[int]:
    """Template approved again: the campaigns its PAUSED status paused become planned; their ids.

    Only those whose pause_reason says the template was PAUSED (not DISABLED, not a person's pause).
    """
    prefix = template_pause_reason(name, language, event="PAUSED", detail=None)
    query = sa.select(c.id).where(
        c.state == S.PAUSED.value,
        c.template_name == name,
        c.language == language,
        c.pause_reason.startswith(prefix, autoescape=True),
    )
    resumed = []
    for campaign_id in conn.execute(query).scalars().all():
        if change_state(conn, int(campaign_id), S.PLANNED, now=now, only_from={S.PAUSED}):
            resumed.append(int(campaign_id))
    return resumed


# ---------------------------------------------------------------------------------- ledger counts


@dataclass(frozen=True)
class LedgerCounts:
    """How many ledger rows a campaign has in each state, and skipped rows by reason."""

    by_state: dict[str, int]
    skipped_by_reason: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_state": self.by_state, "skipped_by_reason": self.skipped_by_reason}


def ledger_counts(source: Engine | Connection, campaign_id: int) -> LedgerCounts:
    """Counts of a campaign's ledger rows by state (sorted by name) and by skip reason (most first)."""
    query = (
        sa.select(MESSAGE.c.state, MESSAGE.c.skip_reason, sa.func.count())
        .where(MESSAGE.c.campaign_id == campaign_id)
        .group_by(MESSAGE.c.state, MESSAGE.c.skip_reason)
    )
    by_state: dict[str, int] = {}
    reasons: dict[str, int] = {}
    with _connected(source) as conn:
        for found, reason, count in conn.execute(query):
            # A claimed row is still queued for people: nothing about it went to the platform yet.
            state = MessageState.PLANNED.value if found == MessageState.CLAIMED else found
            by_state[state] = by_state.get(state, 0) + int(count)
            if state == MessageState.SKIPPED:
                reasons[reason or "unknown"] = reasons.get(reason or "unknown", 0) + int(count)
    ordered = dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0])))
    return LedgerCounts(by_state=dict(sorted(by_state.items())), skipped_by_reason=ordered)
