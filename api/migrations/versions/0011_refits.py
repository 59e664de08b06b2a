"""Refits: each prior refit the engine adopted, so that a replay of the log adopts it again.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_refit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("config", sa.String(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("copy_entries", sa.Integer(), nullable=False),
        sa.Column("label_batch", sa.Integer(), nullable=False),
        sa.Column("clip_batch", sa.Integer(), nullable=False),
        sa.Column("refit", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("campaign_id", "config", "ordinal"),
    )
    op.create_index("ix_campaign_refit_campaign_id", "campaign_refit", ["campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_campaign_refit_campaign_id", table_name="campaign_refit")
    op.drop_table("campaign_refit")
