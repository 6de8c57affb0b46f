"""``Ledger.settle``: a batch of object changes, planned (``plan.plan_batch``) and written.

One transaction per batch writes the ledger rows, the tenants' and projects' usage,
and the settlement of pending uploads. Then Redis is brought in step (usage at its
version; reservations that ended are released), and objects rejected by the
oversize policy are deleted from S3.

Concurrency (several replicas, or batches in flight at once): a batch locks, in this
order, the rows of its keys' uploads, the rows of its keys that exist, and then
(writing) tenants and projects; it inserts the keys that had no row. A new key of an
upload is thereby serialised by its upload's row. A key with neither (an object
written under a tenant by other means) may be inserted first by another
transaction; then the batch is rolled back and settled again, reading that row
(``_NewKeyRace``). Each such race leaves one more key with a row, so they end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from gateway.db import Database, Q
from gateway.ledger.plan import (
    Batch,
    ObjectChange,
    ObjectRow,
    Pair,
    Policy,
    UploadRow,
    Writes,
    plan_batch,
)
from gateway.quota import QuotaStore, UsageAt
from gateway.storage.base import ObjectStore
from gateway.webhooks.outbox import Outbox

log = structlog.get_logger(__name__)


@dataclass
class Settlement:
    """What ``Ledger.settle`` did with a batch."""

    applied: int = 0
    stale: int = 0
    ignored: int = 0
    settled: list[str] = field(default_factory=list)  # upload ids
    rejected: list[str] = field(default_factory=list)  # object keys deleted by policy


class _NewKeyRace(Exception):
    """A key this batch read as new (no row) was inserted by a concurrent transaction
    first: the batch's arithmetic assumed no row, so it is rolled back and settled
    again, now reading (and locking) that row. Keys of uploads cannot meet this (their
    upload rows are locked first); objects written under a tenant by other means can."""


class Ledger:
    # set by the Runtime: a batch's events are written in its transaction
    outbox: Outbox | None = None

    def __init__(
        self, db: Database, quota: QuotaStore, store: ObjectStore, *, policy: Policy
    ) -> None:
        self.db = db
        self.quota = quota
        self.store = store
        self.policy = policy

    async def settle(
        self, changes: Sequence[ObjectChange], *, cancel_pending: bool = False
    ) -> Settlement:
        """Records a batch of changes and settles the uploads they finish.
        ``cancel_pending``: a removal also cancels the key's pending upload (API
        deletes), instead of leaving it to expire."""
        conflicts = 0
        # Each lost race leaves at least one more of the batch's keys with a row that
        # the next attempt locks (rows are never deleted), so races end by themselves.
        for _ in range(len(changes) + 5):
            try:
                return await self._settle_once(changes, cancel_pending=cancel_pending)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                conflicts += 1
                if conflicts == 5:
                    raise
                log.info("ledger batch retried after a lock conflict", attempt=conflicts)
            except _NewKeyRace:
                log.info("ledger batch retried: a new key was written first elsewhere")
        raise AssertionError("a ledger batch kept losing its new keys")

    async def _settle_once(
        self, changes: Sequence[ObjectChange], *, cancel_pending: bool
    ) -> Settlement:
        batch = Batch.of(changes)
        if not batch.changes:
            return Settlement(ignored=batch.ignored)

        async with self.db.transaction() as conn:
            pairs = batch.pairs()
            known = {
                r["id"]
                for r in await conn.fetch(
                    Q.ensure_tenants, [p for p, _ in pairs], [t for _, t in pairs]
                )
            }
            batch = batch.only_projects(known)
            if not batch.changes:
                return Settlement(ignored=batch.ignored)
            # The uploads first: a new key of an upload has no row to lock yet, but its
            # upload has one, so two batches carrying it run one after the other, and
            # the second reads the first one's row below.
            upload_ids = batch.upload_ids()
            uploads = _uploads(await conn.fetch(Q.lock_uploads, upload_ids)) if upload_ids else {}
            objects = _objects(await conn.fetch(Q.lock_objects, batch.keys()))
            writes = plan_batch(batch, objects, uploads, self.policy, cancel_pending=cancel_pending)
            rows_out = await conn.fetch(Q.write_ledger_batch, *_write_arguments(writes))
            inserted = {r["tenant_id"] for r in rows_out if r["kind"] == "n"}
            if len(inserted) != len(writes.new_keys):
                raise _NewKeyRace  # rolls this transaction back; settle() runs it again
            tenant_usage, project_usage, settled = _read_usage(rows_out)
            if self.outbox is not None:  # the batch's events, in its transaction
                await self.outbox.settlement(
                    conn,
                    before=objects,
                    after=writes.objects,
                    settled=settled,
                    completed_sizes={
                        key: outcome.size
                        for key, row in writes.objects.items()
                        if row.upload_id is not None
                        and (outcome := writes.uploads.get(row.upload_id)) is not None
                        and outcome.status == "completed"
                    },
                    usage_changed=writes.usage,
                )

        result = Settlement(
            applied=writes.applied, stale=writes.stale, ignored=batch.ignored, settled=settled
        )
        await self._mirror(writes.touched, tenant_usage, project_usage, writes.release)
        for key in writes.delete:
            await self.store.delete(key)
            result.rejected.append(key)
            log.warning("oversized object deleted", key=key)
        return result

    async def _mirror(
        self,
        touched: Iterable[Pair],
        tenant_usage: dict[Pair, UsageAt],
        project_usage: dict[str, UsageAt],
        release: dict[Pair, list[str]],
    ) -> None:
        await self.quota.apply_many(
            [
                (
                    pair[0],
                    pair[1],
                    tenant_usage.get(pair),
                    project_usage.get(pair[0]),
                    release.get(pair, ()),
                )
                for pair in sorted(touched)
            ]
        )


def _objects(records: Iterable[Any]) -> dict[str, ObjectRow]:
    return {
        r["object_key"]: ObjectRow(
            r["project_id"],
            r["tenant_id"],
            r["upload_id"],
            r["size_bytes"],
            r["etag"],
            r["version_id"],
            r["present"],
            r["sequencer"],
            r["event_time"],
        )
        for r in records
    }


def _uploads(records: Iterable[Any]) -> dict[str, UploadRow]:
    return {
        r["id"]: UploadRow(r["id"], r["project_id"], r["status"], r["declared_size"])
        for r in records
    }


def _write_arguments(w: Writes) -> tuple[Any, ...]:
    """``write_ledger_batch``'s parameters, in order."""
    keys = list(w.objects)
    rows = [w.objects[k] for k in keys]
    tenants = sorted(w.usage)
    proj: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (p, _), (b, f) in w.usage.items():
        proj[p][0] += b
        proj[p][1] += f
    pids = sorted(proj)
    ids = sorted(w.uploads)
    # Pairs without a usage change still get their current usage pushed to
    # Redis: a retry after a failed Redis step must repair it.
    rest = sorted(w.touched - set(w.usage))
    new = set(w.new_keys)
    return (
        keys,
        [r.project_id for r in rows],
        [r.tenant_id for r in rows],
        [r.upload_id for r in rows],
        [r.size for r in rows],
        [r.etag for r in rows],
        [r.version_id for r in rows],
        [r.present for r in rows],
        [r.sequencer for r in rows],
        [r.event_time for r in rows],
        [p for p, _ in tenants],
        [t for _, t in tenants],
        [w.usage[pt][0] for pt in tenants],
        [w.usage[pt][1] for pt in tenants],
        pids,
        [proj[p][0] for p in pids],
        [proj[p][1] for p in pids],
        ids,
        [w.uploads[i].size for i in ids],
        [w.uploads[i].status for i in ids],
        [w.uploads[i].flagged for i in ids],
        [p for p, _ in rest],
        [t for _, t in rest],
        [k in new for k in keys],
    )


def _read_usage(
    rows_out: Iterable[Any],
) -> tuple[dict[Pair, UsageAt], dict[str, UsageAt], list[str]]:
    """Tenants' and projects' usage after the write, and the uploads it settled."""
    tenant_usage: dict[Pair, UsageAt] = {}
    project_usage: dict[str, UsageAt] = {}
    read_projects: dict[str, UsageAt] = {}
    settled: list[str] = []
    for r in rows_out:
        kind = r["kind"]
        if kind == "n":
            continue
        if kind == "s":
            settled.append(r["tenant_id"])
        elif kind in ("t", "r"):
            tenant_usage[(r["project_id"], r["tenant_id"])] = UsageAt(r["used"], r["version"])
        elif kind == "p":
            project_usage[r["project_id"]] = UsageAt(r["used"], r["version"])
        else:  # "q": read before this batch's deltas
            read_projects[r["project_id"]] = UsageAt(r["used"], r["version"])
    for pid, usage in read_projects.items():
        project_usage.setdefault(pid, usage)
    return tenant_usage, project_usage, settled
