"""The client's webhook methods against a live gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from upload_gateway_client import GatewayClient, NotFound, ValidationFailed
from upload_gateway_client.types import AuditPage, Webhook, WebhookDeliveryPage

from tests.conftest import ProjectKey
from tests.support.services import Server


@pytest.fixture
def gw(gateway_server: Server, project: ProjectKey) -> Iterator[GatewayClient]:
    with GatewayClient(gateway_server.base_url, project.api_key) as client:
        yield client


async def _endpoint(state: Any, project: ProjectKey) -> str:
    """An endpoint on the discard port of loopback, written as the store has it (the
    server refuses private URLs, as by default; it delivers nothing in these tests)."""
    box = state.webhooks.box
    row = await state.db.fetchrow(
        "INSERT INTO webhook_endpoints (id, project_id, url, events, secret)"
        " VALUES ('whk_' || substr(md5(random()::text), 1, 24), $1, $2, $3, $4) RETURNING id",
        project.project_id,
        "http://127.0.0.1:9/never",
        ["*"],
        box.seal("whsec_" + "A" * 43 + "="),
    )
    return str(row["id"])


async def test_webhook_methods(gw: GatewayClient, state: Any, project: ProjectKey) -> None:
    with pytest.raises(ValidationFailed) as refused:
        gw.create_webhook("http://127.0.0.1:9/x")
    assert refused.value.code == "webhook_url_refused"
    hook_id = await _endpoint(state, project)
    page = gw.list_webhooks()
    assert page.totalCount == 1 and isinstance(page.data[0], Webhook)
    assert gw.get_webhook(hook_id).events == ["*"]
    changed = gw.update_webhook(hook_id, events=["file.deleted"], enabled=False)
    assert changed.events == ["file.deleted"] and changed.enabled is False
    assert changed.url == "http://127.0.0.1:9/never"  # left out: unchanged
    sent = gw.send_webhook_test(hook_id)
    deliveries = gw.list_webhook_deliveries(hook_id, status="pending")
    assert isinstance(deliveries, WebhookDeliveryPage)
    assert [d.event_id for d in deliveries.data] == [sent.event_id]
    assert gw.retry_webhook_delivery(hook_id, sent.event_id).status == "pending"
    assert gw.rotate_webhook_secret(hook_id).secret.startswith("whsec_")
    gw.delete_webhook(hook_id)
    with pytest.raises(NotFound):
        gw.get_webhook(hook_id)
    audit = gw.list_audit_entries(action="webhook.updated")
    assert isinstance(audit, AuditPage) and audit.totalCount == 1
    assert audit.data[0].actor.type == "api_key" and audit.data[0].actor.id == project.key_id
