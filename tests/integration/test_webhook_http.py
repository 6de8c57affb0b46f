"""The webhook route's HTTP contract: it is a plain ASGI route (for speed), so what
Litestar would otherwise do for it is checked here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgspec

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import running

WEBHOOK = "/api/storage/events/s3/"
SECRET = {"Authorization": "Bearer test-webhook-secret"}
TEST_EVENT = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "uploads"}


async def test_both_path_spellings_and_minio_bare_token(client: httpx.AsyncClient) -> None:
    for path in (WEBHOOK, WEBHOOK.rstrip("/")):
        r = await client.post(path, json=TEST_EVENT, headers=SECRET)
        assert r.status_code == 200, r.text
        assert r.json() == {"records": 1, "applied": 0, "ignored": 1}
        assert r.headers["content-type"] == "application/json"
        assert len(r.headers["x-request-id"]) == 32
    # MinIO sends its auth_token as configured: with or without "Bearer "
    r = await client.post(
        WEBHOOK, json=TEST_EVENT, headers={"Authorization": "test-webhook-secret"}
    )
    assert r.status_code == 200
    r = await client.post(
        WEBHOOK, json=TEST_EVENT, headers={"Authorization": "bearer  test-webhook-secret "}
    )
    assert r.status_code == 200


async def test_errors_are_detail_and_code(client: httpx.AsyncClient) -> None:
    r = await client.get(WEBHOOK, headers=SECRET)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["code"] == "method_not_allowed" and r.json()["detail"]
    r = await client.post(WEBHOOK, json=TEST_EVENT, headers={"Authorization": "Bearer test"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    r = await client.post(
        WEBHOOK, content=b"<xml/>", headers={**SECRET, "Content-Type": "application/xml"}
    )
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    # SNS posts JSON as text/plain
    r = await client.post(
        WEBHOOK,
        content=msgspec.json.encode(TEST_EVENT),
        headers={**SECRET, "Content-Type": "text/plain; charset=UTF-8"},
    )
    assert r.status_code == 200
    r = await client.post(WEBHOOK, json={"Records": [{"eventName": 5}]}, headers=SECRET)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert "Records[0]" in r.json()["detail"]


async def test_bodies_over_the_limit_are_413(client: httpx.AsyncClient, settings: Settings) -> None:
    big = b'{"Records": [' + b" " * settings.max_body_bytes + b"]}"
    r = await client.post(WEBHOOK, content=big, headers=SECRET)
    assert r.status_code == 413 and r.json()["code"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"Records": ['
        for _ in range(settings.max_body_bytes // 65536 + 1):
            yield b" " * 65536
        yield b"]}"

    r = await client.post(WEBHOOK, content=chunks(), headers=SECRET)
    assert r.status_code == 413


async def test_webhook_off_without_a_secret(settings: Settings) -> None:
    app = create_app(msgspec.structs.replace(settings, webhook_secret=None))
    async with running(app) as c:
        r = await c.post(WEBHOOK, json=TEST_EVENT, headers=SECRET)
    assert r.status_code == 404 and r.json()["code"] == "webhook_disabled"


async def test_documented_in_the_schema(client: httpx.AsyncClient) -> None:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    post = r.json()["paths"]["/api/storage/events/s3/"]["post"]
    assert post["operationId"] == "ingestS3Events"
    assert {"200", "401", "413", "422", "503"} <= set(post["responses"])
