"""The client's audit and clear-limit methods against a live gateway."""

from __future__ import annotations

from upload_gateway_client import AsyncGatewayClient

from tests.conftest import ProjectKey
from tests.e2e.conftest import new_tenant
from tests.support.services import Server


async def test_clear_limit_and_audit_async(gateway_server: Server, project: ProjectKey) -> None:
    tenant = new_tenant("audit")
    async with AsyncGatewayClient(gateway_server.base_url, project.api_key) as gw:
        await gw.set_tenant_limit(tenant, 500)
        cleared = await gw.clear_tenant_limit(tenant)
        assert cleared.storage_limit_bytes is None
        page = await gw.list_audit_entries(tenant_id=tenant)
        assert [e.action for e in page.data] == ["tenant.limit.cleared", "tenant.limit.set"]
        assert page.data[0].actor.type == "api_key" and page.data[0].actor.id == project.key_id
        assert page.data[1].after == {
            "storage_limit_bytes": 500,
            "limit_source": "tenant",
            "plan": None,
        }
