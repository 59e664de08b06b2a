"""Snapshot parts: a snapshot's bytes stored in parts, each written in a transaction of its own.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_snapshot_part",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("snapshot_key", sa.String(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.create_index(
        "ix_campaign_snapshot_part_campaign_id", "campaign_snapshot_part", ["campaign_id"]
    )
    op.create_index(
        "ix_campaign_snapshot_part_snapshot_key", "campaign_snapshot_part", ["snapshot_key"]
    )
    with op.batch_alter_table("campaign_snapshot") as batch:
        batch.add_column(sa.Column("parts_key", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign_snapshot") as batch:
        batch.drop_column("parts_key")
    op.drop_index("ix_campaign_snapshot_part_snapshot_key", table_name="campaign_snapshot_part")
    op.drop_index("ix_campaign_snapshot_part_campaign_id", table_name="campaign_snapshot_part")
    op.drop_table("campaign_snapshot_part")
