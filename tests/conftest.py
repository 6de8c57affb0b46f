"""Shared fixtures. Integration tests use real Postgres, Redis and an HTTP S3."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import httpx
import msgspec
import pytest
import redis as redis_sync
from hypothesis import settings as hypothesis_settings
from litestar import Litestar

from devtools.s3 import CORS_RULE, EmbeddedS3, start_embedded_s3
from gateway.app import create_app
from gateway.config import Settings
from gateway.db.migrate import migrate
from tests.support.services import new_db_name, service_urls, with_database

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
BUCKET = "uploads"
pytest_plugins = [
    "tests.support.localstack",
    "tests.support.pgbouncer",
    "tests.support.redis_cluster",
]

# No per-example deadline: a wall-clock limit is a timing assertion, and on a shared
# machine an example that takes 1 ms alone can take 500 ms (hypothesis then fails it
# as "unreliable timings").
hypothesis_settings.register_profile("gateway", deadline=None)
hypothesis_settings.load_profile("gateway")


@pytest.fixture(scope="session")
def urls() -> Iterator[tuple[str, str]]:
    with service_urls() as u:
        yield u


@pytest.fixture(scope="session")
def s3() -> Iterator[EmbeddedS3]:
    server = start_embedded_s3()
    client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": [CORS_RULE]})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_client(s3: EmbeddedS3) -> Any:
    return boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1")


@pytest.fixture(scope="session")
def database_url(urls: tuple[str, str]) -> Iterator[str]:
    admin = urls[0]
    name = new_db_name()
    url = with_database(admin, name)
    asyncio.run(migrate(url))
    yield url

    async def drop() -> None:
        conn = await asyncpg.connect(with_database(admin, "postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def redis_url(urls: tuple[str, str]) -> str:
    url = urls[1]
    redis_sync.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def gateway_database(request: pytest.FixtureRequest, database_url: str) -> dict[str, str]:
    """How the session's gateways reach the test database: directly, or with
    ``--via-pgbouncer`` through PgBouncer in transaction pooling mode (and then with
    asyncpg's statement cache off, as deploy/README.md says)."""
    if not request.config.getoption("--via-pgbouncer"):
        return {"GATEWAY_DATABASE_URL": database_url}
    bouncer = request.getfixturevalue("pgbouncer")
    return {
        "GATEWAY_DATABASE_URL": bouncer.url(database_url),
        "GATEWAY_DB_STATEMENT_CACHE_SIZE": "0",
    }


@pytest.fixture(scope="session")
def settings(gateway_database: dict[str, str], redis_url: str, s3: EmbeddedS3) -> Settings:
    return Settings.from_env(
        {
            **gateway_database,
            "GATEWAY_REDIS_URL": redis_url,
            "GATEWAY_S3_ENDPOINT_URL": s3.endpoint_url,
            "GATEWAY_S3_BUCKET": BUCKET,
            "GATEWAY_WEBHOOK_SECRET": "test-webhook-secret",
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_SWEEP_INTERVAL": "0",
            # webhook tests run deliverers of their own (tests/integration/test_webhooks*)
            "GATEWAY_WEBHOOK_DELIVERY": "false",
        }
    )


@pytest.fixture(scope="session")
def server_env(settings: Settings) -> dict[str, str]:
    """Environment for a separate `gateway serve` process on the same services."""
    return {
        "GATEWAY_DATABASE_URL": settings.database_url,
        "GATEWAY_DB_STATEMENT_CACHE_SIZE": str(settings.db_statement_cache_size),
        "GATEWAY_REDIS_URL": settings.redis_url,
        "GATEWAY_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "GATEWAY_S3_BUCKET": settings.s3_bucket,
        "GATEWAY_WEBHOOK_SECRET": settings.webhook_secret or "",
        "GATEWAY_SWEEP_INTERVAL": "0",
        "GATEWAY_WEBHOOK_DELIVERY": "false",
    }


@pytest.fixture(scope="session")
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@contextlib.asynccontextmanager
async def running(
    app: Litestar, base_url: str = "http://gateway.test"
) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan (held by a task of its own: it must be entered and left in
    one task, and pytest may tear down in another), then HTTP through ASGI."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    try:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as c:
            yield c
    finally:
        stop.set()
        await task


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as c:
        yield c


@pytest.fixture(scope="session")
def state(app: Litestar, client: httpx.AsyncClient) -> Any:
    return app.state


class ProjectKey(msgspec.Struct):
    project_id: str
    key_id: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


async def make_project(state: Any, **limits: Any) -> ProjectKey:
    import uuid

    created = await state.projects.create(f"test-{uuid.uuid4().hex[:12]}", **limits)
    return ProjectKey(created.project_id, created.key_id, created.api_key)


@pytest.fixture
async def project(state: Any) -> ProjectKey:
    return await make_project(state)


@pytest.fixture
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


def put_object(url: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.put(url, content=body, headers=headers, timeout=10)
