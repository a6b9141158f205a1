"""Alembic environment for Safelight: always run with a connection handed in by
``safelight.store.migrate`` (already inside its locked transaction), never from an ini."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
