"""The object ledger: one apply step for every change to what is stored.

S3 events (webhook and SQS), ``complete`` (a HEAD on S3) and API deletes all become
``ObjectChange``s applied here in one transaction per batch: the ledger rows, the
tenants' and projects' usage, and the settlement of pending uploads. Then Redis is
brought in step (usage at its version; reservations that ended are released).

Ordering per key: by S3 ``sequencer`` when both sides have one, else by event time
(ties apply, which is harmless because applying the same state twice changes
nothing). A removed object stays as a tombstone so that older events arriving late
cannot bring it back.

Concurrency (several replicas, or batches in flight at once): a batch locks, in this
order, the rows of its keys' uploads, the rows of its keys that exist, and then
(writing) tenants and projects; it inserts the keys that had no row. A new key of an
upload is thereby serialised by its upload's row. A key with neither (an object
written under a tenant by other means) may be inserted first by another
transaction; then the batch is rolled back and applied again, reading that row
(``_NewKeyRace``). Each such race leaves one more key with a row, so they end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
import structlog

from gateway.changes import ChangeKind
from gateway.db import Database, Q
from gateway.keys import KeyParts, parse_object_key
from gateway.quota import QuotaStore, UsageAt
from gateway.storage.base import ObjectStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ObjectChange:
    kind: ChangeKind
    key: str
    event_time: datetime
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None  # already normalised for comparison


@dataclass
class ApplyResult:
    applied: int = 0
    stale: int = 0
    ignored: int = 0
    settled: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # object keys deleted by policy


@dataclass
class _Row:
    project_id: str
    tenant_id: str
    upload_id: str | None
    size: int
    etag: str | None
    version_id: str | None
    present: bool
    sequencer: str | None
    event_time: datetime


class _NewKeyRace(Exception):
    """A key this batch read as new (no row) was inserted by a concurrent transaction
    first: the batch's arithmetic assumed no row, so it is rolled back and applied
    again, now reading (and locking) that row. Keys of uploads cannot meet this (their
    upload rows are locked first); objects written under a tenant by other means can."""


@dataclass
class _BatchWrites:
    """One batch's writes, planned from the rows it holds locked."""

    applied: int = 0
    stale: int = 0
    touched: set[tuple[str, str]] = field(default_factory=set)
    release: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    to_delete: list[str] = field(default_factory=list)
    changed: dict[str, _Row] = field(default_factory=dict)
    new_keys: list[str] = field(default_factory=list)
    deltas: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    settle: dict[str, tuple[int, str, bool]] = field(default_factory=dict)

    def arguments(self) -> tuple[Any, ...]:
        """``write_ledger_batch``'s parameters, in order."""
        keys = list(self.changed)
        rows = [self.changed[k] for k in keys]
        tenants = sorted(self.deltas)
        proj: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for (p, _), (b, f) in self.deltas.items():
            proj[p][0] += b
            proj[p][1] += f
        pids = sorted(proj)
        ids = sorted(self.settle)
        # Pairs without a usage change still get their current usage pushed to
        # Redis: a retry after a failed Redis step must repair it.
        rest = sorted(self.touched - set(self.deltas))
        new = set(self.new_keys)
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
            [self.deltas[pt][0] for pt in tenants],
            [self.deltas[pt][1] for pt in tenants],
            pids,
            [proj[p][0] for p in pids],
            [proj[p][1] for p in pids],
            ids,
            [self.settle[i][0] for i in ids],
            [self.settle[i][1] for i in ids],
            [self.settle[i][2] for i in ids],
            [p for p, _ in rest],
            [t for _, t in rest],
            [k in new for k in keys],
        )


def _newer(change: ObjectChange, row: _Row | None) -> bool:
    if row is None:
        return True
    if (
        change.sequencer is not None
        and row.sequencer is not None
        and change.sequencer != row.sequencer  # LocalStack sends one constant sequencer
    ):
        return change.sequencer > row.sequencer
    return change.event_time >= row.event_time


class Ledger:
    def __init__(
        self,
        db: Database,
        quota: QuotaStore,
        store: ObjectStore,
        *,
        oversize_policy: Literal["reject", "keep"] = "reject",
    ) -> None:
        self.db = db
        self.quota = quota
        self.store = store
        self.oversize_policy = oversize_policy

    async def apply(
        self, changes: Sequence[ObjectChange], *, cancel_pending: bool = False
    ) -> ApplyResult:
        """Applies a batch. ``cancel_pending``: a removal also cancels the key's pending
        upload (API deletes), instead of leaving it to expire."""
        conflicts = 0
        # Each lost race leaves at least one more of the batch's keys with a row that
        # the next attempt locks (rows are never deleted), so races end by themselves.
        for _ in range(len(changes) + 5):
            try:
                return await self._apply(changes, cancel_pending=cancel_pending)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                conflicts += 1
                if conflicts == 5:
                    raise
                log.info("ledger batch retried after a lock conflict", attempt=conflicts)
            except _NewKeyRace:
                log.info("ledger batch retried: a new key was written first elsewhere")
        raise AssertionError("a ledger batch kept losing its new keys")

    async def _apply(self, changes: Sequence[ObjectChange], *, cancel_pending: bool) -> ApplyResult:
        result = ApplyResult()
        by_key: dict[str, list[ObjectChange]] = defaultdict(list)
        parts: dict[str, KeyParts] = {}
        for ch in changes:
            kp = parse_object_key(ch.key)
            if kp is None:
                result.ignored += 1
                continue
            parts[ch.key] = kp
            by_key[ch.key].append(ch)
        if not by_key:
            return result

        async with self.db.transaction() as conn:
            pairs = sorted({(kp.project_id, kp.tenant_id) for kp in parts.values()})
            known = {
                r["id"]
                for r in await conn.fetch(
                    Q.ensure_tenants, [p for p, _ in pairs], [t for _, t in pairs]
                )
            }
            for key in [k for k in by_key if parts[k].project_id not in known]:
                result.ignored += len(by_key.pop(key))
            if not by_key:
                return result
            # The uploads first: a new key of an upload has no row to lock yet, but its
            # upload has one, so two batches carrying it run one after the other, and
            # the second reads the first one's row below.
            upload_ids = sorted({u for k in by_key if (u := parts[k].upload_id)})
            uploads = (
                {r["id"]: r for r in await conn.fetch(Q.lock_uploads, upload_ids)}
                if upload_ids
                else {}
            )
            rows = _rows(await conn.fetch(Q.lock_objects, sorted(by_key)))
            plan = self._plan(by_key, parts, rows, uploads, cancel_pending=cancel_pending)
            rows_out = await conn.fetch(Q.write_ledger_batch, *plan.arguments())
            inserted = {r["tenant_id"] for r in rows_out if r["kind"] == "n"}
            if len(inserted) != len(plan.new_keys):
                raise _NewKeyRace  # rolls this transaction back; apply() runs it again
            tenant_usage, project_usage, settled = _read_usage(rows_out)

        result.applied += plan.applied
        result.stale += plan.stale
        result.settled.extend(settled)
        await self._mirror(plan.touched, tenant_usage, project_usage, plan.release)
        for key in plan.to_delete:
            await self.store.delete(key)
            result.rejected.append(key)
            log.warning("oversized object deleted", key=key)
        return result

    def _plan(
        self,
        by_key: dict[str, list[ObjectChange]],
        parts: dict[str, KeyParts],
        rows: dict[str, _Row],
        uploads: dict[str, Any],
        *,
        cancel_pending: bool,
    ) -> _BatchWrites:
        """What the batch writes, given the rows it holds locked (no I/O)."""
        plan = _BatchWrites()
        t_delta: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        settle: dict[str, tuple[int, str, bool]] = {}
        changed: dict[str, _Row] = {}
        for key, key_changes in by_key.items():
            kp = parts[key]
            pair = (kp.project_id, kp.tenant_id)
            plan.touched.add(pair)
            row = rows.get(key)
            newest_created: ObjectChange | None = None
            for ch in sorted(key_changes, key=_order):
                if ch.kind is ChangeKind.CREATED:
                    newest_created = ch  # applied or stale: the object did arrive
                if not _newer(ch, row):
                    plan.stale += 1
                    continue
                plan.applied += 1
                old_size = row.size if row and row.present else 0
                old_files = 1 if row and row.present else 0
                seq = ch.sequencer if ch.sequencer is not None else (row.sequencer if row else None)
                when = max(ch.event_time, row.event_time) if row else ch.event_time
                if ch.kind is ChangeKind.CREATED:
                    size = ch.size or 0
                    row = _Row(
                        kp.project_id,
                        kp.tenant_id,
                        kp.upload_id,
                        size,
                        ch.etag,
                        ch.version_id,
                        True,
                        seq,
                        when,
                    )
                    t_delta[pair][0] += size - old_size
                    t_delta[pair][1] += 1 - old_files
                else:
                    row = _Row(
                        kp.project_id, kp.tenant_id, kp.upload_id, 0, None, None, False, seq, when
                    )
                    t_delta[pair][0] -= old_size
                    t_delta[pair][1] -= old_files
                changed[key] = row
            # settle / cancel the upload this key belongs to
            up = uploads.get(kp.upload_id or "")
            if up is None or up["status"] != "pending" or up["project_id"] != kp.project_id:
                if up is not None:
                    plan.release[pair].append(up["id"])
                continue
            if row is not None and row.present:
                declared = up["declared_size"]
                oversize = declared is not None and row.size > declared
                if oversize and self.oversize_policy == "reject":
                    settle[up["id"]] = (row.size, "rejected", True)
                    plan.to_delete.append(key)
                    # it is gone as far as usage goes: remove it now
                    t_delta[pair][0] -= row.size
                    t_delta[pair][1] -= 1
                    row = _Row(
                        kp.project_id,
                        kp.tenant_id,
                        kp.upload_id,
                        0,
                        None,
                        None,
                        False,
                        row.sequencer,
                        row.event_time,
                    )
                    changed[key] = row
                else:
                    settle[up["id"]] = (row.size, "completed", oversize)
            elif row is not None and cancel_pending:
                settle[up["id"]] = (0, "cancelled", False)
            elif newest_created is not None:
                # created and already removed again (or the removal overtook the
                # creation): the upload did complete; nothing of it is stored
                settle[up["id"]] = (newest_created.size or 0, "completed", False)
            if up["id"] in settle:
                plan.release[pair].append(up["id"])

        plan.changed = changed
        plan.new_keys = [k for k in changed if k not in rows]
        plan.deltas = {p: d for p, d in t_delta.items() if d != [0, 0]}
        plan.settle = settle
        return plan

    async def _mirror(
        self,
        touched: Iterable[tuple[str, str]],
        tenant_usage: dict[tuple[str, str], UsageAt],
        project_usage: dict[str, UsageAt],
        release: dict[tuple[str, str], list[str]],
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


def _order(ch: ObjectChange) -> tuple[Any, ...]:
    return (ch.sequencer or "", ch.event_time)


def _rows(records: Iterable[Any]) -> dict[str, _Row]:
    return {
        r["object_key"]: _Row(
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


def _read_usage(
    rows_out: Iterable[Any],
) -> tuple[dict[tuple[str, str], UsageAt], dict[str, UsageAt], list[str]]:
    """Tenants' and projects' usage after the write, and the uploads it settled."""
    tenant_usage: dict[tuple[str, str], UsageAt] = {}
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
