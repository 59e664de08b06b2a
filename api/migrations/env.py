"""Alembic's environment: migrations run on the connection `api.db.migrate` hands over.

`alembic` on the command line works too (`alembic -x url=... upgrade head` with
`script_location = api:migrations`): without a connection of ours, one is opened on the URL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import api.db  # noqa: F401  the tables, for autogenerate

connection = context.config.attributes.get("connection")
if connection is None:
    url = context.get_x_argument(as_dictionary=True)["url"]
    with create_engine(url).connect() as opened:
        context.configure(connection=opened, target_metadata=SQLModel.metadata)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=SQLModel.metadata)
    with context.begin_transaction():
        context.run_migrations()
