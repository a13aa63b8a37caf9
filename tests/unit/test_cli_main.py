"""The `wacamp` entry point keeps every documented exit code."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from campaigns.core.exceptions import NotFoundError
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

    yield cli
    cli.commands.pop("exit-probe")


@pytest.mark.parametrize(("how", "code"), [("ctx-exit", 75), ("user-error", 1), ("crash", 1), ("ok", 0)])
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


def test_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["wacamp", "no-such-command"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
