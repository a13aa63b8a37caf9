"""A segment expression into its tree, or one line saying at which column it goes wrong and why.

The grammar is `grammar.lark` (LALR, so parsing never recurses however the input is shaped).
Expressions are short by nature: longer than `MAX_LENGTH` characters or nested deeper than
`MAX_DEPTH` is refused before anything else looks at them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from functools import cache
from importlib import resources

import phonenumbers
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from campaigns.core.exceptions import UserError
from campaigns.segments.expression import (
    BUILTINS,
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

MAX_LENGTH = 2000
MAX_DEPTH = 32
ORDERING = frozenset({"<", "<=", ">", ">="})

#: What each terminal is called in an error message.
_NAMES = {
    "NAME": "an attribute name",
    "QUOTED_NAME": "an attribute name",
    "STRING": "a quoted string",
    "NUMBER": "a number",
    "DATE": "a date (YYYY-MM-DD)",
    "TRUE": "true",
    "FALSE": "false",
    "OP": "an operator (= != < <= > >=)",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "DURATION": "a duration (30d, 12h)",
    "$END": "the end",
    "OR": "'or'",
    "AND": "'and'",
    "NOT": "'not'",
    "IN": "'in'",
    "IS": "'is'",
    "EMPTY": "'empty'",
    "REPLIED_WITHIN": "replied_within(…)",
}


class SegmentError(UserError):
    """A segment expression that cannot be used, with the column (1-based) where it goes wrong."""

    def __init__(self, column: int, problem: str) -> None:
        self.column = column
        self.problem = problem
        super().__init__(f"--where, column {column}: {problem}")


@cache
def _lark() -> Lark:
    grammar = resources.files("campaigns.segments").joinpath("grammar.lark").read_text(encoding="utf-8")
    return Lark(
        grammar, parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=False
    )


def _expected(names: set[str]) -> str:
    words = sorted({_NAMES.get(name, name.lower().replace("_", " ")) for name in names})
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_error(exc: UnexpectedInput, text: str) -> SegmentError:
    if isinstance(exc, UnexpectedCharacters):
        at = exc.pos_in_stream or 0
        found = repr(text[at]) if at < len(text) else "the end"
        return SegmentError(exc.column, f"expected {_expected(set(exc.allowed))}, found {found}")
    if isinstance(exc, UnexpectedEOF):
        return SegmentError(len(text) + 1, f"expected {_expected(set(exc.expected))}, found the end")
    assert isinstance(exc, UnexpectedToken)
    token = exc.token
    found = "the end" if token.type == "$END" else repr(str(token))
    column = len(text) + 1 if token.type == "$END" else exc.column
    return SegmentError(column, f"expected {_expected(set(exc.accepts or exc.expected))}, found {found}")


def _check_depth(tree: Tree[Token]) -> None:
    """Refuse trees nested deeper than MAX_DEPTH (iteratively: the check itself never recurses)."""
    stack: list[tuple[Tree[Token] | Token, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SegmentError(_column_of(node), f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, Tree):
            stack.extend((child, depth + 1) for child in node.children)


def parse(text: str) -> Node:
    """The tree of `text`, or SegmentError naming the column and what was expected there."""
    if len(text) > MAX_LENGTH:
        raise SegmentError(
            MAX_LENGTH + 1, f"the expression is {len(text)} characters long; at most {MAX_LENGTH}"
        )
    if not text.strip():
        raise SegmentError(1, "the expression is empty")
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text) from None
    _check_depth(tree)
    return _build(tree.children[0])


def _children(tree: Tree[Token]) -> list[Tree[Token] | Token]:
    """The children that carry meaning (keywords and punctuation dropped)."""
    skip = {"OR", "AND", "NOT", "IN", "IS", "EMPTY", "CONTAINS", "STARTS_WITH", "LPAR", "RPAR", "COMMA"}
    return [c for c in tree.children if not (isinstance(c, Token) and c.type in skip)]


def _build(node: Tree[Token] | Token) -> Node:
    assert isinstance(node, Tree), "a predicate or a combination"
    builder = _BUILDERS.get(str(node.data))
    assert builder is not None, f"grammar rule {node.data} has a builder"
    return builder(node)


def _field(node: Tree[Token] | Token) -> tuple[Field, int]:
    assert isinstance(node, Tree)
    token = node.children[0]
    assert isinstance(token, Token)
    if token.type == "QUOTED_NAME":
        return Field(str(token)[1:-1], builtin=False), int(token.column or 1)
    name = str(token)
    return Field(name, builtin=name.lower() in BUILTINS), int(token.column or 1)


_ESCAPE = re.compile(r"\\(.)")


def _literal(node: Tree[Token] | Token) -> Literal:
    assert isinstance(node, Token)
    raw = str(node)
    if node.type == "STRING":
        text = _ESCAPE.sub(r"\1", raw[1:-1])
        return Literal(Kind.DATE, _date(text, node), text) if _ISO_DATE.fullmatch(text) else _string(text)
    if node.type == "NUMBER":
        return Literal(Kind.NUMBER, Decimal(raw), raw)
    if node.type == "DATE":
        return Literal(Kind.DATE, _date(raw, node), raw)
    return Literal(Kind.BOOL, node.type == "TRUE", raw.lower())


def _string(text: str) -> Literal:
    return Literal(Kind.STRING, text, text)


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date(text: str, token: Token) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SegmentError(int(token.column or 1), f"{text!r} is not a date that exists") from None


def _column_of(node: Tree[Token] | Token) -> int:
    if isinstance(node, Token):
        return int(node.column or 1)
    return int(getattr(node.meta, "column", 1))


def _compare(tree: Tree[Token]) -> Node:
    field_node, op_token, value_node = _children(tree)
    field, _ = _field(field_node)
    op = str(op_token)
    literal = _literal(value_node)
    _check_compare(field, op, literal, _column_of(value_node))
    node = Compare(field, "=" if op == "!=" else op, literal)
    return Not(node) if op == "!=" else node


def _check_compare(field: Field, op: str, literal: Literal, column: int) -> None:
    kind = BUILTINS.get(field.name.lower()) if field.builtin else "attribute"
    if kind == "time" and literal.kind is not Kind.DATE:
        raise SegmentError(
            column, f"{field.name} is compared with a date (YYYY-MM-DD), found {literal.text!r}"
        )
    if kind == "bool" and (op not in ("=", "!=") or literal.kind is not Kind.BOOL):
        raise SegmentError(column, f"{field.name} is compared with = true or = false")
    if kind == "text":
        _check_text_builtin(field, op, literal, column)
    if op in ORDERING and literal.kind not in (Kind.NUMBER, Kind.DATE):
        raise SegmentError(
            column, f"expected a number or a date (YYYY-MM-DD) after {op!r}, found {literal.text!r}"
        )
    if kind == "attribute" and literal.kind is Kind.BOOL:
        raise SegmentError(column, f"attributes hold text: write {literal.text!r} in quotes")


def _check_text_builtin(field: Field, op: str, literal: Literal, column: int) -> None:
    if op not in ("=", "!="):
        raise SegmentError(column, f"{field.name} takes =, != or in, not {op!r}")
    if literal.kind is not Kind.STRING:
        raise SegmentError(column, f"{field.name} is compared with a quoted string, found {literal.text!r}")
    if field.name.lower() == "country" and literal.value not in phonenumbers.SUPPORTED_REGIONS:
        raise SegmentError(column, f"{literal.text!r} is not a country code (ISO 3166, like 'IT' or 'DE')")


def _in_list(tree: Tree[Token]) -> Node:
    field_node, *value_nodes = _children(tree)
    field, _ = _field(field_node)
    literals = []
    for value_node in value_nodes:
        literal = _literal(value_node)
        _check_compare(field, "=", literal, _column_of(value_node))
        literals.append(literal)
    return InList(field, tuple(literals))


def _not_in_list(tree: Tree[Token]) -> Node:
    return Not(_in_list(tree))


def _text(how: str) -> Callable[[Tree[Token]], Node]:
    def build(tree: Tree[Token]) -> Node:
        field_node, value_node = _children(tree)
        field, column = _field(field_node)
        if field.builtin:
            raise SegmentError(column, f"{how} works on attributes, not on {field.name}")
        literal = _literal(value_node)
        if literal.kind is Kind.BOOL:
            raise SegmentError(_column_of(value_node), f"expected a quoted string after {how}")
        return Text(field, how, literal.text)

    return build


def _is_empty(tree: Tree[Token]) -> Node:
    (field_node,) = _children(tree)
    field, column = _field(field_node)
    if field.builtin and field.name.lower() not in ("last_sent_at", "last_read_at"):
        raise SegmentError(column, f"{field.name} is never empty")
    return IsEmpty(field)


def _is_not_empty(tree: Tree[Token]) -> Node:
    return Not(_is_empty(tree))


def _replied_within(tree: Tree[Token]) -> Node:
    token = tree.children[-2]
    assert isinstance(token, Token)
    amount = int(str(token)[:-1])
    hours = amount * 24 if str(token).endswith("d") else amount
    if not 0 < hours <= 24 * 3660:
        raise SegmentError(int(token.column or 1), "expected a duration between 1h and 3660d")
    return RepliedWithin(hours)


def _bare(tree: Tree[Token]) -> Node:
    field, column = _field(tree.children[0])
    if field.builtin and BUILTINS[field.name.lower()] == "bool":
        return IsTrue(field)
    raise SegmentError(
        column, f"expected an operator after {field.name!r} (= != < <= > >= in contains starts_with is empty)"
    )


def _group(tree: Tree[Token]) -> Node:
    return _build(_children(tree)[0])


def _negation(tree: Tree[Token]) -> Node:
    return Not(_build(_children(tree)[0]))


def _all(tree: Tree[Token]) -> Node:
    return All(tuple(_build(child) for child in _children(tree)))


def _any(tree: Tree[Token]) -> Node:
    return Any_(tuple(_build(child) for child in _children(tree)))


_BUILDERS: dict[str, Callable[[Tree[Token]], Node]] = {
    "compare": _compare,
    "in_list": _in_list,
    "not_in_list": _not_in_list,
    "contains": _text("contains"),
    "starts_with": _text("starts_with"),
    "is_empty": _is_empty,
    "is_not_empty": _is_not_empty,
    "replied_within": _replied_within,
    "bare": _bare,
    "group": _group,
    "negation": _negation,
    "and_expr": _all,
    "or_expr": _any,
}
