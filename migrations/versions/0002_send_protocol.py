"""the send protocol: claimed rows are leased, not sending; run leases (issue #13)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 20:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from campaigns.core.dbtypes import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a claimed row's claim time (its tier count is given back by it); a run's heartbeat lease
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("claimed_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("campaign_run") as batch:
        batch.add_column(sa.Column("lease_expires_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    # claimed rows were never sent: back to the queue before the state disappears
    op.execute(
        "UPDATE message SET state = 'planned', attempts = attempts - 1, lease_owner = NULL, "
        "lease_expires_at = NULL WHERE state = 'claimed'"
    )
    with op.batch_alter_table("campaign_run") as batch:
        batch.drop_column("lease_expires_at")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("claimed_at")
