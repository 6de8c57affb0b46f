"""Fault injection for tests: a TCP proxy with switchable faults, a private Redis, and
terminating a database's Postgres backends.

* ``FaultProxy`` forwards 127.0.0.1:<port> to a target. Its mode can be switched at
  any moment from the test (sync or async: the proxy runs on an event loop of its own
  in a background thread):

  - ``pass``: forward both ways;
  - ``hang``: a peer that accepts and never answers. New connections are accepted;
    nothing is forwarded in either direction on any connection. Bytes already read
    are held, not dropped: when the mode goes back to ``pass`` they are delivered,
    as after a network stall (TCP retransmits what the sender's kernel holds) or a
    server resumed after SIGSTOP (its receive buffer is still there). A connection
    whose client gave up meanwhile is closed once its held bytes are delivered;
  - ``cut``: every open connection is reset at once; new ones are accepted and reset.

* ``PrivateRedis``: a ``redis-server`` of the test's own on a free port (no
  persistence), which the test may SIGKILL and restart empty on the same port. It
  only ever signals the process it started.

* ``terminate_backends``: ``pg_terminate_backend`` on every backend connected to a
  database, except the caller's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import asyncpg

from tests.support.services import free_port

Mode = Literal["pass", "hang", "cut"]
MODES: tuple[Mode, ...] = ("pass", "hang", "cut")
T = TypeVar("T")
_CHUNK = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes a connection with a TCP reset (SO_LINGER 0), as a cut network would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """A TCP proxy on a free loopback port in front of ``target`` (see the module doc)."""

    def __init__(self, target: tuple[str, int], *, connect_timeout: float = 5.0) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0  # connections accepted since start
        self.mode: Mode = "pass"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._passing: asyncio.Event | None = None
        self._conns: set[_Conn] = set()

    # -- the test's side (any thread) ------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def set_mode(self, mode: Mode) -> None:
        """Switches the mode; when this returns, the new mode is in force (after
        ``cut``, every connection that was open is closed)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self._call(self._set_mode(mode))

    def open_connections(self) -> int:
        return self._call(self._count())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- the proxy's loop ------------------------------------------------------------

    async def _start(self) -> None:
        self._passing = asyncio.Event()
        self._passing.set()
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _set_mode(self, mode: Mode) -> None:
        assert self._passing is not None
        self.mode = mode
        if mode == "pass":
            self._passing.set()
            return
        self._passing.clear()
        if mode == "cut":
            conns = list(self._conns)
            for conn in conns:
                conn.reset()
            tasks = [c.task for c in conns if c.task is not None]
            if tasks:  # their clean-up (leaving self._conns) done before we return
                await asyncio.wait(tasks, timeout=2)

    async def _count(self) -> int:
        return len(self._conns)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.reset()
        tasks = [c.task for c in self._conns if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "cut":
            _reset(writer)
            return
        conn = _Conn(writer, asyncio.current_task())
        self._conns.add(conn)
        clean = False
        try:
            clean = await self._serve(conn, reader, writer)
        except (asyncio.CancelledError, OSError, TimeoutError):
            pass
        finally:
            self._conns.discard(conn)
            if clean:
                conn.close()
            else:
                conn.reset()

    async def _serve(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Forwards until both sides have ended; True if both ended cleanly (EOF)."""
        assert self._passing is not None
        await self._passing.wait()  # hang: accepted, and nothing goes upstream yet
        if conn.closed:
            return False
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(*self.target), self.connect_timeout
        )
        conn.upstream = up_writer
        if conn.closed:  # cut while connecting
            return False
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        conn.pumps = pumps
        try:
            done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if any(p.exception() is not None for p in done):
                return False  # one side failed (reset): reset the other
            # One side ended cleanly (its EOF was passed on): the other normally follows.
            done, pending = await asyncio.wait(pending, timeout=10)
            return not pending and all(p.exception() is None for p in done)
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """src to dst until src's EOF (passed on as EOF); raises if either side fails."""
        assert self._passing is not None
        while True:
            data = await src.read(_CHUNK)
            await self._passing.wait()  # hang: hold what was read, forward nothing
            if not data:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()


class _Conn:
    """One proxied connection: the client's side, and the upstream once connected."""

    def __init__(self, client: asyncio.StreamWriter, task: asyncio.Task[Any] | None) -> None:
        self.client = client
        self.task = task
        self.upstream: asyncio.StreamWriter | None = None
        self.pumps: list[asyncio.Task[None]] = []
        self.closed = False

    def close(self) -> None:
        """Both sides ended cleanly: close both without a reset."""
        self.closed = True
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()

    def reset(self) -> None:
        self.closed = True
        for p in self.pumps:
            p.cancel()
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class PrivateRedis:
    """A redis-server of our own on a free loopback port, in a temporary directory."""

    BINARY = "/usr/bin/redis-server"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="private-redis-"))
        self.log_path = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        """Starts a fresh, empty server on our port (retrying while the port is busy)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("this PrivateRedis is already running")
        deadline = time.monotonic() + timeout
        while True:
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [
                        self.BINARY,
                        "--port",
                        str(self.port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                    ],
                    cwd=self.dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready(self.proc, deadline):
                return self
            if time.monotonic() >= deadline:
                self._terminate(self.proc)
                raise RuntimeError(
                    f"redis-server on port {self.port} did not start; log:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.05)  # it exited (port not free yet): try again

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> bool:
        """True once *our* process answers PING; False if it exited."""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                    s.settimeout(0.5)
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return proc.poll() is None
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """SIGKILL to our own redis-server: its data is gone, its clients are cut."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def restart(self) -> None:
        """A fresh, empty server on the same port (the old one killed if still up)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self._terminate(self.proc)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


TERMINATE_SQL = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = $1 AND pid <> pg_backend_pid()"
)


async def terminate_backends(admin: str | asyncpg.Connection, database: str) -> int:
    """``pg_terminate_backend`` on every backend connected to ``database`` except our
    own; answers how many were terminated. ``admin`` is a URL or an open connection,
    best to another database (e.g. ``postgres``) so that it is not among them anyway;
    an open connection makes rounds in quick succession cheap."""
    if not isinstance(admin, str):
        return sum(1 for r in await admin.fetch(TERMINATE_SQL, database) if r[0])
    conn = await asyncpg.connect(admin, timeout=5)
    try:
        return await terminate_backends(conn, database)
    finally:
        await conn.close()
