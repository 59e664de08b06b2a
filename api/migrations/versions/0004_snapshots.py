"""Snapshots of a campaign's engine state, so a load replays only the log after the latest.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_snapshot",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("format", sa.String(), nullable=False),
        sa.Column("config", sa.String(), nullable=False),
        sa.Column("labels", sa.Integer(), nullable=False),
        sa.Column("label_batch", sa.Integer(), nullable=False),
        sa.Column("clip_batch", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_campaign_snapshot_campaign_id", "campaign_snapshot", ["campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_campaign_snapshot_campaign_id", table_name="campaign_snapshot")
    op.drop_table("campaign_snapshot")
