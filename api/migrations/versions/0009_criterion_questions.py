"""Criterion questions: which criterion an assignment asks about, and its answer's.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assignment") as batch:
        batch.add_column(sa.Column("criterion", sa.String(), nullable=True))
    with op.batch_alter_table("judgment") as batch:
        batch.add_column(sa.Column("criterion", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("judgment") as batch:
        batch.drop_column("criterion")
    with op.batch_alter_table("assignment") as batch:
        batch.drop_column("criterion")
