"""Projects and their API keys: creation, updates, key checks (the CLI and every
authenticated request)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway import audit, auth
from gateway.audit import Actor
from gateway.db import Database, Q
from gateway.errors import Conflict, NotFound
from gateway.ids import new_id
from gateway.webhooks.outbox import WQ, Outbox


@dataclass(frozen=True)
class CreatedProject:
    project_id: str
    name: str
    key_id: str
    api_key: str


_UNSET: Any = object()

# The project's settings as the audit log names them (its row's columns).
AUDITED_FIELDS = (
    "name",
    "max_file_size_bytes",
    "storage_limit_bytes",
    "default_tenant_limit_bytes",
    "webhook_thresholds",
)


class ProjectService:
    # set by the Runtime: changes of default limits re-judge tenants' thresholds
    outbox: Outbox | None = None

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        name: str,
        *,
        max_file_size: int | None = None,
        storage_limit: int | None = None,
        default_tenant_limit: int | None = None,
        actor: Actor | None = None,
    ) -> CreatedProject:
        project_id = new_id("prj")
        key = auth.generate_key()
        try:
            async with self.db.transaction() as conn:
                row = await conn.fetchrow(
                    Q.insert_project,
                    project_id,
                    name,
                    max_file_size,
                    storage_limit,
                    default_tenant_limit,
                )
                await conn.execute(Q.insert_api_key, key.key_id, project_id, key.secret_hash)
                await audit.record(
                    conn,
                    project_id=project_id,
                    action="project.created",
                    actor=actor or audit.cli_actor(),
                    after={**{f: row[f] for f in AUDITED_FIELDS}, "key_id": key.key_id},
                )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"A project named {name!r} already exists") from None
        return CreatedProject(project_id, name, key.key_id, key.api_key)

    async def get(self, project_id: str) -> dict[str, Any]:
        row = await self.db.fetchrow(Q.get_project, project_id)
        if row is None:
            raise NotFound(f"No project {project_id!r}")
        return dict(row)

    async def find_by_name(self, name: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow(Q.get_project_by_name, name)
        return dict(row) if row else None

    async def update(
        self,
        project_id: str,
        *,
        name: str | None = None,
        max_file_size: int | None = _UNSET,
        storage_limit: int | None = _UNSET,
        default_tenant_limit: int | None = _UNSET,
        webhook_thresholds: Sequence[int] | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """Changes the settings given; the audit log gets one ``project.updated``
        entry with the fields that changed (none if nothing did). A new default
        tenant limit or new threshold lines are judged at once for the tenants they
        apply to (a lowered limit that puts a tenant over a line tells of it now)."""
        async with self.db.transaction() as conn:
            rejudge: list[str] = []
            if self.outbox is not None and (
                default_tenant_limit is not _UNSET or webhook_thresholds is not None
            ):
                # the tenants first, then the project: the order the ledger locks in
                rejudge = [
                    r["tenant_id"]
                    for r in await conn.fetch(
                        WQ.lock_tenants_of_project, project_id, webhook_thresholds is not None
                    )
                ]
            before = await conn.fetchrow(audit.AQ.lock_project, project_id)
            if before is None:
                raise NotFound(f"No project {project_id!r}")
            try:
                row = await conn.fetchrow(
                    Q.update_project,
                    project_id,
                    name,
                    None if max_file_size is _UNSET else max_file_size,
                    None if storage_limit is _UNSET else storage_limit,
                    None if default_tenant_limit is _UNSET else default_tenant_limit,
                    max_file_size is not _UNSET,
                    storage_limit is not _UNSET,
                    default_tenant_limit is not _UNSET,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"A project named {name!r} already exists") from None
            assert row is not None  # locked above
            if webhook_thresholds is not None:
                lines = sorted(set(webhook_thresholds))
                row = await conn.fetchrow(WQ.set_project_thresholds, project_id, lines)
                assert row is not None
            changed = [f for f in AUDITED_FIELDS if before[f] != row[f]]
            if changed:
                await audit.record(
                    conn,
                    project_id=project_id,
                    action="project.updated",
                    actor=actor or audit.cli_actor(),
                    before={f: before[f] for f in changed},
                    after={f: row[f] for f in changed},
                )
            if rejudge and changed and self.outbox is not None:
                await self.outbox.record(conn, judge=[(project_id, t) for t in rejudge])
        return dict(row)

    async def create_key(self, project_id: str, *, actor: Actor | None = None) -> tuple[str, str]:
        key = auth.generate_key()
        async with self.db.transaction() as conn:
            if await conn.fetchrow(audit.AQ.lock_project, project_id) is None:
                raise NotFound(f"No project {project_id!r}")
            await conn.execute(Q.insert_api_key, key.key_id, project_id, key.secret_hash)
            await audit.record(
                conn,
                project_id=project_id,
                action="key.created",
                actor=actor or audit.cli_actor(),
                after={"key_id": key.key_id},
            )
        return key.key_id, key.api_key

    async def revoke_key(self, key_id: str, *, actor: Actor | None = None) -> str:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(Q.revoke_api_key, key_id)
            if row is None:
                raise NotFound(f"No active key {key_id!r}")
            await audit.record(
                conn,
                project_id=row["project_id"],
                action="key.revoked",
                actor=actor or audit.cli_actor(),
                before={"key_id": key_id, "revoked": False},
                after={"key_id": key_id, "revoked": True},
            )
        return str(row["project_id"])

    async def authenticate(self, presented: auth.PresentedKey | None) -> str:
        """The project id the key belongs to; Unauthorized otherwise."""
        from gateway.errors import Unauthorized

        if presented is None:
            raise Unauthorized()
        row = await self.db.fetchrow(Q.get_api_key, presented.key_id)
        if row is None or not auth.matches(row["secret_hash"], presented):
            raise Unauthorized()
        return str(row["project_id"])
