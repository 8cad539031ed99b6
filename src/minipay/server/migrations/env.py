"""Alembic environment: always run with a connection handed over by ``minipay.server.migrations.upgrade``."""

from __future__ import annotations

from alembic import context

from minipay.server.db import metadata, worker_metadata

# The worker's tables live in their own MetaData; autogenerate must know them too.
target_metadata = [metadata, worker_metadata]

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI and the app always pass a connection
    raise RuntimeError("run migrations through minipay.server.migrations.upgrade(engine) or `minipay db upgrade`")

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
