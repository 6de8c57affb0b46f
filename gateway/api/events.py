"""The S3 event webhook: MinIO webhook bodies, raw Records bodies and SNS envelopes.

MinIO posts one event per request, so this is the gateway's busiest route by far:
every object written to or removed from the bucket is a request here. It is a
plain ASGI handler, not a Litestar ``@post``: request parsing, dependency
injection and response building cost about as much CPU as applying the event
(bench/README.md, "The webhook's HTTP cost"). What Litestar would otherwise
do for it is done here explicitly: the method, the content type, the body size
limit. Errors are still raised as ``GatewayError``s and become ``{detail, code}``
responses in ``gateway.api.errors``; the request-id middleware still logs and
counts every request. ``WEBHOOK_OPERATION`` documents the route in /schema.
"""

from __future__ import annotations

import hmac

import msgspec
from litestar import asgi
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    PathItem,
    RequestBody,
    Schema,
)
from litestar.types import Receive, Scope, Send

from gateway.api.body import check_json_content_type
from gateway.errors import (
    GatewayError,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
    WebhookDisabled,
)
from gateway.events.ingest import EventIngestor
from gateway.storage.s3events import S3EventError

PATH = "/api/storage/events/s3/"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"
    default_detail = "Use POST to deliver S3 event notifications"

    def __init__(self) -> None:
        super().__init__(headers={"Allow": "POST"})


class IngestResponse(msgspec.Struct, kw_only=True, frozen=True):
    records: int
    applied: int
    ignored: int


_JSON_HEADERS = [(b"content-type", b"application/json")]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _authorized(header: str, secret: str) -> bool:
    """MinIO sends ``auth_token`` as given (``Bearer <token>`` or bare); SNS relays
    and curl send ``Bearer <secret>``. Compared in constant time."""
    scheme, _, token = header.partition(" ")
    presented = token.strip() if scheme.lower() == "bearer" else header.strip()
    return hmac.compare_digest(presented.encode(), secret.encode())


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            raise ValidationFailed("The request body was not received")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@asgi(PATH, is_mount=False, copy_scope=False, name="ingestS3Events")
async def ingest_s3_events(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 2xx only once the events are committed, so senders retry otherwise."""
    if scope.get("method") != "POST":
        raise MethodNotAllowed()
    state = scope["litestar_app"].state
    secret: str | None = state.settings.webhook_secret
    if not secret:
        raise WebhookDisabled()
    if not _authorized(_header(scope, b"authorization") or "", secret):
        raise Unauthorized("A valid webhook secret is required (Authorization: Bearer …)")
    check_json_content_type(
        "POST", _header(scope, b"content-type"), _header(scope, b"content-length")
    )
    body = await _read_body(scope, receive, state.settings.max_body_bytes)
    ingestor: EventIngestor = state.ingestor
    try:
        result = await ingestor.ingest(body)
    except S3EventError as exc:
        raise ValidationFailed(f"Not an S3 event notification: {exc}") from None
    payload = msgspec.json.encode(
        IngestResponse(records=result.records, applied=result.applied, ignored=result.ignored)
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def _integer(description: str) -> Schema:
    return Schema(type=OpenAPIType.INTEGER, description=description)


_BODY = Schema(
    type=OpenAPIType.OBJECT,
    description="An S3 event notification: {Records: [...]}, a MinIO webhook body or SNS",
    properties={"Records": Schema(type=OpenAPIType.ARRAY, description="S3 event records")},
)
_RESULT = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        "records": _integer("records in the body"),
        "applied": _integer("records committed (duplicates and stale ones apply as no-ops)"),
        "ignored": _integer("test events, other buckets, other services' records"),
    },
    required=["records", "applied", "ignored"],
)

# /schema entry for the route (Litestar documents only its HTTP route handlers).
WEBHOOK_OPERATION = PathItem(
    post=Operation(
        tags=["events"],
        operation_id="ingestS3Events",
        summary="Ingest S3 event notifications",
        description=(
            'MinIO webhook bodies, raw `{"Records": [...]}` bodies and SNS envelopes. '
            "Authenticated with the webhook secret (`Authorization: Bearer <secret>`), "
            "not a project key. Answers 200 only once the events are committed, so the "
            "sender retries otherwise (503 with Retry-After when a dependency is down)."
        ),
        request_body=RequestBody(
            required=True, content={"application/json": OpenAPIMediaType(schema=_BODY)}
        ),
        responses={
            "200": OpenAPIResponse(
                description="Committed",
                content={"application/json": OpenAPIMediaType(schema=_RESULT)},
            ),
            "401": OpenAPIResponse(description="Missing or wrong webhook secret"),
            "404": OpenAPIResponse(description="The webhook is not enabled"),
            "405": OpenAPIResponse(description="Not a POST"),
            "413": OpenAPIResponse(description="Body over the size limit"),
            "415": OpenAPIResponse(description="Not a JSON body"),
            "422": OpenAPIResponse(description="Not an S3 event notification"),
            "503": OpenAPIResponse(description="A dependency is down; retry later"),
        },
    )
)
