"""audience: saved segments, frequency caps, test sends (issue #15)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 20:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import campaigns.core.dbtypes

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "segment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("created_at", campaigns.core.dbtypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", campaigns.core.dbtypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audience_where", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("audience_segment", sa.String(length=200), nullable=True))
    op.create_table(
        "test_send",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("as_phone", sa.String(length=20), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("wamid", sa.String(length=128), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("sent_at", campaigns.core.dbtypes.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("test_send", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_test_send_campaign_id"), ["campaign_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("test_send", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_test_send_campaign_id"))
    op.drop_table("test_send")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("audience_segment")
        batch_op.drop_column("audience_where")
    op.drop_table("segment")
