"""UploadService: validate → record → reserve → presign; settle; cancel; expire; audit.

The rule every path keeps (docs/quota.md, "No reservation without a request"): a
reservation exists only while a pending upload row backs it, and a row is pending only
while its request can still receive a URL (within ``ADMISSION_WINDOW`` of its start)
or has received one. Whatever fails after a row is written, the row and its
reservation are removed (or, when Postgres cannot be reached, removed as soon as it
answers again); the audit repairs what a crashed process left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import asyncpg
import msgspec
import structlog

from gateway import auth, keys, limits
from gateway.api.schemas import (
    DownloadRequest,
    DownloadResponse,
    UploadRequest,
    UploadResponse,
    UploadStatus,
)
from gateway.batching import MicroBatcher
from gateway.changes import ChangeKind
from gateway.config import Settings
from gateway.db import Database, Q, is_unavailable
from gateway.errors import (
    DependencyUnavailable,
    FileTooLarge,
    GatewayError,
    IdempotencyConflict,
    NotFound,
    ObjectNotUploaded,
    ProjectQuotaExceeded,
    QuotaExceeded,
    Unauthorized,
    UploadInProgress,
    ValidationFailed,
)
from gateway.ids import new_id, utc_timestamp
from gateway.keys import parse_object_key
from gateway.ledger import Ledger, ObjectChange
from gateway.quota import (
    Admitted,
    Missing,
    Pending,
    QuotaStore,
    Rejected,
    Reservation,
    Snapshot,
    UsageAt,
)
from gateway.quota.reservations import HashId
from gateway.storage.base import ObjectStore, PresignedRequest, Presigner

log = structlog.get_logger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# A request that wrote a pending row gives up (503) rather than hand out a URL later
# than this after it began; so a pending row older than this that holds no
# reservation can never be admitted, and the audit may remove it.
ADMISSION_WINDOW = 30.0
# The audit's margin on top of the window, for clock skew between replicas and Postgres.
AUDIT_AGE = ADMISSION_WINDOW + 30.0
AUDIT_BATCH = 1000
JANITOR_INTERVAL = 0.5
RELEASE_ROUNDS = 3  # a reservation the janitor ends is ended again on the next rounds
# tenants whose quota hash this process found in Redis lately (least recently used
# dropped first); for the others the first statement also reads what a rebuild needs
WARM_TENANTS = 100_000
_encoder = msgspec.json.Encoder()

# (project id, tenant id, upload id) of an upload whose reservation is to be ended
UploadRef = tuple[str, str, str]


def _request_hash(req: UploadRequest) -> bytes:
    return hashlib.sha256(_encoder.encode(req)).digest()


def _refused_by_sql(exc: BaseException) -> bool:
    """Postgres ran the statement and refused it (nothing was written), as opposed to
    a connection lost mid-statement, where the outcome is unknown."""
    return isinstance(exc, asyncpg.PostgresError) and not is_unavailable(exc)


@dataclass(frozen=True, slots=True)
class _Admission:
    """One upload request, planned from its context row: ids, key, limits, usage."""

    project_id: str
    tenant_id: str
    upload_id: str
    file_path: str
    key: str
    declared: int
    max_file: int
    tenant_limit: int | None
    project_limit: int | None
    tenant_usage: UsageAt
    project_usage: UsageAt
    now: datetime
    expires_at: datetime
    reserved_until: datetime  # expires_at + grace: the reservation's deadline
    warm_key: tuple[str, str]  # (API key id, tenant id): this process's cache of warm hashes
    snapshot: Snapshot | None  # the tenant's durable state, where its hash may be missing

    @property
    def deadline_ms(self) -> int:
        return int(self.reserved_until.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class _Ask:
    """One upload request on its way into the database stage."""

    presented: auth.PresentedKey
    req: UploadRequest
    idempotency_key: str | None
    request_hash: bytes | None


@dataclass(frozen=True, slots=True)
class _Recorded:
    """The database stage's answer: the plan, and whether its pending row was written."""

    plan: _Admission
    inserted: bool  # False: the Idempotency-Key was used before
    is_new_tenant: bool
    tenant_exists: bool
    tenant_email: str | None


@dataclass(frozen=True, slots=True)
class _Refused:
    """Over a limit on settled usage alone: a 413 without any write."""

    project_id: str
    scope: str
    used: int
    limit: int
    requested: int


class PostgresReservationSource:
    """The durable truth that Redis reservations are rebuilt from: one statement
    (one consistent snapshot) for any number of hashes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def snapshots(self, hashes: Sequence[HashId]) -> list[Snapshot]:
        rows = await self.db.fetch(
            Q.quota_snapshots, [p for p, _ in hashes], [t for _, t in hashes]
        )
        usage: list[UsageAt] = [UsageAt(0, 0)] * len(hashes)
        pending: list[list[Pending]] = [[] for _ in hashes]
        for r in rows:
            i = r["ord"] - 1
            if r["kind"] == "u":
                usage[i] = UsageAt(r["used"] or 0, r["version"] or 0)
            else:
                pending[i].append(Pending(r["id"], r["tenant_id"], r["used"], r["deadline_ms"]))
        return [Snapshot(u, p) for u, p in zip(usage, pending, strict=True)]


class UploadService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        quota: QuotaStore,
        presigner: Presigner,
        store: ObjectStore,
        ledger: Ledger,
    ) -> None:
        self.settings = settings
        self.db = db
        self.quota = quota
        self.presigner = presigner
        self.store = store
        self.ledger = ledger
        # Stage 1 (Postgres) and stage 2 (Redis) of the upload path, batched; uploads
        # whose quota hashes are missing (cold tenants) are rebuilt and judged in
        # batches of their own, so warm traffic never waits for a rebuild.
        self._record: MicroBatcher[_Ask, _Recorded | _Refused] = MicroBatcher(
            self._record_batch, max_batch=256, undelivered=self._recorded_for_nobody
        )
        # (Each upload gets its own answer: on Redis Cluster a shard that cannot answer
        # fails only the uploads of the projects it holds.)
        self._judge: MicroBatcher[Reservation, Admitted | Rejected | Missing] = MicroBatcher(
            quota.reserve_each, max_batch=256
        )
        self._rejudge: MicroBatcher[tuple[Reservation, Missing], Admitted | Rejected] = (
            MicroBatcher(quota.rebuild_and_reserve_each, max_batch=256)
        )
        self._warm: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._forgetting: MicroBatcher[UploadRef, None] = MicroBatcher(
            self._forget_batch, max_batch=256
        )
        # rows to remove that Postgres could not be reached for: retried until it answers
        self._orphans: dict[str, UploadRef] = {}
        self._unreleased: dict[str, tuple[UploadRef, int]] = {}
        self._janitor: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Task[None]] = set()
        # idempotent requests being judged here: replays of their key wait for them
        self._in_flight: dict[str, asyncio.Event] = {}
        # the audit's place in its walks (per process; any replica may audit)
        self._audit_rows_after: tuple[datetime, str] | None = None
        self._audit_projects: list[str] = []
        self._audit_project_after = ""
        self._audit_zcursor = 0

    async def close(self) -> None:
        await self._record.close()
        await self._judge.close()
        await self._rejudge.close()
        if self._cleanups:
            await asyncio.wait(list(self._cleanups), timeout=self.settings.db_timeout)
        await self._forgetting.close()
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor

    # -- the hot path --------------------------------------------------------------
    #
    # Concurrent requests share round trips (gateway.batching): one statement reads the
    # context of a whole batch and one writes its pending rows (stage 1, Postgres);
    # one script call (one per project on Redis Cluster) then judges the batch's
    # reservations (stage 2, Redis). Each request keeps its own outcome, and every
    # pending row is committed before its reservation is judged (docs/quota.md).

    async def request_upload(
        self,
        presented: auth.PresentedKey | None,
        req: UploadRequest,
        idempotency_key: str | None = None,
    ) -> UploadResponse:
        if presented is None:
            raise Unauthorized()
        started = time.monotonic()
        ask = _Ask(presented, req, idempotency_key, _request_hash(req) if idempotency_key else None)
        for _ in range(2):
            rec = await self._record.submit(ask)
            if isinstance(rec, _Refused):
                await self._reject(
                    rec.project_id,
                    req.tenant_id,
                    rec.scope,
                    rec.used,
                    None,
                    rec.limit,
                    rec.requested,
                )
            if rec.inserted:
                break
            replay = await self._replay(rec.plan, req, idempotency_key)
            if replay is not None:
                return replay
            # the key was released (older than the window, or its request failed)
        else:
            raise UploadInProgress()
        plan = rec.plan
        done = None
        if idempotency_key is not None:
            done = self._in_flight[plan.upload_id] = asyncio.Event()
        try:
            return await self._admit(plan, rec, req, started)
        except BaseException:
            # no URL leaves this request: neither its row nor its reservation may stay
            await self._abandon([(plan.project_id, req.tenant_id, plan.upload_id)])
            raise
        finally:
            if done is not None:
                done.set()
                del self._in_flight[plan.upload_id]

    async def _admit(
        self, plan: _Admission, rec: _Recorded, req: UploadRequest, started: float
    ) -> UploadResponse:
        if req.tenant_email and rec.tenant_exists and rec.tenant_email != req.tenant_email:
            await self.db.execute(
                Q.set_tenant_email, plan.project_id, req.tenant_id, req.tenant_email
            )
        reservation = Reservation(
            project_id=plan.project_id,
            tenant_id=req.tenant_id,
            upload_id=plan.upload_id,
            size=plan.declared,
            tenant_limit=plan.tenant_limit,
            tenant_usage=plan.tenant_usage,
            project_limit=plan.project_limit,
            project_usage=plan.project_usage,
            deadline_ms=plan.deadline_ms,
            snapshot=plan.snapshot,
        )
        verdict = await self._judge.submit(reservation)
        if isinstance(verdict, Missing):  # Redis lost the hash (or never had it): rebuild
            self._warm.pop(plan.warm_key, None)
            verdict = await self._rejudge.submit((reservation, verdict))
        self._warm[plan.warm_key] = None
        self._warm.move_to_end(plan.warm_key)
        if len(self._warm) > WARM_TENANTS:
            self._warm.popitem(last=False)
        if isinstance(verdict, Rejected):
            limit = plan.tenant_limit if verdict.scope == "tenant" else plan.project_limit
            await self._reject(
                plan.project_id,
                req.tenant_id,
                verdict.scope,
                verdict.used,
                verdict.reserved,
                limit,
                plan.declared,
            )
        signed = self._presign(
            req.method,
            plan.key,
            req.content_type,
            req.size_bytes,
            req.checksum_sha256,
            plan.now,
            plan.max_file,
        )
        if time.monotonic() - started > ADMISSION_WINDOW:
            # too late: the audit may already treat this row as a failed request's
            raise DependencyUnavailable(
                "quota", retry_after=self.settings.retry_after, cause="admission window passed"
            )
        return self._response(
            plan.upload_id,
            signed,
            plan.key,
            plan.file_path,
            req.tenant_id,
            rec.is_new_tenant,
            req.size_bytes,
            plan.now,
            plan.expires_at,
        )

    # -- failed requests: remove their rows and reservations ---------------------------

    async def _abandon(self, uploads: Sequence[UploadRef]) -> None:
        """Removes the rows and reservations of uploads that no URL was issued for. Runs
        to its end even when the request is being cancelled."""
        task = asyncio.ensure_future(self._forget_together(uploads))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)

    async def _forget_together(self, uploads: Sequence[UploadRef]) -> None:
        # a burst of refusals shares one statement and one script call
        await asyncio.gather(*(self._forgetting.submit(u) for u in uploads))

    async def _forget_batch(self, uploads: list[UploadRef]) -> list[None]:
        await self._forget(uploads)
        return [None] * len(uploads)

    async def _forget(self, uploads: Sequence[UploadRef]) -> None:
        """Deletes the rows (still pending), then ends their reservations. What could
        not be done now is retried by the janitor until it works; the reservations are
        ended at once where Redis answers, so the room is back now."""
        try:
            await self.db.fetch(Q.forget_uploads, [u for _, _, u in uploads])
        except Exception as exc:  # any failure: retried by the janitor
            log.warning("could not drop failed uploads' rows; retrying", error=repr(exc))
            self._keep_orphans(uploads)
        try:
            await self.quota.release(uploads)
        except Exception as exc:  # retried by the janitor, and the audit's net
            log.warning("could not end failed uploads' reservations; retrying", error=repr(exc))
            self._keep_orphans(uploads, rows=False)

    def _keep_orphans(self, uploads: Iterable[UploadRef], *, rows: bool = True) -> None:
        """Rows to delete and then reservations to end (``rows``), or reservations only,
        retried every ``JANITOR_INTERVAL`` until Postgres and Redis answer."""
        for u in uploads:
            if rows:
                self._orphans[u[2]] = u
            else:
                self._unreleased[u[2]] = (u, RELEASE_ROUNDS)
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.get_running_loop().create_task(
                self._run_janitor(), name="gateway-upload-janitor"
            )

    async def _run_janitor(self) -> None:
        while self._orphans or self._unreleased:
            await asyncio.sleep(JANITOR_INTERVAL)
            rows = list(self._orphans.values())[:AUDIT_BATCH]
            if rows:
                try:
                    await self.db.fetch(Q.forget_uploads, [u for _, _, u in rows])
                except Exception as exc:  # retried until it works
                    log.debug("failed uploads' rows not dropped yet", error=repr(exc))
                else:
                    for u in rows:
                        del self._orphans[u[2]]
                        self._unreleased[u[2]] = (u, RELEASE_ROUNDS)
                    log.info("failed uploads' rows dropped", count=len(rows))
            todo = list(self._unreleased.values())[:AUDIT_BATCH]
            if not todo:
                continue
            try:
                await self.quota.release([u for u, _ in todo])
            except Exception as exc:  # retried until it works
                log.debug("failed uploads' reservations not ended yet", error=repr(exc))
                continue
            # ended; ended again on the next rounds, for a script that a stalled Redis
            # received before it stalled and runs only now (it is then a ghost)
            for u, left in todo:
                if left > 1:
                    self._unreleased[u[2]] = (u, left - 1)
                else:
                    del self._unreleased[u[2]]

    def _recorded_for_nobody(self, rec: _Recorded | _Refused) -> None:
        """A pending row written for a request that went away before it heard of it."""
        if isinstance(rec, _Recorded) and rec.inserted:
            self._keep_orphans([(rec.plan.project_id, rec.plan.tenant_id, rec.plan.upload_id)])

    async def _record_batch(self, asks: list[_Ask]) -> list[_Recorded | _Refused | BaseException]:
        """Stage 1: the context of every request, then the pending rows, on one connection."""
        out: list[_Recorded | _Refused | BaseException] = [Unauthorized() for _ in asks]
        async with self.db.acquire() as conn:
            warm = self._warm
            sent = time.monotonic()
            rows = await conn.fetch(
                Q.upload_context,
                [a.presented.key_id for a in asks],
                [a.req.tenant_id for a in asks],
                [(a.presented.key_id, a.req.tenant_id) not in warm for a in asks],
            )
            planned: list[tuple[int, _Admission, asyncpg.Record]] = []
            for row in rows:
                i = row["ord"] - 1
                ask = asks[i]
                if not auth.matches(row["secret_hash"], ask.presented):
                    continue  # stays Unauthorized
                try:
                    plan = self._plan(row, ask, sent)
                except GatewayError as exc:
                    out[i] = exc
                    continue
                if isinstance(plan, _Refused):
                    out[i] = plan
                else:
                    planned.append((i, plan, row))
            if not planned:
                return out
            failed: set[int] = set()
            try:
                inserted, new_tenants = await self._insert(conn, asks, planned)
            except BaseException as exc:
                if not _refused_by_sql(exc):
                    self._unknown_outcome(planned)
                    raise
                if len(planned) == 1:
                    raise
                # A row the batch statement refused: write them one by one, so the
                # error reaches only the request it belongs to.
                inserted, new_tenants = set(), set()
                for n, one in enumerate(planned):
                    try:
                        ins, new = await self._insert(conn, asks, [one])
                    except BaseException as exc:
                        if not _refused_by_sql(exc):
                            self._unknown_outcome(planned[n:])
                            raise
                        out[one[0]] = exc
                        failed.add(one[0])
                        continue
                    inserted |= ins
                    new_tenants |= new
        for i, plan, ctx in planned:
            if i in failed:
                continue
            pair = f"{plan.project_id}/{asks[i].req.tenant_id}"
            is_new = pair in new_tenants and plan.upload_id in inserted
            if is_new:
                new_tenants.discard(pair)  # the first of the batch is the tenant's first
            out[i] = _Recorded(
                plan=plan,
                inserted=plan.upload_id in inserted,
                is_new_tenant=is_new,
                tenant_exists=ctx["tenant_exists"],
                tenant_email=ctx["tenant_email"],
            )
        return out

    def _unknown_outcome(self, planned: Iterable[tuple[int, _Admission, asyncpg.Record]]) -> None:
        """The insert may or may not have committed (the connection went mid-statement):
        no request will hear of these rows, so they are removed once Postgres answers."""
        self._keep_orphans((p.project_id, p.tenant_id, p.upload_id) for _, p, _ in planned)

    def _plan(self, ctx: asyncpg.Record, ask: _Ask, sent: float) -> _Admission | _Refused:
        """Limits and the checks that need no reservation (413/422 without a write)."""
        req = ask.req
        project_id: str = ctx["project_id"]
        tenant_limit = limits.effective_tenant_limit(
            ctx["limit_set"], ctx["tenant_limit"], ctx["default_tenant_limit_bytes"]
        )
        project_limit: int | None = ctx["project_limit"]
        max_file = limits.max_file_size(self.settings.max_file_size, ctx["max_file_size_bytes"])
        size = req.size_bytes
        if size is None and (tenant_limit is not None or project_limit is not None):
            raise ValidationFailed(
                "size_bytes is required: this tenant has a storage limit",
                extra={"field": "size_bytes"},
            )
        if size is not None and size > max_file:
            raise FileTooLarge(
                f"The file is larger than the per-file maximum of {max_file} bytes",
                extra={"max_file_size_bytes": max_file, "requested_bytes": size},
            )
        declared = size or 0
        t_usage = UsageAt(ctx["tenant_used"] or 0, ctx["tenant_version"] or 0)
        p_usage = UsageAt(ctx["project_used"], ctx["project_version"])
        # Over the limit on settled usage alone: no need to write anything.
        if tenant_limit is not None and t_usage.used + declared > tenant_limit:
            return _Refused(project_id, "tenant", t_usage.used, tenant_limit, declared)
        if project_limit is not None and p_usage.used + declared > project_limit:
            return _Refused(project_id, "project", p_usage.used, project_limit, declared)
        now = datetime.now(UTC).replace(microsecond=0)
        upload_id = new_id("upl")
        file_path = keys.file_path(req.tenant_id, upload_id, req.filename)
        expires_at = now + timedelta(seconds=self.settings.upload_url_ttl)
        warm_key = (ask.presented.key_id, req.tenant_id)
        snapshot = None
        # whether the statement read the tenant's reservations: as asked when it was
        # sent (the cache may have changed while it ran; an empty snapshot of a tenant
        # that has reservations would undercount them)
        if ctx["snapshot_read"]:
            ids = ctx["pending_ids"] or []
            pending = [
                Pending(u, req.tenant_id, size, deadline)
                for u, size, deadline in zip(
                    ids, ctx["pending_sizes"] or [], ctx["pending_deadlines"] or [], strict=True
                )
            ]
            read_ms = int((time.time() - (time.monotonic() - sent)) * 1000)  # when sent
            generation = self.quota.generation_before(project_id, sent)
            snapshot = Snapshot(t_usage, pending, read_ms, generation)
        return _Admission(
            project_id=project_id,
            tenant_id=req.tenant_id,
            upload_id=upload_id,
            file_path=file_path,
            key=keys.object_key(project_id, file_path),
            declared=declared,
            max_file=max_file,
            tenant_limit=tenant_limit,
            project_limit=project_limit,
            tenant_usage=t_usage,
            project_usage=p_usage,
            now=now,
            expires_at=expires_at,
            reserved_until=expires_at + timedelta(seconds=self.settings.reservation_grace),
            warm_key=warm_key,
            snapshot=snapshot,
        )

    @staticmethod
    async def _insert(
        conn: asyncpg.Connection,
        asks: list[_Ask],
        planned: list[tuple[int, _Admission, asyncpg.Record]],
    ) -> tuple[set[str], set[str]]:
        """One statement for the pending rows (and new tenants): (ids inserted, tenants made)."""
        cols: list[list[Any]] = [[] for _ in range(16)]
        for i, plan, ctx in planned:
            req = asks[i].req
            for col, value in zip(
                cols,
                (
                    plan.upload_id,
                    plan.project_id,
                    req.tenant_id,
                    not ctx["tenant_exists"],
                    req.tenant_email,
                    plan.key,
                    req.filename,
                    req.content_type,
                    req.method,
                    req.size_bytes,
                    req.checksum_sha256,
                    asks[i].idempotency_key,
                    asks[i].request_hash,
                    plan.now,
                    plan.expires_at,
                    plan.reserved_until,
                ),
                strict=True,
            ):
                col.append(value)
        row = await conn.fetchrow(Q.insert_uploads, *cols)
        assert row is not None
        return set(row["inserted"]), set(row["new_tenants"])

    async def _reject(
        self,
        project_id: str,
        tenant_id: str,
        scope: str,
        used: int,
        reserved: int | None,
        limit: int | None,
        requested: int,
    ) -> NoReturn:
        if reserved is None:
            reserved = await self._reserved(project_id, tenant_id, scope)
        extra: dict[str, Any] = {
            "storage_limit_bytes": limit,
            "storage_used_bytes": used,
            "storage_reserved_bytes": reserved,
            "requested_bytes": requested,
        }
        if scope == "project":
            raise ProjectQuotaExceeded(extra=extra)
        raise QuotaExceeded(extra=extra)

    async def _reserved(self, project_id: str, tenant_id: str, scope: str) -> int:
        if scope == "project":
            value: int = await self.db.fetchval(Q.reserved_for_project, project_id)
        else:
            value = await self.db.fetchval(Q.reserved_for_tenant, project_id, tenant_id)
        return value

    async def _replay(
        self, plan: _Admission, req: UploadRequest, idem: str | None
    ) -> UploadResponse | None:
        """The earlier upload for this key, or None when the key is free again.

        A URL is replayed only for an upload that was admitted: while the first request
        with the key is still being judged, this waits for its outcome (a refused or
        failed first request leaves the key free, and this request is judged itself)."""
        assert idem is not None
        project_id, max_file, request_hash = plan.project_id, plan.max_file, _request_hash(req)
        give_up = time.monotonic() + ADMISSION_WINDOW
        while True:
            row = await self.db.fetchrow(Q.get_upload_by_idempotency_key, project_id, idem)
            if row is None:  # released, or its request refused or failed
                return None
            if row["created_at"] < datetime.now(UTC) - IDEMPOTENCY_WINDOW:
                await self.db.execute(Q.release_idempotency_key, project_id, idem)
                return None
            if bytes(row["request_hash"] or b"") != request_hash:
                raise IdempotencyConflict()
            if row["status"] != "pending":
                break
            (held,) = await self.quota.holds([(project_id, req.tenant_id, row["id"])])
            old = row["created_at"] < datetime.now(UTC) - timedelta(seconds=AUDIT_AGE)
            if held or (held is None and old):
                break  # admitted, or a hash rebuilt from Postgres will count this row
            if old:  # its request failed and could not remove the row: it had no URL
                await self.db.fetch(Q.forget_unadmitted, [row["id"]], AUDIT_AGE)
                return None
            if time.monotonic() > give_up:
                raise UploadInProgress()
            await self._wait_for_verdict(row["id"])
        created: datetime = row["created_at"]
        size = req.size_bytes
        signed = self._presign(
            req.method,
            row["object_key"],
            req.content_type,
            size,
            req.checksum_sha256,
            created,
            max_file,
        )
        file_path = keys.file_path_of(row["object_key"])
        return self._response(
            row["id"],
            signed,
            row["object_key"],
            file_path,
            req.tenant_id,
            False,
            size,
            created,
            row["expires_at"],
        )

    async def _wait_for_verdict(self, upload_id: str) -> None:
        """Until the request that wrote this upload (in this process, or on another
        replica: polled) has its verdict."""
        done = self._in_flight.get(upload_id)
        if done is None:
            await asyncio.sleep(0.05)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), ADMISSION_WINDOW)

    def _presign(
        self,
        method: str,
        key: str,
        content_type: str,
        size: int | None,
        checksum: str | None,
        signed_at: datetime,
        max_file: int,
    ) -> PresignedRequest:
        ttl = self.settings.upload_url_ttl
        if method == "POST":
            return self.presigner.presign_post(
                key,
                content_type=content_type,
                content_length=size,
                expires_in=ttl,
                signed_at=signed_at,
                max_content_length=max_file,
            )
        return self.presigner.presign_put(
            key,
            content_type=content_type,
            content_length=size,
            checksum_sha256=checksum,
            expires_in=ttl,
            signed_at=signed_at,
        )

    def _response(
        self,
        upload_id: str,
        signed: PresignedRequest,
        key: str,
        file_path: str,
        tenant_id: str,
        is_new_tenant: bool,
        size: int | None,
        created: datetime,
        expires_at: datetime,
    ) -> UploadResponse:
        return UploadResponse(
            upload_id=upload_id,
            presigned_url=signed.url,
            method=signed.method,
            bucket=self.settings.s3_bucket,
            key=key,
            headers=signed.headers,
            fields=signed.fields,
            file_path=file_path,
            tenant_id=tenant_id,
            is_new_tenant=is_new_tenant,
            size_bytes=size,
            expires_in=self.settings.upload_url_ttl,
            expires_at=utc_timestamp(expires_at),
        )

    # -- lifecycle -------------------------------------------------------------------

    async def status(self, project_id: str, upload_id: str) -> UploadStatus:
        row = await self.db.fetchrow(Q.get_upload, upload_id, project_id)
        if row is None:
            raise NotFound("No such upload", extra={"upload_id": upload_id})
        status: str = row["status"]
        if status == "pending" and row["expires_at"] < datetime.now(UTC):
            status = "expired"  # not swept yet, but the URL no longer works
        return UploadStatus(
            upload_id=row["id"],
            status=status,
            tenant_id=row["tenant_id"],
            file_path=keys.file_path_of(row["object_key"]),
            key=row["object_key"],
            filename=row["filename"],
            content_type=row["content_type"],
            method=row["method"],
            declared_size_bytes=row["declared_size"],
            actual_size_bytes=row["actual_size"],
            flagged=row["flagged"],
            created_at=utc_timestamp(row["created_at"]),
            expires_at=utc_timestamp(row["expires_at"]),
            settled_at=utc_timestamp(row["settled_at"]) if row["settled_at"] else None,
        )

    async def complete(self, project_id: str, upload_id: str) -> UploadStatus:
        row = await self.db.fetchrow(Q.get_upload, upload_id, project_id)
        if row is None:
            raise NotFound("No such upload", extra={"upload_id": upload_id})
        info = await self.store.head(row["object_key"])
        if info is None:
            raise ObjectNotUploaded(extra={"upload_id": upload_id})
        await self.ledger.apply(
            [
                ObjectChange(
                    kind=ChangeKind.CREATED,
                    key=row["object_key"],
                    event_time=info.last_modified or datetime.now(UTC),
                    size=info.size,
                    etag=info.etag,
                    version_id=info.version_id,
                )
            ]
        )
        return await self.status(project_id, upload_id)

    async def cancel(self, project_id: str, upload_id: str) -> UploadStatus:
        row = await self.db.fetchrow(Q.finish_upload, upload_id, project_id, "cancelled")
        if row is None:
            current = await self.status(project_id, upload_id)  # 404 if unknown
            if current.status != "pending":
                return current
            raise DependencyUnavailable("postgres", retry_after=1, cause="cancel race")
        await self.quota.release([(project_id, row["tenant_id"], upload_id)])
        return await self.status(project_id, upload_id)

    async def sweep(self, batch: int = 500) -> int:
        """Marks uploads past their reservation's deadline ``expired`` (they stopped
        counting for admission at that moment already) and tidies their Redis fields.
        Safe on many replicas."""
        total = 0
        while True:
            rows = await self.db.fetch(Q.expire_uploads, batch)
            if not rows:
                return total
            await self.quota.release([(r["project_id"], r["tenant_id"], r["id"]) for r in rows])
            total += len(rows)
            log.info("reservations expired", count=len(rows))
            if len(rows) < batch:
                return total

    async def audit(self, budget: int = AUDIT_BATCH) -> tuple[int, int]:
        """Repairs Redis against Postgres, at most ``budget`` items each way per call
        (a walk that goes on where the last call stopped): reservations that no
        pending upload backs are ended, and pending uploads older than the admission
        window that hold no reservation (their requests failed, and a crash kept them
        from removing the row) are removed. Answers (reservations ended, rows removed).
        Safe on many replicas and against concurrent admissions (docs/quota.md)."""
        return await self._audit_reservations(budget), await self._audit_rows(budget)

    async def _audit_reservations(self, budget: int) -> int:
        ended = 0
        steps = 0
        while steps < budget:
            if not self._audit_projects:
                page = await self.db.fetch(Q.project_page, self._audit_project_after, 100)
                if not page:
                    self._audit_project_after = ""  # the walk starts over next time
                    return ended
                self._audit_projects = [r["id"] for r in page]
                self._audit_project_after = self._audit_projects[-1]
            project_id = self._audit_projects[0]
            nxt, members = await self.quota.reservations(
                project_id, self._audit_zcursor, count=min(budget - steps, 500)
            )
            steps += max(len(members), 1)
            if members:
                # a reservation is written only after its row committed: one that Postgres,
                # read after it, does not hold pending will never be pending again
                ids = [u for u, _ in members]
                pending = {r["id"] for r in await self.db.fetch(Q.pending_among, ids)}
                ghosts = [(project_id, t, u) for u, t in members if u not in pending]
                if ghosts:
                    await self.quota.release(ghosts)
                    ended += len(ghosts)
                    log.warning("reservations without a pending upload ended", count=len(ghosts))
            self._audit_zcursor = nxt
            if nxt == 0:
                self._audit_projects.pop(0)
        return ended

    async def _audit_rows(self, budget: int) -> int:
        after = self._audit_rows_after or (datetime.fromtimestamp(0, UTC), "")
        rows = await self.db.fetch(Q.old_pending_page, AUDIT_AGE, after[0], after[1], budget)
        self._audit_rows_after = (
            (rows[-1]["created_at"], rows[-1]["id"]) if len(rows) == budget else None
        )
        if not rows:
            return 0
        held = await self.quota.holds([(r["project_id"], r["tenant_id"], r["id"]) for r in rows])
        # no reservation in a hash that exists (a missing one is rebuilt from these rows)
        stale = [r["id"] for r, h in zip(rows, held, strict=True) if h is False]
        if not stale:
            return 0
        gone = await self.db.fetch(Q.forget_unadmitted, stale, AUDIT_AGE)
        await self.quota.release([(r["project_id"], r["tenant_id"], r["id"]) for r in gone])
        if gone:
            log.warning("pending uploads that were never admitted removed", count=len(gone))
        return len(gone)

    async def run_sweeper(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for job in (self.sweep, self.audit):
                try:
                    await job()
                except DependencyUnavailable as exc:
                    log.warning("sweep skipped", job=job.__name__, dependency=exc.dependency)
                except Exception:
                    log.exception("sweep failed", job=job.__name__)

    # -- files -------------------------------------------------------------------------

    def _key_for(self, project_id: str, file_path: str) -> str:
        if not keys.is_safe_file_path(file_path):
            raise NotFound("No such file", extra={"file_path": file_path})
        return keys.object_key(project_id, file_path)

    async def delete_file(self, project_id: str, file_path: str) -> None:
        key = self._key_for(project_id, file_path)
        parts = parse_object_key(key)
        upload_id = parts.upload_id if parts else None
        known = await self.db.fetchval(Q.file_is_known, key, upload_id or "")
        if not known and await self.store.head(key) is None:
            raise NotFound("No such file", extra={"file_path": file_path})
        await self.store.delete(key)
        await self.ledger.apply(
            [ObjectChange(kind=ChangeKind.REMOVED, key=key, event_time=datetime.now(UTC))],
            cancel_pending=True,
        )

    async def download(self, project_id: str, req: DownloadRequest) -> DownloadResponse:
        key = self._key_for(project_id, req.file_path)
        row = await self.db.fetchrow(Q.stored_file, key)
        size: int | None
        content_type: str | None
        if row is None:
            info = await self.store.head(key)
            if info is None:
                raise NotFound("No such file", extra={"file_path": req.file_path})
            size, content_type = info.size, None
        else:
            size, content_type = row["size_bytes"], row["content_type"]
        filename = keys.filename_of(key)
        url = self.presigner.presign_get(
            key, expires_in=req.expires_in, signed_at=datetime.now(UTC), download_filename=filename
        )
        return DownloadResponse(
            download_url=url,
            filename=filename,
            content_type=content_type,
            size_bytes=size,
            expires_in=req.expires_in,
        )
