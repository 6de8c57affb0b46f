"""TenantService: usage, limits, listings, project totals and recalculation."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from gateway import audit, keys, limits
from gateway.api.schemas import (
    LimitUpdate,
    ProjectUsage,
    RecalculatedUsage,
    TenantUsage,
    tenant_usage,
)
from gateway.audit import Actor
from gateway.changes import ChangeKind
from gateway.db import Database, Q
from gateway.errors import NotFound
from gateway.ledger import Ledger, ObjectChange
from gateway.storage.base import ObjectStore
from gateway.webhooks.events import limit_changed
from gateway.webhooks.outbox import Outbox

Order = Literal[
    "tenant_id",
    "-tenant_id",
    "storage_used_bytes",
    "-storage_used_bytes",
    "percentage_used",
    "-percentage_used",
]


def _usage_of(row: Mapping[str, Any]) -> TenantUsage:
    """A usage body from a row of get_tenant_usage or list_tenants."""
    return tenant_usage(
        tenant_id=row["tenant_id"],
        email=row["email"],
        plan=row["plan"],
        used=row["storage_used_bytes"],
        limit=row["storage_limit_bytes"],
        files=row["total_files"],
        reserved=row["storage_reserved_bytes"],
    )


async def _lock_limit(
    conn: asyncpg.Connection, project_id: str, tenant_id: str
) -> Mapping[str, Any]:
    """The tenant's limit fields, its row created if needed and locked."""
    try:
        await conn.execute(audit.AQ.ensure_tenant, project_id, tenant_id)
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("No such project") from None
    row: Mapping[str, Any] | None = await conn.fetchrow(
        audit.AQ.lock_tenant_limit, project_id, tenant_id
    )
    assert row is not None  # created above
    return row


def _limit_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """A tenant's limit as the usage body names it (the limit in force, and where it
    comes from)."""
    return {
        "storage_limit_bytes": row["storage_limit_bytes"],
        "limit_source": (
            "tenant"
            if row["limit_set"]
            else ("project" if row["storage_limit_bytes"] is not None else None)
        ),
        "plan": row["plan"],
    }


class TenantService:
    # set by the Runtime: limit changes are told (and thresholds judged) in their
    # transactions
    outbox: Outbox | None = None

    def __init__(
        self, db: Database, store: ObjectStore, ledger: Ledger, *, max_file_size: int
    ) -> None:
        self.db = db
        self.store = store
        self.ledger = ledger
        self.max_file_size = max_file_size

    async def usage(self, project_id: str, tenant_id: str) -> TenantUsage:
        row = await self.db.fetchrow(Q.get_tenant_usage, project_id, tenant_id)
        if row is None:
            project = await self.db.fetchrow(Q.get_project, project_id)
            if project is None:
                raise NotFound("No such project")
            return tenant_usage(
                tenant_id=tenant_id,
                email=None,
                plan=None,
                used=0,
                limit=project["default_tenant_limit_bytes"],
                files=0,
                reserved=0,
            )
        return _usage_of(row)

    async def set_limit(
        self, project_id: str, tenant_id: str, update: LimitUpdate, *, actor: Actor
    ) -> TenantUsage:
        """The tenant's own limit (creating the tenant if needed), with its
        ``tenant.limit.set`` audit entry in the same transaction."""
        async with self.db.transaction() as conn:
            before = await _lock_limit(conn, project_id, tenant_id)
            await conn.execute(
                Q.set_tenant_limit, project_id, tenant_id, update.storage_limit_bytes, update.plan
            )
            await self._limit_changed(
                conn, project_id, tenant_id, before, "tenant.limit.set", actor
            )
        return await self.usage(project_id, tenant_id)

    async def clear_limit(self, project_id: str, tenant_id: str, *, actor: Actor) -> TenantUsage:
        """Drops the tenant's own limit: the project's default applies again."""
        async with self.db.transaction() as conn:
            before = await _lock_limit(conn, project_id, tenant_id)
            await conn.execute(audit.AQ.clear_tenant_limit, project_id, tenant_id)
            await self._limit_changed(
                conn, project_id, tenant_id, before, "tenant.limit.cleared", actor
            )
        return await self.usage(project_id, tenant_id)

    async def _limit_changed(
        self,
        conn: asyncpg.Connection,
        project_id: str,
        tenant_id: str,
        before: Mapping[str, Any],
        action: str,
        actor: Actor,
    ) -> None:
        after = await _lock_limit(conn, project_id, tenant_id)
        if self.outbox is not None:
            changed = (
                before["storage_limit_bytes"] != after["storage_limit_bytes"]
                or before["plan"] != after["plan"]
            )
            await self.outbox.record(
                conn,
                events=[
                    limit_changed(
                        project_id,
                        tenant_id,
                        before["storage_limit_bytes"],
                        after["storage_limit_bytes"],
                        after["plan"],
                    )
                ]
                if changed
                else [],
                judge=[(project_id, tenant_id)],
            )
        await audit.record(
            conn,
            project_id=project_id,
            action=action,
            actor=actor,
            tenant_id=tenant_id,
            before=_limit_fields(before),
            after=_limit_fields(after),
        )

    async def list(
        self,
        project_id: str,
        *,
        offset: int,
        limit: int,
        order: Order,
        over_limit: bool | None,
        min_percentage: float | None,
    ) -> tuple[list[TenantUsage], int]:
        rows = await self.db.fetch(
            Q.list_tenants, project_id, over_limit, min_percentage, order, offset, limit
        )
        total = rows[0]["total_count"] if rows else 0
        if not rows and offset > 0:
            # past the end: still tell the caller how many there are
            probe = await self.db.fetch(
                Q.list_tenants, project_id, over_limit, min_percentage, order, 0, 1
            )
            total = probe[0]["total_count"] if probe else 0
        items = [_usage_of(r) for r in rows]
        return items, total

    async def project_usage(self, project_id: str) -> ProjectUsage:
        r = await self.db.fetchrow(Q.project_usage, project_id)
        if r is None:
            raise NotFound("No such project")
        used, limit, reserved = (
            r["storage_used_bytes"],
            r["storage_limit_bytes"],
            r["storage_reserved_bytes"],
        )
        return ProjectUsage(
            project_id=r["project_id"],
            name=r["name"],
            storage_used_bytes=used,
            storage_limit_bytes=limit,
            storage_reserved_bytes=reserved,
            storage_available_bytes=limits.available(limit, used, reserved),
            percentage_used=limits.percentage(used, limit),
            over_limit=limits.over_limit(limit, used),
            total_files=r["total_files"],
            total_tenants=r["total_tenants"],
            default_tenant_limit_bytes=r["default_tenant_limit_bytes"],
            max_file_size_bytes=limits.max_file_size(self.max_file_size, r["max_file_size_bytes"]),
        )

    async def recalculate(self, project_id: str, tenant_id: str) -> RecalculatedUsage:
        """Rescans the tenant's prefix in S3 and rebuilds its ledger.

        Race-safe through the ledger's ordering: a listed object is applied as created
        at its LastModified time, a ledger object missing from the listing as removed
        at the time the scan began; anything an event changed meanwhile is newer and
        wins, so events arriving during a rescan are not lost.
        """
        before = await self.usage(project_id, tenant_id)
        started = datetime.now(UTC)
        prefix = keys.object_key(project_id, f"{tenant_id}/")
        seen: set[str] = set()
        batch: list[ObjectChange] = []
        async for obj in self.store.list_prefix(prefix):
            seen.add(obj.key)
            batch.append(
                ObjectChange(
                    kind=ChangeKind.CREATED,
                    key=obj.key,
                    size=obj.size,
                    etag=obj.etag,
                    event_time=obj.last_modified or started,
                )
            )
            if len(batch) >= 500:
                await self.ledger.settle(batch)
                batch = []
        if batch:
            await self.ledger.settle(batch)
        gone = [
            ObjectChange(kind=ChangeKind.REMOVED, key=r["object_key"], event_time=started)
            for r in await self.db.fetch(Q.tenant_objects, project_id, tenant_id)
            if r["present"] and r["object_key"] not in seen
        ]
        for i in range(0, len(gone), 500):
            await self.ledger.settle(gone[i : i + 500])
        after = await self.usage(project_id, tenant_id)
        return RecalculatedUsage(
            **{f: getattr(after, f) for f in after.__struct_fields__},
            drift_bytes=after.storage_used_bytes - before.storage_used_bytes,
            drift_files=after.total_files - before.total_files,
        )
