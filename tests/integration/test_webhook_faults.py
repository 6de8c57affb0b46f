"""Webhook delivery under faults: a receiver that fails, hangs or is down; Postgres cut
during a settlement and during delivery; two worker processes on one outbox."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import msgspec

from gateway.app import create_app
from gateway.config import Settings
from gateway.webhooks.events import TEST, event
from tests.conftest import BUCKET, ProjectKey, make_project, running
from tests.support.faults import FaultProxy
from tests.support.hooks import ask, create_hook, hooks_settings
from tests.support.receiver import Receiver
from tests.support.services import assert_503

HOOKS = "/api/storage/webhooks/"


@contextlib.asynccontextmanager
async def gateway(settings: Settings, **env: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(hooks_settings(settings, **env))
    async with running(app) as c:
        yield c, app.state


async def until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def statuses(db: Any, endpoint_id: str) -> dict[str, str]:
    rows = await db.fetch(
        "SELECT event_id, status FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id
    )
    return {r["event_id"]: r["status"] for r in rows}


async def queue_tests(state: Any, p: ProjectKey, n: int) -> list[str]:
    """``n`` test events in the outbox for the project's endpoints, in one transaction."""
    events = [event(p.project_id, TEST, {"n": i}) for i in range(n)]
    async with state.db.transaction() as conn:
        await state.webhooks.outbox.record(conn, events=events)
    return [e.id for e in events]


async def test_500_then_200_is_retried_and_delivered(settings: Settings) -> None:
    with Receiver() as rx:
        rx.answer_after = lambda got: "fail" if len(rx.received()) == 1 else "ok"
        async with gateway(settings, GATEWAY_WEBHOOK_DELIVERY="true") as (c, state):
            p = await make_project(state)
            hook = await create_hook(c, p, rx.url())
            sent = (await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)).json()
            await rx.wait_for(2)

            async def delivered() -> bool:
                return (await statuses(state.db, hook["id"])) == {sent["event_id"]: "delivered"}

            await until(delivered)
        assert rx.ids() == {sent["event_id"]: 2}
        assert len(rx.verified(hook["secret"])) == 2
        # signed afresh: the same body, each attempt with its own timestamp header
        first, second = rx.received()
        assert first.body == second.body


async def test_a_hanging_receiver_is_timed_out_and_retried(settings: Settings) -> None:
    with Receiver() as rx:
        rx.answer_after = lambda got: "hang" if len(rx.received()) == 1 else "ok"
        async with gateway(settings, GATEWAY_WEBHOOK_DELIVERY="true") as (c, state):
            timeouts = state.webhooks.metrics.attempts.labels("timeout")
            before = timeouts._value.get()
            p = await make_project(state)
            hook = await create_hook(c, p, rx.url())
            sent = (await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)).json()
            await rx.wait_for(2)

            async def delivered() -> bool:
                return (await statuses(state.db, hook["id"])) == {sent["event_id"]: "delivered"}

            await until(delivered)
            assert timeouts._value.get() == before + 1
        rx.release.set()
        assert rx.ids() == {sent["event_id"]: 2}


async def test_a_receiver_down_while_the_gateway_restarts_gets_everything_after(
    settings: Settings, s3_client: Any
) -> None:
    rx = Receiver().start()
    port = rx.port
    rx.stop()  # down: connections refused
    async with gateway(settings, GATEWAY_WEBHOOK_DELIVERY="true") as (c, state):
        p = await make_project(state)
        hook = await create_hook(c, p, f"http://127.0.0.1:{port}/hooks")
        ids = [
            (await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)).json()["event_id"]
            for _ in range(3)
        ]

        async def tried() -> bool:
            tried_all = await state.db.fetchval(
                "SELECT bool_and(last_error IS NOT NULL) FROM webhook_deliveries"
                " WHERE endpoint_id = $1",
                hook["id"],
            )
            return bool(tried_all)

        await until(tried)
        errors = await state.db.fetch(
            "SELECT status, last_error FROM webhook_deliveries WHERE endpoint_id = $1",
            hook["id"],
        )
        assert all(r["status"] == "pending" and r["last_error"] for r in errors)
    # the gateway is stopped; the receiver comes back; a new gateway delivers
    rx = Receiver(port)
    rx.start()
    try:
        async with gateway(settings, GATEWAY_WEBHOOK_DELIVERY="true") as (c, state):
            await rx.wait_for(3)

            async def delivered() -> bool:
                got = await statuses(state.db, hook["id"])
                return set(got.values()) == {"delivered"}

            await until(delivered)
        assert set(rx.ids()) == set(ids)
        assert all(n == 1 for n in rx.ids().values())
        assert len(rx.verified(hook["secret"])) == 3
    finally:
        rx.stop()


async def test_postgres_cut_during_a_settlement_leaves_both_or_neither(
    settings: Settings, s3_client: Any, urls: tuple[str, str]
) -> None:
    """The settlement and its event are one transaction: the connection dies while
    the event is being written (a trigger holds it there), and neither is left; then
    both happen."""
    async with gateway(settings) as (c, state):
        p = await make_project(state)
        with Receiver() as rx:
            hook = await create_hook(c, p, rx.url())
            out = await ask(c, p, "dora", 5)
            s3_client.put_object(Bucket=BUCKET, Key=out["key"], Body=b"12345")
            admin = await asyncpg.connect(settings.database_url)
            fn = f"hold_{hook['id']}"
            try:
                await admin.execute(
                    f"""CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                        IF NEW.endpoint_id = '{hook["id"]}' THEN PERFORM pg_sleep(30); END IF;
                        RETURN NEW;
                    END $$;
                    CREATE TRIGGER {fn} BEFORE INSERT ON webhook_deliveries
                        FOR EACH ROW EXECUTE FUNCTION {fn}();"""
                )
                complete = asyncio.create_task(
                    c.post(f"/api/storage/uploads/{out['upload_id']}/complete/", headers=p.headers)
                )

                async def held() -> bool:
                    pids = await admin.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event = 'PgSleep'"
                    )
                    if pids:
                        await admin.execute("SELECT pg_terminate_backend($1)", pids[0]["pid"])
                    return bool(pids)

                await until(held)
                assert_503(await complete, "postgres")
            finally:
                await admin.execute(f"DROP TRIGGER IF EXISTS {fn} ON webhook_deliveries")
                await admin.execute(f"DROP FUNCTION IF EXISTS {fn}()")
                await admin.close()
            st = await c.get(f"/api/storage/uploads/{out['upload_id']}/", headers=p.headers)
            assert st.json()["status"] == "pending"
            usage = (await c.get("/api/storage/tenants/dora/usage/", headers=p.headers)).json()
            assert usage["storage_used_bytes"] == 0
            n = await state.db.fetchval(
                "SELECT count(*) FROM webhook_events WHERE project_id = $1", p.project_id
            )
            assert n == 0  # no event without its change
            r = await c.post(
                f"/api/storage/uploads/{out['upload_id']}/complete/", headers=p.headers
            )
            assert r.status_code == 200 and r.json()["status"] == "completed"
            types = await state.db.fetch(
                "SELECT type FROM webhook_events WHERE project_id = $1", p.project_id
            )
            assert [t["type"] for t in types] == ["upload.completed"]
            await state.webhooks.deliverer.deliver_due()
            (body,) = rx.verified(hook["secret"])
            assert body["data"]["upload_id"] == out["upload_id"]


def _through(url: str, proxy: FaultProxy) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{proxy.host}:{proxy.port}"))


async def test_postgres_cut_during_delivery_loses_nothing_and_sends_once(
    settings: Settings,
) -> None:
    pg = urlsplit(settings.database_url)
    with Receiver() as rx, FaultProxy((pg.hostname or "127.0.0.1", pg.port or 5432)) as proxy:
        rx.delay = 0.2  # attempts stay in flight a while
        async with gateway(
            settings,
            GATEWAY_DATABASE_URL=_through(settings.database_url, proxy),
            GATEWAY_WEBHOOK_DELIVERY="true",
            GATEWAY_WEBHOOK_MAX_IN_FLIGHT="16",
            GATEWAY_WEBHOOK_ENDPOINT_IN_FLIGHT="16",
        ) as (c, state):
            p = await make_project(state)
            hook = await create_hook(c, p, rx.url())
            ids = await queue_tests(state, p, 60)
            await rx.wait_for(5)
            proxy.set_mode("cut")  # every connection reset, new ones too
            await asyncio.sleep(1.0)
            proxy.set_mode("pass")
            await rx.wait_for(60, timeout=60)
            admin = await asyncpg.connect(settings.database_url)
            try:

                async def delivered() -> bool:
                    got = await statuses(admin, hook["id"])
                    return len(got) == 60 and set(got.values()) == {"delivered"}

                await until(delivered, timeout=60)
            finally:
                await admin.close()
        counts = rx.ids()
        assert set(counts) == set(ids)  # nothing lost
        assert all(n == 1 for n in counts.values()), counts  # nothing sent twice


def _worker(settings: Settings, **env: str) -> subprocess.Popen[str]:
    s = hooks_settings(settings)
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "webhooks", "deliver"],
        env={
            **os.environ,
            "GATEWAY_DATABASE_URL": s.database_url,
            "GATEWAY_REDIS_URL": s.redis_url,
            "GATEWAY_S3_ENDPOINT_URL": s.s3_endpoint_url or "",
            "GATEWAY_WEBHOOK_ALLOW_PRIVATE": "true",
            "GATEWAY_WEBHOOK_POLL_INTERVAL": "0.1",
            "GATEWAY_WEBHOOK_TIMEOUT": "5",
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_LOG_LEVEL": "info",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _started(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = await loop.run_in_executor(None, proc.stderr.readline)
        if not line:
            break
        doc = msgspec.json.decode(line) if line.startswith("{") else {}
        if doc.get("event") == "background task started" and doc.get("task") == (
            "webhook-delivery"
        ):
            return
    raise AssertionError("the worker did not start delivering")


async def test_two_worker_processes_send_each_event_once_within_the_endpoint_bound(
    settings: Settings,
) -> None:
    with Receiver() as rx:
        rx.delay = 0.01
        workers = [_worker(settings, GATEWAY_WEBHOOK_ENDPOINT_IN_FLIGHT="4") for _ in range(2)]
        try:
            for w in workers:
                await _started(w)
            async with gateway(settings) as (c, state):
                p = await make_project(state)
                hook = await create_hook(c, p, rx.url())
                ids = await queue_tests(state, p, 300)
                await rx.wait_for(300, timeout=60)

                async def delivered() -> bool:
                    got = await statuses(state.db, hook["id"])
                    return set(got.values()) == {"delivered"}

                await until(delivered)
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                assert w.wait(30) == 0
        counts = rx.ids()
        assert set(counts) == set(ids)
        assert all(n == 1 for n in counts.values()), [i for i, n in counts.items() if n > 1]
        # at most 4 in flight for the endpoint, both workers together
        assert rx.max_in_flight <= 4, rx.max_in_flight
