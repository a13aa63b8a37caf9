"""Status webhooks of messages sent without callback data, tied to their ledger row by recipient.

Bodies for the Marketing Messages API cannot carry ``biz_opaque_callback_data`` (Meta's schema
``MarketingMessageRequestPayload`` has additionalProperties false and no such field), so the rows of
that path are found by the wamid of the send answer. Two cases have no wamid to go by:

- the status arrives before the writer has stored the answer's wamid (it batches for up to 50 ms);
- the answer never came (the row is `unknown`: the request may have reached the platform).

Such a status (its wamid matches no row) is tied to the one row of that path, to that recipient, that
has no wamid yet and is `sending` or `unknown`, and was sent before the status's time (plus
`CLOCK_SLACK_S`: the platform's timestamps are whole seconds, from another clock). With no such row
or more than one, the status is left as it is: it changes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from campaigns.core.models import MESSAGE_TABLE as M
from campaigns.core.models import MessageState
from scheduler.webhooks.events import StatusEvent

#: The path whose rows carry no callback data.
NO_CALLBACK_VIA = "marketing"
#: A row counts as sent before a status up to this long after the status's own time.
CLOCK_SLACK_S = 60.0
_WAITING = (MessageState.SENDING.value, MessageState.UNKNOWN.value)


def tie_by_recipient(conn: Connection, events: list[StatusEvent]) -> list[StatusEvent]:
    """`events` with the row id filled in where a status without callback data finds its row."""
    loose = [e for e in events if e.message_id is None and e.wamid and e.recipient]
    if not loose:
        return events
    wamids = sorted({str(e.wamid) for e in loose})
    known = set(conn.execute(sa.select(M.c.wamid).where(M.c.wamid.in_(wamids))).scalars())
    tied = {e.wamid: row_of_recipient(conn, e) for e in loose if e.wamid not in known}
    return [replace(e, message_id=tied[e.wamid]) if tied.get(e.wamid) is not None else e for e in events]


def row_of_recipient(conn: Connection, event: StatusEvent) -> int | None:
    """The one waiting row of the no-callback path to this recipient, or None (none, or ambiguous)."""
    query = (
        sa.select(M.c.id)
        .where(
            M.c.phone == event.recipient,
            M.c.wamid.is_(None),
            M.c.via == NO_CALLBACK_VIA,
            M.c.state.in_(_WAITING),
            M.c.sending_at <= event.at + timedelta(seconds=CLOCK_SLACK_S),
        )
        .limit(2)
    )
    ids = list(conn.execute(query).scalars())
    return int(ids[0]) if len(ids) == 1 else None
