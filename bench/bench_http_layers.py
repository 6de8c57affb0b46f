"""The HTTP layers' cost per request: what one webhook delivery pays before any work.

    .venv/bin/python bench/bench_http_layers.py [--duration 5] [--connections 32]

The same trivial POST route (read the body, answer a small JSON document) served by
uvicorn (as ``gateway serve`` runs it) five ways: a raw ASGI app; Litestar routing to
a plain ASGI route (the shape of ``POST /api/storage/events/s3/``); Litestar routing
to an ``@post`` handler taking ``Request`` and ``State`` (the shape of the other
routes); and each of the last two behind the gateway's request middleware (request
id, one JSON log line, metrics). Load from ``wrk`` on 127.0.0.1; CPU per request of
the server process from /proc. Information only: no targets.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    ROOT,
    free_port,
    load_average,
    print_table,
    process_cpu,
    require_wrk,
    run_wrk,
)
from bench._http_layers import PATH

CASES = [
    ("raw ASGI app", "raw"),
    ("Litestar, plain ASGI route", "litestar_asgi"),
    ("Litestar, @post handler", "litestar_post"),
    ("Litestar, plain ASGI route + middleware", "litestar_asgi_middleware"),
    ("Litestar, @post handler + middleware", "litestar_post_middleware"),
]


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.post(url, content=b"{}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url}: the server did not start")


def measure(factory: str, args: argparse.Namespace, log_dir: Path) -> tuple[float, float]:
    port = free_port()
    with (log_dir / f"{factory}.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                f"bench._http_layers:{factory}",
                "--factory",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        url = f"http://127.0.0.1:{port}{PATH}"
        _wait(url, proc)
        run_wrk(url, "post.lua", [], connections=args.connections, duration=1, threads=1)
        before = process_cpu(proc.pid)
        result = run_wrk(
            url, "post.lua", [], connections=args.connections, duration=args.duration, threads=1
        )
        cpu = process_cpu(proc.pid) - before
        if result.non_2xx or result.socket_errors or not result.requests:
            raise RuntimeError(f"{factory}: {result}")
        return result.rps, cpu / result.requests * 1e6
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    require_wrk()
    load_before = load_average()
    rows: list[list[str]] = []
    base = 0.0
    with tempfile.TemporaryDirectory(prefix="gateway-bench-http-") as tmp:
        for name, factory in CASES:
            rps, us = measure(factory, args, Path(tmp))
            base = base or us
            rows.append(
                [name, f"{rps:,.0f}", f"{us:,.0f}", f"{us - base:+,.0f}", f"{us / base:.2f}"]
            )
    print(
        f"\nHTTP layers, {args.connections} connections, wrk -t1; Python "
        f"{sys.version.split()[0]}; load average {load_before} before, {load_average()} after\n"
    )
    print_table(["server", "req/s", "srv µs/req", "vs raw µs", "vs raw"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
