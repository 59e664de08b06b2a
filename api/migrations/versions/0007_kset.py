"""K-sets and answer times: a K-set assignment's clips as shown and its mode, a K-set
answer's ranking, and how long each answer took.

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
        batch.add_column(sa.Column("items", sa.String(), nullable=True))
        batch.add_column(sa.Column("kset_mode", sa.String(), nullable=True))
    with op.batch_alter_table("judgment") as batch:
        batch.add_column(sa.Column("ranking", sa.String(), nullable=True))
        batch.add_column(sa.Column("seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("judgment") as batch:
        batch.drop_column("seconds")
        batch.drop_column("ranking")
    with op.batch_alter_table("assignment") as batch:
        batch.drop_column("kset_mode")
        batch.drop_column("items")
