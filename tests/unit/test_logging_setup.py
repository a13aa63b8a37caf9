"""Logging for unattended runs: JSON lines with the event's fields, a file that survives rotation."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from campaigns.core.logging_setup import configure_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_the_message_and_every_extra_field(tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    configure_logging(log_format="json", log_file=str(log_file), level="INFO")
    logging.getLogger("wacamp.run_due").info(
        "run-due finished", extra={"accepted": 250, "outcome": "pending"}
    )
    logging.getLogger("wacamp.run_due").debug("not at INFO")
    (line,) = log_file.read_text().splitlines()
    record = json.loads(line)
    assert (record["message"], record["accepted"], record["outcome"]) == ("run-due finished", 250, "pending")
    assert (record["level"], record["logger"]) == ("info", "wacamp.run_due")
    assert record["ts"].endswith("+00:00")


def test_text_lines_put_the_extra_fields_after_the_message(tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    configure_logging(log_format="text", log_file=str(log_file))
    logging.getLogger("wacamp").warning("locked", extra={"exit_code": 75})
    (line,) = log_file.read_text().splitlines()
    assert line.endswith("WARNING wacamp locked exit_code=75")


def test_a_log_file_moved_away_by_logrotate_is_reopened_at_its_path(tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    configure_logging(log_format="json", log_file=str(log_file))
    logging.getLogger("wacamp").info("before")
    log_file.rename(tmp_path / "run.log.1")
    logging.getLogger("wacamp").info("after")
    assert [json.loads(x)["message"] for x in (tmp_path / "run.log.1").read_text().splitlines()] == ["before"]
    assert [json.loads(x)["message"] for x in log_file.read_text().splitlines()] == ["after"]
