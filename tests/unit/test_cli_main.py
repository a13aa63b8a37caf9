"""The `wacamp` entry point keeps every documented exit code."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
import sqlalchemy as sa

from campaigns.core.exceptions import LockedError, NotFoundError, WacampError
from campaigns.core.exit_codes import ExitCode
from wacamp.cli import cli, main


@pytest.fixture
def probe() -> Iterator[click.Group]:
    @cli.command("exit-probe")
    @click.argument("how")
    def exit_probe(how: str) -> None:
        if how == "ctx-exit":
            click.get_current_context().exit(75)
        if how == "user-error":
            raise NotFoundError("no campaign named 'x'")
        if how == "crash":
            raise RuntimeError("boom")
        if how == "locked":
            raise LockedError("another wacamp run-due is already sending")
        if how == "sqlite-busy":
            raise sa.exc.OperationalError("INSERT INTO contact", {}, Exception("database is locked"))

    yield cli
    cli.commands.pop("exit-probe")


@pytest.mark.parametrize(
    ("how", "code"),
    [("ctx-exit", 75), ("user-error", 1), ("crash", 1), ("ok", 0), ("locked", 75), ("sqlite-busy", 75)],
)
def test_main_exits_with_the_code_the_command_chose(
    probe: click.Group,
    how: str,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.argv", ["wacamp", "exit-probe", how])
    with pytest.raises(SystemExit) as exited:
        main()
        raise SystemExit(0)
    assert exited.value.code == code
    err = capsys.readouterr().err
    if how == "user-error":
        assert err.strip() == "Error: no campaign named 'x'"
    if how == "crash":
        assert "RuntimeError: boom" in err and "Traceback" not in err
    if how == "locked":
        assert err.strip() == "Error: another wacamp run-due is already sending"
    if how == "sqlite-busy":
        assert err.strip() == (
            "Error: the database is busy: another wacamp process is writing to it; try again when it is done"
        )


def test_the_exit_codes_are_the_documented_numbers() -> None:
    assert [(code.name, int(code)) for code in ExitCode] == [
        ("OK", 0),
        ("FAILED", 1),
        ("USAGE", 2),
        ("LATER", 75),
        ("INTERRUPTED", 130),
    ]


def test_errors_carry_their_exit_code_and_know_nothing_of_click() -> None:
    assert (NotFoundError("x").exit_code, LockedError("x").exit_code) == (ExitCode.FAILED, ExitCode.LATER)
    assert not issubclass(WacampError, click.ClickException)
    assert str(NotFoundError()) == "No such object."


def test_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["wacamp", "no-such-command"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
