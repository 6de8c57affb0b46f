"""The upload hot path under load: full path vs a bare presign endpoint, hot vs spread.

    .venv/bin/python bench/bench_upload_path.py [--duration 8] [--connections 64]
        [--workers 1[,2]] [--tenants 10000] [--log-level info]

One run against a real server (uvicorn subprocess, as ``gateway serve`` runs it)
on its own services: a throwaway Postgres database, Redis DB 14 and moto's S3.
``wrk`` generates the load (apt-get install -y wrk). Cases, per worker count:

* bare presign — ``POST /bench/presign/``: same body, same JSON, only presigns;
* full path, 1 hot tenant — ``POST /api/storage/upload/``, every request one tenant;
* full path, N tenants — a different tenant per request (counter mod N), all
  created and warmed beforehand;
Before timing: ``--history`` uploads spread over the cold tenants (1 in 20 pending),
then ``ANALYZE`` (tables of a database in service, which the server's plans are made for).

* full path, N cold tenants — N other tenants that exist in Postgres, with the whole
  Redis DB flushed right before the run (every tenant's first upload after a Redis
  restart or a day idle): each tenant's first request rebuilds its quota hash;
* full path, new tenants — every request for a tenant never seen (the signup case).

Limits are large (nothing may be rejected; any non-2xx fails the run) and the
presigner is also timed in-process against botocore. Targets (issue): full ÷ bare
≥ 0.5, hot ÷ spread ≥ 0.9, cold spread ÷ hot ≥ 0.9, full-path p99 ≤ 25 ms at 64
connections, ≤ 20 µs per URL.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import botocore
import botocore.session
import redis as redis_sync
from botocore.config import Config

from bench._harness import (
    BUCKET,
    CpuMeter,
    Services,
    WrkResult,
    load_average,
    print_table,
    run_wrk,
    scratch_dir,
    server,
    services,
    verdict,
    warm_quota,
)
from gateway.db import Q, create_database
from gateway.projects import ProjectService
from gateway.storage.presigner import S3Presigner, StaticCredentialSource

UPLOAD = "/api/storage/upload/"
BARE = "/bench/presign/"
PROJECT_LIMIT = 10**15  # large limits: the checks run, nothing is rejected
TENANT_LIMIT = 10**13

TARGET_FULL_VS_BARE = 0.5
TARGET_HOT_VS_SPREAD = 0.9
TARGET_COLD_VS_HOT = 0.9
TARGET_P99_MS = 25.0
TARGET_PRESIGN_US = 20.0


@dataclass
class Case:
    name: str
    workers: int
    result: WrkResult
    server_us: float  # server CPU per request (all workers)
    postgres_us: float  # CPU of our database's backends per request


async def create_project(svc: Services) -> tuple[str, str]:
    db = create_database(svc.settings())
    await db.open()
    try:
        created = await ProjectService(db).create(
            "bench-uploads", storage_limit=PROJECT_LIMIT, default_tenant_limit=TENANT_LIMIT
        )
    finally:
        await db.close()
    return created.project_id, created.api_key


async def create_tenants(
    svc: Services, project_id: str, tenant_ids: list[str], history: int
) -> None:
    """Tenant rows only (their quota hashes are left to the first request), and
    ``history`` uploads spread over them (1 in 20 still pending), then the tables'
    statistics: the state of a database in service, which the server's plans are made
    against (not the empty tables of a minute ago)."""
    db = create_database(svc.settings())
    await db.open()
    try:
        for first in range(0, len(tenant_ids), 5000):
            chunk = tenant_ids[first : first + 5000]
            await db.execute(Q.ensure_tenants, [project_id] * len(chunk), chunk)
        await db.execute(
            "INSERT INTO uploads (id, project_id, tenant_id, object_key, filename,"
            " content_type, method, declared_size, status, created_at, expires_at,"
            " reserved_until, settled_at)"
            " SELECT 'upl_hist' || g, $1, t, $1 || '/' || t || '/upl_hist' || g || '/f',"
            " 'f', 'application/pdf', 'PUT', 1048576,"
            " CASE WHEN g % 20 = 0 THEN 'pending' ELSE 'completed' END, now(),"
            " now() + interval '1 hour', now() + interval '2 hours', now()"
            " FROM generate_series(1, $3::int) g"
            " JOIN unnest($2::text[]) WITH ORDINALITY AS x(t, i)"
            " ON x.i = 1 + g % cardinality($2::text[])",
            project_id,
            tenant_ids,
            history,
        )
        await db.execute("ANALYZE")
    finally:
        await db.close()


def flushed(svc: Services, run: Callable[[], WrkResult]) -> Callable[[], WrkResult]:
    """``run`` right after the whole Redis DB is flushed (every hash cold)."""

    def go() -> WrkResult:
        redis_sync.Redis.from_url(svc.redis_url).flushdb()
        return run()

    return go


def load(
    base_url: str,
    path: str,
    api_key: str,
    tenants: int,
    prefix: str,
    args: argparse.Namespace,
    duration: float | None = None,
    connections: int | None = None,
) -> WrkResult:
    threads = 2
    return run_wrk(
        base_url + path,
        "upload.lua",
        [path, api_key, str(tenants), prefix, str(threads)],
        connections=connections or args.connections,
        duration=duration or args.duration,
        threads=threads,
    )


def measured(meter: CpuMeter, name: str, workers: int, run: Callable[[], WrkResult]) -> Case:
    meter.start()
    result = run()
    cpu = meter.stop()
    n = max(result.requests, 1)
    return Case(name, workers, result, cpu["server"] / n * 1e6, cpu["postgres"] / n * 1e6)


def presign_timings(svc: Services, number: int = 5000, repeat: int = 5) -> tuple[float, float]:
    """µs per presigned PUT URL: ours and botocore's, for the server's configuration."""
    key = "prj_0190a1b2c3d4e5f6a7b8c9d0/user_123/upl_0190a1b2c3d4e5f6a7b8c9d0/report.pdf"
    ours = S3Presigner(
        bucket=BUCKET,
        region="us-east-1",
        endpoint_url=svc.s3_endpoint_url,
        addressing="path",
        credentials=StaticCredentialSource("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG"),
    )
    client: Any = botocore.session.get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=svc.s3_endpoint_url,
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

    def our_put() -> object:
        return ours.presign_put(
            key,
            content_type="application/pdf",
            content_length=1_048_576,
            checksum_sha256=None,
            expires_in=3600,
            signed_at=datetime.now(UTC),
        )

    def boto_put() -> object:
        return client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": BUCKET,
                "Key": key,
                "ContentType": "application/pdf",
                "ContentLength": 1_048_576,
            },
            ExpiresIn=3600,
        )

    our_put()
    boto_put()
    ours_us = min(timeit.repeat(our_put, number=number, repeat=repeat)) / number * 1e6
    n = max(number // 20, 1)
    boto_us = min(timeit.repeat(boto_put, number=n, repeat=repeat)) / n * 1e6
    return ours_us, boto_us


def fmt_rps(r: WrkResult) -> str:
    return f"{r.rps:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured case")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per path")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--low-connections",
        type=int,
        default=8,
        help="also time the full path at this many connections (0 = skip); not a target",
    )
    parser.add_argument("--tenants", type=int, default=10_000, help="tenants of the spread case")
    parser.add_argument(
        "--cold-tenants", type=int, default=10_000, help="tenants of the cold spread case"
    )
    parser.add_argument(
        "--history", type=int, default=100_000, help="completed uploads made beforehand"
    )
    parser.add_argument(
        "--workers", default="1", help="comma-separated uvicorn worker counts, e.g. 1,2"
    )
    parser.add_argument(
        "--log-level", default="info", help="server GATEWAY_LOG_LEVEL (info = production default)"
    )
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]

    load_before = load_average()
    cases: list[Case] = []
    with services() as svc, scratch_dir("gateway-bench-") as tmp:
        ours_us, boto_us = presign_timings(svc)
        project_id, api_key = asyncio.run(create_project(svc))
        spread_ids = [f"s{n}" for n in range(args.tenants)]
        asyncio.run(warm_quota(svc.settings(), project_id, spread_ids))
        cold_ids = [f"c{n}" for n in range(args.cold_tenants)]
        asyncio.run(create_tenants(svc, project_id, cold_ids, history=args.history))
        for workers in worker_counts:
            with server(svc.env(args.log_level), workers=workers, log_dir=tmp) as srv:
                url = srv.base_url
                for path in (BARE, UPLOAD):  # warm the code paths (and the hot tenant)
                    load(url, path, api_key, 1, "hot", args, duration=args.warmup)
                meter = CpuMeter(srv.proc.pid, svc.database_url)
                spread = args.tenants
                cases += [
                    measured(
                        meter,
                        "bare presign",
                        workers,
                        partial(load, url, BARE, api_key, 1, "hot", args),
                    ),
                    measured(
                        meter,
                        "full, hot",
                        workers,
                        partial(load, url, UPLOAD, api_key, 1, "hot", args),
                    ),
                    measured(
                        meter,
                        "full, spread",
                        workers,
                        partial(load, url, UPLOAD, api_key, spread, "s", args),
                    ),
                    measured(
                        meter,
                        "full, cold spread",
                        workers,
                        flushed(
                            svc,
                            partial(load, url, UPLOAD, api_key, args.cold_tenants, "c", args),
                        ),
                    ),
                    measured(
                        meter,
                        "full, new tenants",
                        workers,
                        partial(
                            load, url, UPLOAD, api_key, 10**9, f"n{secrets.token_hex(3)}-", args
                        ),
                    ),
                ]
                if args.low_connections:
                    few = args.low_connections
                    cases.append(
                        measured(
                            meter,
                            "full, hot, few connections",
                            workers,
                            partial(load, url, UPLOAD, api_key, 1, "hot", args, connections=few),
                        )
                    )

    failures = 0
    rows: list[list[str]] = []

    def row(
        case: str,
        c: Case | None = None,
        ratio: str = "",
        target: str = "",
        ok: bool | None = None,
        p99: str = "",
    ) -> None:
        if c is None:
            cells = ["", "", p99, "", ""]
        else:
            r = c.result
            cells = [
                fmt_rps(r),
                f"{r.p50_ms:.1f}",
                f"{r.p99_ms:.1f}",
                f"{c.server_us:,.0f}",
                f"{c.postgres_us:,.0f}",
            ]
        rows.append([case, *cells, ratio, target, verdict(ok) if target else ""])

    for workers in worker_counts:
        bare, hot, spread, cold, new, *few = (c for c in cases if c.workers == workers)
        tag = f" [{workers}w]"
        full_ratio = min(hot.result.rps, spread.result.rps) / bare.result.rps
        hot_ratio = hot.result.rps / spread.result.rps
        cold_ratio = cold.result.rps / hot.result.rps
        p99 = max(hot.result.p99_ms, spread.result.p99_ms)
        clean = all(
            c.result.non_2xx == 0 and c.result.socket_errors == 0
            for c in (bare, hot, spread, cold, new)
        )
        checks = [
            full_ratio >= TARGET_FULL_VS_BARE,
            hot_ratio >= TARGET_HOT_VS_SPREAD,
            cold_ratio >= TARGET_COLD_VS_HOT,
            p99 <= TARGET_P99_MS,
            clean,
        ]
        failures += checks.count(False)
        row("bare presign" + tag, bare)
        row("full path, 1 hot tenant" + tag, hot, f"{hot.result.rps / bare.result.rps:.2f}")
        row(
            f"full path, {args.tenants:,} tenants" + tag,
            spread,
            f"{spread.result.rps / bare.result.rps:.2f}",
        )
        cold_share = min(1.0, args.cold_tenants / max(cold.result.requests, 1))
        row(
            f"full path, {args.cold_tenants:,} cold tenants ({cold_share:.0%} of requests cold)"
            + tag,
            cold,
            f"{cold.result.rps / bare.result.rps:.2f}",
        )
        row(
            "full path, a new tenant each request" + tag,
            new,
            f"{new.result.rps / bare.result.rps:.2f}",
        )
        row(
            "full ÷ bare (worse full case)" + tag,
            ratio=f"{full_ratio:.2f}",
            target=f">= {TARGET_FULL_VS_BARE}",
            ok=checks[0],
        )
        row(
            "hot ÷ spread" + tag,
            ratio=f"{hot_ratio:.2f}",
            target=f">= {TARGET_HOT_VS_SPREAD}",
            ok=checks[1],
        )
        row(
            "cold spread ÷ hot" + tag,
            ratio=f"{cold_ratio:.2f}",
            target=f">= {TARGET_COLD_VS_HOT}",
            ok=checks[2],
        )
        row(
            "  new tenants ÷ hot (no target)" + tag,
            ratio=f"{new.result.rps / hot.result.rps:.2f}",
        )
        row(
            "full path p99 (worse case)" + tag,
            p99=f"{p99:.1f}",
            target=f"<= {TARGET_P99_MS:g} ms",
            ok=checks[3],
        )
        row("every response 2xx" + tag, target="no errors", ok=checks[4])
        for c in few:  # latency without queueing: information, not a target
            row(
                f"  full path, 1 hot tenant, {args.low_connections} conns" + tag,
                c,
                f"{c.result.rps / bare.result.rps:.2f}",
            )
    presign_ok = ours_us <= TARGET_PRESIGN_US
    failures += 0 if presign_ok else 1
    row(
        "presign 1 URL in-process",
        ratio=f"{ours_us:.1f} µs",
        target=f"<= {TARGET_PRESIGN_US:g} µs",
        ok=presign_ok,
    )
    row("  botocore generate_presigned_url", ratio=f"{boto_us:.1f} µs")

    print(
        f"\nupload path: {args.connections} connections, {args.duration:g} s per case, "
        f"wrk -t2, server log level {args.log_level}; Python {sys.version.split()[0]}, "
        f"botocore {botocore.__version__}; load average {load_before} before, "
        f"{load_average()} after\n"
    )
    print_table(
        [
            "case",
            "req/s",
            "p50 ms",
            "p99 ms",
            "srv µs/req",
            "pg µs/req",
            "ratio",
            "target",
            "result",
        ],
        rows,
    )
    print(
        "srv/pg µs/req: CPU time of the server process(es) and of our database's Postgres"
        " backends per request (steadier than req/s when other work shares the CPUs)."
    )
    for c in cases:
        if c.result.non_2xx or c.result.socket_errors:
            print(
                f"! {c.name} [{c.workers}w]: {c.result.non_2xx} non-2xx, "
                f"{c.result.socket_errors} socket errors"
            )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
