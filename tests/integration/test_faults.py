"""Faults mid-burst: a real `gateway serve`, one tenant with room for exactly K uploads,
32 clients sending upload requests back to back before, during and after a fault.

Whatever the fault, every answer is 200, 413 or 503 (a 503 with Retry-After ≥ 1 and
code ``dependency_unavailable``); no more than K are ever admitted; once the fault is
over and the burst goes on, exactly K are (a tenant is never refused room it has); and
within seconds the tenant's reserved bytes are the admitted ones.

Faults, one test each: the gateway's redis-server SIGKILLed and restarted empty on the
same port; ``pg_terminate_backend`` on the gateway's Postgres backends (eight
rounds); Postgres, then Redis, accepting and never answering for a few seconds
(``tests.support.faults.FaultProxy`` in mode ``hang``: what was sent meanwhile is
delivered when it ends, as after a network stall or a SIGSTOPped server's SIGCONT).
A control runs the same burst through both proxies with no fault. The module has a
database of its own (its backends are this module's gateways' only, so terminating
them touches nobody else) and each test a redis-server of its own.

A failure prints the answers by phase and code, a timeline, the usage and the pending
rows in Postgres, the tenant's hash in Redis and the gateway's log.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as redis_async

from devtools.s3 import EmbeddedS3
from gateway.config import Settings
from gateway.db import create_database
from gateway.db.migrate import migrate
from gateway.projects import ProjectService
from gateway.quota.reservations import tenant_key
from tests.conftest import BUCKET, ProjectKey
from tests.support.faults import FaultProxy, PrivateRedis, terminate_backends
from tests.support.services import Server, new_db_name, start_server, with_database

K = 200  # uploads the tenant has room for (enough to outlast the faults at full speed)
SIZE = 1000
TENANT = "burst"
CONCURRENCY = 32  # clients, each with one request in flight at a time, back to back
BACKOFF_503 = 0.1  # a client's pause after a 503 (short: the burst goes on during the fault)
BEFORE = CONCURRENCY  # requests answered before the fault (one wave)
IN_FLIGHT_AT_FAULT = 2  # answers of the burst's second phase before the fault is injected
AFTER_MAX = 3 * K  # answers (200/413) after the fault at most
AFTER_FULL = 16  # 413s after the fault that end the burst (the tenant is full)
AFTER_SECONDS = 20.0  # time after the fault at most
MAX_ANSWERS = 5000
HANG_SECONDS = 3.0
REDIS_DOWN_SECONDS = 0.5  # from the SIGKILL to the start of an empty redis-server
TERMINATIONS = 8  # pg_terminate_backend rounds on the gateway's backends
TERMINATE_EVERY = 0.05
USAGE_WITHIN = 5.0


# -- fixtures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultDb:
    admin_url: str
    name: str
    url: str

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 5432

    def via(self, proxy: FaultProxy) -> str:
        """Our database's URL, through the proxy."""
        parts = urlsplit(self.url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{proxy.host}:{proxy.port}" if auth else f"{proxy.host}:{proxy.port}"
        return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="module")
def fault_db(urls: tuple[str, str]) -> Iterator[FaultDb]:
    """A database of this module's own: its backends are the gateways' (and ours)."""
    admin = with_database(urls[0], "postgres")
    name = new_db_name()
    url = with_database(urls[0], name)
    asyncio.run(migrate(url))
    yield FaultDb(admin, name, url)

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis() as r:
        yield r


def _env(db_url: str, redis_url: str, s3: EmbeddedS3, **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_DATABASE_URL": db_url,
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_S3_ENDPOINT_URL": s3.endpoint_url,
        "GATEWAY_S3_BUCKET": BUCKET,
        "GATEWAY_DB_TIMEOUT": "1",
        "GATEWAY_REDIS_TIMEOUT": "1",
        "GATEWAY_SWEEP_INTERVAL": "0",
        **extra,
    }


def _redis_via(proxy: FaultProxy) -> str:
    return f"redis://127.0.0.1:{proxy.port}/0"


@asynccontextmanager
async def _gateway(env: dict[str, str], log_dir: Path) -> AsyncIterator[Server]:
    server = await asyncio.to_thread(start_server, env, log_dir, "gw-faults")
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def _project(db: FaultDb) -> ProjectKey:
    database = create_database(Settings.from_env({"GATEWAY_DATABASE_URL": db.url}))
    await database.open()
    try:
        created = await ProjectService(database).create(
            f"faults-{uuid.uuid4().hex[:12]}", default_tenant_limit=K * SIZE
        )
    finally:
        await database.close()
    return ProjectKey(created.project_id, created.key_id, created.api_key)


# -- the burst ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    phase: str  # "before" | "during" | "after": when the answer came
    status: int  # 0: no HTTP answer (client timeout, connection error)
    code: str | None
    retry_after: str | None
    dependency: str | None
    detail: str
    sent: float
    answered: float


@dataclass
class Burst:
    server: Server
    key: ProjectKey
    started: float = field(default_factory=time.monotonic)
    phase: str = "before"
    answers: list[Answer] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    stopping: bool = False
    fault_over_at: float | None = None

    @property
    def admitted(self) -> int:
        return sum(a.status == 200 for a in self.answers)

    def count(self, phase: str, status: int | None = None) -> int:
        return sum(
            a.phase == phase and (status is None or a.status == status) for a in self.answers
        )

    def mark(self, what: str) -> None:
        self.events.append(
            f"+{time.monotonic() - self.started:6.2f}s {what}"
            f" (answers {len(self.answers)}, admitted {self.admitted})"
        )

    async def one(self, client: httpx.AsyncClient) -> Answer:
        sent = time.monotonic()
        try:
            r = await client.post(
                f"{self.server.base_url}/api/storage/upload/",
                json={"tenant_id": TENANT, "filename": "f.bin", "size_bytes": SIZE},
                headers=self.key.headers,
            )
        except httpx.HTTPError as exc:
            a = Answer(self.phase, 0, type(exc).__name__, None, None, repr(exc), sent, 0.0)
        else:
            try:
                body = r.json()
            except ValueError:
                body = {}
            if not isinstance(body, dict):
                body = {}
            a = Answer(
                self.phase,
                r.status_code,
                body.get("code"),
                r.headers.get("retry-after"),
                body.get("dependency"),
                "" if r.status_code == 200 else r.text[:300],
                sent,
                time.monotonic(),
            )
        self.answers.append(a)
        return a

    async def worker(self, client: httpx.AsyncClient) -> None:
        while not self.stopping and len(self.answers) < MAX_ANSWERS:
            a = await self.one(client)
            if a.status in (503, 0):
                await asyncio.sleep(BACKOFF_503)

    def after_done(self) -> bool:
        assert self.fault_over_at is not None
        return (
            self.count("after", 413) >= AFTER_FULL
            or self.count("after", 200) + self.count("after", 413) >= AFTER_MAX
            or time.monotonic() - self.fault_over_at > AFTER_SECONDS
            or len(self.answers) >= MAX_ANSWERS
        )


async def _wait(cond: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


Fault = Callable[[Burst], Awaitable[None]]


async def _run_burst(server: Server, key: ProjectKey, fault: Fault) -> Burst:
    """Before: BEFORE requests at once; during: CONCURRENCY clients, each sending its
    next request as soon as it has its answer (BACKOFF_503 after a 503), the fault
    injected once answers are coming in (``fault`` returns when it is over); after: the
    clients go on until the tenant is full (AFTER_FULL 413s), or AFTER_MAX answers, or
    AFTER_SECONDS."""
    burst = Burst(server, key)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        await asyncio.gather(*(burst.one(client) for _ in range(BEFORE)))
        burst.phase = "during"
        burst.mark("burst starts")
        workers = [asyncio.create_task(burst.worker(client)) for _ in range(CONCURRENCY)]
        try:
            await _wait(lambda: burst.count("during") >= IN_FLIGHT_AT_FAULT, 10)
            burst.mark("fault begins")
            await fault(burst)
            burst.fault_over_at = time.monotonic()
            burst.phase = "after"
            burst.mark("fault is over")
            await _wait(burst.after_done, AFTER_SECONDS + 1, step=0.02)
            burst.mark("burst ends")
        finally:
            burst.stopping = True
            await asyncio.gather(*workers, return_exceptions=True)
    return burst


# -- what the burst left ---------------------------------------------------------------


@dataclass
class Outcome:
    reserved: int | None  # the usage endpoint's storage_reserved_bytes, last seen
    usage_polls: list[str]
    pending_rows: int
    pending_bytes: int
    statuses: Counter[str]
    redis_hash: dict[str, str]


async def _usage_until(burst: Burst, expected: int) -> tuple[int | None, list[str]]:
    """Polls the tenant's usage (through the gateway) for up to USAGE_WITHIN seconds
    until storage_reserved_bytes == expected; answers the last value seen."""
    seen: list[str] = []
    reserved: int | None = None
    url = f"{burst.server.base_url}/api/storage/tenants/{TENANT}/usage/"
    deadline = time.monotonic() + USAGE_WITHIN
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            try:
                r = await client.get(url, headers=burst.key.headers)
                if r.status_code == 200:
                    reserved = int(r.json()["storage_reserved_bytes"])
                    seen.append(str(reserved))
                else:
                    seen.append(f"{r.status_code} {r.text[:100]}")
            except httpx.HTTPError as exc:
                seen.append(repr(exc))
            if reserved == expected or time.monotonic() >= deadline:
                return reserved, seen
            await asyncio.sleep(0.2)


async def _outcome(burst: Burst, db: FaultDb, redis_url: str) -> Outcome:
    reserved, polls = await _usage_until(burst, burst.admitted * SIZE)
    conn = await asyncpg.connect(db.url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT status, count(*) AS n, COALESCE(sum(declared_size), 0) AS bytes"
            " FROM uploads WHERE project_id = $1 AND tenant_id = $2 GROUP BY status",
            burst.key.project_id,
            TENANT,
        )
    finally:
        await conn.close()
    statuses = Counter({f"{r['status']}": int(r["n"]) for r in rows})
    pending = [r for r in rows if r["status"] == "pending"]
    redis_hash: dict[str, str] = {}
    client = redis_async.Redis.from_url(
        redis_url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
    )
    try:
        raw = await client.hgetall(tenant_key(burst.key.project_id, TENANT))
        fields = {str(k): str(v) for k, v in raw.items()}
        redis_hash = {k: v for k, v in fields.items() if not k.startswith("r:")}
        reserved_ids = [k[2:] for k in fields if k.startswith("r:")]
        redis_hash["reservations"] = str(len(reserved_ids))
        # reservations Redis holds for uploads that are not pending in Postgres
        conn = await asyncpg.connect(db.url, timeout=5)
        try:
            known = await conn.fetch(
                "SELECT id, status FROM uploads WHERE id = ANY($1::text[])", reserved_ids
            )
        finally:
            await conn.close()
        status_of = {r["id"]: r["status"] for r in known}
        ghosts = Counter(status_of.get(i, "no row") for i in reserved_ids)
        ghosts.pop("pending", None)
        redis_hash["without a pending row"] = str(dict(ghosts))
    except Exception as exc:  # diagnostics only
        redis_hash["error"] = repr(exc)
    finally:
        await client.aclose()
    return Outcome(
        reserved=reserved,
        usage_polls=polls,
        pending_rows=int(pending[0]["n"]) if pending else 0,
        pending_bytes=int(pending[0]["bytes"]) if pending else 0,
        statuses=statuses,
        redis_hash=redis_hash,
    )


def _exception(exc: object) -> str:
    """A structlog dict traceback as: type: value (at the innermost gateway/ frame)."""
    if not isinstance(exc, list):
        lines = str(exc).strip().splitlines()
        return lines[-1][:200] if lines else "?"
    out = []
    for e in exc:
        if not isinstance(e, dict):
            continue
        frames = [f for f in e.get("frames", []) if "/gateway/" in str(f.get("filename", ""))]
        where = ""
        if frames:
            f = frames[-1]
            where = f" at gateway/{str(f['filename']).rsplit('/gateway/', 1)[1]}:{f['lineno']}"
        out.append(f"{e.get('exc_type')}: {str(e.get('exc_value'))[:100]}{where}")
    return " <- ".join(out)


def _log_summary(path: Path, tail: int = 12) -> str:
    lines = path.read_text(errors="replace").splitlines()
    kinds: Counter[str] = Counter()
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        parts = [str(entry.get("level", "?")), str(entry.get("event", "?"))]
        for k in ("dependency", "error", "cause", "upload_id"):
            if k in entry:
                value = str(entry[k])
                parts.append(f"{k}={value[:90] if k != 'upload_id' else 'upl_…'}")
        kinds[" ".join(parts)] += 1
        if "exception" in entry:
            kinds[f"  raised: {_exception(entry['exception'])}"] += 1
    summary = "\n".join(f"  {n:5d} x {k}" for k, n in kinds.most_common(20))
    return f"{summary}\n  --- last {tail} lines ---\n" + "\n".join(
        "  " + line[:400] for line in lines[-tail:]
    )


def _slowest(burst: Burst, phase: str) -> float:
    took = [a.answered - a.sent for a in burst.answers if a.phase == phase and a.answered]
    return max(took, default=0.0)


def _report(name: str, burst: Burst, out: Outcome) -> str:
    by_phase = {
        p: dict(sorted(Counter(a.status for a in burst.answers if a.phase == p).items()))
        for p in ("before", "during", "after")
    }
    codes = Counter(
        f"{a.status} {a.code}{'/' + a.dependency if a.dependency else ''}"
        f" retry-after={a.retry_after}"
        for a in burst.answers
        if a.status != 200
    )
    odd = [a for a in burst.answers if a.status not in (200, 413, 503)][:5]
    return "\n".join(
        [
            f"fault: {name}",
            f"K={K} SIZE={SIZE}: admitted {burst.admitted}, answers {len(burst.answers)}",
            "answers by phase: " + ", ".join(f"{p} {h}" for p, h in by_phase.items()),
            "slowest answer by phase: "
            + ", ".join(f"{p} {_slowest(burst, p):.2f}s" for p in ("before", "during", "after")),
            "non-200 answers: " + ", ".join(f"{n} x {c}" for c, n in codes.most_common()),
            *(f"  e.g. {a.phase} {a.status}: {a.detail}" for a in odd),
            "timeline:",
            *(f"  {e}" for e in burst.events),
            f"usage storage_reserved_bytes: {out.reserved} (expected {burst.admitted * SIZE});"
            f" polls: {' '.join(out.usage_polls[-8:])}",
            f"uploads rows by status: {dict(out.statuses)};"
            f" pending {out.pending_rows} rows / {out.pending_bytes} bytes",
            f"redis tenant hash: {out.redis_hash}",
            f"server log ({burst.server.log_path}):",
            _log_summary(burst.server.log_path),
        ]
    )


def _check(name: str, burst: Burst, out: Outcome) -> None:
    problems: list[str] = []
    statuses = Counter(a.status for a in burst.answers)
    if set(statuses) - {200, 413, 503}:
        problems.append(f"answers other than 200/413/503: {dict(statuses)}")
    bad_503 = [
        a
        for a in burst.answers
        if a.status == 503
        and not (
            a.retry_after is not None
            and a.retry_after.isdigit()
            and int(a.retry_after) >= 1
            and a.code == "dependency_unavailable"
        )
    ]
    if bad_503:
        problems.append(f"{len(bad_503)} 503s without Retry-After ≥ 1 / dependency_unavailable")
    if burst.admitted > K:
        problems.append(f"over-admitted: {burst.admitted} > K={K}")
    elif burst.admitted != K:
        problems.append(f"admitted {burst.admitted} != K={K} after the fault was over")
    if out.reserved != burst.admitted * SIZE:
        problems.append(
            f"storage_reserved_bytes {out.reserved} != admitted x SIZE"
            f" = {burst.admitted * SIZE} within {USAGE_WITHIN}s"
        )
    report = _report(name, burst, out)
    print(report)
    assert not problems, "\n".join(["", *problems, "", report])


async def _fault_test(
    name: str, server: Server, db: FaultDb, redis_url: str, fault: Fault
) -> Burst:
    key = await _project(db)
    burst = await _run_burst(server, key, fault)
    _check(name, burst, await _outcome(burst, db, redis_url))
    return burst


# -- the harness itself ------------------------------------------------------------------


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return

            def echo(c: socket.socket) -> None:
                with c:
                    while True:
                        try:
                            data = c.recv(4096)
                        except OSError:
                            return
                        if not data:
                            return
                        c.sendall(data)

            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), 2)
    s.settimeout(2)
    return s


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(10) == b""
    except ConnectionResetError:
        return True


def _reset_on_connect(port: int) -> bool:
    """A connection to a proxy in mode cut is reset: during connect() or just after."""
    try:
        s = _connect(port)
    except ConnectionResetError:
        return True
    with s:
        return _closed(s)


def test_fault_proxy_modes() -> None:
    listener, _ = _echo_server()
    try:
        with FaultProxy(listener.getsockname()[:2]) as proxy:
            a = _connect(proxy.port)
            a.sendall(b"one")
            assert a.recv(10) == b"one"
            proxy.set_mode("hang")
            a.sendall(b"two")
            b = _connect(proxy.port)  # accepted...
            b.sendall(b"three")
            for s in (a, b):  # ...and nothing comes back
                s.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    s.recv(10)
                s.settimeout(2)
            assert proxy.open_connections() == 2
            proxy.set_mode("pass")  # what was held is delivered
            assert a.recv(10) == b"two"
            assert b.recv(10) == b"three"
            proxy.set_mode("cut")
            assert _closed(a) and _closed(b)
            assert proxy.open_connections() == 0
            assert _reset_on_connect(proxy.port)  # accepted, then reset at once
            proxy.set_mode("pass")
            d = _connect(proxy.port)
            d.sendall(b"four")
            assert d.recv(10) == b"four"
            for s in (a, b, d):
                s.close()
    finally:
        listener.close()


async def test_private_redis_and_terminate_backends(fault_db: FaultDb) -> None:
    with PrivateRedis() as r:
        client = redis_async.Redis.from_url(r.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            await client.set("k", "v")
            pid = r.proc.pid if r.proc else None
            r.kill()
            with pytest.raises(Exception, match=r"(?i)connect|closed|reset"):
                await client.get("k")
            await asyncio.to_thread(r.restart)
            assert r.proc is not None and r.proc.pid != pid
            assert await client.get("k") is None  # a fresh, empty server
        finally:
            await client.aclose()
    conn = await asyncpg.connect(fault_db.url)
    try:
        assert await terminate_backends(fault_db.admin_url, fault_db.name) >= 1
        # (asyncpg answers InternalClientError when the backend's FATAL came in while
        # the connection was idle: the state such a cut leaves the gateway's pool in)
        errors = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
        with pytest.raises((*errors, OSError)):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()


# -- the faults --------------------------------------------------------------------------


async def test_no_fault_burst_admits_exactly_k(
    fault_db: FaultDb, private_redis: PrivateRedis, s3: EmbeddedS3, tmp_path: Path
) -> None:
    """The control: the same burst through both proxies, in mode pass all along."""
    with (
        FaultProxy(fault_db.address) as pg,
        FaultProxy(("127.0.0.1", private_redis.port)) as rd,
    ):
        env = _env(fault_db.via(pg), _redis_via(rd), s3)
        async with _gateway(env, tmp_path) as server:

            async def no_fault(burst: Burst) -> None:
                await asyncio.sleep(0.5)

            burst = await _fault_test("none", server, fault_db, private_redis.url, no_fault)
    assert burst.count("after", 413) >= 1


async def test_redis_killed_and_restarted_empty(
    fault_db: FaultDb, private_redis: PrivateRedis, s3: EmbeddedS3, tmp_path: Path
) -> None:
    env = _env(fault_db.url, private_redis.url, s3)
    async with _gateway(env, tmp_path) as server:

        async def kill_and_restart(burst: Burst) -> None:
            private_redis.kill()
            burst.mark("redis-server SIGKILLed")
            await asyncio.sleep(REDIS_DOWN_SECONDS)
            await asyncio.to_thread(private_redis.start)
            burst.mark("redis-server restarted, empty")

        name = f"redis SIGKILL, restarted empty {REDIS_DOWN_SECONDS}s later"
        await _fault_test(name, server, fault_db, private_redis.url, kill_and_restart)


async def test_postgres_backends_terminated(
    fault_db: FaultDb, private_redis: PrivateRedis, s3: EmbeddedS3, tmp_path: Path
) -> None:
    env = _env(fault_db.url, private_redis.url, s3)
    async with _gateway(env, tmp_path) as server:
        terminated: list[int] = []

        async def terminate(burst: Burst) -> None:
            admin = await asyncpg.connect(fault_db.admin_url, timeout=5)
            try:
                for i in range(TERMINATIONS):
                    if i:
                        await asyncio.sleep(TERMINATE_EVERY)
                    n = await terminate_backends(admin, fault_db.name)
                    terminated.append(n)
                    burst.mark(f"pg_terminate_backend: {n} backends")
            finally:
                await admin.close()

        name = f"pg_terminate_backend x{TERMINATIONS}, every {TERMINATE_EVERY}s"
        await _fault_test(name, server, fault_db, private_redis.url, terminate)
        assert sum(terminated) >= 1, terminated  # the fault did happen


def _hang(proxy: FaultProxy, dependency: str) -> Fault:
    """The fault: ``dependency``, behind ``proxy``, accepts and never answers for
    HANG_SECONDS, then answers again."""

    async def hang(burst: Burst) -> None:
        await asyncio.to_thread(proxy.set_mode, "hang")
        burst.mark(f"{dependency} hangs ({proxy.open_connections()} connections held)")
        await asyncio.sleep(HANG_SECONDS)
        await asyncio.to_thread(proxy.set_mode, "pass")
        burst.mark(f"{dependency} answers again")

    return hang


async def test_postgres_hangs(
    fault_db: FaultDb, private_redis: PrivateRedis, s3: EmbeddedS3, tmp_path: Path
) -> None:
    with FaultProxy(fault_db.address) as pg:
        env = _env(fault_db.via(pg), private_redis.url, s3)
        async with _gateway(env, tmp_path) as server:
            name = f"postgres accepts, never answers, {HANG_SECONDS}s"
            await _fault_test(name, server, fault_db, private_redis.url, _hang(pg, "postgres"))


async def test_redis_hangs(
    fault_db: FaultDb, private_redis: PrivateRedis, s3: EmbeddedS3, tmp_path: Path
) -> None:
    with FaultProxy(("127.0.0.1", private_redis.port)) as rd:
        env = _env(fault_db.url, _redis_via(rd), s3)
        async with _gateway(env, tmp_path) as server:
            name = f"redis accepts, never answers, {HANG_SECONDS}s"
            await _fault_test(name, server, fault_db, private_redis.url, _hang(rd, "redis"))
