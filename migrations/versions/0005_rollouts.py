"""staged rollouts and A/B tests (issue #16): campaign.rollout, rollout_stage, ab; message.stage, variant

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 20:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import campaigns.core.dbtypes  # noqa: F401

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("rollout", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("rollout_stage", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("ab", sa.JSON(), nullable=True))
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("stage", sa.SmallInteger(), nullable=True))
        batch.add_column(sa.Column("variant", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.drop_column("variant")
        batch.drop_column("stage")
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("ab")
        batch.drop_column("rollout_stage")
        batch.drop_column("rollout")
