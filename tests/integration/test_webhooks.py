"""Outbound webhooks end to end: a real receiver on loopback verifies every signature
with the standardwebhooks library; real Postgres, Redis and S3 (moto)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import make_project, running
from tests.support.hooks import (
    create_hook,
    hooks_settings,
    upload_by_complete,
    upload_by_event,
)
from tests.support.receiver import Receiver

Client = httpx.AsyncClient
HOOKS = "/api/storage/webhooks/"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
async def hooks(settings: Settings) -> AsyncIterator[tuple[Client, Any]]:
    """An app whose webhooks may reach loopback; delivery is driven by the tests
    (``deliver_due``) so that they can look between the steps."""
    # a failed attempt is not due again within a test (they retry by hand)
    app = create_app(hooks_settings(settings, GATEWAY_WEBHOOK_FIRST_RETRY="600"))
    async with running(app) as c:
        yield c, app.state


async def deliver(state: Any) -> int:
    attempted: int = await state.webhooks.deliverer.deliver_due()
    return attempted


def data_of(bodies: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [b["data"] for b in bodies if b["type"] == type_]


async def test_a_scripted_history_arrives_signed_as_the_contract_lists(
    hooks: tuple[Client, Any], s3_client: Any
) -> None:
    c, state = hooks
    p = await make_project(state)
    with Receiver() as rx:
        hook = await create_hook(c, p, rx.url())
        secret = hook["secret"]
        t = "alice"
        lim = f"/api/storage/tenants/{t}/limit/"
        assert (
            await c.patch(lim, json={"storage_limit_bytes": 1000}, headers=p.headers)
        ).is_success
        a = await upload_by_event(c, p, s3_client, t, 700)  # 70 %: the 70 line
        b = await upload_by_complete(c, p, s3_client, t, 200)  # 90 %
        rejected = await upload_by_event(c, p, s3_client, t, 50, stored=80)  # larger: rejected
        cancelled = (
            await c.post(
                "/api/storage/upload/",
                headers=p.headers,
                json={"tenant_id": t, "filename": "c.bin", "size_bytes": 10},
            )
        ).json()
        r = await c.delete(f"/api/storage/uploads/{cancelled['upload_id']}/", headers=p.headers)
        assert r.json()["status"] == "cancelled"
        expired = (
            await c.post(
                "/api/storage/upload/",
                headers=p.headers,
                json={"tenant_id": t, "filename": "e.bin", "size_bytes": 10},
            )
        ).json()
        await state.db.execute(
            "UPDATE uploads SET reserved_until = now() - interval '1 second' WHERE id = $1",
            expired["upload_id"],
        )
        assert await state.sweeper.sweep() >= 1
        r = await c.request(
            "DELETE", "/api/storage/files/", json={"file_path": a["file_path"]}, headers=p.headers
        )
        assert r.status_code == 200, r.text  # 200 of 1000: both lines re-armed
        # lowered below usage's share: the 70 line is told at once (200 / 250 = 80 %)
        assert (await c.patch(lim, json={"storage_limit_bytes": 250}, headers=p.headers)).is_success
        f = await upload_by_event(c, p, s3_client, t, 40)  # 240 / 250 = 96 %: the 90 line
        r = await c.request(
            "DELETE", "/api/storage/files/", json={"file_path": b["file_path"]}, headers=p.headers
        )
        assert r.status_code == 200  # 40 / 250: re-armed
        g = await upload_by_event(c, p, s3_client, t, 200)  # 240 again: 70 and 90 at once

        assert await deliver(state) > 0
        bodies = rx.verified(secret)  # every signature checked by the library
        ids = rx.ids()
        assert all(n == 1 for n in ids.values()), ids  # once each, normal case
        assert Counter(x["type"] for x in bodies) == {
            "tenant.limit.changed": 2,
            "upload.completed": 4,
            "upload.rejected": 1,
            "upload.cancelled": 1,
            "upload.expired": 1,
            "file.deleted": 2,
            "tenant.quota.threshold": 6,
        }
        assert all(x["timestamp"].endswith("Z") for x in bodies)
        changes = sorted(
            (d["old_limit_bytes"] or 0, d["new_limit_bytes"])
            for d in data_of(bodies, "tenant.limit.changed")
        )
        assert changes == [(0, 1000), (1000, 250)]
        assert all(
            d["tenant_id"] == t and d["plan"] is None
            for d in data_of(bodies, "tenant.limit.changed")
        )
        completed = {d["upload_id"]: d for d in data_of(bodies, "upload.completed")}
        assert set(completed) == {a["upload_id"], b["upload_id"], f["upload_id"], g["upload_id"]}
        assert completed[a["upload_id"]] == {
            "upload_id": a["upload_id"],
            "tenant_id": t,
            "file_path": a["file_path"],
            "size_bytes": 700,
            "content_type": "application/octet-stream",
            "method": "PUT",
        }
        (rej,) = data_of(bodies, "upload.rejected")
        assert rej["upload_id"] == rejected["upload_id"] and rej["reason"]
        assert rej["tenant_id"] == t and rej["file_path"] == rejected["file_path"]
        assert data_of(bodies, "upload.cancelled") == [
            {
                "upload_id": cancelled["upload_id"],
                "tenant_id": t,
                "file_path": cancelled["file_path"],
            }
        ]
        assert data_of(bodies, "upload.expired") == [
            {"upload_id": expired["upload_id"], "tenant_id": t, "file_path": expired["file_path"]}
        ]
        assert sorted(
            (d["file_path"], d["size_bytes"]) for d in data_of(bodies, "file.deleted")
        ) == sorted([(a["file_path"], 700), (b["file_path"], 200)])
        lines = [
            (d["threshold_percent"], d["storage_used_bytes"], d["storage_limit_bytes"])
            for d in data_of(bodies, "tenant.quota.threshold")
        ]
        assert sorted(lines) == sorted(
            [
                (70, 700, 1000),
                (90, 900, 1000),
                (70, 200, 250),  # the lowered limit: at once
                (90, 240, 250),
                (70, 240, 250),  # re-armed by the delete, both lines in one settlement
                (90, 240, 250),
            ]
        )
        pct = {
            (d["threshold_percent"], d["storage_used_bytes"]): d["percentage_used"]
            for d in data_of(bodies, "tenant.quota.threshold")
        }
        assert pct[(70, 700)] == 70.0 and pct[(70, 200)] == 80.0 and pct[(90, 240)] == 96.0

        # the deliveries log tells the same
        log = (await c.get(f"{HOOKS}{hook['id']}/deliveries/", headers=p.headers)).json()
        assert log["totalCount"] == len(bodies)
        assert {d["status"] for d in log["data"]} == {"delivered"}
        assert all(d["attempts"] == 1 and d["last_status_code"] == 200 for d in log["data"]), log
        assert {d["event_id"] for d in log["data"]} == set(ids)


async def test_endpoint_crud_secret_shown_once_and_audited(
    hooks: tuple[Client, Any], receiver: Receiver
) -> None:
    c, state = hooks
    p = await make_project(state)
    other = await make_project(state)
    r = await c.post(
        HOOKS, json={"url": receiver.url(), "events": ["upload.completed"]}, headers=p.headers
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["id"].startswith("whk_") and made["secret"].startswith("whsec_")
    Webhook(made["secret"])  # the library takes it
    assert made["events"] == ["upload.completed"] and made["enabled"] is True
    got = (await c.get(f"{HOOKS}{made['id']}/", headers=p.headers)).json()
    assert "secret" not in got and got["url"] == receiver.url()
    page = (await c.get(HOOKS, headers=p.headers)).json()
    assert page["totalCount"] == 1 and "secret" not in page["data"][0]
    # another project's webhook does not exist for this one
    assert (await c.get(f"{HOOKS}{made['id']}/", headers=other.headers)).status_code == 404
    assert (await c.delete(f"{HOOKS}{made['id']}/", headers=other.headers)).status_code == 404

    r = await c.patch(
        f"{HOOKS}{made['id']}/", json={"events": ["*"], "enabled": False}, headers=p.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["events"] == ["*"] and r.json()["enabled"] is False
    bad: dict[str, Any]
    for bad in (
        {"events": []},
        {"events": ["upload.exploded"]},
        {"url": "ftp://example.com/x"},
        {"url": "http://user:pw@127.0.0.1/x"},
        {"enabled": "yes"},
    ):
        r = await c.patch(f"{HOOKS}{made['id']}/", json=bad, headers=p.headers)
        assert r.status_code == 422, (bad, r.text)
    r = await c.post(f"{HOOKS}{made['id']}/rotate-secret/", headers=p.headers)
    assert r.status_code == 200 and r.json()["secret"].startswith("whsec_")
    assert r.json()["secret"] != made["secret"]
    rotated = r.json()["secret"]
    assert (await c.delete(f"{HOOKS}{made['id']}/", headers=p.headers)).status_code == 204
    assert (await c.get(f"{HOOKS}{made['id']}/", headers=p.headers)).status_code == 404

    entries = (await c.get("/api/storage/audit/", params={"limit": 100}, headers=p.headers)).json()[
        "data"
    ]
    actions = [e["action"] for e in entries if e["action"].startswith("webhook.")]
    assert actions == [
        "webhook.deleted",
        "webhook.secret_rotated",
        "webhook.updated",
        "webhook.created",
    ]
    text = str(entries)
    assert made["secret"] not in text and rotated not in text and "whsec_" not in text
    updated = next(e for e in entries if e["action"] == "webhook.updated")
    assert updated["before"] == {"id": made["id"], "events": ["upload.completed"], "enabled": True}
    assert updated["after"] == {"id": made["id"], "events": ["*"], "enabled": False}
    assert all(
        e["actor"] == {"type": "api_key", "id": p.key_id}
        for e in entries
        if e["action"].startswith("webhook.")
    )
    # the secrets are sealed in Postgres, not kept as given... unless no key is set:
    # then they are stored as they must be to sign, marked plain
    row = await state.db.fetchrow("SELECT secret FROM webhook_endpoints LIMIT 1")
    assert row is None or row["secret"].startswith(("plain:", "fernet:"))


async def test_test_event_rotation_and_both_signatures(
    hooks: tuple[Client, Any],
) -> None:
    c, state = hooks
    p = await make_project(state)
    with Receiver() as rx:
        hook = await create_hook(c, p, rx.url(), events=["file.deleted"])
        r = await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)
        assert r.status_code == 202, r.text
        event_id = r.json()["event_id"]
        await deliver(state)
        (body,) = rx.verified(hook["secret"])
        assert body["type"] == "webhook.test" and rx.ids() == {event_id: 1}

        new = (await c.post(f"{HOOKS}{hook['id']}/rotate-secret/", headers=p.headers)).json()
        assert new["previous_secret_valid_until"].endswith("Z")
        second = (await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)).json()
        await deliver(state)
        last = [x for x in rx.received() if x.webhook_id == second["event_id"]]
        assert len(last) == 1
        assert len(last[0].headers["webhook-signature"].split(" ")) == 2
        # a receiver on either secret verifies it
        Webhook(hook["secret"]).verify(last[0].body, last[0].headers)
        Webhook(new["secret"]).verify(last[0].body, last[0].headers)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 43 + "=").verify(last[0].body, last[0].headers)
        # after the overlap, only the new one signs
        await state.db.execute(
            "UPDATE webhook_endpoints SET previous_until = now() - interval '1 second' "
            "WHERE id = $1",
            hook["id"],
        )
        third = (await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)).json()
        await deliver(state)
        (late,) = [x for x in rx.received() if x.webhook_id == third["event_id"]]
        assert len(late.headers["webhook-signature"].split(" ")) == 1
        with pytest.raises(WebhookVerificationError):
            Webhook(hook["secret"]).verify(late.body, late.headers)
        Webhook(new["secret"]).verify(late.body, late.headers)


async def test_failures_are_logged_retried_by_hand_and_redirects_not_followed(
    hooks: tuple[Client, Any],
) -> None:
    c, state = hooks
    p = await make_project(state)
    with Receiver() as rx:
        hook = await create_hook(c, p, rx.url())
        rx.mode = "redirect"
        sent = (await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)).json()
        await deliver(state)
        assert [x.path for x in rx.received()] == ["/hooks"]  # /elsewhere never asked
        log = (await c.get(f"{HOOKS}{hook['id']}/deliveries/", headers=p.headers)).json()
        (d,) = log["data"]
        assert d["event_id"] == sent["event_id"] and d["type"] == "webhook.test"
        assert d["status"] == "pending" and d["attempts"] == 1 and d["last_status_code"] == 307
        assert d["next_attempt_at"] is not None
        pending = (
            await c.get(
                f"{HOOKS}{hook['id']}/deliveries/",
                params={"status": "delivered"},
                headers=p.headers,
            )
        ).json()
        assert pending["totalCount"] == 0

        rx.mode = "ok"
        r = await c.post(
            f"{HOOKS}{hook['id']}/deliveries/{sent['event_id']}/retry/", headers=p.headers
        )
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "pending"
        await deliver(state)
        d = (await c.get(f"{HOOKS}{hook['id']}/deliveries/", headers=p.headers)).json()["data"][0]
        assert d["status"] == "delivered" and d["attempts"] == 2, d
        assert d["last_status_code"] == 200
        assert d["next_attempt_at"] is None and d["delivered_at"] is not None
        assert rx.ids() == {sent["event_id"]: 2}  # the same id on every attempt
        assert len({x.body for x in rx.received()}) == 1  # and the same body
        missing = "evt_" + "0" * 24
        r = await c.post(f"{HOOKS}{hook['id']}/deliveries/{missing}/retry/", headers=p.headers)
        assert r.status_code == 404


async def test_given_up_after_the_retry_window_and_disabled_after_days(
    hooks: tuple[Client, Any],
) -> None:
    c, state = hooks
    p = await make_project(state)
    with Receiver() as rx:
        rx.mode = "fail"
        hook = await create_hook(c, p, rx.url())
        sent = (await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)).json()
        await deliver(state)
        # a day and more later (the clock moved by hand): the next failure gives up
        await state.db.execute(
            "UPDATE webhook_deliveries SET retry_since = now() - interval '25 hours',"
            " next_attempt_at = now() WHERE event_id = $1",
            sent["event_id"],
        )
        failed_before = state.webhooks.metrics.failed._value.get()
        await deliver(state)
        d = (await c.get(f"{HOOKS}{hook['id']}/deliveries/", headers=p.headers)).json()["data"][0]
        assert d["status"] == "failed" and d["attempts"] == 2 and d["last_status_code"] == 500
        assert state.webhooks.metrics.failed._value.get() == failed_before + 1

        # failing for six days: disabled, with an audit entry and a metric
        await state.db.execute(
            "UPDATE webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1",
            hook["id"],
        )
        disabled_before = state.webhooks.metrics.disabled._value.get()
        assert hook["id"] in await state.webhooks.deliverer.housekeeping()
        got = (await c.get(f"{HOOKS}{hook['id']}/", headers=p.headers)).json()
        assert got["enabled"] is False and got["disabled_reason"] == "failing"
        assert state.webhooks.metrics.disabled._value.get() == disabled_before + 1
        (entry,) = (
            await c.get(
                "/api/storage/audit/", params={"action": "webhook.disabled"}, headers=p.headers
            )
        ).json()["data"]
        assert entry["actor"] == {"type": "system", "id": "webhook-delivery"}
        assert entry["after"]["enabled"] is False
        # a disabled endpoint gets nothing; enabled again, it does
        rx.mode = "ok"
        more = (await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)).json()
        await deliver(state)
        assert more["event_id"] not in rx.ids()
        r = await c.patch(f"{HOOKS}{hook['id']}/", json={"enabled": True}, headers=p.headers)
        assert r.json()["enabled"] is True and r.json()["disabled_reason"] is None
        await deliver(state)
        assert rx.ids()[more["event_id"]] == 1


async def test_events_are_told_only_to_endpoints_that_take_them(
    hooks: tuple[Client, Any], s3_client: Any
) -> None:
    c, state = hooks
    p = await make_project(state)
    with Receiver() as rx:
        deletes = await create_hook(c, p, rx.url("/deletes"), events=["file.deleted"])
        everything = await create_hook(c, p, rx.url("/all"))
        off = await create_hook(c, p, rx.url("/off"))
        await c.patch(f"{HOOKS}{off['id']}/", json={"enabled": False}, headers=p.headers)
        out = await upload_by_complete(c, p, s3_client, "bob", 5)
        await c.request(
            "DELETE", "/api/storage/files/", json={"file_path": out["file_path"]}, headers=p.headers
        )
        await deliver(state)
        assert [b["type"] for b in rx.verified(deletes["secret"], "/deletes")] == ["file.deleted"]
        assert sorted(b["type"] for b in rx.verified(everything["secret"], "/all")) == [
            "file.deleted",
            "upload.completed",
        ]
        assert not [x for x in rx.received() if x.path == "/off"]
        # one event, one id, whichever endpoints it goes to
        deleted_ids = {x.webhook_id for x in rx.received() if b"file.deleted" in x.body}
        assert len(deleted_ids) == 1
    # nothing is stored for a project without endpoints
    lone = await make_project(state)
    await upload_by_complete(c, lone, s3_client, "carol", 5)
    n = await state.db.fetchval(
        "SELECT count(*) FROM webhook_events WHERE project_id = $1", lone.project_id
    )
    assert n == 0


async def test_metrics_count_deliveries(hooks: tuple[Client, Any]) -> None:
    c, state = hooks
    p = await make_project(state)
    with Receiver() as rx:
        hook = await create_hook(c, p, rx.url())
        await c.post(f"{HOOKS}{hook['id']}/test/", headers=p.headers)
        await deliver(state)
        await state.webhooks.deliverer.housekeeping()
    text = (await c.get("/metrics")).text
    for name in (
        'gateway_webhook_attempts_total{result="delivered"}',
        "gateway_webhook_delivered_total",
        "gateway_webhook_attempt_duration_seconds_bucket",
        "gateway_webhook_queue_depth",
        "gateway_webhook_oldest_pending_seconds",
        "gateway_webhook_endpoints_disabled_total",
        "gateway_webhook_failed_total",
    ):
        assert name in text, name
