"""What GATEWAY_DB_STATEMENT_CACHE_SIZE=0 and PgBouncer cost on the upload path.

    .venv/bin/python bench/bench_pgbouncer.py [--duration 6] [--rounds 3]
        [--connections 64] [--tenants 10000] [--pool-size 20]

Three servers up at once on the same services (bench/_harness.py), each warmed up,
then ``--rounds`` rounds of ``POST /api/storage/upload/`` over ``--tenants`` warm
tenants (wrk, ``--connections``), the servers' order rotating from round to round:

* direct — Postgres directly, asyncpg's default cache of 100 named statements;
* direct, cache 0 — Postgres directly, ``GATEWAY_DB_STATEMENT_CACHE_SIZE=0``: every
  query parsed (and planned) afresh in an unnamed statement;
* PgBouncer, cache 0 — through Debian's pgbouncer 1.18 in transaction pooling mode
  (deploy/pgbouncer/pgbouncer.ini; ``--pool-size`` server connections), cache 0. With
  the default cache it fails (tests/integration/test_pgbouncer.py), so that case is
  not timed.

Per case: req/s and p99 over all its rounds, and CPU per request of the server,
of our database's Postgres backends and of pgbouncer: on a shared machine req/s
swings with whatever else runs, CPU per request much less. No target: the numbers
are for deploy/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    CpuMeter,
    WrkResult,
    load_average,
    print_table,
    process_cpu,
    run_wrk,
    scratch_dir,
    server,
    services,
    warm_quota,
)
from bench.bench_upload_path import PROJECT_LIMIT, TENANT_LIMIT, create_tenants
from gateway.config import Settings
from gateway.db import create_database
from gateway.projects import ProjectService
from tests.support.pgbouncer import start_pgbouncer

UPLOAD = "/api/storage/upload/"


@dataclass
class Case:
    name: str
    env: dict[str, str]
    results: list[WrkResult] = field(default_factory=list)
    server_s: float = 0.0
    postgres_s: float = 0.0
    bouncer_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.results)

    def per_request_us(self, seconds: float) -> str:
        return f"{seconds / max(self.requests, 1) * 1e6:,.0f}"


async def create_project(database_url: str) -> tuple[str, str]:
    db = create_database(Settings.from_env({"GATEWAY_DATABASE_URL": database_url}))
    try:
        created = await ProjectService(db).create(
            "bench-pgbouncer", storage_limit=PROJECT_LIMIT, default_tenant_limit=TENANT_LIMIT
        )
    finally:
        await db.close()
    return created.project_id, created.api_key


def load(base_url: str, api_key: str, tenants: int, duration: float, connections: int) -> WrkResult:
    threads = 2
    return run_wrk(
        base_url + UPLOAD,
        "upload.lua",
        [UPLOAD, api_key, str(tenants), "s", str(threads)],
        connections=connections,
        duration=duration,
        threads=threads,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument(
        "--history", type=int, default=100_000, help="completed uploads made beforehand"
    )
    parser.add_argument(
        "--pool-size", type=int, default=20, help="pgbouncer server connections (deployed: 20)"
    )
    args = parser.parse_args()

    load_before = load_average()
    with services() as svc, scratch_dir("gateway-bench-pgbouncer-") as tmp:
        bouncer = start_pgbouncer(svc.database_url, pool_size=args.pool_size)
        try:
            project_id, api_key = asyncio.run(create_project(svc.database_url))
            tenant_ids = [f"s{n}" for n in range(args.tenants)]
            asyncio.run(warm_quota(svc.settings(), project_id, tenant_ids))
            # a database in service: history in the tables, then ANALYZE (as
            # bench_upload_path.py; the cached plans are made against these statistics)
            cold_ids = [f"c{n}" for n in range(args.tenants)]
            asyncio.run(create_tenants(svc, project_id, cold_ids, history=args.history))
            base = svc.env("info")
            cases = [
                Case("direct, statement cache 100 (default)", base),
                Case("direct, statement cache 0", {**base, "GATEWAY_DB_STATEMENT_CACHE_SIZE": "0"}),
                Case(
                    "PgBouncer (transaction), statement cache 0",
                    {
                        **base,
                        "GATEWAY_DATABASE_URL": bouncer.url(svc.database_url),
                        "GATEWAY_DB_STATEMENT_CACHE_SIZE": "0",
                    },
                ),
            ]
            with contextlib.ExitStack() as stack:
                servers = [stack.enter_context(server(c.env, log_dir=tmp)) for c in cases]
                for srv in servers:
                    load(srv.base_url, api_key, args.tenants, args.warmup, args.connections)
                meters = [CpuMeter(srv.proc.pid, svc.database_url) for srv in servers]
                for rnd in range(args.rounds):
                    order = [(rnd + i) % len(cases) for i in range(len(cases))]
                    for i in order:
                        case, srv, meter = cases[i], servers[i], meters[i]
                        bouncer_before = process_cpu(bouncer.proc.pid)
                        meter.start()
                        result = load(
                            srv.base_url, api_key, args.tenants, args.duration, args.connections
                        )
                        cpu = meter.stop()
                        bouncer_used = process_cpu(bouncer.proc.pid) - bouncer_before
                        if result.non_2xx or result.socket_errors:
                            print(
                                f"{case.name}: {result.non_2xx} non-2xx,"
                                f" {result.socket_errors} socket errors"
                            )
                            return 1
                        case.results.append(result)
                        case.server_s += cpu["server"]
                        case.postgres_s += cpu["postgres"]
                        case.bouncer_s += bouncer_used
        finally:
            bouncer.stop()

    rows = []
    base_rps = sum(r.requests for r in cases[0].results) / sum(
        r.duration_s for r in cases[0].results
    )
    for c in cases:
        rps = c.requests / sum(r.duration_s for r in c.results)
        rows.append(
            [
                c.name,
                f"{rps:,.0f}",
                f"{rps / base_rps:.2f}",
                f"{statistics.median(r.p99_ms for r in c.results):.1f}",
                c.per_request_us(c.server_s),
                c.per_request_us(c.postgres_s),
                c.per_request_us(c.bouncer_s) if "PgBouncer" in c.name else "-",
                c.per_request_us(c.server_s + c.postgres_s + c.bouncer_s),
            ]
        )
    print(
        f"\nPOST {UPLOAD}, {args.tenants:,} warm tenants, {args.connections} connections, "
        f"1 worker; {args.rounds} interleaved rounds of {args.duration:g} s "
        f"(load before: {load_before}, after: {load_average()})\n"
    )
    print_table(
        [
            "case",
            "req/s",
            "÷ direct",
            "p99 ms (median)",
            "server µs/req",
            "postgres µs/req",
            "pgbouncer µs/req",
            "total µs/req",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
