"""Clips withheld by the campaign's policy (a safety threshold, raters' reports) and the
reports themselves.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # every new column is nullable or has a constant default: added in place on both backends
    op.add_column("campaign", sa.Column("safety_threshold", sa.Float(), nullable=True))
    op.add_column(
        "campaign", sa.Column("report_limit", sa.Integer(), nullable=False, server_default="1")
    )
    op.add_column("clip", sa.Column("withheld", sa.String(), nullable=True))
    op.add_column("clip", sa.Column("withheld_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("clip", sa.Column("restored_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "clip", sa.Column("reports_cleared", sa.Integer(), nullable=False, server_default="0")
    )
    op.create_table(
        "clip_report",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("clip_id", sa.Integer(), sa.ForeignKey("clip.id"), nullable=False),
        sa.Column("rater_id", sa.Integer(), sa.ForeignKey("rater.id"), nullable=False),
        sa.Column("assignment_id", sa.Integer(), sa.ForeignKey("assignment.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_clip_report_campaign_id", "clip_report", ["campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_clip_report_campaign_id", table_name="clip_report")
    op.drop_table("clip_report")
    # batch mode: SQLite drops a column by copying the table
    with op.batch_alter_table("clip") as table:
        table.drop_column("reports_cleared")
        table.drop_column("restored_at")
        table.drop_column("withheld_at")
        table.drop_column("withheld")
    with op.batch_alter_table("campaign") as table:
        table.drop_column("report_limit")
        table.drop_column("safety_threshold")
