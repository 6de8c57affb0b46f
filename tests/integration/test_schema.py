"""/schema/openapi.json says what the server does: paths as the contract writes them,
every error status with its body, the constraints the server enforces, and OPTIONS
answers that list every method of a path. (The fuzzer's view of the same:
test_schema_fuzz.py.)"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ProjectKey

Client = httpx.AsyncClient
METHODS = ("get", "put", "post", "delete", "patch")

# The contract's routes (shared/API.md) that this gateway serves.
CONTRACT = {
    ("post", "/api/storage/upload/"),
    ("get", "/api/storage/tenants/{tenant_id}/usage/"),
    ("patch", "/api/storage/tenants/{tenant_id}/limit/"),
    ("delete", "/api/storage/files/"),
    ("post", "/api/storage/download/"),
    ("get", "/api/storage/tenants/"),
    ("get", "/api/storage/usage/"),
    ("post", "/api/storage/tenants/{tenant_id}/recalculate/"),
    ("get", "/api/storage/uploads/{upload_id}/"),
    ("delete", "/api/storage/uploads/{upload_id}/"),
    ("post", "/api/storage/uploads/{upload_id}/complete/"),
    ("post", "/api/storage/events/s3/"),
    ("delete", "/api/storage/tenants/{tenant_id}/limit/"),
    ("get", "/api/storage/audit/"),
    ("post", "/api/storage/webhooks/"),
    ("get", "/api/storage/webhooks/"),
    ("get", "/api/storage/webhooks/{webhook_id}/"),
    ("patch", "/api/storage/webhooks/{webhook_id}/"),
    ("delete", "/api/storage/webhooks/{webhook_id}/"),
    ("post", "/api/storage/webhooks/{webhook_id}/test/"),
    ("post", "/api/storage/webhooks/{webhook_id}/rotate-secret/"),
    ("get", "/api/storage/webhooks/{webhook_id}/deliveries/"),
    ("post", "/api/storage/webhooks/{webhook_id}/deliveries/{event_id}/retry/"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}


@pytest.fixture(scope="module")
async def schema(client: Client) -> dict[str, Any]:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, item[method])
        for path, item in schema["paths"].items()
        for method in METHODS
        if method in item
    ]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    found: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return resolve(schema, found)


async def test_paths_are_the_contracts(schema: dict[str, Any]) -> None:
    assert {(m, p) for m, p, _ in operations(schema)} == CONTRACT


async def test_api_routes_document_their_errors(schema: dict[str, Any]) -> None:
    for method, path, op in operations(schema):
        if not path.startswith("/api/"):
            continue
        responses = op["responses"]
        assert "400" not in responses, (method, path)  # bad input is a 422 here
        assert {"401", "503"} <= set(responses), (method, path)
        assert op["security"], (method, path)
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in responses, (method, path)
        if op.get("requestBody"):
            assert {"413", "415"} <= set(responses), (method, path)
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                body = response["content"]["application/json"]["schema"]
                variants = body.get("oneOf", [body])
                for variant in variants:
                    required = resolve(schema, variant)["required"]
                    assert {"detail", "code"} <= set(required), (method, path, status)
            if status in ("429", "503"):
                assert response["headers"]["Retry-After"]["required"] is True


async def test_the_413_bodies_have_their_fields(schema: dict[str, Any]) -> None:
    op = schema["paths"]["/api/storage/upload/"]["post"]
    body = op["responses"]["413"]["content"]["application/json"]["schema"]
    shapes = {
        code: resolve(schema, v)
        for v in body["oneOf"]
        for code in resolve(schema, v)["properties"]["code"]["enum"]
    }
    assert set(shapes) == {
        "quota_exceeded",
        "project_quota_exceeded",
        "file_too_large",
        "request_too_large",
    }
    assert {
        "storage_limit_bytes",
        "storage_used_bytes",
        "storage_reserved_bytes",
        "requested_bytes",
    } <= set(shapes["quota_exceeded"]["required"])
    assert {"max_file_size_bytes", "requested_bytes"} <= set(shapes["file_too_large"]["required"])
    assert "429" in op["responses"] and "409" in op["responses"]


async def test_constraints_the_server_enforces_are_stated(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    upload = components["UploadRequest"]["properties"]
    assert upload["tenant_id"]["pattern"] == "^[A-Za-z0-9._:@-]{1,128}$"
    assert upload["size_bytes"]["anyOf"][0]["minimum"] == 0
    assert "Required when the tenant" in upload["size_bytes"]["anyOf"][0]["description"]
    assert set(upload["method"]["enum"]) == {"PUT", "POST"}
    limit = components["LimitUpdate"]["properties"]["storage_limit_bytes"]
    assert limit["anyOf"][0]["minimum"] == 0
    tenants = schema["paths"]["/api/storage/tenants/"]["get"]
    params = {p["name"]: p["schema"] for p in tenants["parameters"]}
    assert params["min_percentage"]["minimum"] == 0
    assert params["min_percentage"]["type"] == "number"  # no null in a query string
    assert params["limit"]["maximum"] == 1000
    usage = schema["paths"]["/api/storage/tenants/{tenant_id}/usage/"]["get"]
    (tenant,) = usage["parameters"]
    assert tenant["schema"]["pattern"] == "^[A-Za-z0-9._:@-]{1,128}$"
    create = schema["paths"]["/api/storage/upload/"]["post"]
    (key,) = create["parameters"]
    assert key["name"] == "Idempotency-Key" and key["schema"]["maxLength"] == 255


async def test_every_reference_resolves(schema: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert refs
    for ref in refs:
        resolve(schema, {"$ref": ref})  # KeyError if not


async def test_options_lists_every_method(
    client: Client, project: ProjectKey, schema: dict[str, Any]
) -> None:
    for path, item in schema["paths"].items():
        url = path.replace("{tenant_id}", "t1").replace(
            "{upload_id}", "upl_000000000000000000000000"
        )
        r = await client.options(url)
        documented = {m.upper() for m in METHODS if m in item}
        if path == "/api/storage/events/s3/":  # a plain ASGI route: 405, Allow: POST
            assert r.status_code == 405 and r.headers["allow"] == "POST"
            continue
        assert r.status_code == 204, (path, r.text)
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert allowed == documented | {"OPTIONS"}, path
