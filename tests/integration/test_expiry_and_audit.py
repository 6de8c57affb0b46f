"""Expiry on time, and the audit of Redis against Postgres (docs/quota.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from gateway.api.schemas import LimitUpdate
from gateway.app import create_app
from gateway.audit import cli_actor
from gateway.config import Settings
from gateway.ids import new_id
from gateway.quota import Admitted, Reservation, UsageAt
from gateway.quota.reservations import tenant_key
from tests.conftest import ProjectKey, make_project, running
from tests.support.services import settings_on

UPLOAD = "/api/storage/upload/"
SIZE = 100


def body(tenant: str, size: int = SIZE) -> dict[str, Any]:
    return {"tenant_id": tenant, "filename": "f.bin", "size_bytes": size}


async def limited(state: Any, tenant: str, limit: int) -> ProjectKey:
    p = await make_project(state)
    await state.tenants.set_limit(
        p.project_id, tenant, LimitUpdate(storage_limit_bytes=limit), actor=cli_actor()
    )
    return p


async def usage(client: httpx.AsyncClient, p: ProjectKey, tenant: str) -> dict[str, Any]:
    r = await client.get(f"/api/storage/tenants/{tenant}/usage/", headers=p.headers)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_an_abandoned_reservation_stops_counting_at_its_deadline(
    settings: Settings, state: Any
) -> None:
    """TTL 2 s + grace 1 s, the sweeper on its default 30 s schedule: the room is back
    within 4 s of the request, without a sweep."""
    short = settings_on(
        settings,
        GATEWAY_UPLOAD_URL_TTL="2",
        GATEWAY_RESERVATION_GRACE="1",
        GATEWAY_SWEEP_INTERVAL="",  # the default schedule
    )
    assert short.sweep_interval == 30.0
    p = await limited(state, "t", SIZE)
    async with running(create_app(short)) as c:
        started = time.monotonic()
        first = await c.post(UPLOAD, json=body("t"), headers=p.headers)
        assert first.status_code == 200, first.text
        assert (await c.post(UPLOAD, json=body("t"), headers=p.headers)).status_code == 413
        assert (await usage(c, p, "t"))["storage_reserved_bytes"] == SIZE
        while True:
            r = await c.post(UPLOAD, json=body("t"), headers=p.headers)
            if r.status_code == 200 or time.monotonic() - started > 6:
                break
            assert r.status_code == 413, r.text
            await asyncio.sleep(0.1)
        back_after = time.monotonic() - started
        assert r.status_code == 200, "the expired reservation still blocks the tenant"
        assert back_after <= 4.0, f"room came back {back_after:.1f} s after the request"
        up = first.json()["upload_id"]
        st = (await c.get(f"/api/storage/uploads/{up}/", headers=p.headers)).json()
        assert st["status"] == "expired"
        # the usage body agrees with admission: only the new upload is reserved
        assert (await usage(c, p, "t"))["storage_reserved_bytes"] == SIZE


async def _plant_ghost(state: Any, p: ProjectKey, tenant: str, size: int) -> str:
    """A reservation in Redis that no upload row backs (a crash between a Postgres
    change and its Redis update leaves one)."""
    ghost = new_id("upl")
    far = int(time.time() * 1000) + 3_600_000
    zero = UsageAt(0, 0)
    r = Reservation(p.project_id, tenant, ghost, size, None, zero, None, zero, far)
    assert isinstance(await state.quota.reserve(r), Admitted)
    return ghost


async def test_audit_ends_a_reservation_without_an_upload(
    client: httpx.AsyncClient, state: Any
) -> None:
    p = await limited(state, "t", SIZE)
    ghost = await _plant_ghost(state, p, "t", SIZE)
    assert (await client.post(UPLOAD, json=body("t"), headers=p.headers)).status_code == 413
    for _ in range(2):  # one full walk (a walk already under way finishes first)
        await state.sweeper.audit(budget=100_000)
    (held,) = await state.quota.holds([(p.project_id, "t", ghost)])
    assert held is False
    assert int(await state.redis.hget(tenant_key(p.project_id, "t"), "res")) == 0
    assert (await client.post(UPLOAD, json=body("t"), headers=p.headers)).status_code == 200


async def test_audit_removes_a_pending_row_that_was_never_admitted(
    client: httpx.AsyncClient, state: Any
) -> None:
    """A process that crashed between writing the row and judging it: the row holds no
    reservation, and its request can no longer be admitted."""
    p = await limited(state, "t", SIZE)
    ok = await client.post(UPLOAD, json=body("t", 10), headers=p.headers)  # the hash exists
    assert ok.status_code == 200
    orphan = new_id("upl")
    await state.db.execute(
        "INSERT INTO uploads (id, project_id, tenant_id, object_key, filename, content_type,"
        " method, declared_size, created_at, expires_at, reserved_until)"
        " VALUES ($1, $2, 't', $2 || '/t/' || $1 || '/f.bin', 'f.bin', 'x/y', 'PUT', 50,"
        " now() - interval '5 minutes', now() + interval '1 hour', now() + interval '2 hours')",
        orphan,
        p.project_id,
    )
    assert (await usage(client, p, "t"))["storage_reserved_bytes"] == 60
    for _ in range(3):
        await state.sweeper.audit(budget=100_000)
    gone = await state.db.fetchval("SELECT count(*) FROM uploads WHERE id = $1", orphan)
    assert gone == 0
    assert (await usage(client, p, "t"))["storage_reserved_bytes"] == 10  # the admitted one stays
    st = await client.get(f"/api/storage/uploads/{ok.json()['upload_id']}/", headers=p.headers)
    assert st.json()["status"] == "pending"


async def test_audits_during_a_burst_never_over_admit(
    client: httpx.AsyncClient, state: Any
) -> None:
    k = 20
    p = await limited(state, "t", k * 10)
    await _plant_ghost(state, p, "t", 50)
    stop = asyncio.Event()

    async def audits() -> int:
        n = 0
        while not stop.is_set():
            await state.sweeper.audit(budget=100_000)
            n += 1
        return n

    auditor = asyncio.create_task(audits())
    gate = asyncio.Semaphore(16)

    async def one() -> int:
        async with gate:
            r = await client.post(UPLOAD, json=body("t", 10), headers=p.headers)
            assert r.status_code in (200, 413), r.text
            return r.status_code

    codes = list(await asyncio.gather(*(one() for _ in range(3 * k))))
    stop.set()
    assert await auditor >= 1
    assert codes.count(200) <= k
    # once the ghost is gone, the tenant gets all of its room, and not a byte more
    await state.sweeper.audit(budget=100_000)
    await state.sweeper.audit(budget=100_000)
    codes += [await one() for _ in range(k)]
    assert codes.count(200) == k, codes
    assert (await usage(client, p, "t"))["storage_reserved_bytes"] == k * 10
