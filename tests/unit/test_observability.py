"""The request middleware (request ids, one log line, metrics) and the JSON renderer."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from gateway.observability import Metrics, RequestContextMiddleware, RequestRecorder, render_json


class Custom:
    def __repr__(self) -> str:
        return "<Custom thing>"


class WithStructlog:
    def __structlog__(self) -> str:
        return "shown by __structlog__"


def _library(event: dict[str, Any]) -> Any:
    """What structlog's own JSONRenderer writes, parsed."""
    return json.loads(structlog.processors.JSONRenderer()(None, "info", dict(event)))


def test_render_json_writes_what_structlogs_renderer_writes() -> None:
    try:
        raise ValueError("boom ü")
    except ValueError:
        tb = dict(structlog.processors.dict_tracebacks(None, "error", {"exc_info": True}))
    events: list[dict[str, Any]] = [
        {"event": "request", "method": "POST", "status": 200, "duration_ms": 1.23},
        {"event": 'résumé & 日本語 \u2028 \x00 "quoted"', "n": -(2**62), "ok": True, "v": None},
        {"event": "nested", "a": [1, 2.5, {"b": ["c", None]}], "empty": {}, "t": (1, 2)},
        {"event": "fallbacks", "obj": Custom(), "own": WithStructlog()},
        {"event": "floats", "small": 1e-7, "big": 1.5e300, "neg": -0.0},
        tb,
    ]
    for event in events:
        ours = render_json(dict(event))
        assert isinstance(ours, bytes)
        assert json.loads(ours) == _library(event)
    assert json.loads(render_json({"obj": Custom()}))["obj"] == "<Custom thing>"


async def _call(
    mw: RequestContextMiddleware, headers: list[tuple[bytes, bytes]], status: int = 201
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    seen_ids: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen_ids.append(structlog.contextvars.get_contextvars()["request_id"])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    mw.app = app
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/storage/upload/",
        "path_template": "/api/storage/upload/",
        "headers": headers,
    }
    await mw(scope, receive, send)
    response_id = dict(sent[0]["headers"])[b"x-request-id"].decode()
    assert seen_ids == [response_id]  # bound for the handler's log lines too
    return sent


async def test_request_id_log_line_and_metrics() -> None:
    metrics = Metrics()
    before = structlog.get_config()  # other tests' apps may log at "warning"
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with capture_logs() as logs:
            mw = RequestContextMiddleware(None, metrics)
            first = await _call(mw, [(b"content-type", b"application/json")])
            given = await _call(mw, [(b"x-request-id", b"abc-123")])
            bad = await _call(mw, [(b"x-request-id", b"bad\x01id")], status=503)
    finally:
        structlog.configure(**before)
    ids = [dict(m[0]["headers"])[b"x-request-id"].decode() for m in (first, given, bad)]
    assert len(ids[0]) == 32 and int(ids[0], 16) >= 0
    assert ids[1] == "abc-123"
    assert ids[2] != "bad\x01id" and len(ids[2]) == 32 and ids[2] != ids[0]
    assert [(entry["event"], entry["status"], entry["route"]) for entry in logs] == [
        ("request", 201, "/api/storage/upload/"),
        ("request", 201, "/api/storage/upload/"),
        ("request", 503, "/api/storage/upload/"),
    ]
    assert all(entry["method"] == "POST" and entry["duration_ms"] >= 0 for entry in logs)
    count = metrics.registry.get_sample_value
    labels = {"method": "POST", "route": "/api/storage/upload/"}
    assert count("gateway_http_requests_total", {**labels, "status": "201"}) == 2
    assert count("gateway_http_requests_total", {**labels, "status": "503"}) == 1
    assert count("gateway_http_request_duration_seconds_count", labels) == 3
    assert structlog.contextvars.get_contextvars() == {}


def test_json_lines_on_a_text_only_stderr(monkeypatch: Any) -> None:
    import io

    from gateway.config import Settings
    from gateway.observability import configure_logging

    stream = io.StringIO()  # no .buffer: the bytes logger can't be used
    monkeypatch.setattr("sys.stderr", stream)
    before = structlog.get_config()
    try:
        configure_logging(Settings(log_format="json", log_level="info"))
        structlog.get_logger("test").info("hello", name="résumé")
    finally:
        structlog.configure(**before)
    line = json.loads(stream.getvalue())
    assert (line["event"], line["name"], line["level"]) == ("hello", "résumé", "info")
    assert line["timestamp"].endswith("Z")


def _fail_with_a_secret_in_scope(secret: str) -> None:
    headers = [(b"authorization", f"Bearer {secret}".encode())]  # noqa: F841
    raise RuntimeError("boom")


def test_error_lines_carry_the_traceback_but_no_local_variables(monkeypatch: Any) -> None:
    """Frame locals hold request headers (API keys, the webhook secret) and settings."""
    import io

    from gateway.config import Settings
    from gateway.observability import configure_logging

    secret = "sk_live_" + os.urandom(8).hex()  # in a local variable, not in the source
    for log_format in ("json", "console"):
        stream = io.StringIO()
        monkeypatch.setattr("sys.stderr", stream)
        before = structlog.get_config()
        try:
            configure_logging(Settings(log_format=log_format, log_level="info"))
            try:
                _fail_with_a_secret_in_scope(secret)
            except RuntimeError:
                structlog.get_logger("test").exception("unhandled error")
        finally:
            structlog.configure(**before)
        out = stream.getvalue()
        assert "_fail_with_a_secret_in_scope" in out  # the traceback is there
        assert secret not in out, log_format
        if log_format == "json":
            frames = json.loads(out)["exception"][0]["frames"]
            assert frames and all("locals" not in f for f in frames)


def test_the_request_line_is_written_as_structlog_would(monkeypatch: Any) -> None:
    """The JSON request line skips structlog's chain (gateway.observability.
    _RequestLines): the same bytes, but for the time, and structlog again as soon as
    its configuration changes (capture_logs)."""
    import io
    import re

    from gateway.config import Settings
    from gateway.observability import configure_logging

    class Stderr(io.StringIO):
        buffer = io.BytesIO()

    stream = Stderr()
    monkeypatch.setattr("sys.stderr", stream)
    before = structlog.get_config()
    recorder = RequestRecorder(Metrics())
    try:
        configure_logging(Settings(log_format="json", log_level="info"))
        structlog.contextvars.bind_contextvars(request_id="r-1", tenant="ü & \u2028")
        recorder.end("POST", "/p", "/p", 201, 0.0012345)
        structlog.contextvars.bind_contextvars(request_id="r-1", tenant="ü & \u2028")
        structlog.get_logger("gateway.request").info(
            "request", method="POST", path="/p", route="/p", status=201, duration_ms=1.23
        )
        with capture_logs() as logs:
            structlog.contextvars.bind_contextvars(request_id="r-2")
            recorder.end("GET", "/q", "/q", 200, 0.001)
    finally:
        structlog.configure(**before)
        structlog.contextvars.clear_contextvars()
    direct, chained = Stderr.buffer.getvalue().splitlines()
    stamp = re.compile(rb'"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"')
    assert stamp.search(direct) and stamp.search(chained)
    assert stamp.sub(b"T", direct) == stamp.sub(b"T", chained)
    assert [(e["event"], e["path"]) for e in logs] == [("request", "/q")]  # not in the buffer


def test_the_request_lines_timestamp_is_time_stampers(monkeypatch: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from gateway.observability import _RequestLines

    lines = _RequestLines.__new__(_RequestLines)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for ns in (1_796_000_000_123_456_789, 1_796_000_000_000_000_999, 1_796_000_001_000_001_000):
        monkeypatch.setattr("time.time_ns", lambda ns=ns: ns)
        want = (epoch + timedelta(microseconds=ns // 1000)).isoformat().replace("+00:00", "Z")
        assert lines.timestamp(time.time_ns()) == want


async def test_log_lines_wait_for_the_end_of_the_loop_iteration_in_order() -> None:
    """Info lines in a loop: written together once the iteration ends; a warning
    at once, after what waits; without a running loop, at once."""
    import asyncio
    import io

    from gateway.observability import BufferedLogger, LogBuffer

    buffer = LogBuffer()
    stream = io.BytesIO()
    buffer.use(stream)
    log = BufferedLogger(buffer)
    log.info(b"one")
    log.info(b"two")
    assert stream.getvalue() == b""
    await asyncio.sleep(0)
    assert stream.getvalue() == b"one\ntwo\n"
    log.info(b"three")
    log.warning(b"four")
    assert stream.getvalue() == b"one\ntwo\nthree\nfour\n"
    log.info(b"five")
    await asyncio.to_thread(log.info, b"six")  # no loop in that thread: at once
    assert stream.getvalue().endswith(b"four\nfive\nsix\n")
    log.info(b"seven")
    buffer.flush()
    assert stream.getvalue().endswith(b"six\nseven\n")
    await asyncio.sleep(0)  # the flush that was due finds nothing
    assert stream.getvalue().count(b"seven") == 1


async def test_request_lines_and_metrics_at_the_end_of_the_iteration(monkeypatch: Any) -> None:
    import asyncio
    import io

    from gateway.config import Settings
    from gateway.observability import configure_logging, flush_logs

    class Stderr(io.StringIO):
        buffer = io.BytesIO()

    monkeypatch.setattr("sys.stderr", Stderr())
    before = structlog.get_config()
    metrics = Metrics()
    recorder = RequestRecorder(metrics)
    count = metrics.registry.get_sample_value
    labels = {"method": "POST", "route": "/p", "status": "200"}
    try:
        configure_logging(Settings(log_format="json", log_level="info"))
        recorder.begin([(b"x-request-id", b"r-9")])
        recorder.end("POST", "/p", "/p", 200, 0.002)
        recorder.end("GET", "/healthz", "/healthz", 200, 0.001)  # counted at once, no line
        assert count("gateway_http_requests_total", labels) == 0  # the child exists
        assert count(
            "gateway_http_requests_total", {**labels, "route": "/healthz", "method": "GET"}
        )
        assert Stderr.buffer.getvalue() == b""
        await asyncio.sleep(0)
        assert count("gateway_http_requests_total", labels) == 1
        line = json.loads(Stderr.buffer.getvalue())
        assert (line["route"], line["request_id"], line["status"]) == ("/p", "r-9", 200)
    finally:
        flush_logs()
        structlog.configure(**before)


def test_metrics_render_the_registry_of_their_app() -> None:
    m = Metrics()
    m.uploads.labels("admitted").inc(3)
    assert 'gateway_upload_requests_total{outcome="admitted"} 3.0' in m.render().decode()
    assert 'outcome="admitted"' not in Metrics().render().decode()  # another app's own


def test_multiprocess_metrics_need_the_directory_in_the_environment_first(
    tmp_path: Path,
) -> None:
    # this process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR: its
    # values live in memory, and no file would ever be written for /metrics to sum
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(multiprocess_dir=str(tmp_path))


def test_serve_empties_a_given_metrics_directory_and_removes_its_own(tmp_path: Path) -> None:
    from gateway.cli import metrics_directory

    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"old run")
    (given / "keep.txt").write_text("not ours")
    with metrics_directory(str(given)) as directory:
        assert directory == str(given)
        assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]
    assert given.is_dir()
    with metrics_directory(None) as directory:
        made = Path(directory)
        assert made.is_dir() and not any(made.iterdir())
    assert not made.exists()
