"""Threshold crossings: judged on settled usage, exactly once under racing
settlements, re-armed when usage falls back; limits lowered over a line tell at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.changes import ChangeKind
from gateway.config import Settings
from gateway.ledger import ObjectChange
from tests.conftest import ProjectKey, make_project, running
from tests.support.hooks import ask, hooks_settings

HOOKS = "/api/storage/webhooks/"


@pytest.fixture(scope="module")
async def hooks(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(hooks_settings(settings))
    async with running(app) as c:
        yield c, app.state


async def endpoint(c: httpx.AsyncClient, p: ProjectKey) -> None:
    r = await c.post(
        HOOKS,
        json={"url": "http://127.0.0.1:9/never-called", "events": ["tenant.quota.threshold"]},
        headers=p.headers,
    )
    assert r.status_code == 201, r.text


async def lines(state: Any, p: ProjectKey, tenant: str) -> Counter[int]:
    rows = await state.db.fetch(
        "SELECT body FROM webhook_events WHERE project_id = $1 AND type = $2",
        p.project_id,
        "tenant.quota.threshold",
    )
    import json

    out: Counter[int] = Counter()
    for r in rows:
        data = json.loads(r["body"])["data"]
        if data["tenant_id"] == tenant:
            out[data["threshold_percent"]] += 1
    return out


async def test_racing_settlements_cross_each_line_once(
    hooks: tuple[httpx.AsyncClient, Any],
) -> None:
    """40 uploads of 25 bytes against a 1000-byte limit, each settled in a transaction
    of its own, all at once; then all removed at once (re-armed) and settled again."""
    c, state = hooks
    p = await make_project(state)
    await endpoint(c, p)
    t = "racer"
    await c.patch(
        f"/api/storage/tenants/{t}/limit/", json={"storage_limit_bytes": 1000}, headers=p.headers
    )
    uploads = [await ask(c, p, t, 25) for _ in range(40)]
    keys = [u["key"] for u in uploads]

    async def settle_all(kind: ChangeKind) -> None:
        now = datetime.now(UTC)
        await asyncio.gather(
            *(
                state.ledger.settle([ObjectChange(kind=kind, key=k, event_time=now, size=25)])
                for k in keys
            )
        )

    await settle_all(ChangeKind.CREATED)
    usage = (await c.get(f"/api/storage/tenants/{t}/usage/", headers=p.headers)).json()
    assert usage["storage_used_bytes"] == 1000
    assert await lines(state, p, t) == {70: 1, 90: 1, 100: 1}

    await settle_all(ChangeKind.REMOVED)  # back to 0: every line re-armed, none told
    assert await lines(state, p, t) == {70: 1, 90: 1, 100: 1}
    reached = await state.db.fetchval(
        "SELECT thresholds_reached FROM tenants WHERE project_id = $1 AND tenant_id = $2",
        p.project_id,
        t,
    )
    assert reached == []
    # the same keys created again, later
    await settle_all(ChangeKind.CREATED)
    assert await lines(state, p, t) == {70: 2, 90: 2, 100: 2}


async def test_a_lowered_default_limit_tells_at_once_and_custom_lines(
    hooks: tuple[httpx.AsyncClient, Any], s3_client: Any
) -> None:
    c, state = hooks
    p = await make_project(state)
    await endpoint(c, p)
    out = await ask(c, p, "eve", 50)
    now = datetime.now(UTC)
    await state.ledger.settle(
        [ObjectChange(kind=ChangeKind.CREATED, key=out["key"], event_time=now, size=50)]
    )
    assert await lines(state, p, "eve") == {}  # unlimited: no lines
    # the project's default limit comes down to 60: 50 / 60 = 83 %
    await state.projects.update(p.project_id, default_tenant_limit=60)
    assert await lines(state, p, "eve") == {70: 1}
    # custom lines: 50 and 80 (judged at once too: 83 % is past both)
    await state.projects.update(p.project_id, webhook_thresholds=[80, 50])
    assert await lines(state, p, "eve") == {70: 1, 50: 1, 80: 1}
    entries = (
        await c.get("/api/storage/audit/", params={"action": "project.updated"}, headers=p.headers)
    ).json()["data"]
    assert entries[0]["after"] == {"webhook_thresholds": [50, 80]}
    # a tenant's own limit overrides: raised to 1000, all re-armed; lowered to 50: 100 %
    lim = "/api/storage/tenants/eve/limit/"
    await c.patch(lim, json={"storage_limit_bytes": 1000}, headers=p.headers)
    await c.patch(lim, json={"storage_limit_bytes": 50}, headers=p.headers)
    assert await lines(state, p, "eve") == {70: 1, 50: 2, 80: 2}


async def test_zero_limit_and_limit_changed_events(
    hooks: tuple[httpx.AsyncClient, Any],
) -> None:
    c, state = hooks
    p = await make_project(state)
    r = await c.post(
        HOOKS,
        json={"url": "http://127.0.0.1:9/x", "events": ["tenant.limit.changed"]},
        headers=p.headers,
    )
    assert r.status_code == 201
    lim = "/api/storage/tenants/zed/limit/"
    await c.patch(lim, json={"storage_limit_bytes": 0}, headers=p.headers)
    await c.patch(lim, json={"storage_limit_bytes": 0}, headers=p.headers)  # no change
    await c.delete(lim, headers=p.headers)
    rows = await state.db.fetch(
        "SELECT body::text AS body FROM webhook_events WHERE project_id = $1 ORDER BY created_at",
        p.project_id,
    )
    import json

    got = [json.loads(r["body"])["data"] for r in rows]
    assert [(d["old_limit_bytes"], d["new_limit_bytes"]) for d in got] == [(None, 0), (0, None)]
