"""Gold questions: the operator's gold pairs, and which assignments and answers are gold.

Revision ID: 0006
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gold_pair",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False),
        sa.Column("first", sa.Integer(), nullable=False),
        sa.Column("second", sa.Integer(), nullable=False),
        sa.Column("answer", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("campaign_id", "first", "second"),
    )
    op.create_index("ix_gold_pair_campaign_id", "gold_pair", ["campaign_id"])
    with op.batch_alter_table("assignment") as batch:
        batch.add_column(sa.Column("gold", sa.String(), nullable=True))
    with op.batch_alter_table("judgment") as batch:
        batch.add_column(sa.Column("gold", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("judgment") as batch:
        batch.drop_column("gold")
    with op.batch_alter_table("assignment") as batch:
        batch.drop_column("gold")
    op.drop_index("ix_gold_pair_campaign_id", table_name="gold_pair")
    op.drop_table("gold_pair")
