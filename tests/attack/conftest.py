"""The attack tier: what an attack run against ``minipay serve`` tried, replayed against the real app
(in-process, real database, the sandbox as WeChat). Each test names the finding it guards."""

from __future__ import annotations

from tests.server.conftest import _pg_session, _sqlite_template, database_url, postgres_url, world

__all__ = ["_pg_session", "_sqlite_template", "database_url", "postgres_url", "world"]
