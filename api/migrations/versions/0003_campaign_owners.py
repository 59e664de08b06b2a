"""Several service processes on one database: a lease per campaign naming the process that
runs its engine, and label sequence numbers unique per campaign.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_owner",
        sa.Column(
            "campaign_id",
            sa.Integer(),
            sa.ForeignKey("campaign.id"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    # a database where two servers already gave two labels one number fails here, by name,
    # instead of replaying them in an order nobody chose
    op.drop_index("ix_judgment_campaign_seq", table_name="judgment")
    op.create_index("ix_judgment_campaign_seq", "judgment", ["campaign_id", "seq"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_judgment_campaign_seq", table_name="judgment")
    op.create_index("ix_judgment_campaign_seq", "judgment", ["campaign_id", "seq"])
    op.drop_table("campaign_owner")
