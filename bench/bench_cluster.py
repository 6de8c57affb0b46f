"""Three gateway replicas on a Redis Cluster against one on a standalone Redis, at the
same total concurrency, measured in one run (interleaved).

    .venv/bin/python bench/bench_cluster.py [--duration 8] [--rounds 2]
        [--connections 64] [--projects 6] [--tenants 500]

Both sides on the same machine and the same Postgres database:

* **standalone** — one ``gateway serve``-like server (``bench._server``, uvicorn)
  on a redis-server of its own (no persistence);
* **cluster** — three such servers on a Redis Cluster of 3 masters + 3 replicas
  (``tests/support/redis_cluster.py``, the test suite's cluster).

Before timing: ``--history`` past uploads per side spread over its tenants (1 in 20
still pending), then ``ANALYZE``: tables of a database in service, which the servers'
cached plans are made against. Each side has ``--projects`` projects (on the cluster
two per shard, their ids chosen by key slot) with ``--tenants`` tenants each, warm in
Redis; every request is an upload for the next project in turn and one of its
tenants, so every micro-batch mixes projects. The load is three ``wrk -t1`` processes
of a third of the connections each, all at the one standalone server or one at each
replica: the same load generator on every side. The sides take turns, ``--rounds``
times each, the order reversed every round, so drift on a shared machine weighs on
all. ``--standalone-replicas`` adds 3 replicas on the standalone Redis: what the
split into replicas costs, apart from the cluster.

Then S3 events (``--events``, 0 = none): webhook bodies of 10 records (the MinIO
records of ``bench_events.py``, for uploads pending in each side's projects) at 64
connections to one server of each side, once each, and their sums checked
(``bench_events.verify``: usage in Postgres and Redis, Redis reservations against
the pending uploads). Information for the sizing (docs/sizing.md), no target.

Columns: req/s over all rounds; p99 (the worst wrk process, worst round); CPU per
request of the gateway processes, of our database's Postgres backends and of the
Redis servers (all six cluster nodes: replicas apply the masters' writes), read from
/proc. Target: cluster ÷ standalone ≥ 1.0 (on a small machine the CPU is the limit;
the cluster must cost nothing). Any non-2xx answer fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_events as ev
from bench._harness import (
    WRK_DIR,
    Server,
    Services,
    _backends,
    _last_json,
    load_average,
    print_table,
    process_cpu,
    process_tree,
    require_wrk,
    scratch_dir,
    server,
    services,
    verdict,
    warm_quota,
)
from gateway import auth
from gateway.config import Settings
from gateway.db import Q, create_database
from gateway.ids import new_id
from tests.support.faults import PrivateRedis
from tests.support.redis_cluster import (
    RedisClusterProcs,
    project_ids_on,
    start_redis_cluster,
)

UPLOAD = "/api/storage/upload/"
PROJECT_LIMIT = 10**15  # large limits: the checks run, nothing is rejected
TENANT_LIMIT = 10**13
TARGET = 1.0
LOADERS = 3  # wrk processes per run


@dataclass
class Side:
    name: str
    env: dict[str, str]
    replicas: int
    redis_pids: list[int]
    project_ids: list[str] = field(default_factory=list)
    api_keys: list[str] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    server_pids: list[int] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    rounds: list[float] = field(default_factory=list)  # req/s of each round
    cpu: dict[str, float] = field(default_factory=lambda: {"srv": 0.0, "pg": 0.0, "redis": 0.0})


async def make_projects(svc: Services, ids: list[str]) -> list[str]:
    """Projects with these ids (large limits); their API keys."""
    db = create_database(svc.settings())
    await db.open()
    keys: list[str] = []
    try:
        for pid in ids:
            key = auth.generate_key()
            async with db.transaction() as conn:
                await conn.execute(
                    Q.insert_project, pid, f"bench-{pid}", None, PROJECT_LIMIT, TENANT_LIMIT
                )
                await conn.execute(Q.insert_api_key, key.key_id, pid, key.secret_hash)
            keys.append(key.api_key)
    finally:
        await db.close()
    return keys


async def add_history(svc: Services, project_id: str, tenants: list[str], n: int) -> None:
    """The tenants' rows, and ``n`` past uploads spread over them (1 in 20 pending)."""
    db = create_database(svc.settings())
    await db.open()
    try:
        await db.execute(Q.ensure_tenants, [project_id] * len(tenants), tenants)
        await db.execute(
            "INSERT INTO uploads (id, project_id, tenant_id, object_key, filename,"
            " content_type, method, declared_size, status, created_at, expires_at,"
            " reserved_until, settled_at)"
            " SELECT 'upl_h' || $1 || g, $1, t, $1 || '/' || t || '/upl_h' || g || '/f',"
            " 'f', 'application/pdf', 'PUT', 1048576,"
            " CASE WHEN g % 20 = 0 THEN 'pending' ELSE 'completed' END, now(),"
            " now() + interval '1 hour', now() + interval '2 hours', now()"
            " FROM generate_series(1, $3::int) g"
            " JOIN unnest($2::text[]) WITH ORDINALITY AS x(t, i)"
            " ON x.i = 1 + g % cardinality($2::text[])",
            project_id,
            tenants,
            n,
        )
    finally:
        await db.close()


async def analyze(svc: Services) -> None:
    db = create_database(svc.settings())
    await db.open()
    try:
        await db.execute("ANALYZE")
    finally:
        await db.close()


def cluster_pids(cluster: RedisClusterProcs) -> list[int]:
    return [n.proc.pid for n in cluster.nodes if n.proc is not None]


async def cpu_sample(side: Side, database_url: str) -> dict[str, float]:
    database = database_url.rsplit("/", 1)[1]
    return {
        "srv": sum(process_cpu(p) for s in side.server_pids for p in process_tree(s)),
        "pg": sum(process_cpu(p) for p in await _backends(database)),
        "redis": sum(process_cpu(p) for p in side.redis_pids),
    }


def wrk_all(side: Side, args: argparse.Namespace, duration: float) -> list[dict[str, float]]:
    """``LOADERS`` wrk processes at once, a share of the connections each."""
    wrk = require_wrk()
    procs = []
    for i in range(LOADERS):
        conns = args.connections // LOADERS + (1 if i < args.connections % LOADERS else 0)
        url = side.urls[i % len(side.urls)]
        procs.append(
            subprocess.Popen(
                [
                    wrk,
                    "-t1",
                    f"-c{conns}",
                    f"-d{max(1, round(duration))}s",
                    "--timeout=10s",
                    "-s",
                    str(WRK_DIR / "upload_projects.lua"),
                    url + UPLOAD,
                    "--",
                    UPLOAD,
                    ",".join(side.api_keys),
                    str(args.tenants),
                    "t",
                    str(LOADERS),
                    str(i),
                ],
                cwd=WRK_DIR,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=duration + 60)
        if p.returncode:
            raise RuntimeError(f"wrk failed: {stderr}")
        out.append(_last_json(stdout))
    return out


def measure(side: Side, svc: Services, args: argparse.Namespace) -> None:
    before = asyncio.run(cpu_sample(side, svc.database_url))
    runs = wrk_all(side, args, args.duration)
    after = asyncio.run(cpu_sample(side, svc.database_url))
    for k in side.cpu:
        side.cpu[k] += after[k] - before[k]
    requests = sum(int(r["requests"]) for r in runs)
    seconds = max(float(r["duration_us"]) for r in runs) / 1e6
    side.rounds.append(requests / seconds)
    side.requests += requests
    side.seconds += seconds
    side.p99_ms = max(side.p99_ms, *(float(r["p99_us"]) / 1000 for r in runs))
    side.errors += sum(int(r["status_errors"]) + int(r["socket_errors"]) for r in runs)


def events_on(
    side: Side,
    svc: Services,
    tmp: Path,
    args: argparse.Namespace,
    rng: random.Random,
    seq: ev.Sequencer,
) -> list[str]:
    """One webhook run of ``args.events`` events (bodies of 10) on the side's first
    server; its row."""
    settings = Settings.from_env(side.env)
    w = ev.plan(side.name, side.project_ids, f"ev{len(side.urls)}-", args.events, rng, seq)
    asyncio.run(ev.prepare(settings, [w], side.project_ids[0], 0, rng))
    run_args = argparse.Namespace(
        connections=args.connections, timeout=600, workers=1, log_level=args.log_level
    )
    before = sum(process_cpu(p) for p in side.redis_pids)
    run = ev.run_webhook(svc, side.servers[0], w, run_args, tmp, per_body=10)
    redis_us = (sum(process_cpu(p) for p in side.redis_pids) - before) / run.events * 1e6
    checks = asyncio.run(ev.verify(settings, [w]))
    srv_us, pg_us = run.server_us or 0.0, run.postgres_us or 0.0
    return [
        side.name.replace(", 3 replicas", ", 1 of 3 replicas"),
        f"{run.rate:,.0f}",
        f"{srv_us:,.0f}",
        f"{pg_us:,.0f}",
        f"{redis_us:,.0f}",
        f"{srv_us + pg_us + redis_us:,.0f}",
        "ok" if all(c.ok for c in checks.values()) and not run.errors else "WRONG",
    ]


def start_servers(side: Side, log_dir: Path, stack: contextlib.ExitStack) -> None:
    for _ in range(side.replicas):
        srv = stack.enter_context(server(side.env, log_dir=log_dir))
        side.servers.append(srv)
        side.urls.append(srv.base_url)
        side.server_pids.append(srv.proc.pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per side")
    parser.add_argument("--rounds", type=int, default=2, help="measured runs per side")
    parser.add_argument("--connections", type=int, default=64, help="in all, on either side")
    parser.add_argument("--projects", type=int, default=6, help="per side")
    parser.add_argument("--tenants", type=int, default=500, help="per project")
    parser.add_argument("--log-level", default="info", help="server GATEWAY_LOG_LEVEL")
    parser.add_argument("--events", type=int, default=20_000, help="S3 events a side (0 = none)")
    parser.add_argument(
        "--history", type=int, default=30_000, help="past uploads a side (1 in 20 pending)"
    )
    parser.add_argument(
        "--standalone-replicas",
        action="store_true",
        help="also 3 replicas on the standalone Redis (what the split into replicas costs)",
    )
    args = parser.parse_args()

    load_before = load_average()
    with (
        services() as svc,
        scratch_dir("gateway-bench-cluster-") as tmp,
        PrivateRedis() as standalone_redis,
        contextlib.ExitStack() as stack,
    ):
        cluster = start_redis_cluster()
        stack.callback(cluster.stop)
        env = svc.env(args.log_level)
        standalone = Side(
            "standalone Redis, 1 replica",
            {**env, "GATEWAY_REDIS_URL": standalone_redis.url},
            1,
            [standalone_redis.proc.pid] if standalone_redis.proc else [],
        )
        standalone3 = Side(
            "standalone Redis, 3 replicas",
            {**env, "GATEWAY_REDIS_URL": standalone_redis.url},
            3,
            standalone.redis_pids,
        )
        clustered = Side(
            "Redis Cluster, 3 replicas",
            {**env, "GATEWAY_REDIS_URL": cluster.url},
            3,
            cluster_pids(cluster),
        )
        masters = cluster.masters()
        cluster_ids = project_ids_on(cluster, [masters[i % 3] for i in range(args.projects)])
        standalone_ids = [new_id("prj") for _ in range(args.projects)]
        standalone3_ids = [new_id("prj") for _ in range(args.projects)]
        tenants = [f"t{n}" for n in range(args.tenants)]
        sides = [(standalone, standalone_ids), (clustered, cluster_ids)]
        if args.standalone_replicas:
            sides.append((standalone3, standalone3_ids))
        for side, ids in sides:
            side.project_ids = ids
            side.api_keys = asyncio.run(make_projects(svc, ids))
            for pid in ids:  # tables of a database in service, then their statistics
                asyncio.run(add_history(svc, pid, tenants, args.history // len(ids)))
        asyncio.run(analyze(svc))
        for side, ids in sides:
            settings = Settings.from_env(side.env)
            for pid in ids:
                asyncio.run(warm_quota(settings, pid, tenants))
            start_servers(side, tmp, stack)
            wrk_all(side, args, args.warmup)
        order = [side for side, _ in sides]
        for _ in range(args.rounds):
            for side in order:
                measure(side, svc, args)
            order.reverse()
        event_rows = []
        if args.events:
            rng, seq = random.Random(7), ev.Sequencer()
            for side in (standalone, clustered):
                event_rows.append(events_on(side, svc, tmp, args, rng, seq))

    rows = []
    for side, _ in sides:
        n = max(side.requests, 1)
        us = {k: v / n * 1e6 for k, v in side.cpu.items()}
        rows.append(
            [
                side.name,
                f"{side.requests / side.seconds:,.0f}",
                f"{side.p99_ms:.1f}",
                f"{us['srv']:,.0f}",
                f"{us['pg']:,.0f}",
                f"{us['redis']:,.0f}",
                f"{sum(us.values()):,.0f}",
                "",
                "",
            ]
        )
    ratio = (clustered.requests / clustered.seconds) / (standalone.requests / standalone.seconds)
    per_round = sorted(c / s for c, s in zip(clustered.rounds, standalone.rounds, strict=True))
    clean = all(side.errors == 0 for side, _ in sides)
    ok = ratio >= TARGET and clean
    rows.append(
        ["cluster ÷ standalone", f"{ratio:.2f}", "", "", "", "", "", f">= {TARGET:g}", verdict(ok)]
    )
    rows.append(
        [
            "  per round (sorted)",
            " ".join(f"{r:.2f}" for r in per_round),
            *[""] * 7,
        ]
    )
    print(
        f"\nupload path: {args.connections} connections in all ({LOADERS} wrk -t1), "
        f"{args.projects} projects x {args.tenants} tenants a side, {args.rounds} x "
        f"{args.duration:g} s a side (interleaved); load average {load_before} before, "
        f"{load_average()} after\n"
    )
    print_table(
        [
            "side",
            "req/s",
            "p99 ms",
            "srv µs/req",
            "pg µs/req",
            "redis µs/req",
            "total µs/req",
            "target",
            "result",
        ],
        rows,
    )
    print(
        "µs/req: CPU time per request of the gateway processes, of our database's"
        " Postgres backends and of the Redis servers."
    )
    if event_rows:
        print("\nS3 events: webhook bodies of 10 records, 64 connections, one server a side\n")
        print_table(
            ["side", "events/s", "srv µs/ev", "pg µs/ev", "redis µs/ev", "total µs/ev", "sums"],
            event_rows,
        )
        ok = ok and all(r[-1] == "ok" for r in event_rows)
    if not clean:
        print("! errors:", ", ".join(f"{side.name}: {side.errors}" for side, _ in sides))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
