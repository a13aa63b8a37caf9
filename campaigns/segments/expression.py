"""The tree of a segment expression, as the parser returns it and the compiler reads it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from decimal import Decimal


class Kind(enum.StrEnum):
    """What a literal is; it decides how a value is compared with it."""

    STRING = "string"
    NUMBER = "number"
    DATE = "date"
    BOOL = "bool"


@dataclass(frozen=True)
class Literal:
    """A value written in the expression: text, number (Decimal), ISO date or true/false."""

    kind: Kind
    value: str | Decimal | date | bool
    text: str


@dataclass(frozen=True)
class Field:
    """An attribute (from the CSV header) or a built-in; backticked names are always attributes."""

    name: str
    builtin: bool


@dataclass(frozen=True)
class Compare:
    """`field OP literal` with OP one of = != < <= > >=."""

    field: Field
    op: str
    literal: Literal


@dataclass(frozen=True)
class InList:
    """`field in (a, b, …)`: equal to one of them."""

    field: Field
    literals: tuple[Literal, ...]


@dataclass(frozen=True)
class Text:
    """`field contains 'x'` or `field starts_with 'x'` (case-sensitive)."""

    field: Field
    how: str  # "contains" | "starts_with"
    text: str


@dataclass(frozen=True)
class IsEmpty:
    """`field is empty`: missing or the empty string (for timestamps: never happened)."""

    field: Field


@dataclass(frozen=True)
class RepliedWithin:
    """`replied_within(30d)`: the contact wrote to us within that many hours."""

    hours: int


@dataclass(frozen=True)
class IsTrue:
    """A boolean built-in on its own (`consent`)."""

    field: Field


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class All:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Any_:
    items: tuple[Node, ...]


Node = Compare | InList | Text | IsEmpty | RepliedWithin | IsTrue | Not | All | Any_

#: Built-in fields and what each is.
BUILTINS = {
    "country": "text",
    "consent": "bool",
    "list": "text",
    "imported_at": "time",
    "last_sent_at": "time",
    "last_read_at": "time",
}
