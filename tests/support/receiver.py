"""A real webhook receiver for tests: an HTTP server on loopback, in a thread.

It records every request (headers and body) and answers by its ``mode``: ``ok``
(200), ``fail`` (500), ``redirect`` (307 to another path of its own), ``hang`` (no
answer until released) or, after ``stop()``, nothing at all (connection refused).
``verified()`` checks every recorded request's signature with the
``standardwebhooks`` library, as a receiver would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


class _Server(ThreadingHTTPServer):
    # a deliverer opens up to 64 connections at once: the default backlog (5) would
    # drop some of them, and the client would see a time-out the test did not ask for
    request_queue_size = 256
    allow_reuse_address = True


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.mode = "ok"
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.answer_after: Callable[[Received], str] | None = None  # per-request mode
        self.delay = 0.0  # seconds each answer waits (so that requests overlap)
        self.in_flight = 0
        self.max_in_flight = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver.lock:
                    receiver.requests.append(got)
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    self._answer(got)
                finally:
                    with receiver.lock:
                        receiver.in_flight -= 1

            def _answer(self, got: Received) -> None:
                if receiver.delay:
                    time.sleep(receiver.delay)
                mode = receiver.mode
                if receiver.answer_after is not None:
                    mode = receiver.answer_after(got)
                if mode == "hang":
                    receiver.release.wait(30)
                    mode = "ok"
                status = {"ok": 200, "fail": 500, "redirect": 307, "accepted": 202}[mode]
                out = b"{}"
                self.send_response(status)
                if status == 307:
                    self.send_header("location", "/elsewhere")
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Closes the listening socket: from now on connections are refused."""
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restart(self) -> None:
        """Listens again on the same port."""
        self.release.clear()
        self.start()

    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self._port}{path}"

    # -- what arrived ------------------------------------------------------------------

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def ids(self) -> Counter[str]:
        return Counter(r.webhook_id for r in self.received())

    def verified(self, secret: str, path: str | None = None) -> list[dict[str, Any]]:
        """The bodies of the requests (to ``path``, if given), each verified with
        the standardwebhooks library; raises on a bad signature."""
        wh = Webhook(secret)
        out: list[dict[str, Any]] = []
        for r in self.received():
            if path is not None and r.path != path:
                continue
            body: dict[str, Any] = wh.verify(r.body, r.headers)
            out.append(body)
        return out

    async def wait_for(self, count: int, timeout: float = 20.0, path: str | None = None) -> None:
        """Until ``count`` requests (to ``path``) have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.received() if path is None or r.path == path]
            if len(got) >= count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{count} webhook requests expected, got {len(self.received())}")

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
