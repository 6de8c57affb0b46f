"""What a batch of object changes writes, decided without I/O.

``plan_batch(batch, objects, uploads, policy)`` is a pure function of the changes,
the rows the batch holds locked (its keys' objects and their uploads) and a
``Policy`` (what it needs from the settings). The rules:

* **Which keys.** A key outside the layout ``{project}/{tenant}/...`` is ignored
  (``Batch.of``), and so is a key of a project that does not exist
  (``Batch.only_projects``).
* **Order per key.** A key's changes apply in ``(sequencer, event time)`` order, each
  only if it is newer than the key's row (``is_newer``): by S3 ``sequencer`` when both
  sides have one and they differ, else by event time, ties applying (applying the same
  state twice changes nothing, so a duplicate is harmless). A change that is not newer
  is *stale*: it changes nothing.
* **Usage.** A creation charges its size and one file, less what the key held; a
  removal refunds what the key held. A removed key stays as a tombstone (present
  false, its sequencer and time kept) so that an older creation arriving late cannot
  bring it back.
* **Uploads.** The upload a key belongs to (by the ``upl_…`` segment of its key) is
  settled only while it is pending and of the key's project:
  - the object is stored: ``completed`` at the stored size; larger than declared, it is
    flagged, or under ``Policy(oversize="reject")`` ``rejected``: the object is to be
    deleted from S3 and its usage refunded in the same batch;
  - the object is removed and the caller asked ``cancel_pending`` (an API delete):
    ``cancelled``;
  - the object was created in this batch and is already removed again (or the removal
    overtook the creation): ``completed`` at the size created, nothing stored;
  - else (a removal alone) the upload stays pending, and expires.
  An upload that is settled, or no longer pending, has its reservation released.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from gateway.changes import ChangeKind
from gateway.keys import KeyParts, parse_object_key

# (project id, tenant id)
Pair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ObjectChange:
    kind: ChangeKind
    key: str
    event_time: datetime
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None  # already normalised for comparison


@dataclass(frozen=True, slots=True)
class ObjectRow:
    """A key's row in the ledger (``objects``): what is stored under it, or a
    tombstone (``present`` false) after it was removed."""

    project_id: str
    tenant_id: str
    upload_id: str | None
    size: int
    etag: str | None
    version_id: str | None
    present: bool
    sequencer: str | None
    event_time: datetime


@dataclass(frozen=True, slots=True)
class UploadRow:
    """What planning reads of an upload the batch's keys belong to."""

    id: str
    project_id: str
    status: str
    declared_size: int | None


@dataclass(frozen=True, slots=True)
class Policy:
    """What planning takes from the settings (``GATEWAY_OVERSIZE_POLICY``)."""

    oversize: Literal["reject", "keep"] = "reject"


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    """How a pending upload is settled: its actual size, final status, and whether it
    is flagged (stored larger than declared)."""

    size: int
    status: Literal["completed", "rejected", "cancelled"]
    flagged: bool


@dataclass(frozen=True)
class Batch:
    """A batch's changes by key (keys in order of first arrival, each key's changes in
    arrival order), the parts of each key, and how many changes were ignored."""

    changes: dict[str, list[ObjectChange]]
    parts: dict[str, KeyParts]
    ignored: int = 0

    @classmethod
    def of(cls, changes: Iterable[ObjectChange]) -> Batch:
        """Groups changes by key; a key outside the layout is ignored."""
        by_key: dict[str, list[ObjectChange]] = defaultdict(list)
        parts: dict[str, KeyParts] = {}
        ignored = 0
        for ch in changes:
            kp = parts.get(ch.key) or parse_object_key(ch.key)
            if kp is None:
                ignored += 1
                continue
            parts[ch.key] = kp
            by_key[ch.key].append(ch)
        return cls(dict(by_key), parts, ignored)

    def only_projects(self, known: set[str]) -> Batch:
        """The batch without the keys of projects not in ``known`` (counted ignored)."""
        keep = {k: v for k, v in self.changes.items() if self.parts[k].project_id in known}
        if len(keep) == len(self.changes):
            return self
        dropped = sum(len(v) for k, v in self.changes.items() if k not in keep)
        return Batch(keep, {k: self.parts[k] for k in keep}, self.ignored + dropped)

    def pairs(self) -> list[Pair]:
        return sorted({(kp.project_id, kp.tenant_id) for kp in self.parts.values()})

    def upload_ids(self) -> list[str]:
        return sorted({u for kp in self.parts.values() if (u := kp.upload_id)})

    def keys(self) -> list[str]:
        return sorted(self.changes)


@dataclass
class Writes:
    """What one batch writes, planned from the rows it holds locked."""

    applied: int = 0
    stale: int = 0
    touched: set[Pair] = field(default_factory=set)  # pairs whose usage goes to Redis
    objects: dict[str, ObjectRow] = field(default_factory=dict)  # rows written
    new_keys: list[str] = field(default_factory=list)  # of those, the keys without a row
    usage: dict[Pair, tuple[int, int]] = field(default_factory=dict)  # (bytes, files) moved
    uploads: dict[str, UploadOutcome] = field(default_factory=dict)  # pending ones settled
    release: dict[Pair, list[str]] = field(default_factory=dict)  # reservations that end
    delete: list[str] = field(default_factory=list)  # object keys rejected by the policy


def is_newer(change: ObjectChange, row: ObjectRow | None) -> bool:
    """Whether ``change`` applies over what ``row`` records."""
    if row is None:
        return True
    if (
        change.sequencer is not None
        and row.sequencer is not None
        and change.sequencer != row.sequencer  # LocalStack sends one constant sequencer
    ):
        return change.sequencer > row.sequencer
    return change.event_time >= row.event_time


def plan_batch(
    batch: Batch,
    objects: Mapping[str, ObjectRow],
    uploads: Mapping[str, UploadRow],
    policy: Policy,
    *,
    cancel_pending: bool = False,
) -> Writes:
    """What ``batch`` writes, given its keys' rows (``objects``, absent: a new key) and
    their uploads' (``uploads`` by id). ``cancel_pending``: a removal also cancels the
    key's pending upload (API deletes) instead of leaving it to expire."""
    out = Writes()
    usage: dict[Pair, list[int]] = defaultdict(lambda: [0, 0])
    release: dict[Pair, list[str]] = defaultdict(list)
    for key, key_changes in batch.changes.items():
        kp = batch.parts[key]
        pair = (kp.project_id, kp.tenant_id)
        out.touched.add(pair)
        row = objects.get(key)
        newest_created: ObjectChange | None = None
        for ch in sorted(key_changes, key=_order):
            if ch.kind is ChangeKind.CREATED:
                newest_created = ch  # applied or stale: the object did arrive
            if not is_newer(ch, row):
                out.stale += 1
                continue
            out.applied += 1
            old_size = row.size if row and row.present else 0
            old_files = 1 if row and row.present else 0
            seq = ch.sequencer if ch.sequencer is not None else (row.sequencer if row else None)
            when = max(ch.event_time, row.event_time) if row else ch.event_time
            if ch.kind is ChangeKind.CREATED:
                size = ch.size or 0
                row = ObjectRow(
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
                usage[pair][0] += size - old_size
                usage[pair][1] += 1 - old_files
            else:
                row = _tombstone(kp, seq, when)
                usage[pair][0] -= old_size
                usage[pair][1] -= old_files
            out.objects[key] = row

        up = uploads.get(kp.upload_id or "")
        if up is None or up.status != "pending" or up.project_id != kp.project_id:
            if up is not None:
                release[pair].append(up.id)
            continue
        if row is not None and row.present:
            oversize = up.declared_size is not None and row.size > up.declared_size
            if oversize and policy.oversize == "reject":
                out.uploads[up.id] = UploadOutcome(row.size, "rejected", True)
                out.delete.append(key)
                # it is gone as far as usage goes: remove it now
                usage[pair][0] -= row.size
                usage[pair][1] -= 1
                out.objects[key] = _tombstone(kp, row.sequencer, row.event_time)
            else:
                out.uploads[up.id] = UploadOutcome(row.size, "completed", oversize)
        elif row is not None and cancel_pending:
            out.uploads[up.id] = UploadOutcome(0, "cancelled", False)
        elif newest_created is not None:
            # created and already removed again (or the removal overtook the
            # creation): the upload did complete; nothing of it is stored
            out.uploads[up.id] = UploadOutcome(newest_created.size or 0, "completed", False)
        if up.id in out.uploads:
            release[pair].append(up.id)

    out.new_keys = [k for k in out.objects if k not in objects]
    out.usage = {p: (b, f) for p, (b, f) in usage.items() if (b, f) != (0, 0)}
    out.release = dict(release)
    return out


def _tombstone(kp: KeyParts, sequencer: str | None, event_time: datetime) -> ObjectRow:
    return ObjectRow(
        kp.project_id, kp.tenant_id, kp.upload_id, 0, None, None, False, sequencer, event_time
    )


def _order(ch: ObjectChange) -> tuple[str, datetime]:
    return (ch.sequencer or "", ch.event_time)
