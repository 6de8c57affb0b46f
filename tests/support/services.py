"""Real services for tests: Postgres, Redis and an HTTP S3 (moto server mode).

Service URLs come from TEST_DATABASE_URL / TEST_REDIS_URL (defaults: the local
servers). Where neither answers and a Docker engine exists, testcontainers starts
them; otherwise the run fails with the command that starts them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from devtools.ports import free_port as free_port  # re-exported: tests import it from here
from gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]
START_HINT = (
    "start them with:\n"
    "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
    "  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
)


def answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def docker_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Services:
    database_url: str  # a throwaway database, dropped at the end
    admin_url: str
    redis_url: str  # a Redis DB of its own, flushed at start


@contextmanager
def service_urls() -> Iterator[tuple[str, str]]:
    pg = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    rd = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    if answers(pg, 5432) and answers(rd, 6379):
        yield pg, rd
        return
    if not docker_available():
        raise RuntimeError(f"Postgres ({pg}) or Redis ({rd}) does not answer; {START_HINT}")
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    with PostgresContainer("postgres:16-alpine") as pgc, RedisContainer("redis:7-alpine") as rdc:
        pg_url = pgc.get_connection_url().replace("postgresql+psycopg2", "postgresql")
        rd_url = f"redis://{rdc.get_container_host_ip()}:{rdc.get_exposed_port(6379)}/0"
        yield pg_url, rd_url


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def new_db_name() -> str:
    return f"gateway_test_{uuid.uuid4().hex[:10]}"


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout}s: {last}")


@dataclass
class Server:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_server(
    env: dict[str, str], log_dir: Path, name: str = "gateway", workers: int = 1
) -> Server:
    """A real `gateway serve` process (with ``workers`` uvicorn workers)."""
    port = free_port()
    log_path = log_dir / f"{name}-{port}.log"
    full_env = {**os.environ, **env, "GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "warning"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
            + (["--workers", str(workers)] if workers > 1 else []),
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_http(server.base_url + "/healthz")
    except RuntimeError:
        server.stop()
        raise RuntimeError(f"gateway did not start; log:\n{log_path.read_text()[-3000:]}") from None
    return server


def settings_on(base: Settings, **env: str) -> Settings:
    """Settings for another app on the same services as ``base`` (a Settings): bounded
    1 s waits, the sweeper off, quiet logs; ``env`` overrides (``""`` = the default)."""
    values = {
        "GATEWAY_DATABASE_URL": base.database_url,
        "GATEWAY_DB_STATEMENT_CACHE_SIZE": str(base.db_statement_cache_size),
        "GATEWAY_REDIS_URL": base.redis_url,
        "GATEWAY_S3_ENDPOINT_URL": base.s3_endpoint_url or "",
        "GATEWAY_SWEEP_INTERVAL": "0",
        "GATEWAY_LOG_LEVEL": "error",
        "GATEWAY_DB_TIMEOUT": "1",
        "GATEWAY_REDIS_TIMEOUT": "1",
        "GATEWAY_S3_TIMEOUT": "1",
        "GATEWAY_WEBHOOK_DELIVERY": "false",
        **env,
    }
    return Settings.from_env(values)


def assert_503(r: httpx.Response, dependency: str) -> None:
    """A dependency outage: 503, Retry-After, the error body naming the dependency."""
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["code"] == "dependency_unavailable"
    assert r.json()["dependency"] == dependency
