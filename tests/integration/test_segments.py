"""Segments on a real database (SQLite and PostgreSQL): the SQL selects exactly what the documented
rules select (a pure-Python reference over the same contacts), for the documented examples and for
random expressions; built-ins on real ledger and inbound rows; saved segments; hostile text is text."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from campaigns.core.dbtypes import utcnow
from campaigns.core.exceptions import NotFoundError, UserError
from campaigns.core.models import CONTACT_LIST_TABLE, CONTACT_TABLE, INBOUND_MESSAGE_TABLE, MESSAGE_TABLE
from campaigns.segments.audience import count_segment, segment_condition, segment_members
from campaigns.segments.parser import SegmentError, parse
from campaigns.segments.saved import delete_segment, find_segment, list_segments, save_segment
from tests.dispatch_support import phone_of, seed_campaign
from tests.segment_reference import CITIES, TAGS, Person, evaluate, population, store

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _new_list(engine: Engine, name: str) -> int:
    with engine.begin() as conn:
        query = (
            sa.insert(CONTACT_LIST_TABLE)
            .values(name=name, created_at=utcnow())
            .returning(CONTACT_LIST_TABLE.c.id)
        )
        return int(conn.execute(query).scalar_one())


@pytest.fixture
def people(engine: Engine) -> Iterator[list[Person]]:
    found = population(600)
    store(engine, found, list_id=_new_list(engine, "all"))
    yield found


def _selected(engine: Engine, expression: str) -> set[int]:
    condition = segment_condition(engine, expression, now=NOW)
    assert condition is not None
    with engine.connect() as conn:
        return set(conn.execute(sa.select(CONTACT_TABLE.c.id).where(condition)).scalars())


def _reference(expression: str, people: list[Person]) -> set[int]:
    node = parse(expression)
    return {person.id for person in people if evaluate(node, person)}


EXAMPLES = [
    'citta = "Milano" and eta >= 30',
    "iscritto >= '2026-01-01' or tags contains 'vip'",
    'not (citta in ("Roma", "Napoli")) and email is empty',
    "eta = 7 or eta < -1 or eta > 98.5",
    "eta != 30",
    "iscritto = 2025-12-24 or iscritto < '2025-07-01'",
    "country = 'IT' or country in ('US', 'GB')",
    "not consent and imported_at >= 2026-02-01",
    "imported_at = 2026-01-15 or imported_at <= 2026-01-02",
    "tags starts_with 'x%' or tags contains '_'",
    'citta = \'Sant\\\'Angelo\' or citta = "Say \\"hi\\""',
    "citta = 'x''; DROP TABLE contact; --'".replace("''", "\\'"),
    "email is not empty and citta not in ('Milano', '')",
]


@pytest.mark.parametrize("expression", EXAMPLES)
def test_examples_select_exactly_what_the_reference_selects(
    engine: Engine, people: list[Person], expression: str
) -> None:
    wanted = _reference(expression, people)
    assert _selected(engine, expression) == wanted
    if expression.startswith("citta = 'x"):
        assert wanted == set()
        with engine.connect() as conn:  # the fragment stayed text
            assert conn.execute(sa.select(sa.func.count()).select_from(CONTACT_TABLE)).scalar_one() == 600


# Random expressions: small trees over the population's attributes and built-ins ----------------------

_names = st.sampled_from(["citta", "eta", "iscritto", "tags", "email", "nessuno"])
_strings = st.sampled_from([*CITIES, *TAGS, "a@b.it", "30", "abc", "2026-01-01"])
_numbers = st.decimals(min_value=-10, max_value=110, places=1, allow_nan=False, allow_infinity=False)
_dates = st.dates(min_value=datetime(2025, 5, 1).date(), max_value=datetime(2026, 8, 1).date())


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _literal(kind: str, draw: st.DrawFn) -> str:
    if kind == "number":
        return str(draw(_numbers))
    if kind == "date":
        day = draw(_dates).isoformat()
        return day if draw(st.booleans()) else _quoted(day)
    return _quoted(draw(_strings))


@st.composite
def _leaf(draw: st.DrawFn) -> str:
    shape = draw(st.sampled_from(["cmp", "cmp", "order", "in", "text", "empty", "builtin"]))
    name = draw(_names)
    if shape == "cmp":
        op = draw(st.sampled_from(["=", "!="]))
        return f"{name} {op} {_literal(draw(st.sampled_from(['string', 'number', 'date'])), draw)}"
    if shape == "order":
        op = draw(st.sampled_from(["<", "<=", ">", ">="]))
        return f"{name} {op} {_literal(draw(st.sampled_from(['number', 'date'])), draw)}"
    if shape == "in":
        items = [
            _literal(draw(st.sampled_from(["string", "number"])), draw)
            for _ in range(draw(st.integers(1, 3)))
        ]
        return f"{name} {draw(st.sampled_from(['in', 'not in']))} ({', '.join(items)})"
    if shape == "text":
        return f"{name} {draw(st.sampled_from(['contains', 'starts_with']))} {_quoted(draw(_strings)[:3])}"
    if shape == "empty":
        return f"{name} is {draw(st.sampled_from(['', 'not ']))}empty"
    return draw(
        st.sampled_from(
            [
                "consent",
                "consent = false",
                "country = 'IT'",
                "country != 'US'",
                "country in ('DE', 'FR')",
                "imported_at >= 2026-02-01",
                "imported_at < 2026-01-10",
                "imported_at = 2026-01-20",
            ]
        )
    )


_expressions = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or", "AND", "Or"]), inner).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"
        ),
        inner.map(lambda e: f"not ({e})"),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expression=_expressions)
def test_random_expressions_select_what_the_reference_selects(
    engine: Engine, people: list[Person], expression: str
) -> None:
    assert _selected(engine, expression) == _reference(expression, people)


# Built-ins read from the ledger and the inbox -----------------------------------------------------


def test_replied_within_reads_the_inbox_with_the_given_clock(engine: Engine, people: list[Person]) -> None:
    rows = [
        (people[0].phone, NOW - timedelta(days=2)),
        (people[1].phone, NOW - timedelta(days=40)),
        (people[2].phone, NOW - timedelta(hours=5)),
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.insert(INBOUND_MESSAGE_TABLE),
            [
                {"wamid": f"w{i}", "phone": p, "type": "text", "is_optout": False, "received_at": at}
                for i, (p, at) in enumerate(rows)
            ],
        )
    assert _selected(engine, "replied_within(30d)") == {people[0].id, people[2].id}
    assert _selected(engine, "replied_within(6h)") == {people[2].id}
    assert len(_selected(engine, "not replied_within(90d)")) == len(people) - 3


def test_list_membership_and_counts(engine: Engine, people: list[Person]) -> None:
    vip = _new_list(engine, "vip club")
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO list_member (list_id, contact_id, added_at) VALUES (:l, :c, :a)"),
            [{"l": vip, "c": p.id, "a": NOW} for p in people[:7]],
        )
    assert _selected(engine, "list = 'vip club'") == {p.id for p in people[:7]}
    assert _selected(engine, "list = 'nobody'") == set()
    counts = count_segment(engine, vip, 'citta = "Milano"', now=NOW)
    assert counts.members == 7
    assert counts.kept == sum(1 for p in people[:7] if p.attributes.get("citta") == "Milano")
    assert counts.dropped == 7 - counts.kept
    kept = [row.phone for row in segment_members(engine, vip, "consent", batch=2)]
    assert kept == [p.phone for p in people[:7] if p.consent]


def test_saved_segments_are_checked_listed_replaced_and_deleted(engine: Engine) -> None:
    save_segment(engine, "milan", 'citta = "Milano"')
    with pytest.raises(SegmentError):
        save_segment(engine, "broken", "citta = ")
    with pytest.raises(UserError, match="exists"):
        save_segment(engine, "milan", "eta > 3")
    save_segment(engine, "milan", "eta > 3", replace=True)
    assert find_segment(engine, "milan").expression == "eta > 3"
    assert [s.name for s in list_segments(engine)] == ["milan"]
    delete_segment(engine, "milan")
    with pytest.raises(NotFoundError):
        find_segment(engine, "milan")
    with pytest.raises(NotFoundError):
        delete_segment(engine, "milan")


def test_last_sent_at_and_last_read_at_read_the_latest_ledger_row_of_any_campaign(engine: Engine) -> None:
    first = seed_campaign(engine, recipients=4, name="one")
    second = seed_campaign(engine, recipients=2, name="two", order_id="B-2")  # the first two again
    day = datetime(2026, 2, 10, 9, tzinfo=UTC)
    sends = {  # (campaign, contact number): (accepted_at, read_at)
        (first, 0): (day - timedelta(days=20), None),
        (second, 0): (day, day + timedelta(hours=2)),
        (first, 1): (day - timedelta(days=3), day - timedelta(days=3)),
        (first, 2): (day + timedelta(days=1), None),
    }
    with engine.begin() as conn:
        for (campaign, n), (accepted, read) in sends.items():
            conn.execute(
                sa.update(MESSAGE_TABLE)
                .where(MESSAGE_TABLE.c.campaign_id == campaign, MESSAGE_TABLE.c.phone == phone_of(n))
                .values(state="read" if read else "accepted", accepted_at=accepted, read_at=read)
            )
        ids = {
            phone: id_ for phone, id_ in conn.execute(sa.select(CONTACT_TABLE.c.phone, CONTACT_TABLE.c.id))
        }
    who = {ids[phone_of(n)]: n for n in range(4)}

    def numbers(expression: str) -> set[int]:
        return {who[i] for i in _selected(engine, expression)}

    assert numbers("last_sent_at = 2026-02-10") == {0}  # its latest send, not the one 20 days before
    assert numbers("last_sent_at >= 2026-02-10") == {0, 2}
    assert numbers("last_sent_at < 2026-02-10") == {1}
    assert numbers("last_sent_at <= 2026-02-10") == {0, 1}
    assert numbers("last_sent_at > 2026-02-10") == {2}
    assert numbers("last_sent_at is empty") == {3}
    assert numbers("not (last_sent_at < 2026-02-10)") == {0, 2, 3}
    assert numbers("last_read_at = 2026-02-10 or last_read_at < 2026-02-08") == {0, 1}
    assert numbers("last_read_at is empty") == {2, 3}
