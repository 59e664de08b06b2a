"""Criterion questions: which criterion an assignment asks about, and its answer's.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
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
