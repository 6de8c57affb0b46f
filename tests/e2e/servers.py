"""Servers for browser tests: an ASGI app on a real port (uvicorn in a thread)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from tests.support.services import free_port


@dataclass
class ThreadedServer:
    base_url: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def serve_in_thread(app: Any, port: int | None = None, timeout: float = 30.0) -> ThreadedServer:
    """Serve ``app`` on 127.0.0.1 (its lifespan included) until ``stop()``."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server on port {port} stopped during start-up")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on port {port} did not start in {timeout}s")
        time.sleep(0.05)
    return ThreadedServer(f"http://127.0.0.1:{port}", port, server, thread)
