"""Every key a quota script touches is a key the call declared (KEYS).

Redis Cluster routes a script call by its keys, and stricter servers and proxies
(Dragonfly, some managed "cluster" proxies) refuse a script that touches a key it did
not declare, even in the same slot. Checked with MONITOR on a private Redis, which
lists the commands a script runs right after the call that ran it, over a workload
that takes every branch of the scripts: rebuilds with and without a marker, expiry
of a tenant's and a project's reservations, refusals, the mirror onto present and
missing hashes (the journal), and the holds check.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_sync

from gateway.config import Settings
from gateway.quota import (
    Admitted,
    Missing,
    Pending,
    QuotaStore,
    Rejected,
    Reservation,
    Snapshot,
    UsageAt,
    create_redis,
)
from gateway.quota.reservations import generation_key, tenant_key
from tests.conftest import make_project
from tests.support.faults import PrivateRedis
from tests.support.services import settings_on

FAR = 4_102_444_800_000  # a deadline in 2100 (ms)
ZERO = UsageAt(0, 0)
DONE = "script-keys-workload-done"


class Monitor:
    """Every command the server runs, from MONITOR, until ``ECHO DONE``."""

    def __init__(self, url: str) -> None:
        self.client = redis_sync.Redis.from_url(url)
        self.commands: list[tuple[str, list[str]]] = []  # (client type, argv)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as m:  # type: ignore[no-untyped-call]
            self._started.set()
            for c in m.listen():
                argv = c["command"].split(" ")
                self.commands.append((c["client_type"], argv))
                if argv == ["ECHO", DONE]:
                    return

    def __enter__(self) -> Monitor:
        self._thread.start()
        assert self._started.wait(5)
        time.sleep(0.1)  # MONITOR is in force once the server has read it
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.echo(DONE)
        self._thread.join(10)
        assert not self._thread.is_alive()


def undeclared(commands: list[tuple[str, list[str]]]) -> list[str]:
    """The commands run by a script on a key its call did not declare. Every command
    the scripts run takes its key first (TIME and INFO take none)."""
    out: list[str] = []
    declared: set[str] = set()
    for client_type, argv in commands:
        if client_type != "lua":
            name = argv[0].upper()
            declared = set(argv[3 : 3 + int(argv[2])]) if name in ("EVALSHA", "EVAL") else set()
            continue
        if argv[0].upper() in ("TIME", "INFO"):
            continue
        if argv[1] not in declared:
            out.append(" ".join(argv[:2]))
    return out


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis() as r:
        yield r


def _res(
    project: str,
    tenant: str,
    upload: str,
    size: int,
    *,
    limit: int | None = None,
    deadline: int = FAR,
    snapshot: Snapshot | None = None,
) -> Reservation:
    return Reservation(
        project, tenant, upload, size, limit, ZERO, None, ZERO, deadline, snapshot=snapshot
    )


async def _workload(quota: QuotaStore, redis: Any, p1: str, p2: str) -> None:
    # cold: both projects' hashes missing in one batch, rebuilt (under markers) in one
    first = await quota.reserve_many([_res(p1, "a", "u1", 10), _res(p2, "c", "u2", 10)])
    missing = [v for v in first if isinstance(v, Missing)]
    assert len(missing) == 2
    rebuilt = await quota.rebuild_and_reserve(
        [(_res(p1, "a", "u1", 10), missing[0]), (_res(p2, "c", "u2", 10), missing[1])]
    )
    assert rebuilt == [Admitted(), Admitted()]
    # reservations of two tenants that lapse; judgments of both tenants drop them
    assert await quota.reserve(_res(p1, "b", "u0", 0)) == Admitted()
    soon = int(time.time() * 1000) + 100
    lapsing = [_res(p1, "a", "u3", 5, deadline=soon), _res(p1, "b", "u4", 5, deadline=soon)]
    assert await quota.reserve_many(lapsing) == [Admitted(), Admitted()]
    await asyncio.sleep(0.2)
    again = [_res(p1, "a", "u5", 90, limit=100), _res(p1, "b", "u6", 1, limit=1)]
    assert await quota.reserve_many(again) == [Admitted(), Admitted()]  # room is back
    # refused (and its reservation, if any, dropped)
    refused = await quota.reserve(_res(p1, "a", "u7", 1, limit=100))
    assert refused == Rejected(scope="tenant", used=0, reserved=100)
    # the mirror onto hashes that exist, and onto one that is missing (its journal)
    await redis.delete(tenant_key(p2, "c"))
    await quota.apply_many(
        [
            (p1, "a", UsageAt(10, 1), UsageAt(10, 1), ["u1"]),
            (p2, "c", UsageAt(10, 1), UsageAt(10, 1), ["u2"]),
        ]
    )
    # an install without a marker (a cold tenant's first statement read the
    # snapshot), reconciled with that journal
    gen = (await redis.get(generation_key(p2))).decode()
    snap = Snapshot(
        ZERO, [Pending("u2", "c", 10, FAR)], read_ms=int(time.time() * 1000), generation=gen
    )
    assert await quota.reserve(_res(p2, "c", "u8", 5, snapshot=snap)) == Admitted()
    assert await quota.holds(
        [(p1, "a", "u5"), (p2, "c", "u2"), (p2, "c", "u8"), (p2, "x", "u9")]
    ) == [
        True,
        False,
        True,
        None,
    ]


@pytest.mark.parametrize("split", [False, True], ids=["one-call", "per-project"])
async def test_every_key_a_script_touches_is_declared(
    state: Any, settings: Settings, private_redis: PrivateRedis, split: bool
) -> None:
    redis = create_redis(settings_on(settings, GATEWAY_REDIS_URL=private_redis.url))
    quota = QuotaStore(redis, state.quota.source, split_per_project=split)
    p1 = (await make_project(state)).project_id
    p2 = (await make_project(state)).project_id
    try:
        with Monitor(private_redis.url) as seen:
            await _workload(quota, redis, p1, p2)
    finally:
        await redis.aclose()
    assert undeclared(seen.commands) == []
    ran = {
        (argv[0].upper(), argv[1].rsplit(":", 1)[-1])
        for t, argv in seen.commands
        if t == "lua" and len(argv) > 1
    }
    # the workload took the branches that touch the keys a quick version leaves out
    assert ("ZREMRANGEBYSCORE", "a") in ran and ("ZREMRANGEBYSCORE", "x") in ran  # expiry
    assert ("HSET", "j") in ran and ("DEL", "rb") in ran  # journal, marker
