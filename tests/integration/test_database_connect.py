"""A PostgreSQL server that accepts the TCP connection but never answers: the connection attempt
gives up after `[database] connect_timeout_s` instead of hanging the run (which then waits it out
as database trouble, `scheduler.sending.outage`)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from campaigns.core.db import engine_from_settings, make_engine
from campaigns.core.settings_loading import load_settings


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A listening socket that never accepts: the kernel completes the handshake, nobody speaks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@pytest.mark.timeout(60)
def test_a_silent_server_makes_the_connection_attempt_fail_instead_of_hanging(silent_server: int) -> None:
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/test", connect_timeout_s=2)
    with pytest.raises(sa.exc.OperationalError, match="timeout"), engine.connect():
        pass
    engine.dispose()


@pytest.mark.timeout(60)
def test_the_setting_reaches_the_engine(silent_server: int) -> None:
    settings, _ = load_settings(
        environ={
            "WACAMP_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/test",
            "WACAMP_DATABASE__CONNECT_TIMEOUT_S": "2",
        }
    )
    assert settings.database.connect_timeout_s == 2
    engine = engine_from_settings(settings)
    with pytest.raises(sa.exc.OperationalError), engine.connect():
        pass
    engine.dispose()
