"""Outbound webhooks: outbox throughput, and what webhooks cost the settlement path.

    .venv/bin/python bench/bench_webhooks.py [--events 20000] [--in-flight 64]
        [--endpoints 1,8] [--settlements 6000] [--callers 8] [--batch 10] [--rounds 3]

One run on its own services (throwaway Postgres database, Redis DB 14, moto's S3)
and a receiver process (``bench/_receiver.py``: uvicorn with a bare ASGI app that
answers 200 and counts ``webhook-id``s), all on 127.0.0.1. In this process, on
uvloop, a Runtime (the gateway's services) with its webhook deliverer:

* **outbox throughput** — ``--events`` test events queued for ``N`` endpoints of one
  project (each endpoint allowed ``in-flight / N`` in flight), then the deliverer
  started: deliveries per second until every one is ``delivered`` in Postgres, and
  the receiver's count of requests and distinct ids (duplicates are a failure);
* **settlement path** — ``Ledger.settle`` batches of ``--batch`` created events for
  pending uploads (what the S3 event webhook and the SQS worker do), ``--callers``
  concurrent callers; a project without endpoints vs. one with an endpoint taking
  every event (an ``upload.completed`` per upload, threshold lines crossed, written
  in each batch's transaction), rounds interleaved; the delivery of those events is
  then timed apart. Ratio = with ÷ without, median of the rounds.

Targets (issue 17): ≥ 2,000 deliveries/s at 64 in flight; the settlement path with
webhooks ≥ 0.9x without. Exit status 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    ROOT,
    free_port,
    load_average,
    print_table,
    services,
    verdict,
)
from gateway.audit import cli_actor
from gateway.changes import ChangeKind
from gateway.config import Settings
from gateway.ledger import ObjectChange
from gateway.runtime import Runtime
from gateway.webhooks.events import TEST, event


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._receiver", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/count", timeout=1)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the receiver did not start")


def counts(base: str) -> dict[str, int]:
    out: dict[str, int] = httpx.get(f"{base}/count", timeout=5).json()
    return out


async def pending(rt: Runtime, project_id: str) -> int:
    n: int = await rt.db.fetchval(
        "SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints w"
        " ON w.id = d.endpoint_id WHERE w.project_id = $1 AND d.status = 'pending'",
        project_id,
    )
    return n


async def delivered_in(rt: Runtime, project_id: str) -> float:
    """Runs the deliverer until the project's deliveries are all delivered."""
    stopping = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(rt.webhooks.deliverer.run(stopping))
    try:
        while await pending(rt, project_id):
            await asyncio.sleep(0.25)
        return time.perf_counter() - started
    finally:
        stopping.set()
        await task


async def throughput(
    rt: Runtime, base: str, *, events: int, endpoints: int, in_flight: int
) -> dict[str, Any]:
    created = await rt.projects.create(f"bench-hooks-{endpoints}-{time.time_ns()}")
    pid = created.project_id
    for n in range(endpoints):
        await rt.webhooks.endpoints.create(
            pid, url=f"{base}/hooks/{n}", events=["*"], description="bench", actor=cli_actor()
        )
    rt.webhooks.deliverer.config = dataclasses.replace(
        rt.webhooks.deliverer.config, endpoint_in_flight=max(in_flight // endpoints, 1)
    )
    per = max(events // endpoints, 1)  # events; each goes to every endpoint
    for start in range(0, per, 1000):
        batch = [event(pid, TEST, {"n": i}) for i in range(start, min(start + 1000, per))]
        async with rt.db.transaction() as conn:
            await rt.webhooks.outbox.record(conn, events=batch)
    total = per * endpoints
    httpx.post(f"{base}/reset", timeout=5)
    seconds = await delivered_in(rt, pid)
    got = counts(base)
    return {
        "endpoints": endpoints,
        "deliveries": total,
        "seconds": seconds,
        "rate": total / seconds,
        "requests": got["requests"],
        "ids": got["ids"],  # distinct (endpoint, webhook-id) pairs
    }


async def pending_uploads(rt: Runtime, project_id: str, n: int, tenants: int) -> list[str]:
    """``n`` pending upload rows spread over ``tenants`` tenants (limits of 10 MB, so
    that lines are crossed as the sizes add up); answers their object keys."""
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        tenant = f"t{i % tenants}"
        uid = f"upl_{time.time_ns():016x}{i:08x}"[:28]
        rows.append((uid, project_id, tenant, f"{project_id}/{tenant}/{uid}/f.bin"))
    async with rt.db.transaction() as conn:
        for t in range(tenants):
            await conn.execute(
                "INSERT INTO tenants (project_id, tenant_id, limit_set, storage_limit_bytes)"
                " VALUES ($1, $2, true, 10000000) ON CONFLICT DO NOTHING",
                project_id,
                f"t{t}",
            )
        await conn.executemany(
            "INSERT INTO uploads (id, project_id, tenant_id, object_key, filename,"
            " content_type, method, declared_size, created_at, expires_at, reserved_until)"
            " VALUES ($1, $2, $3, $4, 'f.bin', 'application/octet-stream', 'PUT', 100000,"
            " $5::timestamptz, $5::timestamptz + interval '1 hour',"
            " $5::timestamptz + interval '2 hours')",
            [(*r, now) for r in rows],
        )
    return [r[3] for r in rows]


async def settle_all(rt: Runtime, keys: list[str], *, callers: int, batch: int) -> float:
    now = datetime.now(UTC)
    batches = [
        [
            ObjectChange(kind=ChangeKind.CREATED, key=k, event_time=now, size=100000)
            for k in keys[i : i + batch]
        ]
        for i in range(0, len(keys), batch)
    ]
    source = iter(batches)

    async def loop() -> None:
        for b in source:
            await rt.ledger.settle(b)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(callers)))
    return time.perf_counter() - started


async def settlement(
    rt: Runtime, base: str, *, settlements: int, callers: int, batch: int, rounds: int
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in range(rounds):
        for hooked in (False, True) if r % 2 == 0 else (True, False):
            created = await rt.projects.create(f"bench-settle-{r}-{hooked}-{time.time_ns()}")
            pid = created.project_id
            if hooked:
                await rt.webhooks.endpoints.create(
                    pid, url=f"{base}/hooks", events=["*"], description="", actor=cli_actor()
                )
            keys = await pending_uploads(rt, pid, settlements, tenants=200)
            await rt.db.execute("ANALYZE uploads")
            seconds = await settle_all(rt, keys, callers=callers, batch=batch)
            events = await rt.db.fetchval(
                "SELECT count(*) FROM webhook_events WHERE project_id = $1", pid
            )
            row: dict[str, Any] = {
                "round": r + 1,
                "webhooks": hooked,
                "rate": settlements / seconds,
                "events": events,
            }
            if hooked:
                row["delivery_seconds"] = await delivered_in(rt, pid)
            out.append(row)
    return out


async def measure(
    svc: Any, base: str, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    env = {
        **svc.env(),
        "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "true",
        "GATEWAY_WEBHOOK_MAX_IN_FLIGHT": str(args.in_flight),
        "GATEWAY_WEBHOOK_POLL_INTERVAL": "0.05",
        "GATEWAY_DB_POOL_MAX": "20",
    }
    async with Runtime(Settings.from_env(env)) as rt:
        print(f"load average before: {load_average()}")
        thr = [
            await throughput(rt, base, events=args.events, endpoints=n, in_flight=args.in_flight)
            for n in args.endpoints
        ]
        settle = await settlement(
            rt,
            base,
            settlements=args.settlements,
            callers=args.callers,
            batch=args.batch,
            rounds=args.rounds,
        )
    return thr, settle


def report(
    thr: list[dict[str, Any]], settle: list[dict[str, Any]], args: argparse.Namespace
) -> int:

    print(f"\nOutbox throughput ({args.in_flight} in flight, one deliverer, receiver: uvicorn)")
    rows = []
    ok_rate = True
    ok_once = True
    for t in thr:
        once = t["ids"] == t["requests"] == t["deliveries"]
        ok_once &= once
        ok_rate &= t["rate"] >= 2000
        rows.append(
            [
                f"{t['endpoints']} endpoint(s), {args.in_flight // t['endpoints']} in flight each",
                f"{t['deliveries']:,}",
                f"{t['seconds']:.2f}",
                f"{t['rate']:,.0f}",
                f"{t['requests']:,}",
                "yes" if once else "NO",
                verdict(t["rate"] >= 2000),
            ]
        )
    print_table(
        ["case", "deliveries", "s", "deliveries/s", "requests", "each id once", "≥ 2,000/s"],
        rows,
    )

    print(
        f"\nSettlement path (Ledger.settle, {args.callers} callers, batches of {args.batch},"
        f" {args.settlements:,} uploads per case)"
    )
    print_table(
        ["round", "webhooks", "settlements/s", "events written", "their delivery (s)"],
        [
            [
                str(s["round"]),
                "endpoint '*'" if s["webhooks"] else "none",
                f"{s['rate']:,.0f}",
                f"{s['events']:,}",
                f"{s['delivery_seconds']:.2f}" if "delivery_seconds" in s else "",
            ]
            for s in settle
        ],
    )
    with_ = statistics.median(s["rate"] for s in settle if s["webhooks"])
    without = statistics.median(s["rate"] for s in settle if not s["webhooks"])
    ratio = with_ / without
    print(
        f"\nmedian with ÷ without: {with_:,.0f} / {without:,.0f} = {ratio:.2f}"
        f"  {verdict(ratio >= 0.9)} (≥ 0.9)"
    )
    print(f"load average after: {load_average()}")
    return 0 if ok_rate and ok_once and ratio >= 0.9 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--endpoints", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    p.add_argument("--settlements", type=int, default=6000)
    p.add_argument("--callers", type=int, default=8)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    os.environ.setdefault("GATEWAY_LOG_LEVEL", "warning")
    import uvloop

    proc, base = start_receiver()
    try:
        with services() as svc, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            thr, settle = runner.run(measure(svc, base, args))
    finally:
        proc.terminate()
        proc.wait(10)
    return report(thr, settle, args)


if __name__ == "__main__":
    sys.exit(main())
