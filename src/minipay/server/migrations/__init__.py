"""Alembic migrations of the service (SQLite and PostgreSQL), run programmatically.

``await upgrade(engine)`` brings the schema to the head revision; ``minipay db upgrade`` does the same
from the command line, and ``create_app`` runs it at start-up (``Settings.run_migrations``).
The worker adds its own revisions to ``versions/`` after the service's ``0001_initial``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["HEAD", "alembic_config", "current_revision", "upgrade"]

HEAD = "heads"
_HERE = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic :class:`Config` pointing at this folder (no ``alembic.ini`` needed)."""
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(_HERE / "versions"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


async def upgrade(engine: AsyncEngine, revision: str = HEAD) -> None:
    """Apply every pending migration (idempotent; safe to run from several replicas at once on PostgreSQL)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # One migrator at a time across replicas; released at commit.
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274001)")
        await conn.run_sync(_upgrade, revision)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)
