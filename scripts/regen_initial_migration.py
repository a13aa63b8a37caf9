"""Regenerate migrations/versions/0001_initial.py from campaigns/core/models.py.

Only while nothing has been released: once 0001 has landed in a user's database, schema changes
are new revisions (`alembic revision --autogenerate -m ...` with rev id 0002, 0003, ...).
Usage: .venv/bin/python scripts/regen_initial_migration.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command

from campaigns.core.db import alembic_config

ROOT = Path(__file__).resolve().parent.parent
target = ROOT / "migrations" / "versions" / "0001_initial.py"
target.unlink(missing_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    cfg = alembic_config(f"sqlite:///{tmp}/empty.db")
    command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
generated = next((ROOT / "migrations" / "versions").glob("0001_*.py"))
text = generated.read_text()
text = text.replace("campaigns.core.dbtypes.UTCDateTime()", "campaigns.core.dbtypes.UTCDateTime()")
text = text.replace("sqlmodel.sql.sqltypes.AutoString()", "sa.String()")
generated.unlink()
target.write_text(text)
print(f"wrote {target}")
