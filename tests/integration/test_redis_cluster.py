"""The gateway on a real Redis Cluster (3 masters + 3 replicas, started by the
``redis_cluster`` fixture), with projects whose ``{project}`` hash tags land on
different shards (their ids chosen by key slot): batches that mix projects, three
``gateway serve`` processes, events, a master killed mid-burst, a shard flushed
mid-burst, and a failover that lost writes (docs/quota.md, "Redis Cluster")."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from redis.crc import key_slot

from gateway import auth
from gateway.app import create_app
from gateway.config import Settings
from gateway.db import Q
from gateway.errors import DependencyUnavailable
from gateway.events.sqs import SqsPoller, sqs_client
from gateway.quota import (
    Admitted,
    Missing,
    QuotaStore,
    Rejected,
    Reservation,
    UsageAt,
    create_redis,
)
from gateway.quota.reservations import project_key, tenant_key
from tests.conftest import BUCKET, ProjectKey, running
from tests.support.events import drain, event_queue
from tests.support.redis_cluster import Node, RedisClusterProcs, project_ids_on
from tests.support.services import Server, start_server

SIZE = 1000
UPLOAD = "/api/storage/upload/"
WEBHOOK = "/api/storage/events/s3/"
SECRET = {"Authorization": "Bearer test-webhook-secret"}
FAR = 4_102_444_800_000  # a deadline in 2100 (ms)
ZERO = UsageAt(0, 0)
RECOVERY = 10.0  # seconds after a promotion by which a killed shard's projects answer


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(redis_cluster: RedisClusterProcs) -> RedisClusterProcs:
    return redis_cluster


@pytest.fixture(scope="module")
def cluster_settings(settings: Settings, cluster: RedisClusterProcs) -> Settings:
    return msgspec.structs.replace(settings, redis_url=cluster.url)


@pytest.fixture(scope="module")
async def on_cluster(cluster_settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """An in-process gateway on the cluster: its HTTP client and its app.state."""
    app = create_app(cluster_settings)
    async with running(app) as c:
        yield c, app.state


@pytest.fixture(scope="module")
def servers(
    server_env: dict[str, str], cluster: RedisClusterProcs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Server]]:
    log_dir: Path = tmp_path_factory.mktemp("cluster-servers")
    env = {**server_env, "GATEWAY_REDIS_URL": cluster.url}
    with ThreadPoolExecutor(3) as pool:  # started side by side: each takes seconds
        starting = [pool.submit(start_server, env, log_dir, f"gw{i}") for i in range(3)]
    started = [f.result() for f in starting if f.exception() is None]
    try:
        assert len(started) == 3, [f.exception() for f in starting]
        yield started
    finally:
        for s in started:
            s.stop()


async def project_on(
    state: Any,
    cluster: RedisClusterProcs,
    master: Node,
    *,
    storage_limit: int | None = None,
    default_tenant_limit: int | None = None,
) -> ProjectKey:
    """A project whose quota keys live on ``master`` (its id chosen by key slot)."""
    (pid,) = project_ids_on(cluster, [master])
    key = auth.generate_key()
    async with state.db.transaction() as conn:
        await conn.execute(
            Q.insert_project, pid, f"cluster-{pid}", None, storage_limit, default_tenant_limit
        )
        await conn.execute(Q.insert_api_key, key.key_id, pid, key.secret_hash)
    return ProjectKey(pid, key.key_id, key.api_key)


async def three_projects(
    state: Any, cluster: RedisClusterProcs, **limits: int | None
) -> list[ProjectKey]:
    """One project on each master."""
    masters = cluster.masters()
    assert len(masters) == 3
    return [await project_on(state, cluster, m, **limits) for m in masters]


# -- helpers --------------------------------------------------------------------------

Job = tuple[ProjectKey, str]  # (project, tenant)


async def storm(
    bases: list[str],
    jobs: list[Job],
    *,
    on_done: Callable[[int], None] | None = None,
    concurrency: int = 64,
) -> list[tuple[Job, httpx.Response]]:
    """Every job as one upload request, in a random order spread over the servers, at
    most ``concurrency`` at once; ``on_done(n)`` runs after the n-th answer."""
    # A client per server: one pool shared by several servers closes an idle connection
    # to one of them to make room for another, and under load that raced with its
    # reuse (ReadError on a connection closed by the client itself). Idle connections
    # are dropped before uvicorn's 5 s keep-alive would end them.
    limits = httpx.Limits(max_connections=concurrency, keepalive_expiry=1)
    clients = [httpx.AsyncClient(base_url=b, limits=limits, timeout=30) for b in bases]
    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def one(i: int) -> tuple[Job, httpx.Response]:
        nonlocal done
        p, tenant = jobs[i]
        async with sem:
            r = await clients[i % len(clients)].post(
                UPLOAD,
                json={"tenant_id": tenant, "filename": f"f{i}.bin", "size_bytes": SIZE},
                headers=p.headers,
            )
        done += 1
        if on_done is not None:
            on_done(done)
        return jobs[i], r

    order = list(range(len(jobs)))
    random.shuffle(order)
    try:
        return await asyncio.gather(*(one(i) for i in order))
    finally:
        for c in clients:
            await c.aclose()


def admitted(results: list[tuple[Job, httpx.Response]], p: ProjectKey, tenant: str | None) -> int:
    return sum(
        1
        for (q, t), r in results
        if q.project_id == p.project_id and (tenant is None or t == tenant) and r.status_code == 200
    )


def assert_only(results: list[tuple[Job, httpx.Response]], codes: set[int]) -> None:
    seen = {r.status_code for _, r in results}
    assert seen <= codes, {c: [r.text for _, r in results if r.status_code == c][:2] for c in seen}
    for _, r in results:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["code"] == "dependency_unavailable"


async def pg_reserved(state: Any, project_id: str, tenant: str | None = None) -> int:
    if tenant is None:
        value: int = await state.db.fetchval(Q.reserved_for_project, project_id)
    else:
        value = await state.db.fetchval(Q.reserved_for_tenant, project_id, tenant)
    return value


def redis_reserved(cluster: RedisClusterProcs, key: str) -> int:
    raw = cluster.client().hget(key, "res")
    return int(raw or 0)


async def books_balance(
    state: Any, cluster: RedisClusterProcs, p: ProjectKey, tenant: str, expected: int
) -> None:
    """Postgres holds exactly ``expected`` bytes reserved for the tenant, and so does
    Redis once failed requests' reservations are ended (retried until Redis answers:
    waited for, up to 10 s)."""
    assert await pg_reserved(state, p.project_id, tenant) == expected
    deadline = time.monotonic() + 10
    while redis_reserved(cluster, tenant_key(p.project_id, tenant)) != expected:
        assert time.monotonic() < deadline, "Redis did not come to the books' total"
        await asyncio.sleep(0.1)


def fields(cluster: RedisClusterProcs, key: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = cluster.client().hgetall(key)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def res(p: ProjectKey, tenant: str, upload: str, size: int, limit: int | None) -> Reservation:
    return Reservation(p.project_id, tenant, upload, size, limit, ZERO, None, ZERO, FAR)


# -- the quota store on the cluster ---------------------------------------------------


async def test_one_batch_mixing_three_shards_is_judged_mirrored_and_checked(
    on_cluster: tuple[httpx.AsyncClient, Any], state: Any, cluster: RedisClusterProcs
) -> None:
    _, cstate = on_cluster
    quota = cstate.quota
    p1, p2, p3 = await three_projects(state, cluster)
    assert len({cluster.master_of(p.project_id).address for p in (p1, p2, p3)}) == 3
    batch = [res(p, t, f"u-{p.project_id}-{t}", 10, 20) for p in (p1, p2, p3) for t in "ab"]
    first = await quota.reserve_many(batch)
    assert all(isinstance(v, Missing) for v in first)  # cold: every hash is missing
    rebuilt = await quota.rebuild_and_reserve(
        [(r, v) for r, v in zip(batch, first, strict=True) if isinstance(v, Missing)]
    )
    assert rebuilt == [Admitted()] * 6
    more = [res(p, "a", f"v-{p.project_id}-{i}", 6, 20) for i in range(2) for p in (p1, p2, p3)]
    verdicts = await quota.reserve_many(more)
    # 10 + 6 fit in 20; a second 6 does not, in every project
    assert verdicts == [Admitted()] * 3 + [Rejected(scope="tenant", used=0, reserved=16)] * 3
    held = await quota.holds([(p.project_id, "a", f"u-{p.project_id}-a") for p in (p1, p2, p3)])
    assert held == [True, True, True]
    await quota.apply_many(
        [
            (p.project_id, "a", UsageAt(10, 1), UsageAt(10, 1), [f"u-{p.project_id}-a"])
            for p in (p1, p2, p3)
        ]
    )
    for p in (p1, p2, p3):
        h = fields(cluster, tenant_key(p.project_id, "a"))
        assert (h["used"], h["res"], f"r:u-{p.project_id}-a" in h) == ("10", "6", False)


# -- exactness over three gateways ----------------------------------------------------


async def test_exactly_k_with_projects_mixed_in_every_batch_over_three_gateways(
    servers: list[Server], state: Any, cluster: RedisClusterProcs
) -> None:
    """600 concurrent uploads of three projects (one per shard) in a random order over
    three processes, so every micro-batch mixes projects: exactly K each, for a tenant
    limit, a default tenant limit (three tenants) and a project cap (20 tenants)."""
    ka, kb, kc = 37, 11, 23
    a, b, c = cluster.masters()
    pa = await project_on(state, cluster, a)
    pb = await project_on(state, cluster, b, default_tenant_limit=kb * SIZE)
    pc = await project_on(state, cluster, c, storage_limit=kc * SIZE)
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.patch(
            f"{servers[0].base_url}/api/storage/tenants/hot/limit/",
            json={"storage_limit_bytes": ka * SIZE},
            headers=pa.headers,
        )
        assert r.status_code == 200
    jobs: list[Job] = [(pa, "hot")] * 200
    jobs += [(pb, f"b{i % 3}") for i in range(200)]
    jobs += [(pc, f"c{i % 20}") for i in range(200)]
    results = await storm([s.base_url for s in servers], jobs)
    assert_only(results, {200, 413})
    assert admitted(results, pa, "hot") == ka
    assert [admitted(results, pb, f"b{i}") for i in range(3)] == [kb] * 3
    assert admitted(results, pc, None) == kc
    codes = {r.json()["code"] for (p, _), r in results if r.status_code == 413 and p is pc}
    assert codes == {"project_quota_exceeded"}
    await books_balance(state, cluster, pa, "hot", ka * SIZE)
    for i in range(3):
        await books_balance(state, cluster, pb, f"b{i}", kb * SIZE)
    assert await pg_reserved(state, pc.project_id) == kc * SIZE
    assert redis_reserved(cluster, project_key(pc.project_id)) == kc * SIZE


# -- events mixing projects -----------------------------------------------------------


@pytest.fixture(scope="module")
def queue(s3: Any, s3_client: Any) -> Iterator[tuple[str, Any]]:
    """moto: bucket notifications → an SQS queue (real moto event bodies)."""
    with event_queue(s3.endpoint_url, s3_client, BUCKET, "cluster-events") as q:
        yield q


async def _upload(c: httpx.AsyncClient, p: ProjectKey, tenant: str, data: bytes) -> None:
    r = await c.post(
        UPLOAD,
        headers=p.headers,
        json={"tenant_id": tenant, "filename": "f.bin", "size_bytes": len(data)},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert httpx.put(out["presigned_url"], content=data, headers=out["headers"]).status_code == 200


async def _settled(
    c: httpx.AsyncClient, cluster: RedisClusterProcs, p: ProjectKey, tenant: str, used: int
) -> None:
    u = (await c.get(f"/api/storage/tenants/{tenant}/usage/", headers=p.headers)).json()
    assert (u["storage_used_bytes"], u["storage_reserved_bytes"]) == (used, 0)
    h = fields(cluster, tenant_key(p.project_id, tenant))
    assert h["res"] == "0" and not [k for k in h if k.startswith("r:")]
    assert redis_reserved(cluster, project_key(p.project_id)) == 0


async def test_webhook_bodies_and_sqs_batches_mixing_projects_settle(
    on_cluster: tuple[httpx.AsyncClient, Any],
    state: Any,
    cluster: RedisClusterProcs,
    cluster_settings: Settings,
    queue: tuple[str, Any],
) -> None:
    c, cstate = on_cluster
    url, sqs = queue
    projects = await three_projects(state, cluster)
    for i, p in enumerate(projects):
        await _upload(c, p, "ev", b"w" * (100 + i))
    records = [rec for b in drain(sqs, url) for rec in json.loads(b).get("Records", [])]
    assert len(records) == 3
    for _ in range(2):  # one body with the records of three projects; redelivered
        r = await c.post(WEBHOOK, json={"Records": records}, headers=SECRET)
        assert r.status_code == 200, r.text
    for i, p in enumerate(projects):
        await _settled(c, cluster, p, "ev", 100 + i)

    for i, p in enumerate(projects):  # then through SQS, received as one batch
        await _upload(c, p, "sq", b"s" * (200 + i))
    async with sqs_client(cluster_settings) as client:
        poller = SqsPoller(cstate.ingestor, client, url, wait_seconds=1)
        handled = 0
        for _ in range(10):
            handled += await poller.poll_once()
            if handled >= 3:
                break
    assert handled == 3
    for i, p in enumerate(projects):
        await _settled(c, cluster, p, "sq", 200 + i)


# -- faults ---------------------------------------------------------------------------


async def test_a_master_killed_mid_burst(
    servers: list[Server],
    on_cluster: tuple[httpx.AsyncClient, Any],
    state: Any,
    cluster: RedisClusterProcs,
    cluster_settings: Settings,
) -> None:
    """SIGKILL the master of one project's shard mid-burst: every answer is 200, 413
    or 503 (with Retry-After), nothing is over-admitted, and while the shard is down a
    batch mixing its project with the others fails only that project's uploads. Once
    its replica has taken over, the project answers again within RECOVERY seconds,
    the rest of its room is admitted exactly, and the books balance.

    The master killed holds slot 0: redis-py reads its command table from that node
    whenever it re-reads the topology (gateway/quota/client.py). The replica is held
    back from taking over until the test lets it, so that the shard is certainly down
    while it is looked at, by the gateway's client and by one that starts meanwhile."""
    _, cstate = on_cluster
    k = 80
    a = cluster.master_for_slot(0)
    b, c = [m for m in cluster.masters() if m is not a]
    pa = await project_on(state, cluster, a, default_tenant_limit=k * SIZE)
    pb = await project_on(state, cluster, b, default_tenant_limit=k * SIZE)
    pc = await project_on(state, cluster, c, default_tenant_limit=k * SIZE)
    (replica,) = cluster.replicas_of(a)
    slot = key_slot(project_key(pa.project_id).encode())
    bases = [s.base_url for s in servers]

    def kill_at(n: int) -> None:
        if n == 100:
            cluster.kill(a)

    replica.command("CONFIG SET cluster-replica-no-failover yes")
    try:
        jobs: list[Job] = [(p, "t") for p in (pa, pb, pc) for _ in range(200)]
        results = await storm(bases, jobs, on_done=kill_at)
        assert_only(results, {200, 413, 503})
        counts = [admitted(results, p, "t") for p in (pa, pb, pc)]
        assert all(n <= k for n in counts), counts

        batch = [res(p, "iso", f"iso-{p.project_id}", 0, None) for p in (pa, pb, pc)]
        fresh = create_redis(cluster_settings)
        try:
            for quota in (cstate.quota, QuotaStore(fresh, cstate.quota.source)):
                verdicts = await quota.reserve_each(batch)
                assert isinstance(verdicts[0], DependencyUnavailable)
                assert not [v for v in verdicts[1:] if isinstance(v, DependencyUnavailable)], [
                    getattr(v, "cause", v) for v in verdicts
                ]
        finally:
            await fresh.aclose()

        replica.command("CONFIG SET cluster-replica-no-failover no")
        assert cluster.wait_promoted(a, slot) is replica
        promoted = time.monotonic()
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                probes = await asyncio.gather(
                    *(
                        http.post(
                            f"{base}{UPLOAD}",
                            json={"tenant_id": "probe", "filename": "p", "size_bytes": 0},
                            headers=pa.headers,
                        )
                        for base in bases
                    )
                )
                if all(r.status_code == 200 for r in probes):
                    break
                assert {r.status_code for r in probes} <= {200, 503}
                assert time.monotonic() - promoted < RECOVERY, "no recovery after promotion"
                await asyncio.sleep(0.1)

        rest = await storm(bases, [(p, "t") for p in (pa, pb, pc) for _ in range(120)])
        assert_only(rest, {200, 413})
        for p, n in zip((pa, pb, pc), counts, strict=True):
            assert n + admitted(rest, p, "t") == k
            await books_balance(state, cluster, p, "t", k * SIZE)
    finally:
        replica.command("CONFIG SET cluster-replica-no-failover no")
        if not a.alive():
            cluster.wait_promoted(a, slot)
            cluster.restart(a)  # back as a replica: the next tests have a whole cluster


async def test_flushall_on_one_shard_mid_burst_never_over_admits(
    servers: list[Server], state: Any, cluster: RedisClusterProcs
) -> None:
    k = 41
    victim_master = cluster.masters()[0]
    victim, other = (
        await project_on(state, cluster, victim_master, default_tenant_limit=k * SIZE),
        await project_on(state, cluster, cluster.masters()[1], default_tenant_limit=k * SIZE),
    )

    def flush_at(n: int) -> None:
        if n == 60:
            cluster.flushall(cluster.master_of(victim.project_id))

    bases = [s.base_url for s in servers]
    jobs: list[Job] = [(p, "v") for p in (victim, other) for _ in range(300)]
    results = await storm(bases, jobs, on_done=flush_at)
    assert_only(results, {200, 413})
    n = admitted(results, victim, "v")
    assert n <= k
    assert admitted(results, other, "v") == k
    assert await pg_reserved(state, victim.project_id, "v") == n * SIZE
    more = await storm(bases, [(victim, "v")] * 20)  # rebuilt from Postgres: the rest fits
    assert admitted(more, victim, "v") == k - n
    await books_balance(state, cluster, victim, "v", k * SIZE)


async def test_a_failover_that_lost_writes_is_rebuilt_from_postgres(
    on_cluster: tuple[httpx.AsyncClient, Any], state: Any, cluster: RedisClusterProcs
) -> None:
    """A replica promoted without the master's last writes (replication is
    asynchronous) holds the project's keys, short of reservations that were admitted.
    Made certain here: a manual failover, then the new master loses one reservation.
    The keys are now in another Redis process than the one that made the project's
    generation, so they are rebuilt from Postgres: the lost reservation still counts."""
    c, _ = on_cluster
    master = cluster.masters()[0]
    p = await project_on(state, cluster, master, default_tenant_limit=3 * SIZE)
    body = {"tenant_id": "lw", "filename": "x", "size_bytes": SIZE}
    first = [await c.post(UPLOAD, json=body, headers=p.headers) for _ in range(2)]
    assert [r.status_code for r in first] == [200, 200]
    (replica,) = cluster.replicas_of(master)
    replica.command("CLUSTER FAILOVER")
    slot = key_slot(project_key(p.project_id).encode())
    assert cluster.wait_promoted(master, slot) is replica
    cluster.wait_ok()
    lost = f"r:{first[0].json()['upload_id']}"
    new = replica.client()
    for key in (tenant_key(p.project_id, "lw"), project_key(p.project_id)):
        assert new.hdel(key, lost) == 1
        new.hincrby(key, "res", -SIZE)
    after = [await c.post(UPLOAD, json=body, headers=p.headers) for _ in range(2)]
    assert [r.status_code for r in after] == [200, 413]  # 3 in all, not 4
    await books_balance(state, cluster, p, "lw", 3 * SIZE)
