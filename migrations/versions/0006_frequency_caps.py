"""frequency caps (issue #15): campaign.frequency_cap, campaign.cap_policy

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import campaigns.core.dbtypes  # noqa: F401

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No index: a cap counts a contact's ledger rows through uq_message_contact_dedup (contact_id first).
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("frequency_cap", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("cap_policy", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("cap_policy")
        batch.drop_column("frequency_cap")
