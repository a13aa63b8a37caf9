"""When a campaign may send: start times, send windows, recipients' own time zones, deadlines.

Everything here is pure logic over an injected ``now`` (an aware UTC datetime) except the three
functions at the bottom that apply it to a campaign's ledger with bulk statements
(`apply_recipient_windows`, `expire_past_deadline`, `campaign_window_gate`).

Rules (documented in docs/operations.md):

- A ``WHEN`` without an offset is a wall-clock time in the given time zone. A wall-clock time that a
  DST change skips (02:30 on a spring-forward night) means the moment the clock jumps over it
  (03:00 CEST); one that happens twice (02:30 on a fall-back night) means the first occurrence.
- A window ``HH:MM-HH:MM`` is half open, [start, end); ``22:00-06:00`` runs across midnight.
- A recipient's time zone comes from the phone number (phonenumbers' time zone data). Unknown → the
  campaign's time zone. Several → the campaign's time zone if it is one of them, else the one with the
  median UTC offset (lower median, then by name): the error is at most half the country's span.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import sqlalchemy as sa
from phonenumbers import timezone as phone_timezone
from sqlalchemy.engine import Engine

from campaigns.control import find_campaign
from campaigns.core.db import write_transaction
from campaigns.core.exceptions import UserError
from campaigns.core.models import CAMPAIGN_TABLE, MESSAGE_TABLE, Campaign, MessageState

#: Offsets of a phone number's candidate zones are compared at this instant (a fixed one, so the
#: choice never depends on the day it is made).
REFERENCE_INSTANT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
#: `skip_reason` of rows that were still planned when the campaign's deadline passed.
EXPIRED = "expired"
#: Planned rows read per batch when recipient-local windows are applied.
WINDOW_BATCH_ROWS = 5000
_UNKNOWN_ZONE = "Etc/Unknown"
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class ScheduleError(UserError):
    """A time, time zone or send window cannot be understood."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone called `name`, or a ScheduleError naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r} (use an IANA name such as Europe/Rome)") from exc


def localize(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the wall clock in `tz` reads `wall` or later.

    A repeated wall time (fall-back night) means its first occurrence; a skipped one (spring-forward
    night) means the moment the clock jumps over it.
    """
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    early = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if early >= first:
        return first
    # In a gap: the local clock is below `wall` until the jump and above it after, between `early`
    # and `first`; bisect to the second.
    low, high = early, first
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def parse_when(text: str, *, tz_name: str = "UTC") -> datetime:
    """Parse ``WHEN`` (ISO 8601, or plain ``2026-12-01 09:00``) into an aware UTC datetime.

    A value with an offset (``+01:00`` or ``Z``) is taken as it is; without one it is a wall-clock
    time in `tz_name`. A date alone means midnight.
    """
    raw = text.strip()
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ScheduleError(
            f"cannot read the time {text!r}: use ISO 8601 (2026-12-01T09:00+01:00) or 2026-12-01 09:00"
        ) from None
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    return localize(parsed, zone(tz_name))


@dataclass(frozen=True)
class SendWindow:
    """Hours of the day when sending is allowed, [start, end) in some time zone; may cross midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> SendWindow:
        """``09:00-20:00`` or ``22:00-06:00`` (across midnight)."""
        parts = text.strip().split("-")
        if len(parts) != 2:
            raise ScheduleError(f"send window {text!r}: expected HH:MM-HH:MM, e.g. 09:00-20:00")
        start, end = (_parse_hhmm(part, whole=text) for part in parts)
        if start == end:
            raise ScheduleError(
                f"send window {text!r}: start and end are the same (omit --window to send any time)"
            )
        return cls(start, end)

    @classmethod
    def of(cls, start: str | None, end: str | None) -> SendWindow | None:
        """The window stored on a campaign (two ``HH:MM`` columns), or None when it has none."""
        if not start or not end:
            return None
        return cls(_parse_hhmm(start, whole=f"{start}-{end}"), _parse_hhmm(end, whole=f"{start}-{end}"))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def contains(self, wall: time) -> bool:
        """Whether a wall-clock time of day is inside the window."""
        if self.crosses_midnight:
            return wall >= self.start or wall < self.end
        return self.start <= wall < self.end

    def is_open(self, now: datetime, tz: ZoneInfo) -> bool:
        """Whether the window is open at the instant `now` in time zone `tz`."""
        return self.contains(now.astimezone(tz).time().replace(tzinfo=None))

    def next_open(self, now: datetime, tz: ZoneInfo) -> datetime:
        """`now` if the window is open, else the instant (UTC) it next opens."""
        if self.is_open(now, tz):
            return now
        return _next_instant_at(self.start, now=now, tz=tz, accept=lambda at: self.is_open(at, tz))

    def next_close(self, now: datetime, tz: ZoneInfo) -> datetime:
        """The instant (UTC) the window next closes after `now` (whether or not it is open now)."""
        return _next_instant_at(self.end, now=now, tz=tz, accept=lambda at: not self.is_open(at, tz))


def _parse_hhmm(part: str, *, whole: str) -> time:
    match = _HHMM.match(part.strip())
    if not match:
        raise ScheduleError(f"send window {whole!r}: {part.strip()!r} is not a time HH:MM (00:00 to 23:59)")
    return time(int(match.group(1)), int(match.group(2)))


def _next_instant_at(
    wall: time, *, now: datetime, tz: ZoneInfo, accept: Callable[[datetime], bool]
) -> datetime:
    """The first instant after `now` whose local wall clock reads `wall` (or just after a DST gap)."""
    today: date = now.astimezone(tz).date()
    for days in range(0, 4):
        at = localize(datetime.combine(today + timedelta(days=days), wall), tz)
        if at > now and accept(at):
            return at
    raise AssertionError(f"no {wall} in {tz} within 4 days of {now}")  # pragma: no cover


# --- recipients' own time zones -------------------------------------------------------------


def recipient_zone_name(phone: str, *, default_tz: str) -> str:
    """The IANA zone of a phone number (E.164), chosen deterministically; `default_tz` when unknown."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return default_tz
    return choose_zone(tuple(phone_timezone.time_zones_for_number(number)), default_tz=default_tz)


@lru_cache(maxsize=4096)
def choose_zone(candidates: tuple[str, ...], *, default_tz: str) -> str:
    """One zone among a number's candidates (see the module docstring for the rule)."""
    known = [name for name in candidates if name != _UNKNOWN_ZONE and _exists(name)]
    if not known:
        return default_tz
    if default_tz in known:
        return default_tz
    ranked = sorted(known, key=lambda name: (REFERENCE_INSTANT.astimezone(ZoneInfo(name)).utcoffset(), name))
    return ranked[(len(ranked) - 1) // 2]


def _exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@dataclass
class WindowPlan:
    """Recipient-local windows for a set of rows: who waits until when, and when to look again."""

    #: opening instant -> ids of rows whose window is closed now
    held: dict[datetime, list[int]]
    #: the earliest instant any of these rows' window opens or closes (None for no rows)
    recheck_at: datetime | None = None


def plan_windows(
    rows: Iterable[tuple[int, str]], *, window: SendWindow, default_tz: str, now: datetime
) -> WindowPlan:
    """Group (id, phone) rows by when their window opens; open-now rows are not held.

    ``recheck_at`` is the earliest next opening or closing among them: until then no row changes
    side, so a run may claim freely until that instant.
    """
    held: dict[datetime, list[int]] = defaultdict(list)
    #: per zone: the opening instant when closed now (None when open), and its next open/close event
    zones: dict[str, tuple[datetime | None, datetime]] = {}
    for row_id, phone in rows:
        tz_name = recipient_zone_name(phone, default_tz=default_tz)
        if tz_name not in zones:
            zones[tz_name] = _zone_state(window, ZoneInfo(tz_name), now=now)
        opening = zones[tz_name][0]
        if opening is not None:
            held[opening].append(row_id)
    events = [event for _opening, event in zones.values()]
    return WindowPlan(dict(held), min(events) if events else None)


def _zone_state(window: SendWindow, tz: ZoneInfo, *, now: datetime) -> tuple[datetime | None, datetime]:
    if window.is_open(now, tz):
        return None, window.next_close(now, tz)
    opening = window.next_open(now, tz)
    return opening, opening


# --- gates on a campaign --------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """Whether a campaign may send now, and until when the answer holds.

    ``open_now`` False means wait until ``until`` (the window's next opening). ``open_now`` True
    means send, but stop and look again at ``until`` (a window closes, the deadline passes), or
    never if ``until`` is None.
    """

    open_now: bool
    until: datetime | None


def campaign_gate(campaign: Campaign, *, now: datetime) -> Gate:
    """The campaign-wide gate: its deadline and, unless windows are per recipient, its send window."""
    deadline = campaign.deadline
    if deadline is not None and now >= deadline:
        return Gate(open_now=False, until=None)
    window = SendWindow.of(campaign.window_start, campaign.window_end)
    if window is None or campaign.recipient_local_time:
        return Gate(open_now=True, until=deadline)
    tz = zone(campaign.timezone or "UTC")
    if not window.is_open(now, tz):
        return Gate(open_now=False, until=window.next_open(now, tz))
    return Gate(open_now=True, until=_earliest(window.next_close(now, tz), deadline))


def _earliest(*instants: datetime | None) -> datetime | None:
    present = [at for at in instants if at is not None]
    return min(present) if present else None


# --- applying it to the ledger (bulk statements) ---------------------------------------------


def expire_past_deadline(engine: Engine, campaign_id: int, *, now: datetime) -> int:
    """Rows still planned once the campaign's deadline has passed become `skipped: expired`."""
    campaign_t = CAMPAIGN_TABLE
    message_t = MESSAGE_TABLE
    with write_transaction(engine) as conn:
        deadline = conn.execute(
            sa.select(campaign_t.c.deadline).where(campaign_t.c.id == campaign_id)
        ).scalar()
        if deadline is None or now < deadline:
            return 0
        result = conn.execute(
            sa.update(message_t)
            .where(message_t.c.campaign_id == campaign_id, message_t.c.state == MessageState.PLANNED)
            .values(
                state=MessageState.SKIPPED,
                skip_reason=EXPIRED,
                dedup_hash=None,
                next_attempt_at=None,
                updated_at=now,
            )
        )
        return int(result.rowcount or 0)


def apply_recipient_windows(
    engine: Engine, campaign: Campaign, *, now: datetime, batch_rows: int = WINDOW_BATCH_ROWS
) -> datetime | None:
    """Hold back planned rows whose recipient is outside the send window in their own time zone.

    Each such row gets ``next_attempt_at`` = the instant its window opens (never earlier than a
    retry time it already has), so the dispatcher's claim (``next_attempt_at`` NULL or past) takes
    only recipients inside their window now. Returns when to call this again (the earliest instant
    a recipient's window opens or closes: a run must stop claiming by then), or None when the
    campaign has no recipient-local window or no planned row.
    """
    window = SendWindow.of(campaign.window_start, campaign.window_end)
    if window is None or not campaign.recipient_local_time or campaign.id is None:
        return None
    message_t = MESSAGE_TABLE
    recheck_at: datetime | None = None
    last_id = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(message_t.c.id, message_t.c.phone)
                .where(
                    message_t.c.campaign_id == campaign.id,
                    message_t.c.state == MessageState.PLANNED,
                    message_t.c.id > last_id,
                )
                .order_by(message_t.c.id)
                .limit(batch_rows)
            ).all()
        if not rows:
            break
        last_id = rows[-1][0]
        batch = plan_windows(
            ((int(r[0]), str(r[1])) for r in rows), window=window, default_tz=campaign.timezone, now=now
        )
        _hold_until(engine, batch.held, now=now)
        recheck_at = _earliest(recheck_at, batch.recheck_at)
    return recheck_at


def _hold_until(engine: Engine, groups: dict[datetime, list[int]], *, now: datetime) -> None:
    if not groups:
        return
    message_t = MESSAGE_TABLE
    with write_transaction(engine) as conn:
        for opening, ids in groups.items():
            conn.execute(
                sa.update(message_t)
                .where(
                    message_t.c.id.in_(ids),
                    message_t.c.state == MessageState.PLANNED,
                    sa.or_(message_t.c.next_attempt_at.is_(None), message_t.c.next_attempt_at < opening),
                )
                .values(next_attempt_at=opening, updated_at=now)
            )


# --- storing a campaign's schedule -----------------------------------------------------------

#: A schedule can be set or changed while the campaign has not finished.
SCHEDULABLE_STATES = frozenset({"draft", "planned", "waiting", "paused"})


@dataclass(frozen=True)
class ScheduleRequest:
    """What `campaigns schedule` / `campaigns create` were given (texts, parsed by `resolve_schedule`)."""

    at: str | None = None
    tz: str | None = None
    window: str | None = None
    recipient_local_time: bool = False
    deadline: str | None = None

    @property
    def given(self) -> bool:
        return any((self.at, self.tz, self.window, self.recipient_local_time, self.deadline))


@dataclass(frozen=True)
class ResolvedSchedule:
    """A schedule ready to store: aware UTC instants, a zone name, a window or None."""

    scheduled_at: datetime | None
    timezone: str
    window: SendWindow | None
    recipient_local_time: bool
    deadline: datetime | None

    def column_values(self) -> dict[str, object]:
        """The Campaign columns this schedule sets."""
        return {
            "scheduled_at": self.scheduled_at,
            "timezone": self.timezone,
            "window_start": None if self.window is None else f"{self.window.start:%H:%M}",
            "window_end": None if self.window is None else f"{self.window.end:%H:%M}",
            "recipient_local_time": self.recipient_local_time,
            "deadline": self.deadline,
        }


def resolve_schedule(request: ScheduleRequest, *, campaign_tz: str = "UTC") -> ResolvedSchedule:
    """Parse and check a request: times in --tz (default the campaign's zone), deadline after start."""
    tz_name = request.tz or campaign_tz or "UTC"
    zone(tz_name)
    window = SendWindow.parse(request.window) if request.window else None
    if request.recipient_local_time and window is None:
        raise ScheduleError(
            "--recipient-local-time needs a --window (the hours to send in each recipient's zone)"
        )
    at = parse_when(request.at, tz_name=tz_name) if request.at else None
    deadline = parse_when(request.deadline, tz_name=tz_name) if request.deadline else None
    if at is not None and deadline is not None and deadline <= at:
        raise ScheduleError(f"--deadline {request.deadline!r} is not after --at {request.at!r}")
    return ResolvedSchedule(at, tz_name, window, request.recipient_local_time, deadline)


def store_schedule(engine: Engine, campaign_id: int, schedule: ResolvedSchedule, *, now: datetime) -> None:
    """Write a schedule onto a campaign that has not finished (refused for running/completed/cancelled)."""
    campaign_t = CAMPAIGN_TABLE
    with write_transaction(engine) as conn:
        row = find_campaign(conn, campaign_id)
        if row.state not in SCHEDULABLE_STATES:
            raise ScheduleError(
                f"campaign {row.name!r} is {row.state}: only a draft, planned, waiting or paused campaign "
                "can be scheduled"
            )
        values = schedule.column_values()
        if row.state == "waiting" and schedule.scheduled_at is not None:
            values["resume_after"] = schedule.scheduled_at  # a waiting campaign resumes at the new time
        conn.execute(
            sa.update(campaign_t).where(campaign_t.c.id == campaign_id).values(**values, updated_at=now)
        )


# --- how long a run may last -----------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")


def parse_duration_s(text: str) -> float:
    """``6h``, ``90m``, ``1h30m``, ``45s`` or a plain number of seconds, as seconds (> 0)."""
    raw = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    elif raw and _DURATION_PART.sub("", raw) == "":
        unit_s = {"h": 3600.0, "m": 60.0, "s": 1.0}
        seconds = sum(float(n) * unit_s[u] for n, u in _DURATION_PART.findall(raw))
    else:
        raise ScheduleError(f"duration {text!r}: use e.g. 6h, 90m, 1h30m, 45s")
    if seconds <= 0:
        raise ScheduleError(f"duration {text!r} must be more than zero")
    return seconds


def parse_until(text: str, *, tz_name: str, now: datetime) -> datetime:
    """``--until``: ``HH:MM`` is the next time the clock in `tz_name` reads it; else a full ``WHEN``."""
    match = _HHMM.match(text.strip())
    if match is None:
        return parse_when(text, tz_name=tz_name)
    wall = time(int(match.group(1)), int(match.group(2)))
    return _next_instant_at(wall, now=now, tz=zone(tz_name), accept=lambda _at: True)
