"""The ledger under concurrent transactions (several replicas applying events at once)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.changes import ChangeKind
from gateway.ledger import ObjectChange
from tests.conftest import ProjectKey

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


async def usage(client: httpx.AsyncClient, p: ProjectKey, tenant: str) -> dict[str, Any]:
    result: dict[str, Any] = (
        await client.get(f"/api/storage/tenants/{tenant}/usage/", headers=p.headers)
    ).json()
    return result


async def test_the_same_new_key_in_concurrent_transactions_counts_once(
    client: httpx.AsyncClient, project: ProjectKey, state: Any
) -> None:
    # the tenant exists already, so nothing but the object rows is contended
    r = await client.patch(
        "/api/storage/tenants/cc/limit/",
        json={"storage_limit_bytes": None},
        headers=project.headers,
    )
    assert r.status_code == 200
    keys = [f"{project.project_id}/cc/manual/k{i}" for i in range(20)]
    changes = [
        ObjectChange(kind=ChangeKind.CREATED, key=k, size=100, event_time=T0, sequencer="01")
        for k in keys
    ]
    # 16 transactions at once (as 16 replicas would), each carrying every new key
    await asyncio.gather(*(state.ledger.settle(changes) for _ in range(16)))
    u = await usage(client, project, "cc")
    assert (u["storage_used_bytes"], u["total_files"]) == (2000, 20)
    total = (await client.get("/api/storage/usage/", headers=project.headers)).json()
    assert (total["storage_used_bytes"], total["total_files"]) == (2000, 20)


async def test_removal_overtaking_creation_still_settles_the_upload(
    client: httpx.AsyncClient, project: ProjectKey, state: Any
) -> None:
    out = (
        await client.post(
            "/api/storage/upload/",
            headers=project.headers,
            json={"tenant_id": "ov", "filename": "a.bin", "size_bytes": 70},
        )
    ).json()
    removed = ObjectChange(kind=ChangeKind.REMOVED, key=out["key"], event_time=T0, sequencer="02")
    created = ObjectChange(
        kind=ChangeKind.CREATED,
        key=out["key"],
        size=70,
        event_time=T0 - timedelta(seconds=1),
        sequencer="01",
    )
    await state.ledger.settle([removed])
    await state.ledger.settle([created])  # late and stale: ignored for usage
    st = (
        await client.get(f"/api/storage/uploads/{out['upload_id']}/", headers=project.headers)
    ).json()
    assert st["status"] == "completed"
    u = await usage(client, project, "ov")
    assert (u["storage_used_bytes"], u["storage_reserved_bytes"], u["total_files"]) == (0, 0, 0)


async def test_concurrent_transactions_on_a_new_tenant_mixing_new_and_known_keys(
    client: httpx.AsyncClient, project: ProjectKey, state: Any
) -> None:
    """No tenant row yet; half the keys exist before, half are new; some keys belong
    to no project. Every transaction carries all of them, in its own order."""
    known = [f"{project.project_id}/fresh/manual/old{i}" for i in range(10)]
    await state.ledger.settle(
        [ObjectChange(kind=ChangeKind.CREATED, key=k, size=10, event_time=T0) for k in known]
    )
    new = [f"{project.project_id}/fresh/manual/new{i}" for i in range(10)]
    later = T0 + timedelta(seconds=5)
    changes = [
        *(ObjectChange(kind=ChangeKind.CREATED, key=k, size=30, event_time=later) for k in known),
        *(ObjectChange(kind=ChangeKind.CREATED, key=k, size=7, event_time=later) for k in new),
        ObjectChange(kind=ChangeKind.CREATED, key="prj_nosuch/t/x/y", size=5, event_time=later),
    ]
    results = await asyncio.gather(
        *(state.ledger.settle(changes[i:] + changes[:i]) for i in range(0, 21, 3))
    )
    assert all(r.ignored == 1 for r in results)
    assert sum(r.applied for r in results) == 20 * len(results)  # ties apply as no-ops
    u = await usage(client, project, "fresh")
    assert (u["storage_used_bytes"], u["total_files"]) == (10 * 30 + 10 * 7, 20)


async def _unlimited(client: httpx.AsyncClient, p: ProjectKey, tenant: str) -> None:
    r = await client.patch(
        f"/api/storage/tenants/{tenant}/limit/",
        json={"storage_limit_bytes": None},
        headers=p.headers,
    )
    assert r.status_code == 200


async def _walk(state: Any, keys: list[str], *, steps: int, replicas: int) -> None:
    """``replicas`` appliers, each with 3 transactions in flight, apply the same stream
    of batches: a window of 30 of ``keys`` that moves by 10, so most batches meet keys
    that other transactions are inserting at that moment."""

    def batch(step: int) -> list[ObjectChange]:
        return [
            ObjectChange(kind=ChangeKind.CREATED, key=k, size=10, event_time=T0, sequencer="01")
            for k in keys[step * 10 : step * 10 + 30]
        ]

    async def replica(offset: int) -> None:
        in_flight = asyncio.Semaphore(3)

        async def one(step: int) -> None:
            try:
                await state.ledger.settle(batch(step))
            finally:
                in_flight.release()

        await asyncio.sleep(offset * 0.003)
        tasks = []
        for step in range(steps):
            await in_flight.acquire()
            tasks.append(asyncio.create_task(one(step)))
        await asyncio.gather(*tasks)

    await asyncio.gather(*(replica(i) for i in range(replicas)))


def _count_attempts(state: Any, monkeypatch: Any) -> list[int]:
    attempts = [0]
    settle_once = state.ledger._settle_once

    async def counted(*args: Any, **kwargs: Any) -> Any:
        attempts[0] += 1
        return await settle_once(*args, **kwargs)

    monkeypatch.setattr(state.ledger, "_settle_once", counted)
    return attempts


async def test_replicas_walking_the_same_new_upload_keys_never_start_over(
    client: httpx.AsyncClient, project: ProjectKey, state: Any, monkeypatch: Any
) -> None:
    """New keys of uploads are serialised by their upload rows, locked first: no batch
    is rolled back and applied again. (Before, a batch that lost a new key to another
    transaction started over and could lose again to the next one; with two batches
    in flight in one process, a webhook delivery ran out of attempts and got a 500.)"""
    await _unlimited(client, project, "walk")
    steps, replicas = 40, 8
    keys = []
    for i in range(steps * 10 + 20):
        out = await client.post(
            "/api/storage/upload/",
            headers=project.headers,
            json={"tenant_id": "walk", "filename": f"f{i}.bin", "size_bytes": 10},
        )
        assert out.status_code == 200, out.text
        keys.append(out.json()["key"])
    attempts = _count_attempts(state, monkeypatch)
    await _walk(state, keys, steps=steps, replicas=replicas)
    assert attempts[0] == steps * replicas  # not one batch rolled back and applied again
    u = await usage(client, project, "walk")
    assert (u["storage_used_bytes"], u["storage_reserved_bytes"], u["total_files"]) == (
        len(keys) * 10,
        0,
        len(keys),
    )


async def test_replicas_walking_the_same_new_keys_without_uploads_all_succeed(
    client: httpx.AsyncClient, project: ProjectKey, state: Any, monkeypatch: Any
) -> None:
    """Objects written under a tenant by other means have no upload row to lock: a
    batch may lose one of its new keys and start over, as often as it takes (each
    time one more of its keys has a row), but it never gives up."""
    await _unlimited(client, project, "walk2")
    steps, replicas = 60, 8
    keys = [f"{project.project_id}/walk2/manual/k{i:03d}" for i in range(steps * 10 + 20)]
    attempts = _count_attempts(state, monkeypatch)
    await _walk(state, keys, steps=steps, replicas=replicas)
    assert attempts[0] >= steps * replicas
    u = await usage(client, project, "walk2")
    assert (u["storage_used_bytes"], u["total_files"]) == (len(keys) * 10, len(keys))
