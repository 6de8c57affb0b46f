"""Tenantbox's own client snippets, unchanged but for the base URL and key, against a
live `gateway serve` process (shared/reference/tenantbox-storage-quotas.txt)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from upload_gateway_client import GatewayClient, QuotaExceeded, UploadRequest

from tests.conftest import make_project
from tests.support.services import Server, start_server

BASE = "https://api.tenantbox.dev"


@pytest.fixture(scope="module")
def server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    s = start_server(server_env, tmp_path_factory.mktemp("tb"), "tenantbox")
    yield s
    s.stop()


def snippets(base_url: str) -> dict[str, Any]:
    """The documented functions, verbatim but for the base URL."""
    namespace: dict[str, Any] = {}
    source = '''
import requests

def can_upload(tenant_id: str, file_size_bytes: int, api_key: str) -> bool:
    """
    Check if a tenant has enough quota before uploading.
    Call this before requesting a presigned URL.
    """
    response = requests.get(
        f"https://api.tenantbox.dev/api/storage/tenants/{tenant_id}/usage/",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    response.raise_for_status()
    data = response.json()

    limit = data["storage_limit_bytes"]
    used  = data["storage_used_bytes"]

    # No limit set — always allow
    if limit is None:
        return True

    return (used + file_size_bytes) <= limit

# Define your plan tiers in bytes
PLAN_LIMITS = {
    "free":       524288000,    # 500 MB
    "pro":        5368709120,   # 5 GB
    "enterprise": 53687091200,  # 50 GB
}

def set_tenant_quota(tenant_id: str, plan: str, api_key: str):
    """
    Set a tenant's storage limit based on their subscription plan.
    Call this when a user signs up or upgrades their plan.
    """
    limit_bytes = PLAN_LIMITS.get(plan)

    response = requests.patch(
        f"https://api.tenantbox.dev/api/storage/tenants/{tenant_id}/limit/",
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
        },
        json={"storage_limit_bytes": limit_bytes},
    )
    response.raise_for_status()
    return response.json()
'''
    exec(source.replace(BASE, base_url), namespace)
    return namespace


async def test_snippets_work_unchanged(server: Server, state: Any) -> None:
    p = await make_project(state)
    ns = snippets(server.base_url)
    key = p.api_key
    assert ns["can_upload"]("user_123", 10**12, key) is True  # off by default
    body = ns["set_tenant_quota"]("user_123", "free", key)
    assert body["storage_limit_bytes"] == 524288000
    assert ns["can_upload"]("user_123", 524288000, key) is True
    assert ns["can_upload"]("user_123", 524288001, key) is False
    assert ns["set_tenant_quota"]("user_123", "pro", key)["storage_limit_bytes"] == 5368709120
    r = requests.patch(
        f"{server.base_url}/api/storage/tenants/user_123/limit/",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        json={"storage_limit_bytes": None},
    )
    assert r.status_code == 200 and r.json()["storage_limit_bytes"] is None
    # the 413 a Tenantbox client catches
    ns["set_tenant_quota"]("user_123", "free", key)
    r = requests.post(
        f"{server.base_url}/api/storage/upload/",
        headers={"Authorization": f"Bearer {key}"},
        json={"tenant_id": "user_123", "filename": "big.bin", "size_bytes": 524288001},
    )
    assert r.status_code == 413
    assert r.json()["detail"] == "Storage quota exceeded for this tenant"


async def test_the_client_sees_what_the_snippets_did(server: Server, state: Any) -> None:
    """The typed client (clients/python) over the same flows: a limit the snippet set
    is the one the client reads, and the 413 a Tenantbox client catches by status is
    QuotaExceeded, with its numbers."""
    p = await make_project(state)
    ns = snippets(server.base_url)
    with GatewayClient(server.base_url, p.api_key) as gw:
        ns["set_tenant_quota"]("user_123", "free", p.api_key)
        usage = gw.get_tenant_usage("user_123")
        assert usage.storage_limit_bytes == ns["PLAN_LIMITS"]["free"]
        assert gw.set_tenant_limit("user_123", ns["PLAN_LIMITS"]["pro"]).storage_limit_bytes == (
            5368709120
        )
        assert ns["can_upload"]("user_123", 5368709120, p.api_key) is True
        gw.set_tenant_limit("user_123", ns["PLAN_LIMITS"]["free"])
        big = UploadRequest(tenant_id="user_123", filename="big.bin", size_bytes=524288001)
        with pytest.raises(QuotaExceeded) as full:
            gw.create_upload(big)
        assert full.value.status == 413
        assert full.value.detail == "Storage quota exceeded for this tenant"
        assert full.value.storage_limit_bytes == 524288000
        assert full.value.requested_bytes == 524288001
