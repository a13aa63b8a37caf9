"""The segment language's parser: the documented examples, errors with their column, hostile input."""

from __future__ import annotations

import time
from datetime import date
from decimal import Decimal

import pytest

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
    Not,
    RepliedWithin,
    Text,
)
from campaigns.segments.parser import MAX_DEPTH, MAX_LENGTH, SegmentError, parse

CITTA = Field("citta", builtin=False)


def test_the_three_documented_examples_parse_to_what_they_say() -> None:
    assert parse('citta = "Milano" and eta >= 30') == All(
        (
            Compare(CITTA, "=", Literal(Kind.STRING, "Milano", "Milano")),
            Compare(Field("eta", False), ">=", Literal(Kind.NUMBER, Decimal(30), "30")),
        )
    )
    assert parse("iscritto >= '2026-01-01' or tags contains 'vip'") == Any_(
        (
            Compare(Field("iscritto", False), ">=", Literal(Kind.DATE, date(2026, 1, 1), "2026-01-01")),
            Text(Field("tags", False), "contains", "vip"),
        )
    )
    assert parse('not (citta in ("Roma", "Napoli")) and email is empty') == All(
        (
            Not(
                InList(
                    CITTA, (Literal(Kind.STRING, "Roma", "Roma"), Literal(Kind.STRING, "Napoli", "Napoli"))
                )
            ),
            IsEmpty(Field("email", False)),
        )
    )


def test_keywords_are_case_insensitive_whole_words_and_backticks_name_any_attribute() -> None:
    assert parse("android = 1 OR `Data iscrizione` IS NOT EMPTY") == Any_(
        (
            Compare(Field("android", False), "=", Literal(Kind.NUMBER, Decimal(1), "1")),
            Not(IsEmpty(Field("Data iscrizione", False))),
        )
    )
    assert parse("`country` = 'x'") == Compare(Field("country", False), "=", Literal(Kind.STRING, "x", "x"))
    assert parse("città != 'Milano'") == Not(
        Compare(Field("città", False), "=", Literal(Kind.STRING, "Milano", "Milano"))
    )


def test_built_ins() -> None:
    assert parse("consent and replied_within(30d)") == All(
        (IsTrue(Field("consent", True)), RepliedWithin(720))
    )
    assert parse("replied_within(12h)") == RepliedWithin(12)
    assert parse("country not in ('IT', 'DE')") == Not(
        InList(Field("country", True), (Literal(Kind.STRING, "IT", "IT"), Literal(Kind.STRING, "DE", "DE")))
    )
    assert parse("last_sent_at is empty") == IsEmpty(Field("last_sent_at", True))


def test_quotes_inside_strings_are_escaped_with_a_backslash() -> None:
    assert parse(r"""citta = 'Sant\'Angelo' or citta = "Say \"hi\"" """) == Any_(
        (
            Compare(CITTA, "=", Literal(Kind.STRING, "Sant'Angelo", "Sant'Angelo")),
            Compare(CITTA, "=", Literal(Kind.STRING, 'Say "hi"', 'Say "hi"')),
        )
    )


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ('citta = "Milano" and', 21, "expected"),
        ("citta = ", 9, "found the end"),
        ("citta 'Milano'", 7, "expected"),
        ("eta >= 'trenta'", 8, "expected a number or a date"),
        ("a = 1 b", 7, "expected 'and', 'or' or the end, found 'b'"),
        ("a in (1, 2", 11, "')'"),
        ("(a = 1", 7, "')'"),
        ("a = 1)", 6, "found ')'"),
        ("country < 3", 11, "country takes =, != or in"),
        ("country = 'XX'", 11, "not a country code"),
        ("consent = 'yes'", 11, "consent is compared with = true or = false"),
        ("imported_at > 5", 15, "compared with a date"),
        ("a = 2026-02-30", 5, "not a date that exists"),
        ("citta", 1, "expected an operator after 'citta'"),
        ("citta = true", 9, "in quotes"),
        ("country is empty", 1, "never empty"),
        ("replied_within(0d)", 16, "between 1h and 3660d"),
        ("a = 'unterminated", 5, "expected"),
        ("", 1, "empty"),
        ("a == 1", 4, "expected"),
    ],
)
def test_a_bad_expression_is_one_line_with_the_column_and_what_was_expected(
    text: str, column: int, words: str
) -> None:
    with pytest.raises(SegmentError) as refused:
        parse(text)
    message = str(refused.value)
    assert "\n" not in message
    assert refused.value.column == column, message
    assert message.startswith(f"--where, column {column}: ")
    assert words in message


@pytest.mark.parametrize(
    "text",
    [
        "citta = 'x'; DROP TABLE contact; --",
        "citta = 'x' OR 1=1 --",
        "citta = 'x' UNION SELECT phone FROM contact",
        'citta = "x" /* comment */',
        "1 = 1",
        "citta = 'x\\'",
        "citta = ''' or ''='",
        "`a` = 1; `b`",
        "citta = \x00",
    ],
)
def test_sql_fragments_and_stray_quotes_are_refused_as_syntax(text: str) -> None:
    with pytest.raises(SegmentError) as refused:
        parse(text)
    assert "\n" not in str(refused.value)


def test_a_sql_fragment_inside_quotes_is_just_text() -> None:
    assert parse('citta = "x\'; DROP TABLE contact; --"') == Compare(
        CITTA, "=", Literal(Kind.STRING, "x'; DROP TABLE contact; --", "x'; DROP TABLE contact; --")
    )


def test_a_10kb_expression_is_refused_quickly_before_parsing() -> None:
    text = " or ".join(["citta = 'Milano'"] * 600)
    assert len(text) > 10_000
    started = time.perf_counter()
    with pytest.raises(SegmentError, match=f"at most {MAX_LENGTH}"):
        parse(text)
    assert time.perf_counter() - started < 5  # generous: a refusal, not a parse


@pytest.mark.parametrize(
    "text",
    [
        "(" * 500 + "a = 1" + ")" * 500,
        "not " * 400 + "a = 1",
        "(" * 40 + "a = 1" + ")" * 40,
    ],
)
def test_deep_nesting_is_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(SegmentError, match=f"nested more than {MAX_DEPTH} levels deep"):
        parse(text)


def test_nesting_within_the_limit_parses() -> None:
    assert parse("(" * 10 + "a = 1" + ")" * 10) == Compare(
        Field("a", False), "=", Literal(Kind.NUMBER, Decimal(1), "1")
    )
