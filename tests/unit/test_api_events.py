"""The webhook's POSTs are answered before Litestar's router (``gateway.api.events.
Webhook``, for speed): the same requests must get the same responses, log lines and
metrics as through Litestar's route and the request middleware."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from litestar import Litestar
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from gateway.app import create_app
from gateway.config import Settings
from gateway.errors import DependencyUnavailable
from gateway.events.ingest import EventIngestor
from gateway.ledger import Settlement

PATH = "/api/storage/events/s3/"
SECRET = "fast-path-secret"
TEST_EVENT = b'{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"uploads"}'
RECORD = json.dumps(
    {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventTime": "2026-03-01T12:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": "uploads"},
                    "object": {"key": "prj_a/t/upl_x/f.txt", "size": 5, "sequencer": "0A"},
                },
            }
        ]
    }
).encode()
AUTH = (b"authorization", f"Bearer {SECRET}".encode())
JSON = (b"content-type", b"application/json")
LIMIT = 4096

# name, path, headers, body chunks (none: the client goes away), what the ledger does
CASES: list[tuple[str, str, list[tuple[bytes, bytes]], list[bytes], str]] = [
    ("test event", PATH, [AUTH, JSON], [TEST_EVENT], "ok"),
    ("without the slash", PATH.rstrip("/"), [AUTH, JSON], [TEST_EVENT], "ok"),
    ("a record", PATH, [AUTH, JSON, (b"content-length", b"%d" % len(RECORD))], [RECORD], "ok"),
    ("client's request id", PATH, [AUTH, JSON, (b"x-request-id", b"abc-1")], [RECORD], "ok"),
    ("bare token, text/plain", PATH, [(b"authorization", SECRET.encode())], [TEST_EVENT], "ok"),
    ("in chunks", PATH, [AUTH], [TEST_EVENT[:9], TEST_EVENT[9:]], "ok"),
    ("no secret", PATH, [JSON], [TEST_EVENT], "ok"),
    ("wrong secret", PATH, [(b"authorization", b"Bearer nope"), JSON], [TEST_EVENT], "ok"),
    ("xml", PATH, [AUTH, (b"content-type", b"application/xml")], [b"<x/>"], "ok"),
    ("declared too large", PATH, [AUTH, (b"content-length", b"%d" % (LIMIT + 1))], [], "ok"),
    ("streamed too large", PATH, [AUTH], [b" " * LIMIT, b" "], "ok"),
    ("not JSON", PATH, [AUTH, JSON], [b"{nope"], "ok"),
    ("not S3", PATH, [AUTH, JSON], [b'{"Records": [{"eventName": 5}]}'], "ok"),
    ("client went away", PATH, [AUTH, JSON], [], "ok"),
    ("postgres down", PATH, [AUTH, JSON], [RECORD], "down"),
    ("a bug", PATH, [AUTH, JSON], [RECORD], "bug"),
]


class Batcher:
    mode = "ok"

    async def submit(self, changes: Any) -> Settlement:
        if self.mode == "down":
            raise DependencyUnavailable("postgres", cause="connection refused")
        if self.mode == "bug":
            raise RuntimeError("a bug")
        return Settlement()


@pytest.fixture
def apps() -> Iterator[tuple[Litestar, Litestar, Batcher]]:
    settings = Settings.from_env(
        {
            "GATEWAY_WEBHOOK_SECRET": SECRET,
            "GATEWAY_MAX_BODY_BYTES": str(LIMIT),
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_LOG_LEVEL": "info",
        }
    )
    before = structlog.get_config()
    try:
        fast, routed = create_app(settings), create_app(settings)
        routed.webhook = None  # type: ignore[attr-defined]
        batcher = Batcher()
        for app in (fast, routed):
            app.state.ingestor = EventIngestor(
                batcher,  # type: ignore[arg-type]
                bucket="uploads",
                metrics=app.state.metrics,
            )
        yield fast, routed, batcher
    finally:
        structlog.configure(**before)


async def _call(
    app: Litestar, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[dict[str, Any], Any, list[Any]]:
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "method": "POST",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
    }
    with capture_logs() as logs:
        await app(scope, receive, send)  # type: ignore[arg-type]
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    headers_out = [(k.decode(), v.decode()) for k, v in start["headers"]]
    name, request_id = headers_out[-1]
    assert name == "x-request-id"
    if (b"x-request-id", b"abc-1") not in headers:
        assert len(request_id) == 32 and int(request_id, 16) >= 0
        headers_out[-1] = (name, "<generated>")
    for entry in logs:
        assert entry.pop("duration_ms", 0) >= 0
        if entry.pop("exc_info", None):
            entry["exc_info"] = True
    response = {
        "status": start["status"],
        "headers": headers_out,
        "body": json.loads(b"".join(m["body"] for m in bodies)),
    }
    return response, scope, logs


def _samples(app: Litestar) -> list[str]:
    """The request and event metrics, but for the durations (which bucket a
    request's time falls in is timing, not behaviour): their count stays."""
    text = generate_latest(app.state.metrics.registry).decode()
    prefixes = ("gateway_http_request", "gateway_s3_events_total")
    return [
        line
        for line in text.splitlines()
        if line.startswith(prefixes)
        and "_created" not in line
        and "_sum{" not in line
        and ("_bucket{" not in line or 'le="+Inf"' in line)
    ]


async def test_the_fast_path_answers_as_litestar_would(
    apps: tuple[Litestar, Litestar, Batcher],
) -> None:
    fast, routed, batcher = apps
    for name, path, headers, chunks, mode in CASES:
        batcher.mode = mode
        got, fast_scope, fast_logs = await _call(fast, path, headers, chunks)
        want, routed_scope, routed_logs = await _call(routed, path, headers, chunks)
        assert "litestar_app" not in fast_scope, name  # not routed by Litestar
        assert "litestar_app" in routed_scope, name
        assert got == want, name
        assert fast_logs == routed_logs, name
        assert [e["event"] for e in fast_logs][-1] == "request", name
    assert _samples(fast) == _samples(routed)
    assert any('status="503"' in s for s in _samples(fast))


async def test_other_methods_and_paths_go_through_litestar(
    apps: tuple[Litestar, Litestar, Batcher],
) -> None:
    fast, _, _ = apps
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for method, path in (("GET", PATH), ("PUT", PATH.rstrip("/")), ("POST", PATH + "x")):
        scope = {"type": "http", "method": method, "path": path, "headers": [AUTH]}
        await fast({**scope, "query_string": b"", "root_path": ""}, receive, send)  # type: ignore[arg-type]
    statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
    assert statuses == [405, 405, 404]
