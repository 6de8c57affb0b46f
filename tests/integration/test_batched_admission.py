"""The batched upload path: requests that share a round trip keep their own outcomes.

Many requests are fired at once through one app (real Postgres, Redis and moto), so
the database stage and the Redis stage each see batches that mix good and bad
requests, several tenants and projects, and repeated idempotency keys.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import ProjectKey, make_project

UPLOAD = "/api/storage/upload/"


def body(tenant: str, size: int = 10, **over: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "filename": "f.bin", "size_bytes": size, **over}


async def reserved(client: httpx.AsyncClient, p: ProjectKey, tenant: str) -> int:
    r = await client.get(f"/api/storage/tenants/{tenant}/usage/", headers=p.headers)
    assert r.status_code == 200, r.text
    value: int = r.json()["storage_reserved_bytes"]
    return value


async def test_a_mixed_burst_gets_each_request_its_own_answer(
    client: httpx.AsyncClient, state: Any
) -> None:
    a = await make_project(state, max_file_size=1000)
    b = await make_project(state)
    r = await client.patch(
        "/api/storage/tenants/small/limit/", json={"storage_limit_bytes": 55}, headers=a.headers
    )
    assert r.status_code == 200
    r = await client.patch(
        "/api/storage/tenants/full/limit/", json={"storage_limit_bytes": 5}, headers=a.headers
    )
    assert r.status_code == 200
    bad_key = {"Authorization": a.headers["Authorization"][:-4] + "AAAA"}
    idem = {**a.headers, "Idempotency-Key": "burst-1"}

    calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    calls += [("small", a.headers, body("small")) for _ in range(12)]  # room for 5
    calls += [("newbie", a.headers, body("newbie")) for _ in range(6)]  # first use
    calls += [("idem", idem, body("idem")) for _ in range(4)]  # one upload
    calls += [("bad-key", bad_key, body("x"))]
    calls += [("too-large", a.headers, body("x", size=1001))]
    calls += [("full", a.headers, body("full"))]  # over the limit before any reservation
    calls += [("b", b.headers, body("small")) for _ in range(5)]  # same tenant id, project b
    batches_before = state.admission._record.batches
    responses = await asyncio.gather(*(client.post(UPLOAD, json=j, headers=h) for _, h, j in calls))
    by_kind: dict[str, list[httpx.Response]] = {}
    for (kind, _, _), resp in zip(calls, responses, strict=True):
        by_kind.setdefault(kind, []).append(resp)

    # the burst was batched (the counter is the session's: count this burst's batches)
    assert state.admission._record.batches - batches_before < len(calls)

    small = [r.status_code for r in by_kind["small"]]
    assert small.count(200) == 5 and small.count(413) == 7
    for r in by_kind["small"]:
        if r.status_code == 413:
            assert r.json()["code"] == "quota_exceeded"
    assert await reserved(client, a, "small") == 50

    newbie = by_kind["newbie"]
    assert all(r.status_code == 200 for r in newbie)
    assert sum(r.json()["is_new_tenant"] for r in newbie) == 1

    idem_ids = {r.json()["upload_id"] for r in by_kind["idem"] if r.status_code == 200}
    assert len(idem_ids) == 1 and all(r.status_code == 200 for r in by_kind["idem"])
    assert await reserved(client, a, "idem") == 10
    other = await client.post(UPLOAD, json=body("idem", size=11), headers=idem)
    assert other.status_code == 409

    assert by_kind["bad-key"][0].status_code == 401
    too_large = by_kind["too-large"][0]
    assert too_large.status_code == 413 and too_large.json()["code"] == "file_too_large"
    full = by_kind["full"][0]
    assert full.status_code == 413 and full.json()["storage_limit_bytes"] == 5

    assert all(r.status_code == 200 for r in by_kind["b"])  # b's tenant is unlimited
    assert await reserved(client, b, "small") == 50


async def test_a_burst_after_redis_lost_its_data_rebuilds_and_admits_exactly(
    client: httpx.AsyncClient, state: Any
) -> None:
    p = await make_project(state)
    r = await client.patch(
        "/api/storage/tenants/t/limit/", json={"storage_limit_bytes": 100}, headers=p.headers
    )
    assert r.status_code == 200
    first = await asyncio.gather(
        *(client.post(UPLOAD, json=body("t"), headers=p.headers) for _ in range(4))
    )
    assert [x.status_code for x in first] == [200] * 4
    await state.redis.flushdb()
    rest = await asyncio.gather(
        *(client.post(UPLOAD, json=body("t"), headers=p.headers) for _ in range(20))
    )
    codes = [x.status_code for x in rest]
    assert codes.count(200) == 6 and codes.count(413) == 14  # 4 kept + 6 = 100 bytes
    assert await reserved(client, p, "t") == 100


FAR = 4_102_444_800_000  # a deadline in 2100 (ms)


@pytest.fixture(params=[False, True], ids=["one-call", "per-project"])
def quota(state: Any, request: pytest.FixtureRequest) -> Any:
    """The app's QuotaStore, and one that splits batches per project as it does on
    Redis Cluster (standalone Redis runs both)."""
    from gateway.quota import QuotaStore

    return QuotaStore(state.redis, state.quota.source, split_per_project=request.param)


async def test_reserve_many_judges_each_upload_against_its_own_tenant_and_project(
    state: Any, quota: Any
) -> None:
    from gateway.quota import Admitted, Missing, Rejected, Reservation, UsageAt

    p1 = (await make_project(state)).project_id
    p2 = (await make_project(state)).project_id
    zero = UsageAt(0, 0)

    def res(project: str, tenant: str, upload: str, size: int, limit: int | None) -> Reservation:
        return Reservation(
            project, tenant, upload, size, limit, zero, 25 if project == p2 else None, zero, FAR
        )

    # unknown hashes: every upload is sent back to be rebuilt, nothing is reserved
    first = await quota.reserve_many([res(p1, "a", "u0", 1, 20), res(p2, "c", "u00", 1, None)])
    assert all(isinstance(v, Missing) and v.tenant for v in first)
    for project, tenant in ((p1, "a"), (p1, "b"), (p2, "c")):
        assert isinstance(
            await quota.reserve(res(project, tenant, "w-" + tenant, 0, None)), Admitted
        )

    verdicts = await quota.reserve_many(
        [
            res(p1, "a", "u1", 10, 20),
            res(p1, "b", "u2", 30, None),  # another tenant: not held to a's limit
            res(p2, "c", "u3", 10, None),
            res(p1, "a", "u4", 10, 20),
            res(p2, "c", "u5", 10, None),
            res(p1, "a", "u6", 10, 20),  # a is full (20)
            res(p2, "c", "u7", 10, None),  # p2's cap is 25
            res(p1, "a", "u1", 10, 20),  # the same upload again: counted once
        ]
    )
    kinds = [type(v).__name__ for v in verdicts]
    assert kinds == [
        "Admitted",
        "Admitted",
        "Admitted",
        "Admitted",
        "Admitted",
        "Rejected",
        "Rejected",
        "Admitted",
    ]
    assert verdicts[5] == Rejected(scope="tenant", used=0, reserved=20)
    assert verdicts[6] == Rejected(scope="project", used=0, reserved=20)


async def test_apply_many_mirrors_each_tenant_and_project(state: Any, quota: Any) -> None:
    from gateway.quota import Admitted, Reservation, UsageAt
    from gateway.quota.reservations import project_key, tenant_key

    redis = state.redis
    p1 = (await make_project(state)).project_id
    p2 = (await make_project(state)).project_id
    zero = UsageAt(0, 0)
    for project, tenant, upload, size in (
        (p1, "a", "u1", 10),
        (p1, "a", "u2", 20),
        (p1, "b", "u3", 30),
        (p2, "c", "u4", 40),
    ):
        r = Reservation(project, tenant, upload, size, None, zero, None, zero, FAR)
        assert isinstance(await quota.reserve(r), Admitted)

    await quota.apply_many(
        [
            (p1, "a", UsageAt(10, 100), UsageAt(10, 100), ["u1"]),
            (p1, "b", None, None, ["u3", "not-there"]),
            (p2, "c", UsageAt(40, 100), UsageAt(40, 100), ["u4"]),
        ]
    )

    async def fields(key: str) -> dict[str, str]:
        raw = await redis.hgetall(key)
        return {k.decode(): v.decode() for k, v in raw.items()}

    a = await fields(tenant_key(p1, "a"))
    assert (a["used"], a["ver"], a["res"], "r:u2" in a, "r:u1" in a) == (
        "10",
        "100",
        "20",
        True,
        False,
    )
    b = await fields(tenant_key(p1, "b"))
    assert (b["used"], b["res"], "r:u3" in b) == ("0", "0", False)
    p1h = await fields(project_key(p1))
    assert (p1h["used"], p1h["ver"], p1h["res"]) == ("10", "100", "20")
    assert set(k for k in p1h if k.startswith("r:")) == {"r:u2"}
    c = await fields(tenant_key(p2, "c"))
    p2h = await fields(project_key(p2))
    assert (c["used"], c["res"], p2h["used"], p2h["res"]) == ("40", "0", "40", "0")
