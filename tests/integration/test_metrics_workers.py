"""/metrics of `gateway serve --workers 2`: one set of counters, whichever worker
answers the scrape (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_project
from tests.support.services import Server, start_server

REQUESTS = 240
UPLOAD_PATH = "/api/storage/upload/"
UPLOAD_ROUTE = "/api/storage/upload"  # the route label (the path template)


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("multiproc")
    # what a previous run would leave behind: removed when the server starts
    (directory / "counter_999999.db").write_bytes(b"not a value file")
    return directory


@pytest.fixture(scope="module")
def two_workers(
    server_env: dict[str, str], metrics_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {**server_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    server = start_server(env, tmp_path_factory.mktemp("workers"), "gw-2w", workers=2)
    yield server
    server.stop()


def _samples(families: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def _uploads(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """This test's counters: upload outcomes, the route's 200s and its histogram count."""
    route = (("method", "POST"), ("route", UPLOAD_ROUTE))
    return {
        "admitted": samples.get(("gateway_upload_requests_total", (("outcome", "admitted"),)), 0),
        "http_200": samples.get(("gateway_http_requests_total", (*route, ("status", "200"))), 0),
        "latency_count": samples.get(("gateway_http_request_duration_seconds_count", route), 0),
    }


def _scrape(base_url: str) -> dict[str, float]:
    # a new connection each time: the kernel hands it to either worker
    r = httpx.get(f"{base_url}/metrics", headers={"Connection": "close"}, timeout=10)
    assert r.status_code == 200, r.text
    return _uploads(_samples(text_string_to_metric_families(r.text)))


def _per_worker(metrics_dir: Path) -> dict[str, dict[str, float]]:
    """Each worker's own counts, from its own files (counter_<pid>.db, histogram_<pid>.db)."""
    pids = {path.stem.rpartition("_")[2] for path in metrics_dir.glob("*.db")}
    out = {}
    for pid in sorted(pids):
        files = [str(p) for p in metrics_dir.glob(f"*_{pid}.db")]
        families = MultiProcessCollector.merge(files)  # type: ignore[no-untyped-call]
        out[pid] = _uploads(_samples(families))
    return out


async def test_metrics_of_two_workers_add_up(
    two_workers: Server, metrics_dir: Path, state: Any
) -> None:
    assert not (metrics_dir / "counter_999999.db").exists()
    p = await make_project(state)
    # no keep-alive: every request on a connection of its own, spread over the workers
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=30) as c:

        async def one(i: int) -> int:
            r = await c.post(
                f"{two_workers.base_url}{UPLOAD_PATH}",
                json={"tenant_id": f"t{i % 7}", "filename": f"f{i}.bin", "size_bytes": 10},
                headers=p.headers,
            )
            return r.status_code

        codes = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    assert codes == [200] * REQUESTS

    expected = {"admitted": REQUESTS, "http_200": REQUESTS, "latency_count": REQUESTS}
    # a request is counted just after its answer (at the end of its worker's loop
    # iteration): wait for the last ones, never longer than 10 s
    deadline = time.monotonic() + 10
    while _scrape(two_workers.base_url) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    workers = _per_worker(metrics_dir)
    busy = {pid: counts for pid, counts in workers.items() if counts["admitted"] > 0}
    assert len(busy) == 2, workers  # both workers served uploads
    for key in expected:
        assert sum(counts[key] for counts in workers.values()) == REQUESTS, (key, workers)
    # whichever worker answers, /metrics shows the sum of both
    for _ in range(8):
        assert _scrape(two_workers.base_url) == expected
