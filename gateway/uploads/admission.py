"""AdmissionService: the upload path, validate → record → reserve → presign.

The rule it keeps (docs/quota.md, "No reservation without a request"): a reservation
exists only while a pending upload row backs it, and a row is pending only while its
request can still receive a URL (within ``ADMISSION_WINDOW`` of its start) or has
received one. Whatever fails after a row is written, the row and its reservation are
removed (gateway/uploads/janitor.py; when Postgres cannot be reached, as soon as it
answers again); the audit (gateway/uploads/sweeper.py) repairs what a crashed process
left behind.

Concurrent requests share round trips (gateway.batching): one statement reads the
context of a whole batch and one writes its pending rows (stage 1, Postgres); one
script call (one per project on Redis Cluster) then judges the batch's reservations
(stage 2, Redis). Each request keeps its own outcome, and every pending row is
committed before its reservation is judged (docs/quota.md).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import asyncpg

from gateway import auth, keys, limits
from gateway.api.schemas import UploadRequest, UploadResponse
from gateway.batching import MicroBatcher
from gateway.config import Settings
from gateway.db import Database, Q, is_unavailable
from gateway.errors import (
    DependencyUnavailable,
    FileTooLarge,
    GatewayError,
    ProjectQuotaExceeded,
    QuotaExceeded,
    Unauthorized,
    UploadInProgress,
    ValidationFailed,
)
from gateway.ids import new_id
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
from gateway.uploads.idempotency import Idempotency, request_hash
from gateway.uploads.janitor import Janitor
from gateway.uploads.urls import UploadUrls
from gateway.uploads.windows import ADMISSION_WINDOW

# tenants whose quota hash this process found in Redis lately (least recently used
# dropped first); for the others the first statement also reads what a rebuild needs
WARM_TENANTS = 100_000


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


class AdmissionService:
    """``request_upload``: a presigned URL for an upload that fits, or the error that
    says why not. Replays of an Idempotency-Key go to ``idempotency``; what a failed
    request leaves behind goes to ``janitor``."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        quota: QuotaStore,
        urls: UploadUrls,
        idempotency: Idempotency,
        janitor: Janitor,
    ) -> None:
        self.settings = settings
        self.db = db
        self.quota = quota
        self.urls = urls
        self.idempotency = idempotency
        self.janitor = janitor  # closed after this service (it may still get rows)
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

    async def close(self) -> None:
        await self._record.close()
        await self._judge.close()
        await self._rejudge.close()

    async def request_upload(
        self,
        presented: auth.PresentedKey | None,
        req: UploadRequest,
        idempotency_key: str | None = None,
    ) -> UploadResponse:
        if presented is None:
            raise Unauthorized()
        started = time.monotonic()
        ask = _Ask(presented, req, idempotency_key, request_hash(req) if idempotency_key else None)
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
            replay = await self.idempotency.replay(
                rec.plan.project_id, rec.plan.max_file, req, idempotency_key
            )
            if replay is not None:
                return replay
            # the key was released (older than the window, or its request failed)
        else:
            raise UploadInProgress()
        plan = rec.plan
        if idempotency_key is not None:
            self.idempotency.judging(plan.upload_id)
        try:
            return await self._admit(plan, rec, req, started)
        except BaseException:
            # no URL leaves this request: neither its row nor its reservation may stay
            await self.janitor.abandon([(plan.project_id, req.tenant_id, plan.upload_id)])
            raise
        finally:
            if idempotency_key is not None:  # replays waiting for this verdict go on
                self.idempotency.judged(plan.upload_id)

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
        signed = self.urls.presign(
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
        return self.urls.response(
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

    def _recorded_for_nobody(self, rec: _Recorded | _Refused) -> None:
        """A pending row written for a request that went away before it heard of it."""
        if isinstance(rec, _Recorded) and rec.inserted:
            self.janitor.keep_orphans(
                [(rec.plan.project_id, rec.plan.tenant_id, rec.plan.upload_id)]
            )

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
        self.janitor.keep_orphans((p.project_id, p.tenant_id, p.upload_id) for _, p, _ in planned)

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


__all__ = ["WARM_TENANTS", "AdmissionService"]
