"""The Runtime (gateway/runtime.py): a start-up that fails half-way closes what it
had opened, in reverse order; background jobs are watched and restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
import redis as redis_sync
import structlog
from structlog.testing import capture_logs

import gateway.runtime
from gateway.config import Settings
from gateway.db import Database
from gateway.events.ingest import LedgerBatcher
from gateway.quota import create_redis
from gateway.runtime import Runtime
from gateway.storage.s3 import S3ObjectStore
from gateway.uploads import AdmissionService, Janitor
from tests.support.services import new_db_name, with_database


@pytest.fixture
async def empty_db(urls: tuple[str, str]) -> AsyncIterator[str]:
    """A database of the test's own (no schema needed: start-up only connects), so
    the backends it has can be counted on a shared server."""
    name = new_db_name()
    admin = await asyncpg.connect(with_database(urls[0], "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def backends(urls: tuple[str, str], name: str) -> int:
    conn = await asyncpg.connect(with_database(urls[0], "postgres"))
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
        )
        return count
    finally:
        await conn.close()


class Opened(msgspec.Struct):
    closes: list[str]
    redis_ids: list[int]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[Opened]:
    """Records every close of a Runtime's parts, in order; and has the Redis client
    connect before S3 opens (it connects on first use), noting its CLIENT ID."""
    seen = Opened(closes=[], redis_ids=[])
    clients: list[Any] = []

    def noted(cls: Any, method: str, label: str) -> None:
        real = getattr(cls, method)

        async def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
            seen.closes.append(label)
            return await real(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, spy)

    def create_and_note(settings: Settings) -> Any:
        client = create_redis(settings)
        real_aclose = client.aclose

        async def aclose() -> None:
            seen.closes.append("redis")
            await real_aclose()

        monkeypatch.setattr(client, "aclose", aclose)
        clients.append(client)
        return client

    store_open = S3ObjectStore.open

    async def open_store(self: S3ObjectStore) -> None:
        seen.redis_ids.append(await clients[-1].client_id())
        await store_open(self)

    monkeypatch.setattr(gateway.runtime, "create_redis", create_and_note)
    monkeypatch.setattr(S3ObjectStore, "open", open_store)
    noted(Database, "close", "db")
    noted(S3ObjectStore, "close", "store")
    noted(AdmissionService, "close", "admission")
    noted(Janitor, "close", "janitor")
    noted(LedgerBatcher, "stop", "batcher")
    yield seen


async def assert_closed(urls: tuple[str, str], db_name: str, redis_ids: list[int]) -> None:
    """No backend left on the database, no connection left on Redis (the servers
    see a closed socket a moment after the client closes it)."""
    server = redis_sync.Redis.from_url(urls[1])
    deadline = time.monotonic() + 5
    while True:
        pg_left = await backends(urls, db_name)
        redis_left = [i for i in redis_ids if server.client_list(client_id=[i])]
        if (pg_left, redis_left) == (0, []) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert pg_left == 0, "the Postgres pool was left open"
    assert redis_left == [], "the Redis connection was left open"


async def test_a_start_up_failing_at_s3_closes_redis_and_postgres(
    settings: Settings, urls: tuple[str, str], empty_db: str, opened: Opened
) -> None:
    bad = msgspec.structs.replace(
        settings,
        database_url=with_database(urls[0], empty_db),
        s3_region="not a region!",  # botocore refuses it when the S3 client opens
    )
    runtime = Runtime(bad)
    with pytest.raises(Exception, match="region"):
        async with runtime:
            pytest.fail("entered")
    assert len(opened.redis_ids) == 1
    assert opened.closes == ["store", "redis", "db"]
    await assert_closed(urls, empty_db, opened.redis_ids)


async def test_a_start_up_failing_at_its_last_step_closes_everything_in_reverse(
    settings: Settings,
    urls: tuple[str, str],
    empty_db: str,
    opened: Opened,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class NoSqs:
        async def __aenter__(self) -> Any:
            # everything else is open by now, Postgres pool included
            assert await backends(urls, empty_db) >= 1
            raise OSError("SQS is not answering")

        async def __aexit__(self, *exc: object) -> None:
            raise AssertionError("never entered")

    monkeypatch.setattr(gateway.runtime, "sqs_client", lambda settings: NoSqs())
    ours = msgspec.structs.replace(settings, database_url=with_database(urls[0], empty_db))
    runtime = Runtime(ours, sweeper=False, sqs_queue_url="http://sqs.test/1/q")
    with pytest.raises(OSError, match="SQS is not answering"):
        async with runtime:
            pytest.fail("entered")
    assert opened.closes == ["batcher", "admission", "janitor", "store", "redis", "db"]
    await assert_closed(urls, empty_db, opened.redis_ids)


async def test_a_crashing_job_is_logged_restarted_with_back_off_and_stopped_on_close(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an uncached logger: one cached by an earlier test keeps the processors (and not
    # capture_logs' list) of the configuration it was first used under
    monkeypatch.setattr(gateway.runtime, "log", structlog.get_logger("gateway.runtime"))
    runs = 0
    stopped = False

    async def flaky() -> None:
        nonlocal runs, stopped
        runs += 1
        if runs <= 4:
            raise RuntimeError(f"boom {runs}")
        try:
            await asyncio.sleep(3600)  # the fifth run stays up
        finally:
            stopped = True

    with capture_logs() as logs:
        async with Runtime(settings, restart_delay=0.01, max_restart_delay=0.04) as runtime:
            task = runtime.start_task("flaky", flaky)
            assert task.get_name() == "gateway:flaky"
            for _ in range(500):
                if runs == 5:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert (runs, task.done()) == (5, False)
        assert task.done() and stopped
    await asyncio.sleep(0.1)
    assert runs == 5  # not restarted after the close
    crashes = [e for e in logs if e["event"] == "background task crashed; restarting"]
    assert [(e["task"], e["runs"], e["restart_in"]) for e in crashes] == [
        ("flaky", 1, 0.01),
        ("flaky", 2, 0.02),
        ("flaky", 3, 0.04),
        ("flaky", 4, 0.04),  # bounded
    ]
    assert [str(e["exc_info"]) for e in crashes] == ["boom 1", "boom 2", "boom 3", "boom 4"]
    assert all(e["log_level"] == "error" for e in crashes)


async def test_a_job_that_returns_early_is_restarted_too(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway.runtime, "log", structlog.get_logger("gateway.runtime"))
    runs = 0

    async def gives_up() -> None:
        nonlocal runs
        runs += 1

    with capture_logs() as logs:
        async with Runtime(settings, restart_delay=0.01, max_restart_delay=0.01) as runtime:
            runtime.start_task("quitter", gives_up)
            for _ in range(500):
                if runs >= 3:
                    break
                await asyncio.sleep(0.01)
    assert runs >= 3
    returned = [e for e in logs if e["event"] == "background task returned; restarting"]
    assert len(returned) >= 2 and {e["task"] for e in returned} == {"quitter"}


def test_the_jobs_are_the_callers_choice(settings: Settings) -> None:
    assert settings.sweep_interval == 0
    with pytest.raises(ValueError, match="sweep interval"):
        Runtime(settings, sweeper=True)
    runtime = Runtime(settings)  # neither the sweeper nor a poller unless asked
    assert (runtime.runs_sweeper, runtime.sqs_queue_url) == (False, None)
