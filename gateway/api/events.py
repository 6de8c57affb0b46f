"""The S3 event webhook: MinIO webhook bodies, raw Records bodies and SNS envelopes.

MinIO posts one event per request, so this is the gateway's busiest route by far:
every object written to or removed from the bucket is a request here. It is a
plain ASGI handler, not a Litestar ``@post``: request parsing, dependency
injection and response building cost about as much CPU as applying the event
(bench/README.md, "The webhook's HTTP cost"). What Litestar would otherwise
do for it is done here explicitly: the method, the content type, the body size
limit. Its POSTs do not even go through Litestar's router: ``Webhook`` answers
them first (``gateway.app.GatewayApp``), doing the request middleware's job
itself (request id, log line, metrics) and rendering errors as the exception
handlers of ``gateway.api.errors`` do (``{detail, code}``). Litestar's route
(``ingest_s3_events``) answers the rest. ``WEBHOOK_OPERATION`` documents the
route in /schema.
"""

from __future__ import annotations

import hmac
import time

import msgspec
from litestar import asgi
from litestar.datastructures import State
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)
from litestar.types import Receive, Scope, Send

from gateway.api.body import check_json_content_type
from gateway.api.errors import gateway_error_parts, internal_error_body
from gateway.api.openapi import WEBHOOK_SECRET
from gateway.config import Settings
from gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
    WebhookDisabled,
)
from gateway.events.ingest import EventIngestor
from gateway.observability import RequestRecorder
from gateway.storage.s3events import S3EventError

PATH = "/api/storage/events/s3/"


class IngestResponse(msgspec.Struct, kw_only=True, frozen=True):
    records: int
    applied: int
    ignored: int


_JSON_HEADERS = [(b"content-type", b"application/json")]
_encode = msgspec.json.Encoder().encode


def _authorized(header: str, secret: str) -> bool:
    """MinIO sends ``auth_token`` as given (``Bearer <token>`` or bare); SNS relays
    and curl send ``Bearer <secret>``. Compared in constant time."""
    scheme, _, token = header.partition(" ")
    presented = token.strip() if scheme.lower() == "bearer" else header.strip()
    return hmac.compare_digest(presented.encode(), secret.encode())


async def _read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
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


async def _ingest(
    scope: Scope, receive: Receive, settings: Settings, ingestor: EventIngestor
) -> bytes:
    """A POST's checks (secret, auth, content type, body limit), then the ingest:
    the response body. Raises ``GatewayError``s."""
    secret = settings.webhook_secret
    if not secret:
        raise WebhookDisabled()
    authorization: str | None = None
    content_type: str | None = None
    content_length: str | None = None
    for key, value in scope["headers"]:  # the first of each, in one pass
        if key == b"authorization":
            if authorization is None:
                authorization = bytes(value).decode("latin-1")
        elif key == b"content-type":
            if content_type is None:
                content_type = bytes(value).decode("latin-1")
        elif key == b"content-length" and content_length is None:
            content_length = bytes(value).decode("latin-1")
    if not _authorized(authorization or "", secret):
        raise Unauthorized("A valid webhook secret is required (Authorization: Bearer …)")
    check_json_content_type("POST", content_type, content_length)
    body = await _read_body(receive, content_length, settings.max_body_bytes)
    try:
        result = await ingestor.ingest(body)
    except S3EventError as exc:
        raise ValidationFailed(f"Not an S3 event notification: {exc}") from None
    return _encode(
        IngestResponse(records=result.records, applied=result.applied, ignored=result.ignored)
    )


@asgi(PATH, is_mount=False, copy_scope=False, name="ingestS3Events")
async def ingest_s3_events(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 2xx only once the events are committed, so senders retry otherwise.

    The POSTs of an app with a webhook secret are answered before Litestar's
    router (``Webhook``); Litestar routes the rest here: other methods (405), and
    any POST when the webhook is off (404)."""
    if scope.get("method") != "POST":
        raise MethodNotAllowed()
    state = scope["litestar_app"].state
    payload = await _ingest(scope, receive, state.settings, state.ingestor)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


# What Litestar makes of both spellings: its scope path and route template.
_ROUTE = PATH.rstrip("/")
FAST_PATHS = frozenset({PATH, _ROUTE})


class Webhook:
    """``POST /api/storage/events/s3/`` answered before Litestar's router.

    MinIO posts one event per request, and Litestar's routing, its exception
    middleware and the request middleware's send wrapper cost about as much CPU
    as the event's own share of the work (bench/README.md). This does the same
    job without them: the request recorder (request id bound and answered as
    ``X-Request-ID``, one log line, the metrics, under the route Litestar would
    give it), the checks of ``_ingest``, and errors as the exception handlers
    render them (``{detail, code}`` JSON; unexpected errors logged, 500).
    ``GatewayApp`` sends it the POSTs to both spellings of the path when the
    webhook secret is set; everything else goes through Litestar as before.
    """

    def __init__(self, state: State, recorder: RequestRecorder) -> None:
        self.state = state
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = self.recorder.begin(scope["headers"])
        started = time.perf_counter()
        status = 500
        try:
            headers: list[tuple[bytes, bytes]] = []
            try:
                state = self.state
                payload = await _ingest(scope, receive, state.settings, state.ingestor)
                status = 200
            except GatewayError as exc:
                status, body, extra = gateway_error_parts(exc)
                payload = _encode(body)
                headers = [
                    (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()
                ]
            except Exception as exc:
                payload = _encode(internal_error_body(exc))
            headers += [
                *_JSON_HEADERS,
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", request_id),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload, "more_body": False})
        finally:
            self.recorder.end("POST", _ROUTE, _ROUTE, status, time.perf_counter() - started)


def _json(name: str) -> dict[str, OpenAPIMediaType]:
    return {"application/json": OpenAPIMediaType(schema=Reference(f"#/components/schemas/{name}"))}


def _str(description: str | None = None) -> Schema:
    return Schema(type=OpenAPIType.STRING, description=description)


def _nullable(schema: Schema) -> Schema:
    return Schema(one_of=[schema, Schema(type=OpenAPIType.NULL)])


# What gateway/storage/s3events.py reads of a record (everything else is skipped).
_RECORD = Schema(
    type=OpenAPIType.OBJECT,
    title="S3 event record",
    description=(
        "An S3 event record. Records of other services (`eventSource` not ending in"
        " `:s3`) and event types that change no bytes are acknowledged and ignored;"
        " an `ObjectCreated:*` or `ObjectRemoved:*` record needs `eventTime` and `s3`"
        " with the bucket's name and the object's key."
    ),
    properties={
        "eventSource": _str("`aws:s3`, `minio:s3`, …"),
        "eventName": _str("`ObjectCreated:Put`, `s3:ObjectRemoved:Delete`, …"),
        "eventTime": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.DATE_TIME),
        "s3": Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "bucket": Schema(
                    type=OpenAPIType.OBJECT,
                    properties={"name": Schema(type=OpenAPIType.STRING, min_length=1)},
                ),
                "object": Schema(
                    type=OpenAPIType.OBJECT,
                    properties={
                        "key": Schema(
                            type=OpenAPIType.STRING,
                            min_length=1,
                            description="percent-encoded, as S3 sends it",
                        ),
                        "size": _nullable(Schema(type=OpenAPIType.INTEGER, minimum=0)),
                        "eTag": _nullable(_str()),
                        "versionId": _nullable(_str()),
                        "sequencer": _nullable(_str()),
                    },
                ),
            },
        ),
    },
)
_NOTIFICATION = Schema(
    type=OpenAPIType.OBJECT,
    title="S3 notification",
    description="`{Records: [...]}` (AWS, or an SQS/SNS raw delivery), or MinIO's webhook"
    " body (`EventName`, `Key` and `Records`; only `Records` is read).",
    required=["Records"],
    properties={
        "Records": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(
                any_of=[
                    _RECORD,
                    Schema(
                        type=OpenAPIType.OBJECT,
                        title="Another record",
                        description="another service's, or an event type that changes no"
                        " bytes: acknowledged and ignored, whatever its fields",
                    ),
                ]
            ),
        )
    },
)
_TEST_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    title="s3:TestEvent",
    description="Sent by S3 when a notification configuration is saved; acknowledged.",
    required=["Event"],
    properties={"Event": Schema(const="s3:TestEvent")},
)
_SNS = Schema(
    type=OpenAPIType.OBJECT,
    title="SNS envelope",
    description=(
        "`Notification`: `Message` is one of the other shapes, as a JSON string."
        " `SubscriptionConfirmation` / `UnsubscribeConfirmation`: confirmed only with"
        " GATEWAY_SNS_AUTO_CONFIRM."
    ),
    required=["Type"],
    properties={
        "Type": Schema(
            enum=["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
        ),
        "Message": _str("a JSON string (Notification)"),
        "TopicArn": _str(),
        "SubscribeURL": _str(),
        "Token": _str(),
    },
)
_BODY = Schema(
    description="An S3 event notification, as S3, MinIO or SNS post it",
    any_of=[_NOTIFICATION, _TEST_EVENT, _SNS],
)

# /schema entry for the route (Litestar documents only its HTTP route handlers);
# gateway.api.openapi.finish adds it, with Retry-After on the 503.
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
        security=[{WEBHOOK_SECRET: []}],
        request_body=RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(schema=_BODY),
                # SNS posts its JSON envelopes as text/plain
                "text/plain": OpenAPIMediaType(schema=_BODY),
            },
        ),
        responses={
            "200": OpenAPIResponse(description="Committed", content=_json("IngestResponse")),
            "401": OpenAPIResponse(
                description="Missing or wrong webhook secret (`invalid_api_key`)",
                content=_json("ErrorBody"),
            ),
            "404": OpenAPIResponse(
                description="The webhook is not enabled (`webhook_disabled`: set"
                " GATEWAY_WEBHOOK_SECRET)",
                content=_json("ErrorBody"),
            ),
            "413": OpenAPIResponse(
                description="Body over the size limit (`request_too_large`)",
                content=_json("RequestTooLargeBody"),
            ),
            "415": OpenAPIResponse(
                description="Not a JSON body (`unsupported_media_type`)",
                content=_json("ErrorBody"),
            ),
            "422": OpenAPIResponse(
                description="Not an S3 event notification (`validation_error`)",
                content=_json("ValidationErrorBody"),
            ),
            "503": OpenAPIResponse(
                description="A dependency is down (`dependency_unavailable`); retry later",
                content=_json("DependencyUnavailableBody"),
            ),
        },
    )
)
