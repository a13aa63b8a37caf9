"""Phone numbers are normalised to E.164 with phonenumbers, or refused with a reason."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.contacts.phones import InvalidPhoneNumber, check_region, is_valid, normalize
from campaigns.core.exceptions import UserError


@pytest.mark.parametrize(
    "raw",
    [
        "+393331234567",
        "+39 333 123 4567",
        "+39 (333) 123-4567",
        "0039 333 1234567",
        "333 1234567",
        " 333.123.4567 ",
    ],
)
def test_every_spelling_of_one_italian_mobile_gives_the_same_e164(raw: str) -> None:
    assert normalize(raw, "IT") == "+393331234567"


def test_an_italian_landline_keeps_its_leading_zero() -> None:
    assert normalize("02 1234 5678", "IT") == "+390212345678"


def test_a_number_with_a_plus_needs_no_region() -> None:
    assert normalize("+49 1512 3456789") == "+4915123456789"


def test_a_national_number_without_a_region_is_refused_with_how_to_fix_it() -> None:
    with pytest.raises(InvalidPhoneNumber, match="--region") as caught:
        normalize("333 1234567")
    assert "no country code" in caught.value.reason


def test_a_possible_looking_but_invalid_number_is_refused() -> None:
    parsed = phonenumbers.parse("+39 333 12345", None)
    assert phonenumbers.is_possible_number(parsed)
    with pytest.raises(InvalidPhoneNumber, match="not a valid number"):
        normalize("+39 333 12345")


@pytest.mark.parametrize(
    ("raw", "reason"), [("", "no phone number"), ("   ", "no phone number"), ("n/a", "not a phone number")]
)
def test_empty_or_wordy_values_are_refused_with_a_short_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize(raw, "IT")
    assert caught.value.reason == reason


def test_a_whatsapp_id_is_read_as_international_digits() -> None:
    assert normalize("393331234567", "IT", international=True) == "+393331234567"
    assert normalize("4915123456789", None, international=True) == "+4915123456789"
    with pytest.raises(InvalidPhoneNumber, match="no country code"):
        normalize("4915123456789", None)


def test_an_invalid_number_error_is_a_one_line_user_error_quoting_the_input() -> None:
    with pytest.raises(UserError) as caught:
        normalize("+39 123", "IT")
    assert str(caught.value) == "'+39 123' is not a usable phone number: not a valid number (+39, IT)"


def test_regions_are_iso_codes_in_any_case_and_empty_means_none() -> None:
    assert check_region("it") == "IT"
    assert check_region("") is None
    assert check_region(None) is None
    with pytest.raises(UserError, match="unknown region 'Italy'"):
        check_region("Italy")


@settings(max_examples=3000, deadline=None)
@given(
    country=st.sampled_from([1, 7, 33, 39, 44, 49, 61, 91, 262, 590, 599, 800]),
    digits=st.text(alphabet="0123456789", min_size=4, max_size=13),
)
def test_the_fast_validity_check_agrees_with_phonenumbers_is_valid_number(country: int, digits: str) -> None:
    try:
        parsed = phonenumbers.parse(f"+{country}{digits}", None)
    except phonenumbers.NumberParseException:
        return
    assert is_valid(parsed) == phonenumbers.is_valid_number(parsed)


@pytest.mark.parametrize(
    "raw",
    [
        "+1 416 555 0123",
        "+1 202 555 0123",
        "+7 701 123 4567",
        "+44 1481 712345",
        "+39 06 698 12345",
        "+39 06 6988 3333",
    ],
)
def test_the_fast_validity_check_agrees_on_countries_that_share_a_code(raw: str) -> None:
    parsed = phonenumbers.parse(raw, None)
    assert is_valid(parsed) == phonenumbers.is_valid_number(parsed)
