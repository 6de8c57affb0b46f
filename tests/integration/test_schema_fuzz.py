"""schemathesis ``--checks all`` against a live ``gateway serve``: every answer the
fuzzer provokes is one /schema documents, with its body and headers, and every
constraint the server enforces is one /schema states (tests/schemathesis/).

Bounded for CI: ``SCHEMATHESIS_MAX_EXAMPLES`` cases per operation and phase
(default 40), a fixed seed (``SCHEMATHESIS_SEED``, default 1), one worker. The counts
of the run land in test-output/schemathesis.txt.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from tests.conftest import make_project
from tests.support.services import ROOT, Server, start_server

CONFIG = ROOT / "tests" / "schemathesis" / "schemathesis.toml"
OUTPUT = ROOT / "test-output"


@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    s = start_server(server_env, tmp_path_factory.mktemp("fuzz"), "fuzz")
    yield s
    s.stop()


def _resources(base_url: str, api_key: str) -> dict[str, str]:
    """A pending upload and a stored file, for the hooks and parameters of the run."""
    auth = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, headers=auth, timeout=10) as c:
        pending = c.post(
            "/api/storage/upload/",
            json={"tenant_id": "fuzz_tenant", "filename": "pending.txt", "size_bytes": 3},
        )
        pending.raise_for_status()
        stored = c.post(
            "/api/storage/upload/",
            json={"tenant_id": "fuzz_tenant", "filename": "stored.txt", "size_bytes": 5},
        ).json()
        httpx.put(stored["presigned_url"], headers=stored["headers"], content=b"hello")
        c.post(f"/api/storage/uploads/{stored['upload_id']}/complete/").raise_for_status()
    return {
        "GATEWAY_UPLOAD_ID": pending.json()["upload_id"],
        "GATEWAY_FILE_PATH": stored["file_path"],
    }


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else -1


async def test_schemathesis_checks_all(server: Server, state: Any, settings: Settings) -> None:
    project = await make_project(state)
    env = {
        **os.environ,
        **_resources(server.base_url, project.api_key),
        "GATEWAY_API_KEY": project.api_key,
        "GATEWAY_WEBHOOK_SECRET": settings.webhook_secret or "",
        "NO_COLOR": "1",
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{server.base_url}/schema/openapi.json",
        "--checks",
        "all",
        # The stateful phase's use-after-free check takes a 2xx after a DELETE on the
        # same path for a deleted resource still served: `DELETE …/tenants/{id}/limit/`
        # drops the tenant's own limit and `PATCH …/limit/` sets one again (the tenant
        # is never gone). No per-operation setting reaches that phase. Deletions that
        # remove something are checked by the suite (a deleted webhook answers 404:
        # tests/integration/test_webhooks.py).
        "--exclude-checks",
        "use_after_free",
        "--max-examples",
        os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "40"),
        "--seed",
        os.environ.get("SCHEMATHESIS_SEED", "1"),
        # one worker: schemathesis's workers are threads, and CPython 3.11's parser
        # is not safe to call from two at once (hypothesis reads lambdas' source)
        "--workers",
        "1",
        "--request-timeout",
        "10",
    ]
    run = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "schemathesis.txt").write_text(out)
    assert run.returncode == 0, out[-6000:]
    operations = _count(r"Tested: (\d+)", out)
    cases = _count(r"(\d+) generated", out)
    assert operations == _count(r"Selected: \d+/(\d+)", out) and operations >= 14, out[-3000:]
    assert cases > operations * 10, out[-3000:]
    print(f"schemathesis: {operations} operations, {cases} cases")
