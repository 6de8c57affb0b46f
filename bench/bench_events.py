"""S3 events into the ledger: events applied per second, and proof that usage adds up.

    .venv/bin/python bench/bench_events.py [--webhook-events 30000] [--sqs-events 30000]
        [--baseline-events 3000] [--connections 64] [--webhook-batch-connections 8,64]
        [--sqs-callers 8,32] [--workers 1] [--floor] [--only-webhook-floor]
        [--rounds 1] [--servers uvicorn[,granian[:LOOP]]]

One run on its own services (throwaway Postgres database, Redis DB 14, moto's S3).
Every path gets a fresh set of tenants and realistic records: keys
``{project}/{tenant}/upl_…/{name}`` of pending uploads (rows and Redis reservations
made first), created events with sizes, ETags and sequencers, plus duplicates,
overwrites and removals, partly out of order. Paths:

* webhook — ``POST /api/storage/events/s3/`` with MinIO webhook bodies, one record
  per request, from ``wrk`` (64 connections) against a uvicorn server process;
  concurrent requests are coalesced by the LedgerBatcher into shared transactions;
* webhook, bodies of 10 — the same endpoint with SQS-sized ``{"Records": [...]}``
  bodies of 10 MinIO records (8 and 64 connections);
* SQS batches — ``EventIngestor.ingest`` with 10-record bodies from several
  concurrent callers, in-process, on uvloop (what each of ``SqsPoller``'s receive
  loops does after a receive in ``gateway events poll-sqs``; it runs 8 by default);
* with ``--floor``, webhook floor — the same one-record bodies to a server whose
  webhook path is the ingestor alone (``bench/_server.py`` ``WebhookFloor``: no
  Litestar, no log line, no metrics, no checks): what the work itself costs behind
  uvicorn, the most any HTTP-layer saving could bring; no target;
* baseline — ``Ledger.apply`` with one change per transaction, bypassing the
  batcher: sequential, and with 64 concurrent callers.

Afterwards every tenant's usage (Postgres and the Redis mirror) and each project's
totals must equal the sums the generator expects, and the Redis reservations must
equal the pending uploads in Postgres. Targets (issue): the webhook at one record per
request ≥ 0.9x the floor in the same run (``--floor``; ``--only-webhook-floor
--rounds N`` runs just those two, interleaved); ≥ 5,000 events/s and ≥ 5x the
(faster) baseline for the webhook with bodies of 10 and the SQS path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
from prometheus_client import generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    BUCKET,
    WEBHOOK_SECRET,
    WRK_DIR,
    CpuMeter,
    Server,
    Services,
    load_average,
    print_table,
    require_wrk,
    scratch_dir,
    server,
    services,
    verdict,
    warm_quota,
)
from gateway.app import create_app
from gateway.cli import run_on_fast_loop
from gateway.config import Settings
from gateway.db import Q, create_database
from gateway.events.ingest import EventIngestor
from gateway.ids import new_id
from gateway.ledger import Ledger
from gateway.projects import ProjectService
from gateway.quota import create_redis
from gateway.quota.reservations import tenant_key

WEBHOOK = "/api/storage/events/s3/"
TARGET_RATE = 5_000.0
TARGET_VS_BASELINE = 5.0
TARGET_VS_FLOOR = 0.9  # the webhook at 1 record/request, against the floor (--floor)
TENANTS_PER_PROJECT = 50
NAMES = ["report.pdf", "photo 2024-05-01.jpg", "résumé.docx", "data_export.csv", "a&b (1).png"]
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
# the pending rows' reservation deadline: in force during the run, whatever T0 is
LIVE_UNTIL = datetime.now(UTC) + timedelta(hours=2)


# -- the workload --------------------------------------------------------------------


@dataclass
class Event:
    created: bool
    key: str
    size: int
    sequencer: int
    slot: float  # delivery position


@dataclass
class Workload:
    """One path's records in delivery order, and what they must add up to."""

    name: str
    tenants: list[tuple[str, str]]
    prefix: str = ""  # of its tenant ids: unique per workload
    events: list[Event] = field(default_factory=list)
    uploads: list[tuple[Any, ...]] = field(default_factory=list)  # pending rows
    expected: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # bytes, files
    kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Sequencer:
    def __init__(self) -> None:
        self.value = 0x0055AED6DCD90281E0

    def __call__(self) -> int:
        self.value += random.randint(1, 5000)
        return self.value


def plan(
    name: str,
    projects: Sequence[str],
    prefix: str,
    n_events: int,
    rng: random.Random,
    seq: Sequencer,
) -> Workload:
    """Objects under the projects' tenants until there are ``n_events`` events:
    80% created once; 8% also a duplicate delivery soon after; 7% removed later;
    5% overwritten (the newer version may arrive first)."""
    tenants = [(p, f"{prefix}{n}") for p in projects for n in range(TENANTS_PER_PROJECT)]
    w = Workload(name, tenants, prefix)
    w.expected = {t: [0, 0] for t in tenants}
    index = 0
    while len(w.events) < n_events:
        project_id, tenant_id = rng.choice(tenants)
        upload_id = new_id("upl")
        filename = rng.choice(NAMES)
        key = f"{project_id}/{tenant_id}/{upload_id}/{filename}"
        size = int(rng.lognormvariate(12, 2)) + 1  # a few bytes to a few hundred MB
        first = Event(True, key, size, seq(), index)
        roll = rng.random()
        final: Event | None = first
        if roll < 0.80:
            evs, kind = [first], "created"
        elif roll < 0.88:
            dup = Event(True, key, size, first.sequencer, index + rng.uniform(0.5, 30))
            evs, kind = [first, dup], "duplicate"
        elif roll < 0.95:
            gone = Event(False, key, 0, seq(), index + rng.uniform(300, 2000))
            evs, kind, final = [first, gone], "removed", None
        else:
            newer = Event(
                True, key, int(rng.lognormvariate(12, 2)) + 1, seq(), index + rng.uniform(-30, 30)
            )
            evs, kind, final = [first, newer], "overwritten", newer
        declared = max(e.size for e in evs)
        now = T0 + timedelta(seconds=index / 1000)
        w.uploads.append(
            (
                upload_id,
                project_id,
                tenant_id,
                None,
                key,
                filename,
                "application/octet-stream",
                "PUT",
                declared,
                None,
                None,
                None,
                now,
                now + timedelta(hours=1),
                LIVE_UNTIL,  # the reservation still counts while the run lasts
            )
        )
        w.events.extend(evs)
        w.kinds[kind] += 1
        if final is not None:
            w.expected[(project_id, tenant_id)][0] += final.size
            w.expected[(project_id, tenant_id)][1] += 1
        index += 1
    w.events.sort(key=lambda e: e.slot)
    return w


def _event_time(e: Event) -> str:
    when = T0 + timedelta(microseconds=(e.sequencer - 0x0055AED6DCD90281E0) * 10)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def minio_body(e: Event) -> dict[str, Any]:
    """A MinIO webhook body (one record; the key query-escaped, as MinIO sends it)."""
    name = "s3:ObjectCreated:Put" if e.created else "s3:ObjectRemoved:Delete"
    obj: dict[str, Any] = {"key": quote_plus(e.key, safe=""), "sequencer": f"{e.sequencer:X}"}
    if e.created:
        obj |= {
            "size": e.size,
            "eTag": hashlib.md5(e.key.encode() + str(e.size).encode()).hexdigest(),
            "contentType": "application/octet-stream",
            "userMetadata": {"content-type": "application/octet-stream"},
        }
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": _event_time(e),
        "eventName": name,
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {
            "principalId": "minioadmin",
            "region": "",
            "sourceIPAddress": "10.0.0.7",
        },
        "responseElements": {
            "x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
            "x-amz-request-id": "17A6E3D0C9F2B8E1",
            "x-minio-deployment-id": "a1b2c3d4-0000-4000-8000-000000000000",
            "x-minio-origin-endpoint": "http://10.0.0.5:9000",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": BUCKET,
                "ownerIdentity": {"principalId": "minioadmin"},
                "arn": f"arn:aws:s3:::{BUCKET}",
            },
            "object": obj,
        },
        "source": {"host": "10.0.0.7", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7"},
    }
    return {"EventName": name, "Key": f"{BUCKET}/{e.key}", "Records": [record]}


def aws_record(e: Event) -> dict[str, Any]:
    """An S3 → SQS record (AWS shape; the key URL-encoded with '/' kept)."""
    obj: dict[str, Any] = {"key": quote(e.key, safe="/"), "sequencer": f"{e.sequencer:X}"}
    if e.created:
        obj |= {"size": e.size, "eTag": hashlib.md5(e.key.encode()).hexdigest()}
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": _event_time(e),
        "eventName": "ObjectCreated:Put" if e.created else "ObjectRemoved:Delete",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "10.0.0.7"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "uploads-events",
            "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"},
            "object": obj,
        },
    }


def dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


# -- running the paths -----------------------------------------------------------------


@dataclass
class Run:
    name: str
    events: int
    seconds: float
    concurrency: str
    batches: str = ""
    server_us: float | None = None
    postgres_us: float | None = None
    errors: int = 0
    baseline: bool = False
    info: bool = False  # no target: the --floor row
    floor: bool = False
    server: str = "uvicorn"
    one_record: bool = False  # webhook, 1 record/request: its target is the floor

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def drive(items: Sequence[Any], callers: int, fn: Callable[[Any], Awaitable[Any]]) -> float:
    """Seconds for ``callers`` concurrent loops to feed every item to ``fn``."""
    source: Iterator[Any] = iter(items)

    async def loop() -> None:
        for item in source:
            await fn(item)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(callers)))
    return time.perf_counter() - started


async def run_in_process(
    settings: Settings,
    sqs: Sequence[tuple[Workload, int]],
    baselines: Sequence[tuple[Workload, int]],
    meter: CpuMeter,
) -> list[Run]:
    """The SQS path (10-record bodies through the ingestor and its batcher), then the
    baselines (``Ledger.apply`` with one change per transaction), in this process."""
    app = create_app(settings)
    runs: list[Run] = []
    async with app.lifespan():
        ingestor: EventIngestor = app.state.ingestor
        ledger: Ledger = app.state.ledger
        registry = app.state.metrics.registry

        for w, callers in sqs:
            records = [aws_record(e) for e in w.events]
            bodies = [dumps({"Records": records[i : i + 10]}) for i in range(0, len(records), 10)]
            before = ledger_batch_totals(generate_latest(registry).decode())
            await meter.astart()
            seconds = await drive(bodies, callers, ingestor.ingest)
            cpu = await meter.astop()
            after = ledger_batch_totals(generate_latest(registry).decode())
            batches, changes = after[0] - before[0], after[1] - before[1]
            n = len(records)
            runs.append(
                Run(
                    w.name,
                    n,
                    seconds,
                    f"{callers} callers x 10",
                    f"{batches:,.0f} tx, {changes / max(batches, 1):.0f}/tx",
                    cpu["server"] / n * 1e6,
                    cpu["postgres"] / n * 1e6,
                )
            )

        async def one_per_tx(body: str) -> None:
            _, changes, _ = ingestor.parse(body)
            await ledger.settle(changes)

        for w, callers in baselines:
            bodies = [dumps({"Records": [aws_record(e)]}) for e in w.events]
            await meter.astart()
            seconds = await drive(bodies, callers, one_per_tx)
            cpu = await meter.astop()
            n = len(bodies)
            runs.append(
                Run(
                    w.name,
                    n,
                    seconds,
                    f"{callers} caller{'s' if callers > 1 else ''}",
                    "1 event/tx",
                    cpu["server"] / n * 1e6,
                    cpu["postgres"] / n * 1e6,
                    baseline=True,
                )
            )
    return runs


def webhook_server(
    svc: Services, args: argparse.Namespace, tmp: Path, *, floor: bool = False, kind: str
) -> contextlib.AbstractContextManager[Server]:
    """The server for webhook runs (``kind``: ``bench._harness.server``); with
    ``floor``, its webhook path is ``bench._server.WebhookFloor``."""
    env = {**svc.env(args.log_level), **({"GATEWAY_BENCH_FLOOR": "1"} if floor else {})}
    return server(env, workers=args.workers, log_dir=tmp, kind=kind)


def run_webhook(
    svc: Services,
    srv: Server,
    w: Workload,
    args: argparse.Namespace,
    tmp: Path,
    *,
    per_body: int = 1,
    connections: int | None = None,
    floor: bool = False,
    kind: str = "uvicorn",
) -> Run:
    """``per_body`` 1: MinIO webhook bodies (MinIO sends one record per request);
    more: ``{"Records": [...]}`` bodies of MinIO records (an S3 relay, SNS fan-in).
    ``srv`` from ``webhook_server(..., floor=floor, kind=kind)``."""
    threads = 2
    connections = connections or args.connections
    prefix = tmp / f"webhook_{w.prefix}{per_body}_{connections}_"
    lines: list[list[str]] = [[] for _ in range(threads)]
    if per_body == 1:
        bodies = [dumps(minio_body(e)) for e in w.events]
    else:
        records = [minio_body(e)["Records"][0] for e in w.events]
        bodies = [
            dumps({"Records": records[i : i + per_body]}) for i in range(0, len(records), per_body)
        ]
    for i, body in enumerate(bodies):
        lines[i % threads].append(body)
    for t, chunk in enumerate(lines):
        Path(f"{prefix}{t}.jsonl").write_text("\n".join(chunk) + "\n", encoding="utf-8")
    wrk = require_wrk()
    meter = CpuMeter(srv.proc.pid, svc.database_url)
    batches_before = ledger_batches(srv.base_url)
    meter.start()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            "-d600s",
            "--timeout=30s",
            "-s",
            str(WRK_DIR / "events.lua"),
            srv.base_url + WEBHOOK,
            "--",
            WEBHOOK,
            WEBHOOK_SECRET,
            str(prefix),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=WRK_DIR,
    )
    done = [Path(f"{prefix}{t}.done") for t in range(threads)]
    deadline = started + args.timeout
    try:
        while not all(d.exists() and d.read_text().endswith("\n") for d in done):
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("the webhook run did not finish (see the server log)")
            time.sleep(0.005)
        seconds = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait()
    cpu = meter.stop()
    batches = ledger_batches(srv.base_url)
    tx = batches[0] - batches_before[0]
    applied = batches[1] - batches_before[1]
    answered = bad = 0
    for d in done:
        a, b = d.read_text().split()
        answered, bad = answered + int(a), bad + int(b)
    n = len(w.events)
    return Run(
        w.name,
        n,
        seconds,
        f"{connections} conns x {per_body}, {args.workers}w",
        # /metrics sums uvicorn's workers (multiprocess mode, as `gateway serve`);
        # granian's answer for the one that takes the scrape: the split is not known
        f"{tx:,.0f} tx, {applied / tx:,.0f}/tx"
        if tx and (args.workers == 1 or kind.startswith("uvicorn"))
        else "coalesced",
        cpu["server"] / n * 1e6,
        cpu["postgres"] / n * 1e6,
        errors=bad + (len(bodies) - answered),  # failed or missing requests
        info=floor,
        floor=floor,
        server=kind,
        one_record=per_body == 1 and not floor,
    )


def ledger_batches(base_url: str) -> tuple[float, float]:
    """The server's ledger transactions and the changes they applied, from /metrics
    (all of uvicorn's workers; with several granian workers, the one that answers:
    the column then says so)."""
    return ledger_batch_totals(httpx.get(base_url + "/metrics", timeout=10).text)


def ledger_batch_totals(text: str) -> tuple[float, float]:
    """(transactions, changes) from the ``gateway_ledger_batch_changes`` histogram."""
    values = {
        name: float(value)
        for line in text.splitlines()
        if line.startswith("gateway_ledger_batch_changes_")
        for name, value in [line.rsplit(" ", 1)]
    }
    return (
        values.get("gateway_ledger_batch_changes_count", 0.0),
        values.get("gateway_ledger_batch_changes_sum", 0.0),
    )


# -- checking the sums -----------------------------------------------------------------


@dataclass
class Check:
    ok: bool
    detail: str


async def verify(settings: Settings, workloads: Sequence[Workload]) -> dict[str, Check]:
    """Per workload: each tenant's usage in Postgres and in Redis equals the expected
    sums; Redis reservations equal the pending uploads. Plus the project totals."""
    db = create_database(settings)
    await db.open()
    redis = create_redis(settings)
    out: dict[str, Check] = {}
    try:
        project_expected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for w in workloads:
            wrong: list[str] = []
            pending_left = 0
            for (project_id, tenant_id), (used, files) in w.expected.items():
                project_expected[project_id][0] += used
                project_expected[project_id][1] += files
                row = await db.fetchrow(Q.get_tenant_usage, project_id, tenant_id)
                assert row is not None
                got = (row["storage_used_bytes"], row["total_files"])
                if got != (used, files):
                    wrong.append(f"{tenant_id}: postgres {got} != {(used, files)}")
                mirror = await redis.hget(tenant_key(project_id, tenant_id), "used")
                if mirror is not None and int(mirror) != used:
                    wrong.append(f"{tenant_id}: redis used {int(mirror)} != {used}")
                raw = await redis.hget(tenant_key(project_id, tenant_id), "res")
                reserved, pending = int(raw or 0), row["storage_reserved_bytes"]
                if reserved != pending:
                    wrong.append(f"{tenant_id}: redis reserved {reserved} != pending {pending}")
                pending_left += await db.fetchval(
                    "SELECT count(*) FROM uploads WHERE project_id = $1 AND tenant_id = $2"
                    " AND status = 'pending'",
                    project_id,
                    tenant_id,
                )
            note = f"{len(w.expected)} tenants, {pending_left} uploads left pending"
            out[w.name] = Check(not wrong, "; ".join([note, *wrong[:3]]))
        wrong = []
        for project_id, (used, files) in project_expected.items():
            row = await db.fetchrow(Q.get_project, project_id)
            assert row is not None
            got = (row["storage_used_bytes"], row["total_files"])
            if got != (used, files):
                wrong.append(f"{project_id}: {got} != {(used, files)}")
        out["projects"] = Check(not wrong, "; ".join(wrong) or f"{len(project_expected)} projects")
    finally:
        await redis.aclose()
        await db.close()
    return out


# -- main ---------------------------------------------------------------------------------


async def add_history(conn: Any, project_id: str, objects: int, rng: random.Random) -> None:
    """Objects and completed uploads from before, in a project of their own (so the
    sums checked later are not touched): tables of a realistic size, not empty ones."""
    tenants = [f"old{n}" for n in range(200)]
    await conn.execute(Q.ensure_tenants, [project_id] * len(tenants), tenants)
    chunk = 20_000
    for start in range(0, objects, chunk):
        rows = []
        for i in range(start, min(start + chunk, objects)):
            upload_id = new_id("upl")
            tenant_id = tenants[i % len(tenants)]
            key = f"{project_id}/{tenant_id}/{upload_id}/{rng.choice(NAMES)}"
            size = int(rng.lognormvariate(12, 2)) + 1
            when = T0 - timedelta(days=30) + timedelta(seconds=i)
            rows.append((upload_id, tenant_id, key, size, when))
        await conn.copy_records_to_table(
            "uploads",
            columns=[
                "id",
                "project_id",
                "tenant_id",
                "object_key",
                "filename",
                "content_type",
                "method",
                "declared_size",
                "actual_size",
                "status",
                "created_at",
                "expires_at",
                "settled_at",
            ],
            records=[
                (
                    u,
                    project_id,
                    t,
                    k,
                    k.rsplit("/", 1)[1],
                    "application/octet-stream",
                    "PUT",
                    n,
                    n,
                    "completed",
                    w,
                    w + timedelta(hours=1),
                    w,
                )
                for u, t, k, n, w in rows
            ],
        )
        await conn.execute(
            "INSERT INTO objects (object_key, project_id, tenant_id, upload_id, size_bytes,"
            " present, event_time) SELECT k, $2, t, u, n, true, w"
            " FROM unnest($1::text[], $3::text[], $4::text[], $5::bigint[],"
            " $6::timestamptz[]) AS h(k, t, u, n, w)",
            [k for _, _, k, _, _ in rows],
            project_id,
            [t for _, t, _, _, _ in rows],
            [u for u, _, _, _, _ in rows],
            [n for _, _, _, n, _ in rows],
            [w for _, _, _, _, w in rows],
        )


async def prepare(
    settings: Settings,
    workloads: Sequence[Workload],
    history_project: str,
    history: int,
    rng: random.Random,
) -> None:
    """Past objects, pending upload rows for every new object, fresh planner statistics,
    and warm quota hashes that hold the pending uploads."""
    db = create_database(settings)
    await db.open()
    try:
        async with db.acquire() as conn:
            await add_history(conn, history_project, history, rng)
            for w in workloads:
                if w.uploads:
                    cols = [list(c) for c in zip(*w.uploads, strict=True)]
                    new_tenant = [True] * len(w.uploads)
                    await conn.execute(Q.insert_uploads, *cols[:3], new_tenant, *cols[3:])
            # Statistics as autovacuum keeps them; with none, the planner sizes tables
            # as empty and cached generic plans stay on sequential scans.
            await conn.execute("ANALYZE")
    finally:
        await db.close()
    for w in workloads:
        by_project: dict[str, list[str]] = defaultdict(list)
        for project_id, tenant_id in w.tenants:
            by_project[project_id].append(tenant_id)
        for project_id, tenant_ids in by_project.items():
            await warm_quota(settings, project_id, tenant_ids)


async def create_projects(settings: Settings, n: int) -> list[str]:
    db = create_database(settings)
    await db.open()
    try:
        service = ProjectService(db)
        return [(await service.create(f"bench-events-{i}")).project_id for i in range(n)]
    finally:
        await db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--webhook-events",
        type=int,
        default=None,
        help="events per webhook run (default 30,000; 10,000 with --only-webhook-floor)",
    )
    parser.add_argument("--sqs-events", type=int, default=30_000)
    parser.add_argument(
        "--baseline-events",
        type=int,
        default=3_000,
        help="events for each baseline (sequential, concurrent)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="webhook connections, and callers of the concurrent baseline",
    )
    parser.add_argument(
        "--sqs-callers", default="8,32", help="comma-separated concurrent ingest callers"
    )
    parser.add_argument(
        "--webhook-batch-connections",
        default="8,64",
        help="connections for the webhook with 10-record bodies (comma-separated; empty = skip)",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (webhook)")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="add a row: the webhook's work at 1 record/request with nothing around it "
        "(no Litestar, log line or metrics; bench/_server.py WebhookFloor); the target of "
        "the webhook at 1 record/request is >= 0.9x this row",
    )
    parser.add_argument(
        "--only-webhook-floor",
        action="store_true",
        help="only the webhook at 1 record/request and its floor (implies --floor): no "
        "bodies of 10, no SQS, no baselines",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="webhook/floor pairs, interleaved on the same servers (the order alternates "
        "each round; default 1, 6 with --only-webhook-floor)",
    )
    parser.add_argument(
        "--servers",
        default="uvicorn",
        help="comma-separated HTTP servers for the 1 record/request rows, interleaved: "
        "uvicorn, granian, granian:rloop, ... (bench/_harness.py server); the bodies of "
        "10 use the first",
    )
    parser.add_argument(
        "--warmup-events",
        type=int,
        default=3_000,
        help="events sent to each 1 record/request server before its rounds (not timed)",
    )
    parser.add_argument("--log-level", default="info", help="server GATEWAY_LOG_LEVEL")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on a path after")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--history", type=int, default=100_000, help="objects stored before the run"
    )
    args = parser.parse_args()
    require_wrk()
    only = args.only_webhook_floor
    args.rounds = args.rounds or (6 if only else 1)
    args.webhook_events = args.webhook_events or (10_000 if only else 30_000)
    with_floor = args.floor or only
    kinds = [k for k in args.servers.split(",") if k]

    load_before = load_average()
    sqs_callers = [] if only else [int(c) for c in args.sqs_callers.split(",")]
    webhook_batch_conns = (
        [] if only else [int(c) for c in args.webhook_batch_connections.split(",") if c]
    )
    rng = random.Random(args.seed)
    random.seed(args.seed)
    seq = Sequencer()
    with services() as svc, scratch_dir("gateway-bench-events-") as tmp:
        settings = svc.settings()
        *projects, history_project = asyncio.run(create_projects(settings, 3))

        def workload(name: str, prefix: str, n: int) -> Workload:
            return plan(name, projects, prefix, n, rng, seq)

        # The 1 record/request rows: per round, the webhook and its floor under every
        # server, in an order that alternates each round (drift on a shared machine
        # then weighs on both sides alike).
        one_record: list[tuple[Workload, str, bool]] = []
        cases = [(k, floor) for k in kinds for floor in ((False, True) if with_floor else (False,))]
        warm = [
            workload(f"warm-up, {kind}{', floor' if floor else ''}", f"ww{i}_", args.warmup_events)
            for i, (kind, floor) in enumerate(cases)
        ]
        for rnd in range(args.rounds):
            order = list(enumerate(cases))
            for ci, (kind, floor) in order if rnd % 2 == 0 else reversed(order):
                name = "webhook floor, 1 record/request" if floor else "webhook, 1 record/request"
                name += f" [{kind}]" if len(kinds) > 1 else ""
                name += f" #{rnd + 1}" if args.rounds > 1 else ""
                prefix = f"{'wf' if floor else 'wh'}{rnd}_{ci}_"
                one_record.append((workload(name, prefix, args.webhook_events), kind, floor))
        webhook10 = [
            (workload(f"webhook, bodies of 10, {c} conns", f"wb{c}_", args.webhook_events), c)
            for c in webhook_batch_conns
        ]
        sqs = [
            (workload(f"SQS bodies of 10, {c} callers", f"sq{c}_", args.sqs_events), c)
            for c in sqs_callers
        ]
        baselines = (
            []
            if only
            else [
                (workload("baseline: 1 tx/event, sequential", "bs", args.baseline_events), 1),
                (
                    workload(
                        f"baseline: 1 tx/event, {args.connections} callers",
                        "bc",
                        args.baseline_events,
                    ),
                    args.connections,
                ),
            ]
        )
        workloads = [
            *warm,
            *(w for w, _, _ in one_record),
            *(w for w, _ in webhook10),
            *(w for w, _ in sqs),
            *(w for w, _ in baselines),
        ]
        asyncio.run(prepare(settings, workloads, history_project, args.history, rng))
        runs: list[Run] = []
        if sqs or baselines:
            this_process = CpuMeter(os.getpid(), svc.database_url)
            # on the loop `gateway events poll-sqs` runs on
            runs = run_on_fast_loop(run_in_process(settings, sqs, baselines, this_process))
        webhook_runs: list[Run] = []
        with contextlib.ExitStack() as stack:
            # one server per case, up for all the rounds, each warmed up first
            servers = {
                case: stack.enter_context(
                    webhook_server(svc, args, tmp, floor=case[1], kind=case[0])
                )
                for case in cases
            }
            for (kind, floor), w in zip(cases, warm, strict=True):
                run_webhook(svc, servers[kind, floor], w, args, tmp, floor=floor, kind=kind)
            for w, kind, floor in one_record:
                webhook_runs.append(
                    run_webhook(svc, servers[kind, floor], w, args, tmp, floor=floor, kind=kind)
                )
        for w, c in webhook10:
            with webhook_server(svc, args, tmp, kind=kinds[0]) as srv:
                webhook_runs.append(
                    run_webhook(svc, srv, w, args, tmp, per_body=10, connections=c, kind=kinds[0])
                )
        runs = webhook_runs + runs
        checks = asyncio.run(verify(settings, workloads))

    baseline = max((r.rate for r in runs if r.baseline), default=None)
    floor_verdicts = {kind: vs_floor(runs, kind) for kind in kinds} if with_floor else {}
    rows: list[list[str]] = []
    failures = 0
    for r in runs:
        check = checks[r.name]
        if r.baseline or r.info:
            target, ok = "", None
        elif r.one_record:
            # the target for one record per request: the floor, not 5,000/s
            target = f">= {TARGET_VS_FLOOR:g}x floor"
            found = floor_verdicts.get(r.server)
            ok = None if found is None else found.ok and not r.errors
            if found is None:
                target += " (--floor)"
            elif r.errors:
                failures += 1
        else:
            ok = r.rate >= TARGET_RATE and not r.errors
            if baseline is not None:
                ok = ok and r.rate >= TARGET_VS_BASELINE * baseline
            target = f">= {TARGET_RATE:,.0f}/s, >= {TARGET_VS_BASELINE:g}x"
            failures += 0 if ok else 1
        failures += 0 if check.ok else 1
        rows.append(
            [
                r.name,
                r.concurrency,
                f"{r.events:,}",
                f"{r.seconds:.2f}",
                f"{r.rate:,.0f}",
                r.batches,
                f"{r.server_us:,.0f}" if r.server_us is not None else "",
                f"{r.postgres_us:,.0f}" if r.postgres_us is not None else "",
                f"{r.rate / baseline:.1f}x" if baseline else "",
                target,
                verdict(ok),
                "ok" if check.ok else "WRONG",
                str(r.errors),
            ]
        )
    failures += sum(not v.ok for v in floor_verdicts.values())
    print(
        f"\nS3 events -> ledger; Python {sys.version.split()[0]}; load average {load_before} "
        f"before, {load_average()} after\n"
    )
    print_table(
        [
            "path",
            "concurrency",
            "events",
            "seconds",
            "events/s",
            "transactions",
            "cpu µs/ev",
            "pg µs/ev",
            "vs base",
            "target",
            "result",
            "sums",
            "errors",
        ],
        rows,
    )
    if floor_verdicts:
        print(
            f"\none record per request, webhook vs its floor ({args.rounds} interleaved "
            f"round{'s' if args.rounds > 1 else ''} of {args.webhook_events:,} events each; "
            "events/s and cpu over all rounds, ratio: median of the rounds' ratios):\n"
        )
        print_table(
            [
                "server",
                "webhook ev/s",
                "floor ev/s",
                "ratio (median)",
                "per round",
                "webhook cpu µs/ev",
                "floor cpu µs/ev",
                "cpu +µs/ev",
                "target",
                "result",
            ],
            [v.row() for v in floor_verdicts.values()],
        )
    if len(kinds) > 1:
        print_servers(runs, kinds)
    shown = [w for w, _, floor in one_record if not floor][:1] + [w for w, _ in sqs][:1]
    print(
        "\nevents per workload: "
        + "; ".join(
            f"{w.name.split(',')[0]}: " + ", ".join(f"{k} {v}" for k, v in sorted(w.kinds.items()))
            for w in shown
        )
    )
    print(
        "cpu µs/ev: the process that applies (server, or this one in-process); pg µs/ev: our"
        " database's Postgres backends."
    )
    for name, check in checks.items():
        print(f"sums {name}: {'ok' if check.ok else 'WRONG'} — {check.detail}")
    return 1 if failures else 0


@dataclass
class Totals:
    """Runs of one case added up: events over seconds, CPU weighted by events."""

    runs: list[Run]

    @property
    def rate(self) -> float:
        return sum(r.events for r in self.runs) / sum(r.seconds for r in self.runs)

    def cpu(self, side: str) -> float:
        values = [(getattr(r, side) or 0.0) * r.events for r in self.runs]
        return sum(values) / sum(r.events for r in self.runs)


@dataclass
class FloorVerdict:
    kind: str
    webhook: Totals
    floor: Totals
    per_round: list[float]

    @property
    def ratio(self) -> float:
        """The median of the rounds' ratios: a burst of other work on the machine
        during one run moves one round, not the verdict."""
        return statistics.median(self.per_round)

    @property
    def ok(self) -> bool:
        return self.ratio >= TARGET_VS_FLOOR

    def row(self) -> list[str]:
        spread = (
            f"{min(self.per_round):.2f}-{max(self.per_round):.2f}"
            if len(self.per_round) > 1
            else ""
        )
        cpu_webhook, cpu_floor = self.webhook.cpu("server_us"), self.floor.cpu("server_us")
        return [
            self.kind,
            f"{self.webhook.rate:,.0f}",
            f"{self.floor.rate:,.0f}",
            f"{self.ratio:.2f}",
            spread,
            f"{cpu_webhook:,.0f}",
            f"{cpu_floor:,.0f}",
            f"{cpu_webhook - cpu_floor:+,.0f}",
            f">= {TARGET_VS_FLOOR:g}",
            verdict(self.ok),
        ]


def vs_floor(runs: Sequence[Run], kind: str) -> FloorVerdict:
    """The webhook at 1 record/request against its floor, under one server."""
    webhook = [r for r in runs if r.one_record and r.server == kind]
    floor = [r for r in runs if r.floor and r.server == kind]
    return FloorVerdict(
        kind,
        Totals(webhook),
        Totals(floor),
        [w.rate / f.rate for w, f in zip(webhook, floor, strict=True)],
    )


def print_servers(runs: Sequence[Run], kinds: Sequence[str]) -> None:
    """The 1 record/request rows per HTTP server, against the first server."""
    rows: list[list[str]] = []
    for label, floor in (("webhook floor", True), ("webhook, 1 record/request", False)):
        first: Totals | None = None
        for kind in kinds:
            t = Totals(
                [r for r in runs if (r.floor if floor else r.one_record) and r.server == kind]
            )
            first = first or t
            rates = [r.rate for r in t.runs]
            rows.append(
                [
                    f"{label} [{kind}]",
                    f"{t.rate:,.0f}",
                    f"{min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else "",
                    f"{t.cpu('server_us'):,.0f}",
                    f"{t.cpu('postgres_us'):,.0f}",
                    f"{t.rate / first.rate:.2f}",
                    f"{t.cpu('server_us') / first.cpu('server_us'):.2f}",
                ]
            )
    print(f"\nHTTP servers, 1 record/request (interleaved; vs {kinds[0]}):\n")
    print_table(
        [
            "case",
            "events/s",
            "per round",
            "cpu µs/ev",
            "pg µs/ev",
            "rate vs first",
            "cpu vs first",
        ],
        rows,
    )


if __name__ == "__main__":
    raise SystemExit(main())
