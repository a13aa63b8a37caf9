"""the platform in 2026: Marketing Messages API, media, template submission, held rows (issue #14)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 20:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from campaigns.core.dbtypes import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # media headers from a file, template submission, category drift, pricing.type (issue #14, part B)
    op.create_table(
        "media_upload",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("phone_number_id", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("mime_type", sa.String(100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_name", sa.String(500), nullable=False),
        sa.Column("media_id", sa.String(128), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_media_upload_lookup", "media_upload", ["phone_number_id", "sha256", "uploaded_at"])
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("header_media_file", sa.String(2000), nullable=True))
        batch.add_column(sa.Column("header_media_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("header_media_type", sa.String(100), nullable=True))
    with op.batch_alter_table("template") as batch:
        batch.add_column(sa.Column("previous_category", sa.String(32), nullable=True))
        batch.add_column(sa.Column("category_changed_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("upcoming_category", sa.String(32), nullable=True))
        batch.add_column(sa.Column("submitted_at", UTCDateTime(), nullable=True))
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("pricing_type", sa.String(40), nullable=True))
    # Marketing Messages API as a send path (issue #14, part A): the path a campaign and each row took
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("via", sa.String(16), nullable=True))
        batch.add_column(sa.Column("product_policy", sa.String(24), nullable=True))
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("via", sa.String(16), nullable=True))


def downgrade() -> None:
    # issue #14, part A
    with op.batch_alter_table("message") as batch:
        batch.drop_column("via")
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("product_policy")
        batch.drop_column("via")
    # issue #14, part B
    with op.batch_alter_table("message") as batch:
        batch.drop_column("pricing_type")
    with op.batch_alter_table("template") as batch:
        for column in ("submitted_at", "upcoming_category", "category_changed_at", "previous_category"):
            batch.drop_column(column)
    with op.batch_alter_table("campaign") as batch:
        for column in ("header_media_type", "header_media_sha256", "header_media_file"):
            batch.drop_column(column)
    op.drop_index("ix_media_upload_lookup", table_name="media_upload")
    op.drop_table("media_upload")
