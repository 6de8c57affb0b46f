"""PgBouncer in transaction pooling mode between the gateway and Postgres, for tests.

Debian's ``pgbouncer`` (1.18, older than PgBouncer's own prepared-statement support),
run as a process of our own: an ini written to a directory of its own, a free
loopback port, stopped by PID (at the session's end, or at exit should the session
die first). The ``[pgbouncer]`` settings are those of ``deploy/pgbouncer/pgbouncer.ini``
(pool mode, timeouts, auth type), bar where to listen and log, a smaller pool and a
short login retry (see ``TEST_OVERRIDES``). Every database of the upstream server is
reachable through it (``* = host=… port=…``).

``pytest --via-pgbouncer`` points the gateway of the whole session there (the
``settings`` and ``server_env`` fixtures of tests/conftest.py), with
``GATEWAY_DB_STATEMENT_CACHE_SIZE=0``: ``make pytest-pgbouncer`` runs the exactness,
event, rebuild and sweeper tests that way. Without pgbouncer installed, tests that
need it skip, except under ``CI=true`` or ``--via-pgbouncer``, where they fail.
"""

from __future__ import annotations

import atexit
import configparser
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support.services import ROOT, free_port

DEPLOY_INI = ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini"
INSTALL_HINT = "apt-get install -y pgbouncer (Debian's package; `make pgbouncer` does it)"
# Clients authenticate to PgBouncer with this password (scram-sha-256, as deployed);
# PgBouncer logs in to the test Postgres (trust) as the same user.
PASSWORD = "pgbouncer-test-password"

TEST_OVERRIDES = {
    "listen_addr": "127.0.0.1",
    "unix_socket_dir": "",
    "logfile": "",
    "pidfile": "",
    # Fewer server connections than the tests' clients (three gateways of up to 10
    # each): their transactions hop between server connections, the case where named
    # prepared statements break.
    "default_pool_size": "4",
    "reserve_pool_size": "0",
    # A database that a test creates right after PgBouncer failed to log in to it
    # (`gateway migrate` on a fresh one) is tried again after 1 s, not 15.
    "server_login_retry": "1",
    "log_connections": "0",
    "log_disconnections": "0",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--via-pgbouncer",
        action="store_true",
        default=False,
        help="the gateway reaches Postgres through PgBouncer in transaction pooling mode "
        "(GATEWAY_DB_STATEMENT_CACHE_SIZE=0)",
    )


def via_pgbouncer(config: pytest.Config) -> bool:
    return bool(config.getoption("--via-pgbouncer"))


def find_pgbouncer() -> str | None:
    """pgbouncer on PATH, else Debian's /usr/sbin/pgbouncer (sbin is not on every PATH)."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


def deployed_settings() -> dict[str, str]:
    """The ``[pgbouncer]`` section of deploy/pgbouncer/pgbouncer.ini."""
    ini = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
    ini.read_string(DEPLOY_INI.read_text())
    return dict(ini["pgbouncer"])


@dataclass
class PgBouncer:
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path

    def url(self, database_url: str) -> str:
        """``database_url`` (on the upstream Postgres) as reached through PgBouncer."""
        parts = urlsplit(database_url)
        user = parts.username or "postgres"
        return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@127.0.0.1:{self.port}"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _ini(
    upstream_host: str, upstream_port: int, port: int, auth_file: Path, pool_size: int | None
) -> str:
    settings = {**deployed_settings(), **TEST_OVERRIDES}
    if pool_size is not None:
        settings["default_pool_size"] = str(pool_size)
    settings["listen_port"] = str(port)
    settings["auth_file"] = str(auth_file)
    lines = ["[databases]", f"* = host={upstream_host} port={upstream_port}", "", "[pgbouncer]"]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def start_pgbouncer(
    upstream_url: str, user: str = "postgres", pool_size: int | None = None
) -> PgBouncer:
    """A pgbouncer in front of ``upstream_url``'s server; ``pool_size`` replaces the
    tests' 4 server connections per database (the benchmark uses the deployed 20)."""
    binary = find_pgbouncer()
    if binary is None:
        raise RuntimeError(f"pgbouncer is not installed: {INSTALL_HINT}")
    upstream = urlsplit(upstream_url)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-pgbouncer-"))
    auth_file = workdir / "userlist.txt"
    auth_file.write_text(f'"{user}" "{PASSWORD}"\n')
    port = free_port()
    ini_path = workdir / "pgbouncer.ini"
    ini_path.write_text(
        _ini(upstream.hostname or "127.0.0.1", upstream.port or 5432, port, auth_file, pool_size)
    )
    argv = [binary, str(ini_path)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root; it reads its files first
        argv[1:1] = ["-u", "nobody"]
    log_path = workdir / "pgbouncer.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    bouncer = PgBouncer(port, proc, workdir, log_path)
    atexit.register(bouncer.stop)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            log_text = bouncer.log()
            bouncer.stop()
            raise RuntimeError(f"pgbouncer exited ({proc.returncode}):\n{log_text[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return bouncer
        if time.monotonic() > deadline:
            bouncer.stop()
            raise RuntimeError("pgbouncer did not listen within 10 s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def pgbouncer(request: pytest.FixtureRequest, urls: tuple[str, str]) -> Iterator[PgBouncer]:
    """One PgBouncer for the session, in front of the test Postgres."""
    if find_pgbouncer() is None:
        reason = f"pgbouncer is not installed: {INSTALL_HINT}"
        if via_pgbouncer(request.config) or os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; under CI=true or --via-pgbouncer these tests must run")
        pytest.skip(reason)
    bouncer = start_pgbouncer(urls[0])
    yield bouncer
    bouncer.stop()
