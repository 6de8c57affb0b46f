"""Tenants, limits and usage over HTTP, on real Postgres and Redis."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ProjectKey, make_project

Client = httpx.AsyncClient


async def test_unknown_tenant_answers_zeros(client: Client, project: ProjectKey) -> None:
    r = await client.get("/api/storage/tenants/user_123/usage/", headers=project.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "tenant_id": "user_123",
        "email": None,
        "storage_used_bytes": 0,
        "storage_limit_bytes": None,
        "total_files": 0,
        "storage_reserved_bytes": 0,
        "storage_available_bytes": None,
        "percentage_used": None,
        "plan": None,
        "over_limit": False,
    }


async def test_without_trailing_slash_works_too(client: Client, project: ProjectKey) -> None:
    r = await client.get("/api/storage/tenants/user_1/usage", headers=project.headers)
    assert r.status_code == 200
    assert r.json()["tenant_id"] == "user_1"


async def test_missing_and_bad_keys_are_401(client: Client, project: ProjectKey) -> None:
    url = "/api/storage/tenants/u/usage/"
    assert (await client.get(url)).status_code == 401
    bad = project.api_key[:-2] + ("AA" if not project.api_key.endswith("AA") else "BB")
    r = await client.get(url, headers={"Authorization": f"Bearer {bad}"})
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_api_key"
    r = await client.get(url, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


async def test_patch_limit_and_null(client: Client, project: ProjectKey) -> None:
    url = "/api/storage/tenants/user_9/limit/"
    r = await client.patch(url, json={"storage_limit_bytes": 5368709120}, headers=project.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["storage_limit_bytes"] == 5368709120
    assert body["storage_available_bytes"] == 5368709120
    assert body["percentage_used"] == 0.0
    r = await client.patch(url, json={"storage_limit_bytes": None}, headers=project.headers)
    assert r.json()["storage_limit_bytes"] is None


async def test_bad_limits_are_422(client: Client, project: ProjectKey) -> None:
    url = "/api/storage/tenants/user_9/limit/"
    for bad in (
        {"storage_limit_bytes": -1},
        {"storage_limit_bytes": 2**63},
        {"storage_limit_bytes": "10"},
        {"storage_limit_bytes": 1.5},
        {},
    ):
        r = await client.patch(url, json=bad, headers=project.headers)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["detail"]
    r = await client.patch(
        url, content=b"{not json", headers={**project.headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    r = await client.patch(
        url,
        content=b"a=b",
        headers={**project.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415, r.text


async def test_bad_tenant_ids_are_rejected(client: Client, project: ProjectKey) -> None:
    for bad in ("a" * 129, "bad%20id", "sp ace"):
        r = await client.get(f"/api/storage/tenants/{bad}/usage/", headers=project.headers)
        assert r.status_code in (404, 422), (bad, r.status_code)


async def test_projects_are_isolated(client: Client, state: Any) -> None:
    a = await make_project(state)
    b = await make_project(state)
    await client.patch(
        "/api/storage/tenants/shared/limit/", json={"storage_limit_bytes": 10}, headers=a.headers
    )
    r = await client.get("/api/storage/tenants/shared/usage/", headers=b.headers)
    assert r.json()["storage_limit_bytes"] is None
    r = await client.get("/api/storage/tenants/", headers=b.headers)
    assert r.json()["totalCount"] == 0


async def test_default_tenant_limit_applies_until_patched(client: Client, state: Any) -> None:
    p = await make_project(state, default_tenant_limit=1000)
    r = await client.get("/api/storage/tenants/new_one/usage/", headers=p.headers)
    assert r.json()["storage_limit_bytes"] == 1000
    await client.patch(
        "/api/storage/tenants/new_one/limit/", json={"storage_limit_bytes": None}, headers=p.headers
    )
    r = await client.get("/api/storage/tenants/new_one/usage/", headers=p.headers)
    assert r.json()["storage_limit_bytes"] is None


async def test_list_pages_orders_and_filters(client: Client, state: Any) -> None:
    p = await make_project(state)
    for i in range(5):
        await client.patch(
            f"/api/storage/tenants/t{i}/limit/",
            json={"storage_limit_bytes": 100 * (i + 1)},
            headers=p.headers,
        )
    r = await client.get("/api/storage/tenants/?offset=0&limit=2", headers=p.headers)
    body = r.json()
    assert body["count"] == 2 and body["totalCount"] == 5
    assert [t["tenant_id"] for t in body["data"]] == ["t0", "t1"]
    assert body["previous"] is None and "offset=2" in body["next"]
    r = await client.get("/api/storage/tenants/?order=-tenant_id&limit=1", headers=p.headers)
    assert r.json()["data"][0]["tenant_id"] == "t4"
    r = await client.get("/api/storage/tenants/?order=bogus", headers=p.headers)
    assert r.status_code == 422
    r = await client.get("/api/storage/tenants/?over_limit=true", headers=p.headers)
    assert r.json()["totalCount"] == 0
    r = await client.get("/api/storage/usage/", headers=p.headers)
    assert r.status_code == 200 and r.json()["total_tenants"] == 5


async def test_listing_filters_and_orders_by_the_percentage_it_shows(
    client: Client, state: Any
) -> None:
    """list_tenants computes the percentage in SQL to filter and order; it must be the
    one the usage bodies show (gateway.limits.percentage), rounding included."""
    from datetime import UTC, datetime

    from gateway import limits
    from gateway.changes import ChangeKind
    from gateway.ledger import ObjectChange

    p = await make_project(state)
    cases = {"a": (1, 32), "b": (2, 3), "c": (7, 10), "d": (69_995, 100_000), "e": (0, 0)}
    cases |= {"f": (1, 0), "g": (5, 4), "h": (6_999_499, 10_000_000)}
    for tenant, (used, limit) in cases.items():
        r = await client.patch(
            f"/api/storage/tenants/{tenant}/limit/",
            json={"storage_limit_bytes": limit},
            headers=p.headers,
        )
        assert r.status_code == 200
        if used:
            key = f"{p.project_id}/{tenant}/obj.bin"
            now = datetime.now(UTC)
            await state.ledger.settle([ObjectChange(ChangeKind.CREATED, key, now, size=used)])
    shown = {t: limits.percentage(u, lim) for t, (u, lim) in cases.items()}
    for threshold in (3.13, 66.67, 70, 100, 125):
        r = await client.get(
            f"/api/storage/tenants/?min_percentage={threshold}&limit=100", headers=p.headers
        )
        got = {row["tenant_id"] for row in r.json()["data"]}
        want = {t for t, pct in shown.items() if pct is not None and pct >= threshold}
        assert got == want, threshold
    r = await client.get(
        "/api/storage/tenants/?order=-percentage_used&limit=100", headers=p.headers
    )
    rows = r.json()["data"]
    pcts = [pct for pct in shown.values() if pct is not None]
    assert [row["percentage_used"] for row in rows] == sorted(pcts, reverse=True)
