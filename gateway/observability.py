"""Logging (structlog, configured once), request ids, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
import structlog.tracebacks
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.config import Settings

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure_logging(settings: Settings) -> None:
    """JSON lines (with dict tracebacks) off a terminal, a console renderer on one."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    factory: Any = structlog.PrintLoggerFactory(file=sys.stderr)
    if settings.log_format == "json":
        # msgspec renders a request line about 4x faster than json.dumps (1.3 vs 5.8
        # µs), and the line is on every request's path; LogBuffer writes the bytes,
        # those of a loop iteration together.
        serializer: Any = render_json
        stream = getattr(sys.stderr, "buffer", None)
        if stream is not None:
            _log_buffer.use(stream)
            factory = BufferedLoggerFactory(_log_buffer)
        else:  # a text-only stderr (an embedding host): write the line as text
            serializer = render_json_text
        processors += [
            # dict tracebacks, without the frames' local variables: they hold request
            # headers (API keys, the webhook secret) and settings
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(serializer=serializer),
        ]
    else:
        processors += [structlog.dev.ConsoleRenderer(exception_formatter=_console_traceback())]
    wrapper_class = structlog.make_filtering_bound_logger(_LEVELS[settings.log_level])
    structlog.configure(
        processors=processors,
        wrapper_class=wrapper_class,
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    global _request_lines
    _request_lines = None
    if isinstance(factory, BufferedLoggerFactory) and _LEVELS[settings.log_level] <= 20:
        _request_lines = _RequestLines(_log_buffer, processors, wrapper_class, factory)
    # uvicorn's own access log would duplicate our one line per request
    logging.getLogger("uvicorn.access").disabled = True


class LogBuffer:
    """JSON log lines to one stream, written once per event-loop iteration.

    Each write is a system call, and one per request (its log line) measured
    about 15 µs of the server's CPU per request under load (bench_events, the
    webhook at one record per request). Lines logged at info or debug in a
    thread that runs an event loop wait for the end of the loop's current
    iteration (``call_soon``) and are written together: the lines of all the
    requests that finished in it. A warning or an error is written at once,
    after everything before it, and so is a line from a thread without a running
    loop: the order of lines is kept, and a crash loses at most the info lines
    of the iteration it happens in. ``flush_logs`` (at exit, at the app's
    shutdown) writes what waits. A request's line may wait as its parts (the
    event dict, its metrics): ``_write`` counts the request and renders the line.
    """

    def __init__(self) -> None:
        self.stream: Any = None
        self.pending: list[Any] = []  # lines, and requests (_RequestLines.write)
        self.loop: asyncio.AbstractEventLoop | None = None  # where a flush is due
        self.lock = threading.Lock()

    def use(self, stream: Any) -> None:
        self.flush()
        self.stream = stream

    def later(self, line: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.now(line)
            return
        with self.lock:
            self.pending.append(line)
            if self.loop is loop:
                return
            if self.loop is not None:  # due on another loop, which may not run again
                self._write()
                return
            self.loop = loop
        loop.call_soon(self.flush)

    def now(self, line: Any) -> None:
        with self.lock:
            self.pending.append(line)
            self._write()

    def flush(self) -> None:
        with self.lock:
            self._write()

    def forget(self) -> None:
        """In a forked child: what waits is the parent's to write."""
        self.pending = []
        self.loop = None
        self.lock = threading.Lock()

    def _write(self) -> None:
        self.loop = None
        if self.pending:
            items, self.pending = self.pending, []  # taken even if one fails below
            out: list[bytes] = []
            for item in items:
                if type(item) is bytes:
                    out.append(item)
                else:  # a request: its metrics, then its line
                    event, children, elapsed, context, ns, lines = item
                    lines.complete(event, context, ns)
                    children[0].inc()
                    children[1].observe(elapsed)
                    out.append(_json.encode(event))
                    out.append(b"\n")
            self.stream.write(b"".join(out))
            self.stream.flush()


class BufferedLogger:
    """structlog's ``BytesLogger``, through a ``LogBuffer``: info and debug lines
    at the end of the loop's iteration, the others at once."""

    def __init__(self, buffer: LogBuffer) -> None:
        self._buffer = buffer

    def info(self, message: bytes) -> None:
        self._buffer.later(message + b"\n")

    debug = info

    def msg(self, message: bytes) -> None:
        self._buffer.now(message + b"\n")

    log = warn = warning = fatal = failure = err = error = critical = exception = msg


class BufferedLoggerFactory:
    def __init__(self, buffer: LogBuffer) -> None:
        self.buffer = buffer

    def __call__(self, *args: Any) -> BufferedLogger:
        return BufferedLogger(self.buffer)


_log_buffer = LogBuffer()


def flush_logs() -> None:
    """Writes the log lines waiting for the end of a loop iteration."""
    if _log_buffer.stream is not None:
        _log_buffer.flush()


atexit.register(flush_logs)
os.register_at_fork(after_in_child=_log_buffer.forget)


def _console_traceback() -> Any:
    """rich's traceback where rich is installed, without local variables (secrets)."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


def _fallback(obj: Any) -> Any:
    """What structlog's default serializer does with a value JSON has no type for."""
    structlog_repr = getattr(obj, "__structlog__", None)
    return structlog_repr() if callable(structlog_repr) else repr(obj)


_json = msgspec.json.Encoder(enc_hook=_fallback)


def render_json(event: dict[str, Any], **_: Any) -> bytes:
    """The ``JSONRenderer`` serializer: msgspec instead of ``json.dumps``, the same
    JSON values for what log lines carry (tests/unit/test_observability.py), as bytes."""
    return _json.encode(event)


def render_json_text(event: dict[str, Any], **_: Any) -> str:
    return _json.encode(event).decode()


class _RequestLines:
    """The request line as the JSON configuration renders it, written directly.

    One line per request is the busiest log call by far; structlog's chain (the
    event dict, five processors, the logger) takes about 6 µs for it, this about
    2 (rendered at the end of the loop iteration, ``LogBuffer``). It writes what
    that chain writes: the fields, ``event``, the bound context
    variables, ``level``, ``timestamp`` (tests/unit/test_observability.py), and it
    is used only while structlog still has the configuration that
    ``configure_logging`` made; otherwise (``capture_logs``, a reconfiguration)
    the line goes through structlog.
    """

    def __init__(
        self, buffer: LogBuffer, processors: list[Any], wrapper: Any, factory: Any
    ) -> None:
        self.buffer = buffer
        self.processors = processors
        self.chain = tuple(processors)
        self.wrapper = wrapper
        self.factory = factory

    def active(self) -> bool:
        config = structlog.get_config()
        processors = config["processors"]
        return (
            processors is self.processors
            and tuple(processors) == self.chain
            and config["wrapper_class"] is self.wrapper
            and config["logger_factory"] is self.factory
        )

    _second: tuple[int, str] = (0, "")

    def timestamp(self, ns: int) -> str:
        """What ``TimeStamper(fmt="iso", utc=True)`` writes (``datetime.now`` in UTC,
        ``isoformat``, ``Z``) for ``time.time_ns()``, from a per-second prefix: 0.5
        instead of 1.2 µs."""
        second, micro = divmod(ns // 1000, 1_000_000)
        cached, prefix = self._second
        if second != cached:
            prefix = datetime.fromtimestamp(second, tz=UTC).isoformat()[:19]
            self._second = (second, prefix)
        return f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"

    def write(self, event: dict[str, Any], children: Any, elapsed: float) -> None:
        """The line and the request's metrics (``children``: its counter and
        histogram) at the end of the iteration; its time and context now (a
        snapshot: ``copy_context`` is O(1))."""
        self.buffer.later(
            (event, children, elapsed, contextvars.copy_context(), time.time_ns(), self)
        )

    def complete(self, event: dict[str, Any], context: contextvars.Context, ns: int) -> None:
        """What structlog's processors add: ``event``, the context variables it
        binds (``merge_contextvars``), ``level``, ``timestamp``."""
        event["event"] = "request"
        for var, value in context.items():
            name = var.name
            if name.startswith(_PREFIX) and value is not Ellipsis:
                event.setdefault(name[_PREFIX_LEN:], value)
        event["level"] = "info"
        event["timestamp"] = self.timestamp(ns)


_request_lines: _RequestLines | None = None
_PREFIX = structlog.contextvars.STRUCTLOG_KEY_PREFIX
_PREFIX_LEN = len(_PREFIX)


class Metrics:
    """One registry per app, so several apps (tests) can live in one process.

    With ``multiprocess_dir`` (``PROMETHEUS_MULTIPROC_DIR``, which ``gateway serve
    --workers N`` sets for its workers) prometheus_client's multiprocess mode is on:
    each process writes its values to its own files there, and ``render`` (the
    ``/metrics`` of any worker) sums every process's files: one set of counters for
    the server, whichever worker answers the scrape. prometheus_client chooses how
    it stores values when it is imported, from the environment variable, so the
    directory must be in the environment by then (``ValueError`` otherwise).
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        if multiprocess_dir is not None and not prometheus_values.ValueClass._multiprocess:
            raise ValueError(
                "PROMETHEUS_MULTIPROC_DIR must be in the environment before prometheus_client"
                " is imported (it stores values in files only then)"
            )
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_http_request_duration_seconds",
            "HTTP request duration",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.uploads = Counter(
            "gateway_upload_requests_total",
            "Upload URL requests by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.events = Counter(
            "gateway_s3_events_total",
            "S3 event records by result (received, ignored, outside_project)",
            ["result"],
            registry=self.registry,
        )
        self.ledger_batches = Histogram(
            "gateway_ledger_batch_changes",
            "Changes applied per ledger transaction (S3 events coalesced by the batcher)",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The exposition text of ``/metrics``: this registry's, or in multiprocess
        mode the sum over every process's files (a dead worker's counts included, so
        totals never go back)."""
        if self.multiprocess_dir is None:
            return bytes(generate_latest(self.registry))
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(merged))


class RequestRecorder:
    """What every request gets: a request id bound for its log lines, one log line,
    and its count and duration in the metrics. Used by ``RequestContextMiddleware``
    and by the routes answered before Litestar's router (the webhook).

    It runs on every request, so it is kept lean: label children are cached, the
    request id is 32 hex characters from ``os.urandom`` (a client's ``X-Request-ID``
    is kept when it is printable and at most 128 characters).
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.log = structlog.get_logger("gateway.request")
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def begin(self, headers: Any) -> bytes:
        """Binds the request's id (the client's, or a new one) and returns it, for
        the ``X-Request-ID`` response header."""
        request_id = ""
        for name, value in headers:
            if name == b"x-request-id":
                raw = value.decode("latin-1")
                if 0 < len(raw) <= 128 and raw.isprintable():
                    request_id = raw
                break
        if not request_id:
            request_id = os.urandom(16).hex()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        return request_id.encode("latin-1")

    def end(self, method: str, path: Any, route: str, status: int, elapsed: float) -> None:
        """Counts the request, logs its line (not for /healthz and /metrics), and
        unbinds its id. With the JSON log configuration the line is rendered and
        the request counted at the end of the event loop's iteration, with the
        other requests that finished in it (``LogBuffer``): in one tight loop
        that measured 10 µs of CPU per request less than doing it here
        (bench_events, webhook at 1 record/request; the same in-process)."""
        children = self._children.get((method, route, status))
        if children is None:
            children = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.latency.labels(method, route),
            )
            self._children[(method, route, status)] = children
        lines = _request_lines
        if route in ("/healthz", "/metrics"):  # counted, not logged
            children[0].inc()
            children[1].observe(elapsed)
        elif lines is not None and lines.active():
            lines.write(
                {
                    "method": method,
                    "path": path,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
                children,
                elapsed,
            )
        else:
            children[0].inc()
            children[1].observe(elapsed)
            self.log.info(
                "request",
                method=method,
                path=path,
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
        structlog.contextvars.clear_contextvars()


class RequestContextMiddleware:
    """The request recorder around every route Litestar routes to: binds a request
    id for every log line (and answers it as ``X-Request-ID``), logs one line per
    request, counts it."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.recorder = RequestRecorder(metrics)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (b"x-request-id", self.recorder.begin(scope["headers"]))
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.recorder.end(
                scope.get("method", ""),
                scope.get("path"),
                scope.get("path_template") or "unmatched",
                status,
                time.perf_counter() - started,
            )
