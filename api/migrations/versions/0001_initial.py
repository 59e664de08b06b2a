"""The schema as the service created it before migrations (tables made by `create_all`).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("criteria", sa.String(), nullable=False),
        sa.Column("pair_scope", sa.String(), nullable=False),
        sa.Column("ties", sa.Boolean(), nullable=False),
        sa.Column("emoji_levels", sa.Integer(), nullable=True),
        sa.Column("lease_seconds", sa.Float(), nullable=False),
        sa.Column("engine_config", sa.String(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "clip",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(), nullable=False),
        sa.Column("uri", sa.String(), nullable=False),
        sa.Column("prompt_group", sa.String(), nullable=True),
        sa.Column("context", sa.String(), nullable=True),
        sa.Column("scores", sa.String(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("after_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.UniqueConstraint("campaign_id", "external_id"),
        sa.UniqueConstraint("campaign_id", "position"),
    )
    op.create_index("ix_clip_campaign_id", "clip", ["campaign_id"])
    op.create_table(
        "rater",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("token_hash", sa.String(), nullable=False, unique=True),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("ix_rater_campaign_id", "rater", ["campaign_id"])
    op.create_table(
        "assignment",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("rater_id", sa.Integer(), sa.ForeignKey("rater.id"), nullable=False),
        sa.Column("first", sa.Integer(), nullable=False),
        sa.Column("second", sa.Integer(), nullable=False),
        sa.Column("swapped", sa.Boolean(), nullable=False),
        sa.Column("gain", sa.Float(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
    )
    op.create_index("ix_assignment_rater_id", "assignment", ["rater_id"])
    op.create_index("ix_assignment_campaign_status", "assignment", ["campaign_id", "status"])
    op.create_table(
        "judgment",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column(
            "assignment_id",
            sa.Integer(),
            sa.ForeignKey("assignment.id"),
            nullable=False,
            unique=True,
        ),
        sa.Column("rater_id", sa.Integer(), sa.ForeignKey("rater.id"), nullable=False),
        sa.Column("choice", sa.String(), nullable=True),
        sa.Column("level", sa.Integer(), nullable=True),
        sa.Column("first", sa.Integer(), nullable=False),
        sa.Column("second", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("batch", sa.Integer(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("ix_judgment_campaign_seq", "judgment", ["campaign_id", "seq"])
    op.create_table(
        "progress",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("labels", sa.Integer(), nullable=False),
        sa.Column("expected_kendall_tau", sa.Float(), nullable=True),
        sa.Column("at", TIME, nullable=False),
    )
    op.create_index("ix_progress_campaign_id", "progress", ["campaign_id"])


def downgrade() -> None:
    for table in ("progress", "judgment", "assignment", "rater", "clip", "campaign"):
        op.drop_table(table)
