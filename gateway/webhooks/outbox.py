"""The outbox: events written in the transaction of the change they tell of.

Every change that webhooks report calls ``Outbox.record(conn, ...)`` on the
connection of its own transaction, so the event exists exactly when the change
committed: a crash can neither lose one nor invent one. One statement
(``record_events`` in gateway/db/webhooks.sql) stores the events an enabled endpoint
takes, with a pending delivery per endpoint, and judges the threshold lines of the
tenants whose usage or limit changed.

Thresholds (70, 90, 100 % of the effective byte limit unless the project says
otherwise) are judged on **settled** usage, under the lock of the tenant's row that
the change itself holds (the ledger's usage update, or a limit change's
``FOR UPDATE``): settlements of one tenant that race commit one after the other,
each judging the state the previous one left, so a line is crossed once. A line is
told again only after usage fell back below it (it is then re-armed).

The delivery worker is told that something may be due (``on_record``), so it need
not wait for its next poll.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import asyncpg

from gateway.db.queries import Queries
from gateway.keys import file_path_of
from gateway.webhooks.events import Event, file_deleted

WQ = Queries("webhooks.sql")

Pair = tuple[str, str]  # (project id, tenant id)


class StoredObject(Protocol):
    """What the outbox needs of a ledger row: whose object it is, and whether and
    how large it is stored."""

    @property
    def project_id(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def present(self) -> bool: ...
    @property
    def size(self) -> int: ...


class Outbox:
    def __init__(self) -> None:
        self.on_record: Callable[[], None] | None = None
        self.recorded_events = 0  # stored events (for tests and the benchmark)

    async def record(
        self,
        conn: asyncpg.Connection,
        *,
        events: Sequence[Event] = (),
        settled: Sequence[str] = (),
        judge: Iterable[Pair] = (),
    ) -> int:
        """In the caller's transaction: ``events`` as built, one event per upload in
        ``settled`` (by its final status), and the threshold lines of the tenants
        in ``judge`` (whose rows the caller holds locked). Answers the number of
        deliveries queued."""
        pairs = sorted(set(judge))
        if not events and not settled and not pairs:
            return 0
        row = await conn.fetchrow(
            WQ.record_events,
            [e.id for e in events],
            [e.project_id for e in events],
            [e.type for e in events],
            [e.body for e in events],
            list(settled),
            [p for p, _ in pairs],
            [t for _, t in pairs],
        )
        assert row is not None
        queued = int(row["deliveries"])
        if queued:
            self.recorded_events += int(row["events"])
            if self.on_record is not None:
                self.on_record()
        return queued

    async def settlement(
        self,
        conn: asyncpg.Connection,
        *,
        before: Mapping[str, StoredObject],
        after: Mapping[str, StoredObject],
        settled: Sequence[str],
        completed_sizes: Mapping[str, int],
        usage_changed: Iterable[Pair],
    ) -> int:
        """A ledger batch's events, in its transaction: its settled uploads, a
        ``file.deleted`` for every key that was stored before the batch and is not
        after it (or, created and removed within the batch, was stored by an upload
        it completed: ``completed_sizes`` by key), and the thresholds of the tenants
        whose usage it moved."""
        deleted: list[Event] = []
        for key, now in after.items():
            if now.present:
                continue
            was = before.get(key)
            if was is not None and was.present:
                size = was.size
            elif key in completed_sizes:
                size = completed_sizes[key]
            else:
                continue
            deleted.append(file_deleted(now.project_id, now.tenant_id, file_path_of(key), size))
        return await self.record(conn, events=deleted, settled=settled, judge=usage_changed)


__all__ = ["WQ", "Outbox", "Pair", "StoredObject"]
