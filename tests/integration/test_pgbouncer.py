"""The gateway through PgBouncer in transaction pooling mode (Debian's 1.18).

The exactness, event, rebuild and sweeper tests run through it too: ``make
pytest-pgbouncer`` (``pytest --via-pgbouncer``). These are what those do not show:
migrations through it, and that GATEWAY_DB_STATEMENT_CACHE_SIZE=0 is what makes it
work.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from gateway.config import Settings
from gateway.db import create_database
from gateway.db.migrate import load_migrations, migrate
from tests.support.pgbouncer import PgBouncer
from tests.support.services import new_db_name, with_database


async def _drop(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(with_database(admin_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_migrate_through_pgbouncer_creates_the_database_and_applies_once(
    pgbouncer: PgBouncer, urls: tuple[str, str]
) -> None:
    """Three replicas at once, on a database that does not exist yet: it is created,
    one applies every migration under the transaction-level lock, the others find
    nothing to do (a session lock would be taken and released on different server
    connections here)."""
    name = new_db_name()
    url = pgbouncer.url(with_database(urls[0], name))
    try:
        results = await asyncio.gather(*(migrate(url) for _ in range(3)))
        assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]
        conn = await asyncpg.connect(url, statement_cache_size=0)
        try:
            versions = [
                r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")
            ]
            # no advisory lock is left behind on any server connection
            locks = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        finally:
            await conn.close()
        assert sorted(versions) == [m.version for m in load_migrations()]
        assert locks == 0
        assert await migrate(url) == []
    finally:
        await _drop(urls[0], name)


async def _concurrent_queries(settings: Settings, n: int = 400) -> list[BaseException]:
    """What the gateway's pool does under load: many distinct parameterised queries
    at once, in and out of transactions, from more client connections than PgBouncer
    has server connections (tests/support/pgbouncer.py: 4)."""
    db = create_database(settings)
    errors: list[BaseException] = []

    async def one(i: int) -> None:
        try:
            if i % 2:
                async with db.transaction() as conn:
                    assert await conn.fetchval(f"SELECT $1::int + {i % 13}", i) == i + i % 13
            else:
                rows = await db.fetch(
                    f"SELECT x, {i % 11} AS k FROM unnest($1::bigint[]) AS x", [i, i + 1]
                )
                assert [r["x"] for r in rows] == [i, i + 1]
        except Exception as exc:
            errors.append(exc)

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await db.close()
    return errors


def _through(pgbouncer: PgBouncer, database_url: str, cache_size: int) -> Settings:
    return Settings.from_env(
        {
            "GATEWAY_DATABASE_URL": pgbouncer.url(database_url),
            "GATEWAY_DB_STATEMENT_CACHE_SIZE": str(cache_size),
            "GATEWAY_DB_POOL_MIN": "10",
            "GATEWAY_DB_POOL_MAX": "10",
        }
    )


async def test_no_statement_cache_is_what_makes_transaction_pooling_work(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    """With the setting at 0 every query is parsed and run in one unnamed statement:
    nothing fails. With asyncpg's default (100 named statements per connection) the
    same load through PgBouncer 1.18 fails: a statement prepared on one server
    connection is executed on another, where it does not exist."""
    assert await _concurrent_queries(_through(pgbouncer, database_url, 0)) == []
    errors = await _concurrent_queries(_through(pgbouncer, database_url, 100))
    assert errors, "named prepared statements worked through PgBouncer: is it >= 1.21?"
    prepared_statement_errors: tuple[type[Any], ...] = (
        asyncpg.InvalidSQLStatementNameError,
        asyncpg.DuplicatePreparedStatementError,
    )
    assert all(isinstance(e, prepared_statement_errors) for e in errors), {
        type(e).__name__ for e in errors
    }
