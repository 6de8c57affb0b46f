"""Rebuilding a missing quota hash from a snapshot read along with the request (no
rebuild marker): reconciled with the hash's journal; refused when too old, or when
Redis lost its data after it was read."""

from __future__ import annotations

import time
from typing import Any

from gateway.audit import cli_actor
from gateway.quota import Admitted, Pending, Rejected, Reservation, Snapshot, UsageAt
from gateway.quota.reservations import generation_key, tenant_key
from tests.conftest import make_project

FAR = 4_102_444_800_000  # a deadline in 2100 (ms)
ZERO = UsageAt(0, 0)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _generation(state: Any, project_id: str) -> str:
    """The project's Redis generation, made by a first judgment (of another tenant)."""
    r = Reservation(project_id, "other", "upl_first", 0, None, ZERO, None, ZERO, FAR)
    assert isinstance(await state.quota.reserve(r), Admitted)
    raw = await state.redis.get(generation_key(project_id))
    assert raw
    return str(raw.decode())


async def _fields(state: Any, key: str) -> dict[str, str]:
    raw = await state.redis.hgetall(key)
    return {k.decode(): v.decode() for k, v in raw.items()}


async def test_a_snapshot_older_than_a_change_is_reconciled_with_the_journal(
    state: Any,
) -> None:
    """The snapshot was read while upload R was pending; before it is installed, R
    settles (40 bytes, usage version 1) and its reservation ends, while the hash is
    missing. The install must count what is true now: used 40, R not reserved."""
    p = (await make_project(state)).project_id
    q = state.quota
    gen = await _generation(state, p)
    stale = Snapshot(ZERO, [Pending("upl_r", "j", 50, FAR)], read_ms=_now_ms(), generation=gen)
    await q.apply(project_id=p, tenant_id="j", tenant_usage=UsageAt(40, 1), released=["upl_r"])

    def ask(upload: str, size: int) -> Reservation:
        return Reservation(p, "j", upload, size, 100, ZERO, None, ZERO, FAR, snapshot=stale)

    assert isinstance(await q.reserve(ask("upl_a", 60)), Admitted)  # 40 + 60 = 100
    h = await _fields(state, tenant_key(p, "j"))
    assert (h["used"], h["ver"], h["res"], "r:upl_r" in h) == ("40", "1", "60", False)
    assert await q.reserve(ask("upl_b", 1)) == Rejected(scope="tenant", used=40, reserved=60)


async def test_a_snapshot_the_journal_no_longer_covers_is_not_installed(state: Any) -> None:
    p = (await make_project(state)).project_id
    q = state.quota
    gen = await _generation(state, p)
    old = Snapshot(UsageAt(999, 5), [], read_ms=_now_ms() - 120_000, generation=gen)
    r = Reservation(p, "k", "upl_c", 60, 100, ZERO, None, ZERO, FAR, snapshot=old)
    # rebuilt from Postgres instead, where the tenant has nothing
    assert isinstance(await q.reserve(r), Admitted)
    h = await _fields(state, tenant_key(p, "k"))
    assert (h["used"], h["res"]) == ("0", "60")


async def test_a_snapshot_read_before_redis_lost_its_data_is_not_installed(
    state: Any,
) -> None:
    """Read while the hash existed; then reservations were admitted into it and Redis
    lost everything (a flush or restart, which the journal does not survive). The
    snapshot does not count those reservations: it must not be installed."""
    p = (await make_project(state)).project_id
    q = state.quota
    gen = await _generation(state, p)
    before = Snapshot(ZERO, [], read_ms=_now_ms(), generation=gen)
    admitted = Reservation(p, "f", "upl_admitted", 60, 100, ZERO, None, ZERO, FAR)
    assert isinstance(await q.reserve(admitted), Admitted)  # its row is in Postgres...
    await state.db.execute(
        "INSERT INTO uploads (id, project_id, tenant_id, object_key, filename, content_type,"
        " method, declared_size, expires_at, reserved_until) VALUES ('upl_admitted', $1, 'f',"
        " 'k', 'f', 'x/y', 'PUT', 60, now() + interval '1 hour', now() + interval '2 hours')",
        p,
    )
    for key in await state.redis.keys(f"gwq:{{{p}}}:*"):  # ...and Redis loses everything
        await state.redis.delete(key)
    late = Reservation(p, "f", "upl_late", 60, 100, ZERO, None, ZERO, FAR, snapshot=before)
    # rebuilt from Postgres instead: 60 + 60 > 100
    assert await q.reserve(late) == Rejected(scope="tenant", used=0, reserved=60)


async def test_a_tenant_that_turns_cold_while_its_first_statement_runs(
    client: Any, state: Any, monkeypatch: Any
) -> None:
    """The statement was sent without reading the tenant's reservations (it was warm);
    while it ran, another request found the tenant's hash gone and marked it cold. The
    upload must not then be judged against an empty snapshot (seen: 237 admitted for
    room for 200, under a Redis restart)."""
    import contextlib

    from gateway.api.schemas import LimitUpdate
    from gateway.db import Q

    p = await make_project(state)
    await state.tenants.set_limit(
        p.project_id, "w", LimitUpdate(storage_limit_bytes=30), actor=cli_actor()
    )
    up = {"tenant_id": "w", "filename": "f.bin", "size_bytes": 20}
    assert (
        await client.post("/api/storage/upload/", json=up, headers=p.headers)
    ).status_code == 200
    await state.redis.delete(tenant_key(p.project_id, "w"))  # the hash is lost
    real_acquire = state.db.acquire

    class Conn:
        def __init__(self, conn: Any) -> None:
            self._conn = conn

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

        async def fetch(self, sql: str, *args: Any) -> Any:
            rows = await self._conn.fetch(sql, *args)
            if sql == Q.upload_context:
                state.admission._warm.clear()  # meanwhile: found cold by another request
            return rows

    @contextlib.asynccontextmanager
    async def acquire() -> Any:
        async with real_acquire() as conn:
            yield Conn(conn)

    monkeypatch.setattr(state.db, "acquire", acquire)
    r = await client.post("/api/storage/upload/", json=up, headers=p.headers)
    assert r.status_code == 413, r.text  # 20 reserved + 20 > 30
    assert r.json()["storage_reserved_bytes"] == 20
