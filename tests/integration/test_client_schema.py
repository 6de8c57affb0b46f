"""The Python client (clients/python) and /schema/openapi.json cannot drift apart: each
of the client's Structs has the fields, types, enums and required set of the schema's
component of the same name, and each operation has its method on both clients."""

from __future__ import annotations

import inspect
import re
from typing import Any

import httpx
import msgspec
import pytest
import upload_gateway_client.types as client_types
from upload_gateway_client import AsyncGatewayClient, GatewayClient

Client = httpx.AsyncClient
# the schema's name of a client Struct, where they differ
RENAMED = {"TenantPage": "Page"}
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
async def schema(client: Client) -> dict[str, Any]:
    doc: dict[str, Any] = (await client.get("/schema/openapi.json")).json()
    return doc


def _structs() -> dict[str, type[msgspec.Struct]]:
    return {
        name: value
        for name, value in vars(client_types).items()
        if isinstance(value, type)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == client_types.__name__
    }


def shape(node: dict[str, Any]) -> Any:
    """A property's type as a comparable value: its JSON types, enum and references
    (constraints aside: the client leaves validating to the gateway)."""
    for key in ("anyOf", "oneOf"):
        if key in node:
            return frozenset(shape(n) for n in node[key])
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return ("ref", {v: k for k, v in RENAMED.items()}.get(name, name))
    if "enum" in node:
        return ("enum", frozenset(node["enum"]))
    if "const" in node:
        return ("enum", frozenset([node["const"]]))
    kind = node.get("type")
    if kind == "array":
        return ("array", shape(node.get("items", {})))
    if kind == "object" and "additionalProperties" in node:
        return ("map", shape(node["additionalProperties"]))
    return kind


def _flat(value: Any) -> Any:
    """{A} == A: a one-variant union is that variant."""
    if isinstance(value, frozenset) and len(value) == 1:
        return next(iter(value))
    return value


def test_every_struct_matches_its_component(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    _, ours = msgspec.json.schema_components(
        list(_structs().values()), ref_template="#/components/schemas/{name}"
    )
    compared = []
    for name, mine in ours.items():
        theirs = components[RENAMED.get(name, name)]
        assert set(mine["properties"]) == set(theirs["properties"]), name
        assert set(mine.get("required", [])) == set(theirs.get("required", [])), name
        for field, node in mine["properties"].items():
            want = _flat(shape(theirs["properties"][field]))
            assert _flat(shape(node)) == want, (name, field)
        compared.append(name)
    # every body the API has, but for the server-only Limit/Request types, has a Struct
    missing = set(components) - {RENAMED.get(n, n) for n in compared}
    assert missing == set(), missing


def _snake(operation_id: str) -> str:
    """``createUpload`` → ``create_upload``, ``ingestS3Events`` → ``ingest_s3_events``."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", operation_id).lower()


def test_every_operation_has_a_method(schema: dict[str, Any]) -> None:
    operation_ids = [
        item[m]["operationId"] for item in schema["paths"].values() for m in METHODS if m in item
    ]
    assert len(operation_ids) == 26
    for operation_id in operation_ids:
        method = _snake(operation_id)
        for cls in (GatewayClient, AsyncGatewayClient):
            assert callable(getattr(cls, method, None)), (cls.__name__, method)
        assert inspect.iscoroutinefunction(getattr(AsyncGatewayClient, method))
