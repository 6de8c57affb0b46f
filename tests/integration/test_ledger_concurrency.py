"""The ledger under concurrent transactions (several replicas applying events at once)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.ledger import ChangeKind, ObjectChange
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
    await asyncio.gather(*(state.ledger.apply(changes) for _ in range(16)))
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
    await state.ledger.apply([removed])
    await state.ledger.apply([created])  # late and stale: ignored for usage
    st = (
        await client.get(f"/api/storage/uploads/{out['upload_id']}/", headers=project.headers)
    ).json()
    assert st["status"] == "completed"
    u = await usage(client, project, "ov")
    assert (u["storage_used_bytes"], u["storage_reserved_bytes"], u["total_files"]) == (0, 0, 0)
