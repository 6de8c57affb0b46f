"""The asyncpg pool, with bounded waits and driver errors turned into domain errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from gateway.config import Settings
from gateway.errors import DependencyUnavailable

T = TypeVar("T")

APPLICATION_NAME = "gateway"

# Errors that mean "Postgres is not answering (or not as it should)", as opposed to a
# bug in our SQL: the connection is gone or in a state the driver cannot use, the
# server is shutting down or out of resources, or a read-only standby answered.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    TimeoutError,
    # driver side: a connection cut mid-operation leaves the protocol in a state it
    # refuses to leave ("cannot switch to state 12; another operation is in progress")
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    # server side: class 08 (connection), 57 (operator intervention: admin or crash
    # shutdown, cannot connect now, statement timeout), 53 (insufficient resources)
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.InvalidCatalogNameError,
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether a driver error means Postgres is not answering (a 503, not our bug)."""
    return isinstance(exc, _UNAVAILABLE)


class Database:
    """A lazily connected pool. ``acquire`` fails fast (503) when Postgres is down."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self.retry_after = settings.retry_after

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                s = self._settings
                self._pool = await asyncio.wait_for(
                    asyncpg.create_pool(
                        s.database_url,
                        min_size=s.db_pool_min,
                        max_size=s.db_pool_max,
                        timeout=s.db_timeout,
                        command_timeout=s.db_timeout,
                        max_inactive_connection_lifetime=300,
                        # 0 behind PgBouncer in transaction pooling mode: no named
                        # prepared statements, which outlive the transaction there
                        statement_cache_size=s.db_statement_cache_size,
                        reset=_keep_session,
                        # lets operators (and the fault tests) tell its backends apart
                        server_settings={"application_name": APPLICATION_NAME},
                    ),
                    timeout=s.db_timeout,
                )
        return self._pool

    async def open(self) -> None:
        """Try to connect now; an outage at start-up is not fatal (503 until it's back)."""
        try:
            await self._get_pool()
        except _UNAVAILABLE:
            self._pool = None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=self._settings.db_timeout)
            except TimeoutError:
                pool.terminate()

    def unavailable(self, exc: BaseException | None = None) -> DependencyUnavailable:
        return DependencyUnavailable(
            "postgres", retry_after=self.retry_after, cause=repr(exc) if exc else None
        )

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            pool = await self._get_pool()
            conn_cm = pool.acquire(timeout=self._settings.db_timeout)
            conn = await conn_cm.__aenter__()
        except _UNAVAILABLE as exc:
            raise self.unavailable(exc) from exc
        try:
            yield conn
        except BaseException as exc:
            if isinstance(exc, (*_UNAVAILABLE, asyncio.CancelledError)):
                # never hand a connection in an unknown protocol state to the next
                # caller: the pool replaces a terminated one (one that died on its own
                # has gone back to the pool already, and refuses this)
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
            await _release(conn_cm, exc)
            if isinstance(exc, _UNAVAILABLE):
                raise self.unavailable(exc) from exc
            raise
        else:
            await _release(conn_cm, None)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        # a failed COMMIT or ROLLBACK leaves this block as a driver error, which
        # acquire() turns into a 503 (and the connection is dropped)
        async with self.acquire() as conn, conn.transaction():
            yield conn

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.acquire() as conn:
            result: str = await conn.execute(sql, *args)
            return result

    async def ping(self) -> None:
        await asyncio.wait_for(self.fetchval("SELECT 1"), timeout=self._settings.db_timeout)


async def _release(cm: Any, exc: BaseException | None) -> None:
    """Gives the connection back; a failure to do so (the connection died while it
    was reset) is the pool's to repair, not the caller's error."""
    try:
        if exc is None:
            await cm.__aexit__(None, None, None)
        else:
            await cm.__aexit__(type(exc), exc, exc.__traceback__)
    except _UNAVAILABLE:
        pass


async def _keep_session(conn: asyncpg.Connection) -> None:
    """asyncpg's default reset (UNLISTEN, CLOSE ALL, RESET ALL, advisory unlock) costs a
    round trip per release; the gateway keeps no session state on pooled connections
    (open transactions are still rolled back by the pool). No LISTEN, no session
    advisory lock, no SET: everything it does holds within one transaction, which is
    also all that PgBouncer's transaction pooling keeps on one server connection."""


def create_database(settings: Settings) -> Database:
    return Database(settings)
