"""What a run repeats per claim or per result batch reads O(batch) rows on SQLite, whatever the ledger's size.

SQLite keeps no statistics unless ANALYZE runs, so its planner picks indexes by rule of thumb. A term
such as ``state = 'planned'`` on an indexed column can make it walk every planned row of the ledger to
find the 200 ids a claim picked: a cost that grows with the campaign (issue #17: 174 ms per claim at
1M recipients instead of 0.3 ms). So a real run is recorded statement by statement, and each
statement it repeats is explained (``EXPLAIN QUERY PLAN``) with the parameters it ran with.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from campaigns import control
from scheduler.sending.dispatch import Dispatcher
from scheduler.sending.run_report import StopReason
from tests.dispatch_support import ScriptedProvider, seed_campaign, states
from tests.integration.test_dispatch import make_settings

#: A full walk of the ledger (a table scan or a whole-index scan).
LEDGER_SCAN = re.compile(r"^SCAN message\b")
#: A search of the ledger by its state alone: every row in that state is a candidate.
BY_STATE_ONLY = re.compile(r"^SEARCH message USING (COVERING )?INDEX \w+ \(state=\?\)")


def record_statements(engine: Engine) -> list[tuple[str, Any]]:
    """Every DML statement the engine runs from now on, with the (first) parameters it ran with."""
    seen: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE", "WITH")):
            seen.append((statement, parameters[0] if many and parameters else parameters))

    sa.event.listen(engine, "before_cursor_execute", before)
    return seen


def plan(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """The query plan lines of one recorded statement, with the parameters it ran with."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    return [str(row[-1]) for row in rows]


def walks_the_ledger(lines: list[str], parameters: Any) -> list[str]:
    """The plan lines that read rows in proportion to the ledger, not to the batch."""
    planned = "planned" in (parameters if isinstance(parameters, tuple | list) else ())
    return [line for line in lines if LEDGER_SCAN.match(line) or (planned and BY_STATE_ONLY.match(line))]


async def test_every_statement_a_run_repeats_finds_its_rows_by_key_not_by_walking_the_ledger(
    sqlite_engine: Engine,
) -> None:
    campaign_id = seed_campaign(sqlite_engine, recipients=400)
    settings = make_settings(WACAMP_DISPATCH__CLAIM_BATCH="20", WACAMP_DISPATCH__WRITE_BATCH_ROWS="20")
    with sqlite_engine.connect() as conn:
        ref = control.reload(conn, campaign_id)
    statements = record_statements(sqlite_engine)
    report = await Dispatcher(
        engine=sqlite_engine, settings=settings, campaign=ref, provider=ScriptedProvider()
    ).run()
    assert report.reason is StopReason.COMPLETED and states(sqlite_engine, campaign_id) == {"accepted": 400}

    runs = Counter(statement for statement, _ in statements)
    repeated = {statement: parameters for statement, parameters in statements if runs[statement] >= 5}
    assert any("RETURNING" in statement for statement in repeated), "the claim was not recorded"
    offenders = {
        statement: bad
        for statement, parameters in repeated.items()
        if (bad := walks_the_ledger(plan(sqlite_engine, statement, parameters), parameters))
    }
    assert not offenders, offenders
