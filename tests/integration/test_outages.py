"""A dependency outage answers 503 with Retry-After — never a 500, never a hang."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import ProjectKey, running
from tests.support.services import assert_503, free_port, settings_on


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings)) as c:
        yield c


@pytest.fixture
async def pg_down(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/gateway"
    async for c in _client(settings_on(settings, GATEWAY_DATABASE_URL=url)):
        yield c


@pytest.fixture
async def redis_down(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(
        settings_on(settings, GATEWAY_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    ):
        yield c


@pytest.fixture
async def s3_down(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(
        settings_on(settings, GATEWAY_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    ):
        yield c


UP = {"tenant_id": "u1", "filename": "a.txt", "size_bytes": 3}


async def test_postgres_down(pg_down: httpx.AsyncClient, project: ProjectKey) -> None:
    started = time.monotonic()
    assert_503(
        await pg_down.get("/api/storage/tenants/u1/usage/", headers=project.headers), "postgres"
    )
    assert_503(
        await pg_down.post("/api/storage/upload/", json=UP, headers=project.headers), "postgres"
    )
    r = await pg_down.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["postgres"] != "ok"
    assert (await pg_down.get("/healthz")).status_code == 200
    assert time.monotonic() - started < 15


async def test_redis_down(redis_down: httpx.AsyncClient, project: ProjectKey, state: Any) -> None:
    assert_503(
        await redis_down.post("/api/storage/upload/", json=UP, headers=project.headers), "redis"
    )
    # nothing was reserved, and no pending row was left behind
    n = await state.db.fetchval(
        "SELECT count(*) FROM uploads WHERE project_id = $1", project.project_id
    )
    assert n == 0
    r = await redis_down.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["redis"] != "ok"
    # reading usage does not need Redis
    r = await redis_down.get("/api/storage/tenants/u1/usage/", headers=project.headers)
    assert r.status_code == 200


async def test_s3_down(
    s3_down: httpx.AsyncClient, client: httpx.AsyncClient, project: ProjectKey
) -> None:
    out = (await client.post("/api/storage/upload/", json=UP, headers=project.headers)).json()
    assert_503(
        await s3_down.post(
            f"/api/storage/uploads/{out['upload_id']}/complete/", headers=project.headers
        ),
        "s3",
    )
    r = await s3_down.request(
        "DELETE",
        "/api/storage/files/",
        headers=project.headers,
        json={"file_path": out["file_path"]},
    )
    assert_503(r, "s3")
    assert (await s3_down.get("/readyz")).status_code == 503
    # presigning needs no S3 round trip
    r = await s3_down.post("/api/storage/upload/", json=UP, headers=project.headers)
    assert r.status_code == 200


async def test_readyz_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200 and set(r.json()["checks"].values()) == {"ok"}
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "gateway_http_requests_total" in metrics.text
    schema = await client.get("/schema/openapi.json")
    assert schema.status_code == 200 and "/api/storage/upload" in schema.text
    assert (await client.get("/schema")).status_code == 200


async def test_s3_refusing_the_gateway_is_a_502_not_an_outage(
    settings: Settings, project: ProjectKey
) -> None:
    """A wrong bucket (or credentials, or policy) is the gateway's misconfiguration:
    retrying does not mend it, so it is not a 503 with Retry-After."""
    wrong = settings_on(settings, GATEWAY_S3_BUCKET="no-such-bucket-here")
    async for c in _client(wrong):
        out = (await c.post("/api/storage/upload/", json=UP, headers=project.headers)).json()
        r = await c.request(
            "DELETE",
            "/api/storage/files/",
            headers=project.headers,
            json={"file_path": out["file_path"]},
        )
        assert r.status_code == 502, r.text
        assert r.json()["code"] == "storage_refused" and r.json()["s3_code"] == "NoSuchBucket"
        assert "retry-after" not in r.headers
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["code"] == "not_ready"
        assert ready.json()["checks"]["s3"] != "ok" and ready.json()["checks"]["postgres"] == "ok"
