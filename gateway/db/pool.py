"""The asyncpg pool, with bounded waits and driver errors turned into domain errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from gateway.config import Settings
from gateway.errors import DependencyUnavailable

T = TypeVar("T")

# Errors that mean "Postgres is not answering", as opposed to a bug in our SQL.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
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
                        reset=_keep_session,
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
        except _UNAVAILABLE as exc:
            await conn_cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise self.unavailable(exc) from exc
        except BaseException as exc:
            await conn_cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            await conn_cm.__aexit__(None, None, None)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.acquire() as conn:
            try:
                async with conn.transaction():
                    yield conn
            except _UNAVAILABLE as exc:
                raise self.unavailable(exc) from exc

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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """asyncpg's default reset (UNLISTEN, CLOSE ALL, RESET ALL, advisory unlock) costs a
    round trip per release; the gateway keeps no session state on pooled connections
    (open transactions are still rolled back by the pool)."""


def create_database(settings: Settings) -> Database:
    return Database(settings)
