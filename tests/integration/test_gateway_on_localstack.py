"""The gateway's own presigned URLs against an S3 that validates signatures
(LocalStack, S3_SKIP_SIGNATURE_VALIDATION=0): S3 rejects what the gateway did not sign."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import boto3
import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import make_project, running

pytestmark = pytest.mark.localstack
LS_BUCKET = "gw-uploads"


@pytest.fixture(scope="module")
def ls_settings(localstack_endpoint: str, settings: Settings) -> Settings:
    s3 = boto3.client(
        "s3",
        endpoint_url=localstack_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=LS_BUCKET)
    return Settings.from_env(
        {
            "GATEWAY_DATABASE_URL": settings.database_url,
            "GATEWAY_REDIS_URL": settings.redis_url,
            "GATEWAY_S3_ENDPOINT_URL": localstack_endpoint,
            "GATEWAY_S3_BUCKET": LS_BUCKET,
            "GATEWAY_SWEEP_INTERVAL": "0",
            "GATEWAY_LOG_LEVEL": "error",
            "GATEWAY_UPLOAD_URL_TTL": "60",
        }
    )


@pytest.fixture
async def ls(
    ls_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    app = create_app(ls_settings)
    async with running(app) as c:
        yield c, app.state


async def _upload(c: httpx.AsyncClient, headers: dict[str, str], size: int, **extra: Any) -> Any:
    r = await c.post(
        "/api/storage/upload/",
        headers=headers,
        json={
            "tenant_id": "ls",
            "filename": "doc.txt",
            "content_type": "text/plain",
            "size_bytes": size,
            **extra,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


async def test_put_longer_or_other_type_rejected_exact_accepted(
    ls: tuple[httpx.AsyncClient, Any],
) -> None:
    c, state = ls
    p = await make_project(state)
    out = await _upload(c, p.headers, 10)
    longer = httpx.put(
        out["presigned_url"], content=b"x" * 11, headers={"Content-Type": "text/plain"}
    )
    assert longer.status_code == 403, longer.text
    other_type = httpx.put(
        out["presigned_url"], content=b"x" * 10, headers={"Content-Type": "application/pdf"}
    )
    assert other_type.status_code == 403
    tampered = out["presigned_url"].replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert httpx.put(tampered, content=b"x" * 10, headers=out["headers"]).status_code == 403
    ok = httpx.put(out["presigned_url"], content=b"x" * 10, headers=out["headers"])
    assert ok.status_code == 200, ok.text
    r = await c.post(f"/api/storage/uploads/{out['upload_id']}/complete/", headers=p.headers)
    assert r.status_code == 200 and r.json()["actual_size_bytes"] == 10


async def test_checksum_is_enforced(ls: tuple[httpx.AsyncClient, Any]) -> None:
    import base64
    import hashlib

    c, state = ls
    p = await make_project(state)
    good = base64.b64encode(hashlib.sha256(b"y" * 8).digest()).decode()
    out = await _upload(c, p.headers, 8, checksum_sha256=good)
    bad_body = httpx.put(out["presigned_url"], content=b"z" * 8, headers=out["headers"])
    assert bad_body.status_code in (400, 403), bad_body.text
    ok = httpx.put(out["presigned_url"], content=b"y" * 8, headers=out["headers"])
    assert ok.status_code == 200, ok.text


async def test_expired_url_rejected(ls_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import msgspec

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    app = create_app(msgspec.structs.replace(ls_settings, upload_url_ttl=1))
    async with running(app) as c:
        p = await make_project(app.state)
        out = await _upload(c, p.headers, 4)
    time.sleep(2.2)  # SigV4 times have whole seconds
    r = httpx.put(out["presigned_url"], content=b"1234", headers=out["headers"])
    assert r.status_code == 403, r.text
    assert "expired" in r.text


async def test_post_policy_size_enforced(ls: tuple[httpx.AsyncClient, Any]) -> None:
    c, state = ls
    p = await make_project(state)
    out = await _upload(c, p.headers, 6, method="POST")
    fields = out["fields"]
    too_big = httpx.post(
        out["presigned_url"], data=fields, files={"file": ("doc.txt", b"1234567", "text/plain")}
    )
    assert too_big.status_code == 400, too_big.text
    ok = httpx.post(
        out["presigned_url"], data=fields, files={"file": ("doc.txt", b"123456", "text/plain")}
    )
    assert ok.status_code in (200, 204), ok.text
