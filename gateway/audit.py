"""The audit log: who changed which limit, project setting, key or webhook, and when.

``record(conn, ...)`` writes one entry on the connection of the change's own
transaction, so an entry exists exactly when its change committed. The actor is
the API key that made the request (its id, ``key_…``), ``cli`` for the ``gateway``
command, or ``system`` for the gateway itself (a failing webhook endpoint that it
disables). ``request_id`` is the ``X-Request-ID`` of the response that carried the
change: the request id bound in structlog's context vars by the request middleware
(gateway/observability.py); none outside a request.

``before``/``after`` use the API's field names. They must never hold a secret: the
callers build them from fields they name, never from a whole row.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec
import structlog

from gateway.db import Database
from gateway.db.queries import Queries
from gateway.ids import new_id, utc_timestamp

AQ = Queries("audit.sql")

ActorType = Literal["api_key", "cli", "system"]


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    type: ActorType
    id: str | None


def api_key_actor(key_id: str) -> Actor:
    return Actor(type="api_key", id=key_id)


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container's bare uid)
        return None


def cli_actor() -> Actor:
    """The operator at the ``gateway`` command (their login name, when there is one)."""
    return Actor(type="cli", id=_login())


SYSTEM_WEBHOOKS = Actor(type="system", id="webhook-delivery")


class AuditEntry(msgspec.Struct, kw_only=True):
    id: str
    at: str
    action: str
    actor: Actor
    tenant_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


def current_request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else msgspec.json.encode(dict(value)).decode()


async def record(
    conn: asyncpg.Connection,
    *,
    project_id: str,
    action: str,
    actor: Actor,
    tenant_id: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> None:
    """One entry, in the transaction ``conn`` is in (the change's own)."""
    await conn.execute(
        AQ.insert_entry,
        new_id("aud"),
        project_id,
        action,
        actor.type,
        actor.id,
        tenant_id,
        _json(before),
        _json(after),
        current_request_id() if actor.type == "api_key" else None,
    )


def _entry(row: Mapping[str, Any]) -> AuditEntry:
    at: datetime = row["at"]
    return AuditEntry(
        id=row["id"],
        at=utc_timestamp(at),
        action=row["action"],
        actor=Actor(type=row["actor_type"], id=row["actor_id"]),
        tenant_id=row["tenant_id"],
        before=msgspec.json.decode(row["before"]) if row["before"] is not None else None,
        after=msgspec.json.decode(row["after"]) if row["after"] is not None else None,
        request_id=row["request_id"],
    )


class AuditLog:
    """Reading the log (writing is ``record``, inside each change's transaction)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list(
        self,
        project_id: str,
        *,
        tenant_id: str | None = None,
        action: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[AuditEntry], int]:
        """A page, newest first, and the total count under the filters."""
        rows = await self.db.fetch(AQ.list_entries, project_id, tenant_id, action, offset, limit)
        if rows:
            total = int(rows[0]["total_count"])
        else:
            total = int(await self.db.fetchval(AQ.count_entries, project_id, tenant_id, action))
        return [_entry(r) for r in rows], total


__all__ = [
    "SYSTEM_WEBHOOKS",
    "Actor",
    "AuditEntry",
    "AuditLog",
    "api_key_actor",
    "cli_actor",
    "current_request_id",
    "record",
]
