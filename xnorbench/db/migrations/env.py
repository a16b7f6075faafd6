"""Alembic's environment for xnorbench: migrations run on the connection the store hands
over (``config.attributes["connection"]``), inside the store's transaction; there is no
alembic.ini and no URL here."""

from __future__ import annotations

from alembic import context

from xnorbench.db.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("xnorbench migrations run through xnorbench.db.migrate, "
                       "with a connection")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
