"""The audit log: one entry per change, written with it, on real Postgres."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.api.schemas import LimitUpdate
from gateway.audit import Actor, cli_actor
from gateway.config import Settings
from gateway.errors import Conflict
from tests.conftest import ProjectKey, make_project
from tests.integration.test_cli_and_migrations import gw

Client = httpx.AsyncClient


async def entries(client: Client, p: ProjectKey, **params: Any) -> dict[str, Any]:
    r = await client.get("/api/storage/audit/", params=params, headers=p.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_limit_set_and_cleared_are_logged_with_key_and_request_id(
    client: Client, project: ProjectKey
) -> None:
    url = "/api/storage/tenants/alice/limit/"
    r = await client.patch(
        url,
        json={"storage_limit_bytes": 1000},
        headers={**project.headers, "X-Request-ID": "req-set-1"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "req-set-1"
    r = await client.patch(url, json={"storage_limit_bytes": 400}, headers=project.headers)
    second_request_id = r.headers["x-request-id"]  # one the gateway made up
    r = await client.delete(url, headers=project.headers)
    assert r.status_code == 200, r.text
    assert r.json()["storage_limit_bytes"] is None
    third_request_id = r.headers["x-request-id"]

    page = await entries(client, project, tenant_id="alice")
    assert page["count"] == page["totalCount"] == 3
    newest, middle, oldest = page["data"]
    actor = {"type": "api_key", "id": project.key_id}
    assert oldest["action"] == "tenant.limit.set"
    assert oldest["actor"] == actor and oldest["tenant_id"] == "alice"
    assert oldest["request_id"] == "req-set-1"
    assert oldest["before"] == {"storage_limit_bytes": None, "limit_source": None, "plan": None}
    assert oldest["after"] == {"storage_limit_bytes": 1000, "limit_source": "tenant", "plan": None}
    assert middle["request_id"] == second_request_id
    assert middle["before"]["storage_limit_bytes"] == 1000
    assert middle["after"]["storage_limit_bytes"] == 400
    assert newest["action"] == "tenant.limit.cleared"
    assert newest["request_id"] == third_request_id
    assert newest["before"] == {"storage_limit_bytes": 400, "limit_source": "tenant", "plan": None}
    assert newest["after"] == {"storage_limit_bytes": None, "limit_source": None, "plan": None}
    assert newest["id"].startswith("aud_") and newest["at"].endswith("Z")
    assert len({e["id"] for e in page["data"]}) == 3


async def test_filters_paging_and_project_scope(client: Client, state: Any) -> None:
    p = await make_project(state, default_tenant_limit=50)
    other = await make_project(state)
    for i in range(5):
        tenant = "bob" if i % 2 == 0 else "carol"
        r = await client.patch(
            f"/api/storage/tenants/{tenant}/limit/",
            json={"storage_limit_bytes": 100 + i},
            headers=p.headers,
        )
        assert r.status_code == 200
    await client.delete("/api/storage/tenants/bob/limit/", headers=p.headers)

    everything = await entries(client, p)
    assert everything["totalCount"] == 7  # with the project's creation
    assert everything["data"][-1]["action"] == "project.created"
    # a default limit shows as the project's
    bob_first = [e for e in everything["data"] if e["tenant_id"] == "bob"][-1]
    assert bob_first["before"] == {
        "storage_limit_bytes": 50,
        "limit_source": "project",
        "plan": None,
    }

    bob = await entries(client, p, tenant_id="bob")
    assert bob["totalCount"] == 4 and {e["tenant_id"] for e in bob["data"]} == {"bob"}
    sets = await entries(client, p, action="tenant.limit.set")
    assert sets["totalCount"] == 5
    both = await entries(client, p, tenant_id="bob", action="tenant.limit.cleared")
    assert both["totalCount"] == 1 and both["data"][0]["after"]["storage_limit_bytes"] == 50

    first = await entries(client, p, offset=0, limit=4)
    assert first["count"] == 4 and first["totalCount"] == 7 and first["previous"] is None
    assert first["next"] is not None and "offset=4" in first["next"]
    second = await entries(client, p, offset=4, limit=4)
    assert second["count"] == 3 and second["next"] is None and "offset=0" in second["previous"]
    limits = [e["after"]["storage_limit_bytes"] for e in first["data"] + second["data"]]
    assert limits == [50, 104, 103, 102, 101, 100, None]  # newest first
    past = await entries(client, p, offset=100)
    assert past["count"] == 0 and past["totalCount"] == 7

    # another project sees none of it, and a tenant id is scoped to its project
    theirs = await entries(client, other)
    assert [e["action"] for e in theirs["data"]] == ["project.created"]
    assert (await entries(client, other, tenant_id="bob"))["totalCount"] == 0
    r = await client.get("/api/storage/audit/")
    assert r.status_code == 401
    r = await client.get("/api/storage/audit/", params={"limit": 0}, headers=p.headers)
    assert r.status_code == 422


async def test_an_entry_that_cannot_be_written_undoes_its_change(
    client: Client, state: Any, project: ProjectKey
) -> None:
    """The entry is written in the change's transaction: one refused by Postgres (an
    actor type the table does not allow) leaves the limit as it was."""
    await state.tenants.set_limit(
        project.project_id, "dave", LimitUpdate(storage_limit_bytes=10), actor=cli_actor()
    )
    bogus = Actor(type="nobody", id=None)  # type: ignore[arg-type]
    with pytest.raises(asyncpg.CheckViolationError):
        await state.tenants.set_limit(
            project.project_id, "dave", LimitUpdate(storage_limit_bytes=99), actor=bogus
        )
    usage = await state.tenants.usage(project.project_id, "dave")
    assert usage.storage_limit_bytes == 10
    page = await entries(client, project, tenant_id="dave")
    assert page["totalCount"] == 1 and page["data"][0]["actor"]["type"] == "cli"


async def test_project_update_logs_only_what_changed(
    client: Client, state: Any, project: ProjectKey
) -> None:
    await state.projects.update(project.project_id, default_tenant_limit=500)
    await state.projects.update(project.project_id, default_tenant_limit=500)  # no change
    taken = await make_project(state)
    taken_name = (await state.projects.get(taken.project_id))["name"]
    with pytest.raises(Conflict):
        await state.projects.update(project.project_id, name=taken_name, storage_limit=1)
    assert (await state.projects.get(project.project_id))["storage_limit_bytes"] is None
    page = await entries(client, project, action="project.updated")
    assert page["totalCount"] == 1
    (entry,) = page["data"]
    assert entry["before"] == {"default_tenant_limit_bytes": None}
    assert entry["after"] == {"default_tenant_limit_bytes": 500}
    assert entry["tenant_id"] is None and entry["request_id"] is None


def test_cli_changes_are_logged_as_cli_and_listed(settings: Settings) -> None:
    name = f"audit-{uuid.uuid4().hex[:10]}"
    created = json.loads(gw(settings, "projects", "create", name, "--json").stdout)
    pid = created["project_id"]
    key = json.loads(gw(settings, "keys", "create", pid, "--json").stdout)
    gw(settings, "projects", "update", pid, "--max-file-size", "1000", "--storage-limit", "5")
    gw(settings, "keys", "revoke", key["key_id"])

    out = gw(settings, "audit", "list", "--project", pid, "--json").stdout
    # never a secret: neither key is in the log
    assert created["api_key"] not in out and key["api_key"] not in out
    assert "gwk_" not in out
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["action"] for e in lines] == [
        "key.revoked",
        "project.updated",
        "key.created",
        "project.created",
    ]
    assert all(e["actor"]["type"] == "cli" and e["request_id"] is None for e in lines)
    revoked, updated, made, project_created = lines
    assert revoked["before"] == {"key_id": key["key_id"], "revoked": False}
    assert revoked["after"] == {"key_id": key["key_id"], "revoked": True}
    assert updated["before"] == {"max_file_size_bytes": None, "storage_limit_bytes": None}
    assert updated["after"] == {"max_file_size_bytes": 1000, "storage_limit_bytes": 5}
    assert made["after"] == {"key_id": key["key_id"]}
    assert project_created["after"]["key_id"] == created["key_id"]
    assert project_created["after"]["name"] == name

    filtered = gw(settings, "audit", "list", "--project", pid, "--action", "key.created")
    assert "key.created" in filtered.stdout and "key.revoked" not in filtered.stdout
    assert "(1 of 1)" in filtered.stdout


def test_cli_thresholds_and_a_one_pass_delivery(settings: Settings) -> None:
    name = f"lines-{uuid.uuid4().hex[:10]}"
    pid = json.loads(gw(settings, "projects", "create", name, "--json").stdout)["project_id"]
    gw(settings, "projects", "update", pid, "--webhook-thresholds", "80,50")
    out = gw(settings, "audit", "list", "--project", pid, "--action", "project.updated", "--json")
    (entry,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert entry["before"] == {"webhook_thresholds": [70, 90, 100]}
    assert entry["after"] == {"webhook_thresholds": [50, 80]}
    bad = gw(settings, "projects", "update", pid, "--webhook-thresholds", "0,x", check=False)
    assert bad.returncode == 2
    once = gw(settings, "webhooks", "deliver", "--once")
    assert "webhook deliveries attempted:" in once.stdout
