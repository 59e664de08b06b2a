"""The operator's controls: campaign state and skip limit, retired clips, inactive raters,
imports by key.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # every new column has a constant default: both SQLite and PostgreSQL add it in place
    op.add_column(
        "campaign", sa.Column("state", sa.String(), nullable=False, server_default="active")
    )
    op.add_column(
        "campaign", sa.Column("skip_limit", sa.Integer(), nullable=False, server_default="3")
    )
    op.add_column(
        "clip", sa.Column("retired", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "clip", sa.Column("skips_cleared", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "rater", sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.create_table(
        "import_batch",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("digest", sa.String(), nullable=False),
        sa.Column("result", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("campaign_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("import_batch")
    # batch mode: SQLite drops a column by copying the table
    with op.batch_alter_table("rater") as table:
        table.drop_column("active")
    with op.batch_alter_table("clip") as table:
        table.drop_column("skips_cleared")
        table.drop_column("retired")
    with op.batch_alter_table("campaign") as table:
        table.drop_column("skip_limit")
        table.drop_column("state")
