"""Every validation failure answers a sentence that names the field as the client
sent it ({"detail", "code": "validation_error", "errors": [{field, source, message}]})."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ProjectKey

Client = httpx.AsyncClient
LIMIT = "/api/storage/tenants/u1/limit/"
UPLOAD = "/api/storage/upload/"


def json_headers(project: ProjectKey) -> dict[str, str]:
    return {**project.headers, "Content-Type": "application/json"}


def refused(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == "validation_error"
    assert body["detail"][0].isupper() and body["detail"].endswith((".", ")")), body
    assert body["errors"] and body["detail"].startswith(body["errors"][0]["message"])
    return body


@pytest.mark.parametrize(
    ("content", "field", "detail"),
    [
        (b"", "body", "A JSON request body is required."),
        (b"{", "body", "The request body is not valid JSON: it ends too soon."),
        (b"nope", "body", "The request body is not valid JSON"),
        (b"[]", "body", "The request body must be a JSON object, not an array."),
        (b"{}", "storage_limit_bytes", "The field 'storage_limit_bytes' is required."),
        (
            b'{"storage_limit_bytes": "5"}',
            "storage_limit_bytes",
            "The field 'storage_limit_bytes' must be an integer or null, not a string.",
        ),
        (
            b'{"storage_limit_bytes": 1.5}',
            "storage_limit_bytes",
            "The field 'storage_limit_bytes' must be an integer or null, not a number.",
        ),
        (
            b'{"storage_limit_bytes": -1}',
            "storage_limit_bytes",
            "The field 'storage_limit_bytes' must be at least 0.",
        ),
        (
            b'{"storage_limit_bytes": 1, "plan": "' + b"p" * 65 + b'"}',
            "plan",
            "The field 'plan' must be at most 64 characters long.",
        ),
    ],
)
async def test_body_failures(
    client: Client, project: ProjectKey, content: bytes, field: str, detail: str
) -> None:
    body = refused(await client.patch(LIMIT, content=content, headers=json_headers(project)))
    assert body["detail"].startswith(detail)
    assert body["errors"][0]["field"] == field and body["errors"][0]["source"] == "body"


async def test_no_body_at_all_is_a_sentence(client: Client, project: ProjectKey) -> None:
    # what the issue saw: {"detail": "data: 'data'"}
    body = refused(await client.patch(LIMIT, headers=project.headers))
    assert body["detail"] == "A JSON request body is required."


async def test_a_whole_number_may_be_written_as_a_float(
    client: Client, project: ProjectKey
) -> None:
    r = await client.patch(LIMIT, json={"storage_limit_bytes": 224.0}, headers=project.headers)
    assert r.status_code == 200 and r.json()["storage_limit_bytes"] == 224


@pytest.mark.parametrize(
    ("payload", "field", "detail"),
    [
        (
            {"tenant_id": "t", "filename": "a.txt", "method": "GET"},
            "method",
            "The field 'method' must be one of PUT, POST, not 'GET'.",
        ),
        (
            {"tenant_id": "a b", "filename": "a.txt"},
            "tenant_id",
            "The field 'tenant_id' must be 1 to 128 characters of A-Z, a-z, 0-9 and . _ : @ -.",
        ),
        (
            {"tenant_id": "t", "filename": ".."},
            "filename",
            "The field 'filename' must be a file name without /, \\ or control characters,"
            " and not . or ...",
        ),
        ({"filename": "a.txt"}, "tenant_id", "The field 'tenant_id' is required."),
        (
            {"tenant_id": "t", "filename": "a.txt", "size_bytes": True},
            "size_bytes",
            "The field 'size_bytes' must be an integer or null, not a boolean.",
        ),
        (
            {"tenant_id": "t", "filename": "a.txt", "checksum_sha256": "abc"},
            "checksum_sha256",
            "The field 'checksum_sha256' must be the file's SHA-256 in base64",
        ),
    ],
)
async def test_upload_body_failures(
    client: Client, project: ProjectKey, payload: dict[str, Any], field: str, detail: str
) -> None:
    body = refused(await client.post(UPLOAD, json=payload, headers=project.headers))
    assert body["detail"].startswith(detail), body
    assert body["errors"][0]["field"] == field


@pytest.mark.parametrize(
    ("query", "field", "detail"),
    [
        ("limit=abc", "limit", "The query parameter 'limit' must be an integer."),
        ("limit=5000", "limit", "The query parameter 'limit' must be at most 1000."),
        ("offset=-1", "offset", "The query parameter 'offset' must be at least 0."),
        (
            "order=size",
            "order",
            "The query parameter 'order' must be one of tenant_id, -tenant_id,",
        ),
        (
            "min_percentage=-5",
            "min_percentage",
            "The query parameter 'min_percentage' must be at least 0.",
        ),
        (
            "over_limit=null",
            "over_limit",
            "The query parameter 'over_limit' must be true or false.",
        ),
    ],
)
async def test_query_failures(
    client: Client, project: ProjectKey, query: str, field: str, detail: str
) -> None:
    body = refused(await client.get(f"/api/storage/tenants/?{query}", headers=project.headers))
    assert body["detail"].startswith(detail), body
    assert body["errors"][0] == {
        "field": field,
        "source": "query",
        "message": body["errors"][0]["message"],
    }


async def test_several_failures_are_all_listed(client: Client, project: ProjectKey) -> None:
    r = await client.get("/api/storage/tenants/?limit=0&offset=-1", headers=project.headers)
    body = refused(r)
    assert {e["field"] for e in body["errors"]} == {"limit", "offset"}
    assert "(1 more in errors)" in body["detail"]


async def test_path_and_header_failures(client: Client, project: ProjectKey) -> None:
    body = refused(await client.get("/api/storage/uploads/nope/", headers=project.headers))
    assert body["detail"] == (
        "The path parameter 'upload_id' must be an upload id: upl_ and 24 hex digits."
    )
    body = refused(await client.get("/api/storage/tenants/a%20b/usage/", headers=project.headers))
    assert body["errors"][0]["field"] == "tenant_id"
    r = await client.post(
        UPLOAD,
        json={"tenant_id": "t", "filename": "a.txt"},
        headers={**project.headers, "Idempotency-Key": " padded "},
    )
    body = refused(r)
    assert body["errors"][0] == {
        "field": "Idempotency-Key",
        "source": "header",
        "message": "The Idempotency-Key header must be visible ASCII characters, with spaces"
        " only inside.",
    }


async def test_method_not_allowed_names_the_methods(client: Client) -> None:
    r = await client.put(UPLOAD)
    assert r.status_code == 405
    assert r.json()["detail"] == "PUT is not allowed here; use OPTIONS, POST"
