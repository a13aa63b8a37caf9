"""A pure-Python reading of the segment language (docs/contacts.md), independent of the compiler,
and a population of contacts with mixed attributes to check the SQL against it."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns.core.models import CONTACT_TABLE, LIST_MEMBER_TABLE
from campaigns.segments.expression import (
    All,
    Any_,
    Compare,
    InList,
    IsEmpty,
    IsTrue,
    Kind,
    Literal,
    Node,
    Not,
    RepliedWithin,
    Text,
)

NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
DATE_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass
class Person:
    """What the reference needs to know of one contact."""

    id: int
    phone: str
    consent: bool
    created_at: datetime
    attributes: dict[str, str] = field(default_factory=dict)


def _cmp(op: str, a: Any, b: Any) -> bool:
    return bool({"=": a == b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])


def _attribute(op: str, value: str | None, literal: Literal) -> bool:
    if value is None:
        return False
    if literal.kind is Kind.NUMBER:
        return NUMBER.fullmatch(value) is not None and _cmp(op, Decimal(value), literal.value)
    if literal.kind is Kind.DATE:
        assert isinstance(literal.value, date)
        return DATE_START.match(value) is not None and _cmp(op, value[:10], literal.value.isoformat())
    return value == literal.text


def _day(op: str, at: datetime, day: date) -> bool:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return _cmp(
        op,
        at.date() if op == "=" else at,
        day if op == "=" else start if op in ("<", ">=") else start + timedelta(days=1),
    )


def _builtin(person: Person, name: str, op: str, literal: Literal) -> bool:
    if name == "country":
        code = phonenumbers.country_code_for_region(str(literal.value))
        return person.phone.startswith(f"+{code}")
    if name == "consent":
        return person.consent is literal.value
    if name == "imported_at":
        assert isinstance(literal.value, date)
        return _day(op, person.created_at, literal.value)
    raise AssertionError(f"the reference does not model {name}")


def evaluate(node: Node, person: Person) -> bool:
    """Whether `node` selects `person`, by the documented rules."""
    if isinstance(node, Not):
        return not evaluate(node.item, person)
    if isinstance(node, All):
        return all(evaluate(item, person) for item in node.items)
    if isinstance(node, Any_):
        return any(evaluate(item, person) for item in node.items)
    if isinstance(node, Compare):
        if node.field.builtin:
            return _builtin(person, node.field.name.lower(), node.op, node.literal)
        return _attribute(node.op, person.attributes.get(node.field.name), node.literal)
    if isinstance(node, InList):
        return any(evaluate(Compare(node.field, "=", literal), person) for literal in node.literals)
    if isinstance(node, Text):
        value = person.attributes.get(node.field.name)
        if value is None:
            return False
        return node.text in value if node.how == "contains" else value.startswith(node.text)
    if isinstance(node, IsEmpty):
        return person.attributes.get(node.field.name) in (None, "")
    if isinstance(node, IsTrue):
        return person.consent
    assert not isinstance(node, RepliedWithin), "the reference population has no replies"
    raise AssertionError(node)


CITIES = ["Milano", "Roma", "Napoli", "Torino", "milano", "Milano ", "", "Sant'Angelo", 'Say "hi"']
TAGS = ["vip", "vip,gold", "gold", "", "VIP", "news;vip", "x%_y"]
#: Valid mobile numbers per calling code (the importer refuses invalid ones), from a running number.
PHONES = {
    "+39": "+39347{:07d}",
    "+49": "+49151{:08d}",
    "+33": "+336{:08d}",
    "+1": "+1212{:07d}",
    "+44": "+447400{:06d}",
}


def _maybe(rng: random.Random, value: str) -> str | None:
    return None if rng.random() < 0.15 else value


def _attributes(rng: random.Random) -> dict[str, str]:
    raw = {
        "citta": _maybe(rng, rng.choice(CITIES)),
        "eta": _maybe(
            rng,
            rng.choice(
                [
                    str(rng.randint(-5, 99)),
                    f"{rng.randint(0, 99)}.{rng.randint(0, 9)}",
                    "",
                    "abc",
                    "30anni",
                    "1.2.3",
                    "-",
                    "007",
                ]
            ),
        ),
        "iscritto": _maybe(
            rng,
            rng.choice(
                [
                    (date(2025, 6, 1) + timedelta(days=rng.randint(0, 400))).isoformat(),
                    (date(2025, 6, 1) + timedelta(days=rng.randint(0, 400))).isoformat() + "T10:00:00",
                    "",
                    "ieri",
                    "2026/01/01",
                ]
            ),
        ),
        "tags": _maybe(rng, rng.choice(TAGS)),
        "email": _maybe(rng, rng.choice(["", "a@b.it", "x@y.com"])),
    }
    return {key: value for key, value in raw.items() if value is not None}


def population(count: int, *, seed: int = 15) -> list[Person]:
    """`count` people with mixed attributes (missing, empty, numbers, dates, odd text)."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    people = []
    for i in range(1, count + 1):
        prefix = rng.choice(list(PHONES))
        phone = PHONES[prefix].format(2_000_000 + i if prefix == "+1" else i)
        created = start + timedelta(hours=rng.randint(0, 24 * 60))
        people.append(Person(i, phone, rng.random() < 0.8, created, _attributes(rng)))
    return people


def store(engine: Engine, people: list[Person], *, list_id: int) -> None:
    """Write the people as contacts and members of the list `list_id` (already created)."""
    rows = [
        {
            "id": p.id,
            "phone": p.phone,
            "consent": p.consent,
            "attributes": p.attributes,
            "created_at": p.created_at,
            "updated_at": p.created_at,
        }
        for p in people
    ]
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(sa.insert(CONTACT_TABLE), rows[start : start + 5000])
            conn.execute(
                sa.insert(LIST_MEMBER_TABLE),
                [
                    {"list_id": list_id, "contact_id": r["id"], "added_at": r["created_at"]}
                    for r in rows[start : start + 5000]
                ],
            )
