"""Helpers for the webhook tests: an app that may call loopback receivers, uploads
settled in each of the ways the gateway settles them."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.config import Settings
from tests.conftest import BUCKET, ProjectKey
from tests.support.services import settings_on

WEBHOOK = "/api/storage/events/s3/"
SECRET = {"Authorization": "Bearer test-webhook-secret"}


def hooks_settings(base: Settings, **env: str) -> Settings:
    """Settings of an app whose webhooks may reach the loopback receivers, with short
    time-outs and back-offs (delivery off unless ``GATEWAY_WEBHOOK_DELIVERY`` says)."""
    values = {
        "GATEWAY_WEBHOOK_SECRET": "test-webhook-secret",
        "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "true",
        "GATEWAY_WEBHOOK_TIMEOUT": "1",
        "GATEWAY_WEBHOOK_FIRST_RETRY": "0.05",
        "GATEWAY_WEBHOOK_POLL_INTERVAL": "0.1",
        **env,
    }
    return settings_on(base, **values)


def created_record(key: str, size: int, seq: str = "0055AED6DCD90281E5") -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-22T10:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": BUCKET},
                    "object": {"key": key, "size": size, "eTag": "abc", "sequencer": seq},
                },
            }
        ]
    }


async def create_hook(
    c: httpx.AsyncClient, p: ProjectKey, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    r = await c.post(
        "/api/storage/webhooks/",
        json={"url": url, "events": events or ["*"], "description": "test"},
        headers=p.headers,
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def ask(c: httpx.AsyncClient, p: ProjectKey, tenant: str, size: int) -> dict[str, Any]:
    r = await c.post(
        "/api/storage/upload/",
        json={
            "tenant_id": tenant,
            "filename": "f.bin",
            "size_bytes": size,
            "content_type": "application/octet-stream",
        },
        headers=p.headers,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def upload_by_event(
    c: httpx.AsyncClient, p: ProjectKey, s3_client: Any, tenant: str, size: int, stored: int = -1
) -> dict[str, Any]:
    """An upload whose object (``stored`` bytes, default its size) is settled by an
    S3 event."""
    out = await ask(c, p, tenant, size)
    n = size if stored < 0 else stored
    s3_client.put_object(Bucket=BUCKET, Key=out["key"], Body=b"x" * n)
    r = await c.post(WEBHOOK, json=created_record(out["key"], n), headers=SECRET)
    assert r.status_code == 200, r.text
    return out


async def upload_by_complete(
    c: httpx.AsyncClient, p: ProjectKey, s3_client: Any, tenant: str, size: int
) -> dict[str, Any]:
    out = await ask(c, p, tenant, size)
    s3_client.put_object(Bucket=BUCKET, Key=out["key"], Body=b"x" * size)
    r = await c.post(f"/api/storage/uploads/{out['upload_id']}/complete/", headers=p.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    return out
