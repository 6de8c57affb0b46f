"""The upload path over HTTP against real Postgres, Redis and an HTTP S3 (moto)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import ProjectKey, make_project

Client = httpx.AsyncClient
UPLOAD = "/api/storage/upload/"


def body(**over: Any) -> dict[str, Any]:
    return {
        "tenant_id": "user_123",
        "filename": "report.pdf",
        "content_type": "application/pdf",
        "size_bytes": 11,
        **over,
    }


async def usage(client: Client, p: ProjectKey, tenant: str = "user_123") -> dict[str, Any]:
    r = await client.get(f"/api/storage/tenants/{tenant}/usage/", headers=p.headers)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def test_upload_response_shape_and_signed_size(client: Client, project: ProjectKey) -> None:
    r = await client.post(UPLOAD, json=body(tenant_email="a@b.c"), headers=project.headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {
        "upload_id",
        "presigned_url",
        "method",
        "bucket",
        "key",
        "headers",
        "fields",
        "file_path",
        "tenant_id",
        "is_new_tenant",
        "size_bytes",
        "expires_in",
        "expires_at",
    }
    assert out["upload_id"].startswith("upl_") and out["method"] == "PUT"
    assert out["is_new_tenant"] is True and out["fields"] is None
    assert out["key"] == f"{project.project_id}/{out['file_path']}"
    assert out["file_path"] == f"user_123/{out['upload_id']}/report.pdf"
    assert out["headers"] == {"Content-Type": "application/pdf", "Content-Length": "11"}
    assert out["expires_in"] == 3600 and out["expires_at"].endswith("Z")
    q = parse_qs(urlsplit(out["presigned_url"]).query)
    assert q["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]
    u = await usage(client, project)
    assert u["storage_reserved_bytes"] == 11 and u["email"] == "a@b.c"
    r = await client.post(UPLOAD, json=body(), headers=project.headers)
    assert r.json()["is_new_tenant"] is False


async def test_quota_413_before_any_url(client: Client, project: ProjectKey) -> None:
    await client.patch(
        "/api/storage/tenants/user_123/limit/",
        json={"storage_limit_bytes": 1000},
        headers=project.headers,
    )
    r = await client.post(UPLOAD, json=body(size_bytes=950), headers=project.headers)
    assert r.status_code == 200
    r = await client.post(UPLOAD, json=body(size_bytes=100), headers=project.headers)
    assert r.status_code == 413
    assert r.json() == {
        "detail": "Storage quota exceeded for this tenant",
        "code": "quota_exceeded",
        "storage_limit_bytes": 1000,
        "storage_used_bytes": 0,
        "storage_reserved_bytes": 950,
        "requested_bytes": 100,
    }
    r = await client.post(UPLOAD, json=body(size_bytes=50), headers=project.headers)
    assert r.status_code == 200  # exactly up to the limit
    assert (await usage(client, project))["storage_reserved_bytes"] == 1000


async def test_size_required_with_a_limit(client: Client, state: Any) -> None:
    p = await make_project(state, default_tenant_limit=10)
    r = await client.post(UPLOAD, json=body(size_bytes=None), headers=p.headers)
    assert r.status_code == 422 and "size_bytes" in r.json()["detail"]


async def test_file_too_large(client: Client, state: Any) -> None:
    p = await make_project(state, max_file_size=100)
    r = await client.post(UPLOAD, json=body(size_bytes=101), headers=p.headers)
    assert r.status_code == 413 and r.json()["code"] == "file_too_large"


@pytest.mark.parametrize(
    "bad",
    [
        {"filename": "../x"},
        {"filename": "a/b"},
        {"filename": ".."},
        {"filename": "."},
        {"filename": "a\\b"},
        {"filename": "bad\x00"},
        {"filename": ""},
        {"filename": "x" * 256},
        {"tenant_id": ""},
        {"tenant_id": "a b"},
        {"tenant_id": "x" * 129},
        {"size_bytes": -1},
        {"size_bytes": "5"},
        {"size_bytes": 2**63},
        {"method": "GET"},
        {"checksum_sha256": "nope"},
        {"content_type": "not a type"},
        {"tenant_email": "a\x00@b.c"},  # Postgres text cannot hold a NUL
        {"tenant_email": "not-an-email"},
    ],
)
async def test_bad_input_is_4xx_and_reserves_nothing(
    client: Client, project: ProjectKey, bad: dict[str, Any]
) -> None:
    r = await client.post(UPLOAD, json=body(**bad), headers=project.headers)
    assert r.status_code == 422, (bad, r.text)
    assert r.json()["detail"]
    assert (await usage(client, project))["storage_reserved_bytes"] == 0


async def test_malformed_and_non_json(client: Client, project: ProjectKey) -> None:
    h = {**project.headers, "Content-Type": "application/json"}
    assert (await client.post(UPLOAD, content=b"{", headers=h)).status_code == 422
    assert (await client.post(UPLOAD, content=b"[]", headers=h)).status_code == 422
    assert (await client.post(UPLOAD, content=b"", headers=h)).status_code == 422
    h2 = {**project.headers, "Content-Type": "text/html"}
    assert (await client.post(UPLOAD, content=b"<b>", headers=h2)).status_code == 415
    big = b'{"tenant_id": "' + b"a" * 2_000_000 + b'"}'
    assert (await client.post(UPLOAD, content=big, headers=h)).status_code == 413


async def test_idempotency_key(client: Client, project: ProjectKey) -> None:
    h = {**project.headers, "Idempotency-Key": "abc-1"}
    a = await client.post(UPLOAD, json=body(), headers=h)
    b = await client.post(UPLOAD, json=body(), headers=h)
    assert a.status_code == b.status_code == 200
    assert a.json()["upload_id"] == b.json()["upload_id"]
    assert a.json()["presigned_url"] == b.json()["presigned_url"]
    assert (await usage(client, project))["storage_reserved_bytes"] == 11
    c = await client.post(UPLOAD, json=body(size_bytes=12), headers=h)
    assert c.status_code == 409 and c.json()["code"] == "idempotency_key_reused"


async def test_presigned_post(client: Client, project: ProjectKey) -> None:
    r = await client.post(UPLOAD, json=body(method="POST"), headers=project.headers)
    out = r.json()
    assert out["method"] == "POST" and out["fields"]["key"] == out["key"]
    import base64
    import json

    policy = json.loads(base64.b64decode(out["fields"]["policy"]))
    assert ["content-length-range", 11, 11] in policy["conditions"]
    assert {"Content-Type": "application/pdf"} in policy["conditions"]


async def test_upload_complete_download_delete(
    client: Client, project: ProjectKey, s3_client: Any
) -> None:
    out = (await client.post(UPLOAD, json=body(), headers=project.headers)).json()
    uid = out["upload_id"]
    r = await client.post(f"/api/storage/uploads/{uid}/complete/", headers=project.headers)
    assert r.status_code == 409 and r.json()["code"] == "object_not_uploaded"
    put = httpx.put(out["presigned_url"], content=b"hello world", headers=out["headers"])
    assert put.status_code == 200, put.text
    r = await client.post(f"/api/storage/uploads/{uid}/complete/", headers=project.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and r.json()["actual_size_bytes"] == 11
    u = await usage(client, project)
    assert (u["storage_used_bytes"], u["storage_reserved_bytes"], u["total_files"]) == (11, 0, 1)
    # completing twice changes nothing
    await client.post(f"/api/storage/uploads/{uid}/complete/", headers=project.headers)
    assert (await usage(client, project))["storage_used_bytes"] == 11

    d = await client.post(
        "/api/storage/download/", json={"file_path": out["file_path"]}, headers=project.headers
    )
    assert d.status_code == 200, d.text
    got = httpx.get(d.json()["download_url"])
    assert got.content == b"hello world"
    assert d.json()["size_bytes"] == 11 and d.json()["filename"] == "report.pdf"

    other = await make_project(client._transport.app.state)  # type: ignore[attr-defined]
    r = await client.request(
        "DELETE", "/api/storage/files/", json={"file_path": out["file_path"]}, headers=other.headers
    )
    assert r.status_code == 404
    r = await client.request(
        "DELETE",
        "/api/storage/files/",
        json={"file_path": out["file_path"]},
        headers=project.headers,
    )
    assert r.status_code == 200 and r.json() == {"detail": "File deleted successfully"}
    u = await usage(client, project)
    assert (u["storage_used_bytes"], u["total_files"]) == (0, 0)
    assert s3_client.list_objects_v2(Bucket="uploads", Prefix=out["key"]).get("KeyCount") == 0
    r = await client.request(
        "DELETE",
        "/api/storage/files/",
        json={"file_path": out["file_path"]},
        headers=project.headers,
    )
    assert r.status_code == 404


async def test_cancel_frees_reservation(client: Client, project: ProjectKey) -> None:
    out = (await client.post(UPLOAD, json=body(), headers=project.headers)).json()
    r = await client.delete(f"/api/storage/uploads/{out['upload_id']}/", headers=project.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert (await usage(client, project))["storage_reserved_bytes"] == 0
    other = await make_project(client._transport.app.state)  # type: ignore[attr-defined]
    r = await client.get(f"/api/storage/uploads/{out['upload_id']}/", headers=other.headers)
    assert r.status_code == 404


async def test_sweeper_frees_expired(client: Client, project: ProjectKey, state: Any) -> None:
    out = (await client.post(UPLOAD, json=body(), headers=project.headers)).json()
    await state.db.execute(
        "UPDATE uploads SET expires_at = now() - interval '1 hour',"
        " reserved_until = now() - interval '55 minutes' WHERE id = $1",
        out["upload_id"],
    )
    assert await state.sweeper.sweep() >= 1
    r = await client.get(f"/api/storage/uploads/{out['upload_id']}/", headers=project.headers)
    assert r.json()["status"] == "expired"
    assert (await usage(client, project))["storage_reserved_bytes"] == 0
    # and Redis agrees: the full amount is admissible again
    await client.patch(
        "/api/storage/tenants/user_123/limit/",
        json={"storage_limit_bytes": 11},
        headers=project.headers,
    )
    r = await client.post(UPLOAD, json=body(), headers=project.headers)
    assert r.status_code == 200


async def test_unlimited_tenant_may_omit_the_size(client: Client, project: ProjectKey) -> None:
    r = await client.post(UPLOAD, json=body(size_bytes=None), headers=project.headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["size_bytes"] is None and out["headers"] == {"Content-Type": "application/pdf"}
    q = parse_qs(urlsplit(out["presigned_url"]).query)
    assert q["X-Amz-SignedHeaders"] == ["content-type;host"]
    put = httpx.put(out["presigned_url"], content=b"12345", headers=out["headers"])
    assert put.status_code == 200
    r = await client.post(
        f"/api/storage/uploads/{out['upload_id']}/complete/", headers=project.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["actual_size_bytes"] == 5
    assert (await usage(client, project))["storage_used_bytes"] == 5
