"""Run LocalStack's S3 as a host process (no Docker) for tests that need real signature checks.

moto accepts any presigned URL: it checks neither the signature, nor the expiry, nor a
signed ``Content-Length``. LocalStack with ``S3_SKIP_SIGNATURE_VALIDATION=0`` does, so the
tests that prove S3 *rejects* a bad upload run against it.

LocalStack lives in its own virtualenv (Python 3.13, made by ``scripts/localstack-venv.sh``)
because its pins clash with the gateway's. Only the HTTP endpoint is shared: tests talk to
it with the main venv's boto3.

Use :func:`start_localstack` directly, or the session fixture :func:`localstack_endpoint`,
registered as a plugin (once per session, however many modules name it) from the root
``tests/conftest.py`` or a test module::

    pytest_plugins = ["tests.support.localstack"]
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from devtools.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-localstack"
VENV_SCRIPT = "scripts/localstack-venv.sh"
#: Written by the script once the venv is complete.
VENV_STAMP = ".localstack-pins"

#: Seconds to wait for ``/_localstack/health`` to report S3 running (5-8 s seen here).
DEFAULT_START_TIMEOUT = 60.0
#: Seconds to wait for a graceful stop (LocalStack takes ~5 s) before the group is SIGKILLed;
#: nothing is persisted, so cutting it short loses nothing.
DEFAULT_STOP_TIMEOUT = 3.0
_LOG_TAIL_CHARS = 4000

# Runs in the LocalStack venv. (1) If the test process dies without stop() (SIGKILL, a CI
# time limit), Linux sends LocalStack SIGTERM (PR_SET_PDEATHSIG), so no orphan keeps the
# port. (2) LocalStack's S3 keeps object data under a fixed /tmp/localstack-s3-storage shared
# by every instance on the machine; point it into this instance's own directory (argv[1])
# instead, so instances never share files and stop() removes everything. The attribute is
# read when the S3 provider is created, after this assignment.
_BOOTSTRAP = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[2]):  # the parent died before prctl took effect
    sys.exit(1)
from localstack.services.s3 import provider
provider.DEFAULT_S3_TMP_DIR = sys.argv[1]
from localstack.runtime.main import main
main()
"""


class LocalStackError(RuntimeError):
    """LocalStack could not be started."""


class LocalStackNotInstalledError(LocalStackError):
    """The LocalStack virtualenv is missing; ``scripts/localstack-venv.sh`` makes it."""


def localstack_venv() -> Path:
    """Where the LocalStack venv is expected (``$LOCALSTACK_VENV`` or ``.venv-localstack``)."""
    configured = os.environ.get("LOCALSTACK_VENV", "").strip()
    return Path(configured) if configured else DEFAULT_VENV


def _venv_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.is_file() or not (venv / VENV_STAMP).is_file():
        raise LocalStackNotInstalledError(
            f"no LocalStack venv at {venv} (make it with `bash {VENV_SCRIPT}`)"
        )
    return python


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the server: a port in TIME_WAIT is free, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _environment(port: int, root: Path, *, validate_signatures: bool) -> dict[str, str]:
    """A minimal, explicit environment: none of the caller's AWS or LocalStack settings leak in."""
    env = {
        name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL") if name in os.environ
    }
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "SERVICES": "s3",
            # Load S3 at start-up, so health says "running" only when it can answer.
            "EAGER_SERVICE_LOADING": "1",
            "S3_SKIP_SIGNATURE_VALIDATION": "0" if validate_signatures else "1",
            # hypercorn binds the host given; the default twisted server binds 0.0.0.0.
            "GATEWAY_SERVER": "hypercorn",
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "LOCALSTACK_HOST": f"127.0.0.1:{port}",
            # This machine has /.dockerenv: without the override LocalStack believes it runs
            # in its own container and writes to /var/lib/localstack instead of FILESYSTEM_ROOT.
            "OVERRIDE_IN_DOCKER": "0",
            "FILESYSTEM_ROOT": str(root / "fs"),
            "CONFIG_DIR": str(root / "config"),
            "PERSISTENCE": "0",
            # No DNS server (it would bind port 53), no analytics, no certificate download.
            "DNS_ADDRESS": "0",
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
        }
    )
    return env


def _s3_state(endpoint_url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{endpoint_url}/_localstack/health", timeout=2) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError):  # not listening yet, or a half-written answer
        return None
    services = body.get("services") if isinstance(body, dict) else None
    state = services.get("s3") if isinstance(services, dict) else None
    return state if isinstance(state, str) else None


class LocalStack:
    """A running LocalStack (S3 only). Stop it with :meth:`stop` or use it as a context manager."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, root: Path, log_path: Path
    ) -> None:
        self.process = process
        self.port = port
        self.root = root
        self.log_path = log_path
        self.endpoint_url = f"http://127.0.0.1:{port}"

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT, *, keep_files: bool = False) -> None:
        """SIGTERM LocalStack's process group, SIGKILL it after ``timeout``; idempotent."""
        pgid = self.process.pid  # started with start_new_session, so pid == pgid
        if self.process.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        # Whatever is left of the group (the leader included) goes now.
        _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        atexit.unregister(self.stop)
        if not keep_files:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _launch(python: Path, port: int, *, validate_signatures: bool, timeout: float) -> LocalStack:
    root = Path(tempfile.mkdtemp(prefix="localstack-"))
    log_path = root / "localstack.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(python), "-c", _BOOTSTRAP, str(root / "s3-storage"), str(os.getpid())],
            cwd=root,
            env=_environment(port, root, validate_signatures=validate_signatures),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole on stop
        )
    instance = LocalStack(process, port, root, log_path)
    atexit.register(instance.stop)

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = instance.log_tail()
            instance.stop()
            raise LocalStackError(
                f"LocalStack exited with code {process.returncode} during start-up; log:\n{tail}"
            )
        if _s3_state(instance.endpoint_url) == "running":
            return instance
        if time.monotonic() > deadline:
            tail = instance.log_tail()
            instance.stop()
            raise LocalStackError(
                f"LocalStack S3 not running on port {port} after {timeout:.0f}s; log:\n{tail}"
            )
        time.sleep(0.1)


def start_localstack(
    port: int | None = None,
    *,
    validate_signatures: bool = True,
    timeout: float = DEFAULT_START_TIMEOUT,
    venv: Path | None = None,
) -> LocalStack:
    """Start LocalStack's S3 on ``127.0.0.1:port`` and wait until S3 answers.

    ``port=None`` picks a free port (and tries another if that one was taken meanwhile).
    Raises :class:`LocalStackNotInstalledError` if the venv is missing, and
    :class:`LocalStackError` (with the tail of LocalStack's log) if it does not come up
    within ``timeout`` seconds.
    """
    python = _venv_python(venv if venv is not None else localstack_venv())
    # LocalStack does not exit when its port is taken: it hangs, and its own readiness
    # probe even succeeds against the other listener. So check first.
    candidates = [port] if port is not None else [free_port() for _ in range(3)]
    for candidate in candidates:
        if _port_is_free(candidate):
            return _launch(
                python, candidate, validate_signatures=validate_signatures, timeout=timeout
            )
    raise LocalStackError(f"port {candidates[-1]} on 127.0.0.1 is already in use")


@pytest.fixture(scope="session")
def localstack_endpoint() -> Iterator[str]:
    """Endpoint URL of one LocalStack S3 (signature validation on) shared by the session.

    A missing venv skips the test locally and fails it under CI (``CI=true``).
    Credentials: any key id / secret (``test``/``test``), region ``us-east-1``, path-style.
    """
    try:
        instance = start_localstack()
    except LocalStackNotInstalledError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc}; under CI=true a missing LocalStack is a failure, not a skip")
        pytest.skip(str(exc))
    try:
        yield instance.endpoint_url
    finally:
        instance.stop()
