"""`wacamp contacts ...` through the installed CLI, as a person would run it."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

Run = Callable[..., CompletedProcess[str]]

# A spreadsheet export as people make them: BOM, semicolons, a quoted value spanning two lines,
# one number written twice in two spellings, invalid numbers, missing and unclear consent.
PEOPLE = (
    "\ufeffNome;Telefono;Consenso;Note\r\n"
    'Mario;+39 333 123 4567;sì;"cliente\r\ndal 2019"\r\n'  # lines 2-3
    "Mario R.;333 1234567;si;doppio\r\n"  # line 4: the same number as line 2
    "Anna;0039 347 765 4321;no;\r\n"  # line 5: stored, not consented
    "Bad;+39 333 12345;yes;\r\n"  # line 6: looks possible, is not valid
    "Luca;347 111 2223;forse;\r\n"  # line 7: unclear consent
    "Nobody;;yes;\r\n"  # line 8: no number
    'Sara;+39 347 999 8887;;"a; b"\r\n'  # line 9: empty consent = not consented
    "Paolo;not a number;yes;\r\n"  # line 10
)
EXPECTED_REJECTS = (
    "line,raw value,reason\r\n"
    "4,333 1234567,duplicate: same number (+393331234567) as line 2\r\n"
    '6,+39 333 12345,"not a valid number (+39, IT)"\r\n'
    "7,forse,unclear consent: use yes/y/true/1/x/si/oui/ja or no/n/false/0/empty\r\n"
    "8,,no phone number\r\n"
    "10,not a number,not a phone number\r\n"
)


@pytest.fixture
def wacamp(run_wacamp: Run, tmp_path: Path) -> Run:
    """The CLI on a fresh, migrated SQLite database in tmp_path."""
    env = {"WACAMP_DATABASE_URL": f"sqlite:///{tmp_path / 'wacamp.db'}"}

    def run(*args: str, **kwargs: Any) -> CompletedProcess[str]:
        return run_wacamp(*args, env={**env, **kwargs.pop("env", {})}, **kwargs)

    upgraded = run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    return run


def people_file(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    path.write_bytes(PEOPLE.encode("utf-8"))
    return path


def as_json(result: CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_messy_export_gives_exact_explained_counts_and_a_rejects_file(wacamp: Run, tmp_path: Path) -> None:
    people_file(tmp_path)

    summary = as_json(
        wacamp(
            "contacts",
            "import",
            "people.csv",
            "--list",
            "spring",
            "--region",
            "IT",
            "--rejects",
            "rejects.csv",
            "--json",
        )
    )

    assert {
        k: summary[k] for k in ("rows", "imported", "updated", "rejected", "not_consented", "suppressed")
    } == {
        "rows": 8,
        "imported": 3,
        "updated": 0,
        "rejected": 5,
        "not_consented": 2,
        "suppressed": 0,
    }
    assert summary["rejected_by_reason"] == {
        "duplicate": 1,
        "invalid phone number": 2,
        "no phone number": 1,
        "unclear consent": 1,
    }
    assert summary["rejects_file"] == "rejects.csv"
    assert (tmp_path / "rejects.csv").read_bytes().decode("utf-8") == EXPECTED_REJECTS
    mario = as_json(wacamp("contacts", "show", "+39 333 1234567", "--json"))
    assert mario["attributes"] == {"Nome": "Mario", "Note": "cliente\r\ndal 2019"}
    assert (mario["consent"], mario["lists"]) == (True, ["spring"])


def test_the_human_summary_labels_and_explains_every_count(wacamp: Run, tmp_path: Path) -> None:
    people_file(tmp_path)

    result = wacamp("contacts", "import", "people.csv", "--list", "spring", "--region", "IT")

    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    for label in ("imported │ 3 │ new contacts", "updated │ 0 │", "rejected │ 5 │", "not consented │ 2 │"):
        assert label in out
    assert "duplicate 1" in out
    assert "people.rejects.csv" in out
    assert (tmp_path / "people.rejects.csv").read_text(encoding="utf-8").startswith("line,raw value,reason")


def test_importing_again_updates_the_same_contacts_and_adds_none(wacamp: Run, tmp_path: Path) -> None:
    people_file(tmp_path)
    args = ("contacts", "import", "people.csv", "--list", "spring", "--region", "IT", "--json")
    as_json(wacamp(*args))

    again = as_json(wacamp(*args))

    assert (again["imported"], again["updated"], again["rejected"]) == (0, 3, 5)
    (spring,) = as_json(wacamp("contacts", "lists", "--json"))
    assert {k: spring[k] for k in ("name", "members", "consented", "suppressed", "sendable")} == {
        "name": "spring",
        "members": 3,
        "consented": 1,
        "suppressed": 0,
        "sendable": 1,
    }


def test_the_region_comes_from_the_configuration_when_not_given(wacamp: Run, tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("phone,consent\n333 1234567,yes\n", encoding="utf-8")

    without = wacamp("contacts", "import", "p.csv", "--list", "a", "--json")
    configured = wacamp("contacts", "import", "p.csv", "--list", "a", "--json", env={"WACAMP_REGION": "IT"})

    assert as_json(without)["rejected"] == 1
    assert as_json(configured)["imported"] == 1


def test_a_dry_run_writes_nothing(wacamp: Run, tmp_path: Path) -> None:
    people_file(tmp_path)

    summary = as_json(
        wacamp(
            "contacts", "import", "people.csv", "--list", "spring", "--region", "IT", "--dry-run", "--json"
        )
    )

    assert (summary["dry_run"], summary["imported"], summary["rejected"], summary["rejects_file"]) == (
        True,
        3,
        5,
        None,
    )
    assert as_json(wacamp("contacts", "lists", "--json")) == []
    assert not (tmp_path / "people.rejects.csv").exists()


def test_a_file_without_consent_is_refused_unless_declared_opted_in(wacamp: Run, tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("phone,name\n+393331234567,Mario\n", encoding="utf-8")

    refused = wacamp("contacts", "import", "p.csv", "--list", "a")
    accepted = wacamp("contacts", "import", "p.csv", "--list", "a", "--opted-in", "--json")

    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "consent must be explicit" in refused.stderr
    assert "the headers are: phone, name" in refused.stderr
    assert as_json(accepted)["imported"] == 1


def test_consent_column_and_opted_in_together_are_a_usage_error(wacamp: Run, tmp_path: Path) -> None:
    people_file(tmp_path)
    result = wacamp(
        "contacts", "import", "people.csv", "--list", "a", "--consent-column", "Consenso", "--opted-in"
    )
    assert result.returncode == 2
    assert "not both" in result.stderr


def test_a_file_that_is_not_utf8_is_refused_in_one_line_and_nothing_is_imported(
    wacamp: Run, tmp_path: Path
) -> None:
    (tmp_path / "latin1.csv").write_bytes(
        "phone,name,consent\n+393331234567,Mario,yes\n+393331234568,René,yes\n".encode("latin-1")
    )

    result = wacamp("contacts", "import", "latin1.csv", "--list", "a")

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: latin1.csv line 3: not UTF-8 text (invalid continuation byte); save the file as 'CSV UTF-8'"
    )
    assert as_json(wacamp("contacts", "lists", "--json")) == []
    assert not (tmp_path / "latin1.rejects.csv").exists()


def test_a_file_without_a_phone_column_lists_its_headers(wacamp: Run, tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("name;email;consent\nMario;m@x.it;yes\n", encoding="utf-8")
    result = wacamp("contacts", "import", "p.csv", "--list", "a")
    assert result.returncode == 1
    assert "no phone column" in result.stderr
    assert "the headers are: name, email, consent" in result.stderr


def test_a_database_without_schema_names_the_command_to_run(run_wacamp: Run, tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("phone,consent\n+393331234567,yes\n", encoding="utf-8")
    env = {"WACAMP_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = run_wacamp("contacts", "import", "p.csv", "--list", "a", env=env)
    assert result.returncode == 1
    assert "wacamp db upgrade" in result.stderr


def test_opt_out_wins_over_a_later_import_until_the_person_opts_in(wacamp: Run, tmp_path: Path) -> None:
    people_file(tmp_path)
    out = as_json(
        wacamp("contacts", "optout", "333 123 4567", "--region", "IT", "--reason", "asked by phone", "--json")
    )
    assert out == {"opted_out": 1, "already_opted_out": 0, "new_contacts": 1, "not_understood": 0}

    summary = as_json(
        wacamp("contacts", "import", "people.csv", "--list", "spring", "--region", "IT", "--json")
    )
    mario = as_json(wacamp("contacts", "show", "+393331234567", "--json"))

    assert (summary["imported"], summary["updated"], summary["suppressed"]) == (2, 1, 1)
    assert mario["suppressed_at"] is not None
    assert mario["suppression_reason"] == "asked by phone"

    assert wacamp("contacts", "optin", "+393331234567").returncode == 0
    assert as_json(wacamp("contacts", "show", "+393331234567", "--json"))["suppressed_at"] is None


def test_optout_from_a_file_applies_what_it_understands_and_exits_1_for_the_rest(
    wacamp: Run, tmp_path: Path
) -> None:
    (tmp_path / "stop.txt").write_text("+393331234567\n+39 347 111 2223\nhello\n", encoding="utf-8")

    result = wacamp("contacts", "optout", "--file", "stop.txt", "--json")

    assert result.returncode == 1
    assert json.loads(result.stdout)["opted_out"] == 2
    assert "stop.txt line 3: 'hello' is not a usable phone number" in result.stderr
    assert as_json(wacamp("contacts", "show", "+393471112223", "--json"))["suppressed_at"] is not None


def test_show_and_optin_of_an_unknown_number_fail_in_one_line(wacamp: Run) -> None:
    shown = wacamp("contacts", "show", "+393331234567")
    opted_in = wacamp("contacts", "optin", "+393331234567")
    assert (shown.returncode, shown.stderr.strip()) == (1, "Error: no contact +393331234567")
    assert opted_in.returncode == 1
    assert "import it first" in opted_in.stderr


def test_an_invalid_number_on_the_command_line_is_a_one_line_error(wacamp: Run) -> None:
    result = wacamp("contacts", "optout", "333 1234567")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: '333 1234567' is not a usable phone number: no country code: write it as +<country code>… "
        "or give a region (--region IT)"
    )


def test_show_prints_consent_opt_out_lists_and_attributes_for_people(wacamp: Run, tmp_path: Path) -> None:
    people_file(tmp_path)
    as_json(wacamp("contacts", "import", "people.csv", "--list", "spring", "--region", "IT", "--json"))
    wacamp("contacts", "optout", "+393477654321", "--reason", "asked")

    mario = wacamp("contacts", "show", "333 1234567", "--region", "IT").stdout
    anna = wacamp("contacts", "show", "+39 347 765 4321").stdout

    assert "+393331234567" in mario
    assert "yes since" in mario
    assert "spring" in mario
    assert "Mario" in mario
    assert re.search(r"opted out \d{4}-\d\d-\d\d \d\d:\d\d UTC \(asked\)", anna)


def test_commands_that_find_the_database_locked_exit_75_to_try_later(wacamp: Run, tmp_path: Path) -> None:
    people_file(tmp_path)
    busy = {"WACAMP_DATABASE__BUSY_TIMEOUT_S": "0.2"}
    holder = sqlite3.connect(tmp_path / "wacamp.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, past our busy timeout
    try:
        imported = wacamp("contacts", "import", "people.csv", "--list", "spring", "--region", "IT", env=busy)
        opted_out = wacamp("contacts", "optout", "+393331234567", env=busy)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert (imported.returncode, opted_out.returncode) == (75, 75)
    assert imported.stderr.strip().splitlines()[-1].startswith("Error: the database sqlite:///")
    assert "is busy: another wacamp process is writing to it" in imported.stderr
    assert opted_out.stderr.strip() == (
        "Error: the database is busy: another wacamp process is writing to it; try again when it is done"
    )
    assert wacamp("contacts", "optout", "+393331234567", env=busy).returncode == 0
