"""A segment's tree into one SQLAlchemy condition on the contact table (never SQL text).

Every leaf is made two-valued (``CASE WHEN … THEN true ELSE false END``), so a missing attribute
makes a comparison false and ``not`` of it true, exactly as in the documented rules:

- attributes are read as text from the JSON column (``json_extract`` on SQLite, ``->>`` on PostgreSQL);
- a number literal compares numerically with values that are numbers (``-?digits[.digits]``);
- a date literal compares with values starting with ``YYYY-MM-DD`` (their date part);
- a string literal compares as exact text (``=``, ``in``, ``contains``, ``starts_with``: case-sensitive);
- ``country`` is the number's country calling code (``'IT'`` means numbers starting ``+39``; regions
  sharing a code, like US and CA on +1, match the same numbers);
- ``imported_at`` is when the contact was first imported, ``last_sent_at`` / ``last_read_at`` the latest
  accepted / read ledger row of any campaign (UTC days for date literals), ``list`` a list it is in.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import phonenumbers
import sqlalchemy as sa

from campaigns.core.models import CONTACT_LIST_TABLE as LISTS
from campaigns.core.models import CONTACT_TABLE as CONTACT
from campaigns.core.models import INBOUND_MESSAGE_TABLE as INBOUND
from campaigns.core.models import LIST_MEMBER_TABLE as MEMBER
from campaigns.core.models import MESSAGE_TABLE as MESSAGE
from campaigns.segments.expression import (
    All,
    Any_,
    Compare,
    Field,
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

Condition = sa.ColumnElement[bool]

_NUMBER_RE = "^-?[0-9]+([.][0-9]+)?$"
_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
_DATE_RE = "^[0-9]{4}-[0-9]{2}-[0-9]{2}"


class SegmentCompiler:
    """Compiles trees for one database dialect, with `now` fixed for relative built-ins."""

    def __init__(self, *, dialect: str, now: datetime) -> None:
        self.sqlite = dialect == "sqlite"
        self.now = now

    def compile(self, node: Node) -> Condition:
        """The condition on CONTACT's columns that is true exactly for the contacts `node` selects."""
        if isinstance(node, Not):
            return sa.not_(self.compile(node.item))
        if isinstance(node, All):
            return sa.and_(*(self.compile(item) for item in node.items))
        if isinstance(node, Any_):
            return sa.or_(*(self.compile(item) for item in node.items))
        return _definite(self._leaf(node))

    def _leaf(self, node: Node) -> Condition:
        if isinstance(node, Compare):
            return self._compare(node.field, node.op, node.literal)
        if isinstance(node, InList):
            return sa.or_(*(self._compare(node.field, "=", literal) for literal in node.literals))
        if isinstance(node, Text):
            return self._text(node)
        if isinstance(node, IsEmpty):
            return self._is_empty(node.field)
        if isinstance(node, RepliedWithin):
            return self._replied_within(node.hours)
        assert isinstance(node, IsTrue), f"unknown node {node!r}"
        return CONTACT.c.consent.is_(True)

    # attributes -------------------------------------------------------------------------------------

    def _value(self, name: str) -> sa.ColumnElement[str]:
        value: sa.ColumnElement[str] = CONTACT.c.attributes[name].as_string()
        return value

    def _compare(self, field: Field, op: str, literal: Literal) -> Condition:
        if field.builtin:
            return self._builtin(field.name.lower(), op, literal)
        value = self._value(field.name)
        if literal.kind is Kind.NUMBER:
            return sa.and_(
                self._is_number(value), _op(op)(self._number(value), self._number_literal(literal))
            )
        if literal.kind is Kind.DATE:
            assert isinstance(literal.value, date)
            day = self._c(sa.func.substr(value, 1, 10))
            return sa.and_(self._is_date(value), _op(op)(day, literal.value.isoformat()))
        return value == literal.text

    def _number(self, value: sa.ColumnElement[str]) -> sa.ColumnElement[Any]:
        return sa.cast(value, sa.Float() if self.sqlite else sa.Numeric())

    def _number_literal(self, literal: Literal) -> Any:
        assert isinstance(literal.value, Decimal)
        return sa.literal(float(literal.value), sa.Float()) if self.sqlite else sa.literal(literal.value)

    def _is_number(self, value: sa.ColumnElement[str]) -> Condition:
        """Whether the text is a number as the language writes one: -?digits[.digits]."""
        if not self.sqlite:
            return value.regexp_match(_NUMBER_RE)
        return sa.and_(
            *(sa.not_(_glob(value, p)) for p in ("*[^0-9.-]*", "*.*.*", "*[^0-9].*")),
            sa.not_(_glob(sa.func.substr(value, 2), "*-*")),
            sa.or_(_glob(value, "[0-9]*"), _glob(value, "-[0-9]*")),
            _glob(value, "*[0-9]"),
        )

    def _is_date(self, value: sa.ColumnElement[str]) -> Condition:
        return _glob(value, _DATE_GLOB) if self.sqlite else value.regexp_match(_DATE_RE)

    def _c(self, text: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        """Byte order for comparing date texts (PostgreSQL's locale collation may ignore dashes)."""
        return text if self.sqlite else sa.collate(text, "C")

    def _text(self, node: Text) -> Condition:
        value = self._value(node.field.name)
        if node.how == "starts_with":
            return sa.func.substr(value, 1, len(node.text)) == node.text
        if self.sqlite:
            return sa.func.instr(value, node.text) > 0
        return sa.func.strpos(value, node.text) > 0

    def _is_empty(self, field: Field) -> Condition:
        name = field.name.lower()
        if field.builtin and name in _LATEST:
            return sa.not_(
                sa.exists().where(MESSAGE.c.contact_id == CONTACT.c.id, _LATEST[name]().isnot(None))
            )
        value = self._value(field.name)
        return sa.or_(value.is_(None), value == "")

    # built-ins --------------------------------------------------------------------------------------

    def _builtin(self, name: str, op: str, literal: Literal) -> Condition:
        if name == "country":
            assert isinstance(literal.value, str)
            prefix = f"+{phonenumbers.country_code_for_region(literal.value)}"
            return sa.func.substr(CONTACT.c.phone, 1, len(prefix)) == prefix
        if name == "consent":
            return CONTACT.c.consent.is_(bool(literal.value))
        if name == "list":
            return sa.exists().where(
                MEMBER.c.contact_id == CONTACT.c.id,
                MEMBER.c.list_id == LISTS.c.id,
                LISTS.c.name == literal.text,
            )
        assert isinstance(literal.value, date)
        start = datetime.combine(literal.value, time(), tzinfo=UTC)
        if name == "imported_at":
            return _day_compare(CONTACT.c.created_at, op, start)
        latest = (
            sa.select(sa.func.max(_LATEST[name]()))
            .where(MESSAGE.c.contact_id == CONTACT.c.id)
            .scalar_subquery()
        )
        return _day_compare(latest, op, start)

    def _replied_within(self, hours: int) -> Condition:
        since = self.now - timedelta(hours=hours)
        return sa.exists().where(INBOUND.c.phone == CONTACT.c.phone, INBOUND.c.received_at >= since)


def _glob(value: sa.ColumnElement[Any], pattern: str) -> Condition:
    """SQLite's GLOB (case-sensitive, no escapes needed for our patterns)."""
    return value.op("GLOB", is_comparison=True)(pattern)


_LATEST: dict[str, Callable[[], sa.ColumnElement[Any]]] = {
    "last_sent_at": lambda: MESSAGE.c.accepted_at,
    "last_read_at": lambda: MESSAGE.c.read_at,
}

_OPS: dict[str, Callable[[Any, Any], Condition]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _op(op: str) -> Callable[[Any, Any], Condition]:
    return _OPS[op]


def _day_compare(column: Any, op: str, start: datetime) -> Condition:
    """A timestamp against a UTC day: `=` is within it, `<` before it, `>` after it."""
    end = start + timedelta(days=1)
    bounds: dict[str, Condition] = {
        "=": sa.and_(column >= start, column < end),
        "<": column < start,
        "<=": column < end,
        ">": column >= end,
        ">=": column >= start,
    }
    return bounds[op]


def _definite(condition: Condition) -> Condition:
    """True or false, never NULL (so `not` of a comparison with a missing value is true)."""
    return sa.case((condition, sa.true()), else_=sa.false())


def compile_segment(node: Node, *, dialect: str, now: datetime) -> Condition:
    """The condition on the contact table selecting what `node` selects (see the module's rules)."""
    return SegmentCompiler(dialect=dialect, now=now).compile(node)
