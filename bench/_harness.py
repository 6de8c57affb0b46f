"""Shared plumbing for the benchmarks: throwaway services, a server process, wrk, tables.

Everything talks to 127.0.0.1 only: the local Postgres (a database of our own,
dropped at the end), Redis DB 14 (flushed before and after) and moto's S3 server
in a thread of this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import redis as redis_sync  # noqa: E402

from devtools.ports import free_port as free_port  # noqa: E402  (re-exported)
from devtools.s3 import prepare_bucket, start_embedded_s3  # noqa: E402
from gateway.config import Settings  # noqa: E402
from gateway.db.migrate import migrate  # noqa: E402
from gateway.observability import configure_logging  # noqa: E402

ADMIN_URL = os.environ.get(
    "BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
BUCKET = "uploads"
WEBHOOK_SECRET = "bench-webhook-secret"
WRK_DIR = Path(__file__).resolve().parent / "wrk"

# moto accepts any credentials; the server process inherits these.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench-access-key")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret-key")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@dataclass
class Services:
    database_url: str
    redis_url: str
    s3_endpoint_url: str

    def env(self, log_level: str = "warning") -> dict[str, str]:
        """The gateway's environment (for a server process or Settings.from_env)."""
        return {
            "GATEWAY_DATABASE_URL": self.database_url,
            "GATEWAY_REDIS_URL": self.redis_url,
            "GATEWAY_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "GATEWAY_S3_BUCKET": BUCKET,
            "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_LOG_LEVEL": log_level,
            "GATEWAY_SWEEP_INTERVAL": "0",
        }

    def settings(self, log_level: str = "warning") -> Settings:
        return Settings.from_env(self.env(log_level))


@contextlib.contextmanager
def services() -> Iterator[Services]:
    """A fresh migrated database, a flushed Redis DB and moto's S3 with the bucket made."""
    configure_logging(Settings(log_format="json", log_level="warning"))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    name = f"gateway_bench_{secrets.token_hex(5)}"
    database_url = _with_database(ADMIN_URL, name)
    rds = redis_sync.Redis.from_url(REDIS_URL)
    rds.flushdb()
    s3 = None
    try:
        asyncio.run(migrate(database_url))
        s3 = start_embedded_s3()
        prepare_bucket(s3.endpoint_url, BUCKET, "us-east-1")
        yield Services(database_url, REDIS_URL, s3.endpoint_url)
    finally:
        if s3 is not None:
            s3.stop()
        rds.flushdb()
        rds.close()
        asyncio.run(_drop_database(name))


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class Server:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def server(
    env: dict[str, str], *, workers: int = 1, log_dir: Path, kind: str = "uvicorn"
) -> Iterator[Server]:
    """``python -m bench._server`` (uvicorn, like ``gateway serve``) in a subprocess.

    ``kind`` is the HTTP server: ``uvicorn`` (on uvloop), or ``granian`` with an
    optional loop (``granian:uvloop``, ``granian:rloop``, ``granian:asyncio``); for
    A/B experiments, ``@NAME=VALUE+NAME=VALUE`` after it adds to the environment."""
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    kind, _, extra = kind.partition("@")
    env = {**env, **dict(item.split("=", 1) for item in extra.split("+") if item)}
    name, _, loop = kind.partition(":")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench._server",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--server",
                name,
                *(["--loop", loop] if loop else []),
            ],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    srv = Server(f"http://127.0.0.1:{port}", proc, log_path)
    profiler = None
    try:
        _wait_ready(srv)
        profiler = _profile(proc.pid, port)
        yield srv
    finally:
        if profiler is not None:  # py-spy writes its file on SIGINT
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        srv.stop()


def _profile(pid: int, port: int) -> subprocess.Popen[bytes] | None:
    """With ``BENCH_PROFILE_DIR`` set: ``py-spy record`` on the server (its workers
    too), collapsed stacks in ``server-PORT.txt`` there (``pip install py-spy``)."""
    out = os.environ.get("BENCH_PROFILE_DIR")
    if not out:
        return None
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--rate",
            os.environ.get("BENCH_PROFILE_RATE", "250"),
            "--format",
            "raw",
            "--output",
            str(Path(out) / f"server-{port}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_ready(srv: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            break
        try:
            if httpx.get(srv.base_url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    srv.stop()
    raise RuntimeError(f"server did not start; log:\n{srv.log_path.read_text()[-3000:]}")


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    return path


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def run_wrk(
    url: str,
    script: str,
    script_args: Sequence[str],
    *,
    connections: int,
    duration: float,
    threads: int = 2,
    timeout: float = 10.0,
) -> WrkResult:
    """One wrk run; the script's ``done`` prints a JSON summary as its last line."""
    cmd = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout:g}s",
        "-s",
        str(WRK_DIR / script),
        url,
        "--",
        *script_args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=WRK_DIR)
    summary = _last_json(out.stdout)
    return WrkResult(
        requests=int(summary["requests"]),
        duration_s=float(summary["duration_us"]) / 1e6,
        p50_ms=float(summary["p50_us"]) / 1000,
        p99_ms=float(summary["p99_us"]) / 1000,
        non_2xx=int(summary["status_errors"]),
        socket_errors=int(summary["socket_errors"]),
        extra=summary,
    )


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            doc: dict[str, Any] = json.loads(line)
            return doc
    raise RuntimeError(f"wrk printed no summary:\n{stdout}")


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def load_average() -> str:
    """The 1-minute load average: other work on the machine skews every number."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (uvicorn's workers)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += process_tree(int(child))
    return found


async def _backends(database: str) -> list[int]:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


class CpuMeter:
    """CPU used by the server process tree and by our database's Postgres backends.

    On a busy machine req/s swings with whatever else runs; CPU per request does not.
    """

    def __init__(self, server_pid: int, database_url: str) -> None:
        self.server_pid = server_pid
        self.database = urlsplit(database_url).path.lstrip("/")
        self._start: dict[str, dict[int, float]] = {}

    async def _sample(self) -> dict[str, dict[int, float]]:
        backends = await _backends(self.database)
        return {
            "server": {p: process_cpu(p) for p in process_tree(self.server_pid)},
            "postgres": {p: process_cpu(p) for p in backends},
        }

    async def astart(self) -> None:
        self._start = await self._sample()

    async def astop(self) -> dict[str, float]:
        """CPU seconds used since ``start``, per side ("server", "postgres")."""
        end = await self._sample()
        return {
            side: sum(v - self._start[side].get(p, 0.0) for p, v in end[side].items())
            for side in end
        }

    def start(self) -> None:
        asyncio.run(self.astart())

    def stop(self) -> dict[str, float]:
        return asyncio.run(self.astop())


async def warm_quota(settings: Settings, project_id: str, tenant_ids: Sequence[str]) -> None:
    """The tenants exist in Postgres and their quota hashes (and the project's) in Redis.

    The state of a server whose tenants have uploaded before: rows made in bulk, then
    each hash built from Postgres (pending uploads included) by a zero-byte
    reservation that is released again, through the same calls the upload path makes
    (a batch of them at a time, as the upload path rebuilds cold tenants).
    """
    from gateway.db import Q, create_database
    from gateway.db.rebuild import PostgresReservationSource
    from gateway.ids import new_id
    from gateway.quota import Admitted, Missing, QuotaStore, Reservation, UsageAt, create_redis

    db = create_database(settings)
    await db.open()
    redis = create_redis(settings)
    try:
        quota = QuotaStore(redis, PostgresReservationSource(db))
        await db.execute(Q.ensure_tenants, [project_id] * len(tenant_ids), list(tenant_ids))
        far = int((datetime.now(UTC) + timedelta(days=1)).timestamp() * 1000)
        old = UsageAt(0, 0)  # older than any snapshot: the script keeps the hash's usage
        for first in range(0, len(tenant_ids), 256):
            batch = [
                Reservation(project_id, t, new_id("upl"), 0, None, old, None, old, far)
                for t in tenant_ids[first : first + 256]
            ]
            verdicts = await quota.reserve_many(batch)
            cold = [(r, v) for r, v in zip(batch, verdicts, strict=True) if isinstance(v, Missing)]
            final = await quota.rebuild_and_reserve(cold) if cold else []
            if not all(isinstance(v, Admitted) for v in final):
                raise RuntimeError(f"warm-up reservation refused: {final}")
            await quota.release([(project_id, r.tenant_id, r.upload_id) for r in batch])
    finally:
        await redis.aclose()
        await db.close()
