"""UploadService: validate → record → reserve → presign; settle; cancel; expire."""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import asyncpg
import msgspec
import structlog

from gateway import auth
from gateway.batching import MicroBatcher
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
    ValidationFailed,
)
from gateway.ids import new_id
from gateway.ledger import ChangeKind, Ledger, ObjectChange, parse_object_key
from gateway.models import (
    DownloadRequest,
    DownloadResponse,
    UploadRequest,
    UploadResponse,
    UploadStatus,
)
from gateway.quota import Admitted, Missing, QuotaStore, Rejected, Reservation, Snapshot, UsageAt
from gateway.storage.base import ObjectStore, PresignedRequest, Presigner

log = structlog.get_logger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=24)
_encoder = msgspec.json.Encoder()


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _request_hash(req: UploadRequest) -> bytes:
    return hashlib.sha256(_encoder.encode(req)).digest()


@dataclass(frozen=True, slots=True)
class _Plan:
    project_id: str
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

    plan: _Plan
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
    """The durable truth that Redis reservations are rebuilt from."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def tenant_snapshot(self, project_id: str, tenant_id: str) -> Snapshot:
        async with self.db.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            u = await conn.fetchrow(Q.usage_versions, project_id, tenant_id)
            pending = await conn.fetch(Q.pending_for_tenant, project_id, tenant_id)
        used, ver = (u["tenant_used"], u["tenant_version"]) if u and u["tenant_version"] else (0, 0)
        return Snapshot(UsageAt(used, ver), [(r["id"], r["declared_size"]) for r in pending])

    async def project_snapshot(self, project_id: str) -> Snapshot:
        async with self.db.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            u = await conn.fetchrow(Q.usage_versions, project_id, "")
            pending = await conn.fetch(Q.pending_for_project, project_id)
        used, ver = (u["project_used"], u["project_version"]) if u else (0, 0)
        return Snapshot(UsageAt(used, ver), [(r["id"], r["declared_size"]) for r in pending])


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
        # Stage 1 (Postgres) and stage 2 (Redis) of the upload path, batched.
        self._record: MicroBatcher[_Ask, _Recorded | _Refused] = MicroBatcher(
            self._record_batch, max_batch=256
        )
        self._judge: MicroBatcher[Reservation, Admitted | Rejected | Missing] = MicroBatcher(
            quota.reserve_many, max_batch=256
        )

    async def close(self) -> None:
        await self._record.close()
        await self._judge.close()

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
            # the key was released (older than the window) in between: record anew
        else:
            raise DependencyUnavailable("postgres", retry_after=1, cause="idempotency race")
        plan = rec.plan
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
        )
        try:
            verdict = await self._judge.submit(reservation)
            if isinstance(verdict, Missing):  # Redis lost the hash: rebuild, judge again
                verdict = await self.quota.reserve(reservation)
        except DependencyUnavailable:
            await self._forget_upload(plan.upload_id)
            raise
        if isinstance(verdict, Rejected):
            await self._forget_upload(plan.upload_id)
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

    async def _record_batch(self, asks: list[_Ask]) -> list[_Recorded | _Refused | BaseException]:
        """Stage 1: the context of every request, then the pending rows, on one connection."""
        out: list[_Recorded | _Refused | BaseException] = [Unauthorized() for _ in asks]
        async with self.db.acquire() as conn:
            rows = await conn.fetch(
                Q.upload_context,
                [a.presented.key_id for a in asks],
                [a.req.tenant_id for a in asks],
            )
            planned: list[tuple[int, _Plan, asyncpg.Record]] = []
            for row in rows:
                i = row["ord"] - 1
                ask = asks[i]
                if not auth.matches(row["secret_hash"], ask.presented):
                    continue  # stays Unauthorized
                try:
                    plan = self._plan(row, ask.req)
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
            except asyncpg.PostgresError as exc:
                if len(planned) == 1 or is_unavailable(exc):
                    raise
                # A row the batch statement refused: write them one by one, so the
                # error reaches only the request it belongs to.
                inserted, new_tenants = set(), set()
                for one in planned:
                    try:
                        ins, new = await self._insert(conn, asks, [one])
                    except asyncpg.PostgresError as exc:
                        if is_unavailable(exc):
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

    def _plan(self, ctx: asyncpg.Record, req: UploadRequest) -> _Plan | _Refused:
        """Limits and the checks that need no reservation (413/422 without a write)."""
        project_id: str = ctx["project_id"]
        tenant_limit: int | None = (
            ctx["tenant_limit"] if ctx["limit_set"] else ctx["default_tenant_limit_bytes"]
        )
        project_limit: int | None = ctx["project_limit"]
        max_file = self.settings.max_file_size
        if ctx["max_file_size_bytes"] is not None:
            max_file = min(max_file, ctx["max_file_size_bytes"])
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
        file_path = f"{req.tenant_id}/{upload_id}/{req.filename}"
        return _Plan(
            project_id=project_id,
            upload_id=upload_id,
            file_path=file_path,
            key=f"{project_id}/{file_path}",
            declared=declared,
            max_file=max_file,
            tenant_limit=tenant_limit,
            project_limit=project_limit,
            tenant_usage=t_usage,
            project_usage=p_usage,
            now=now,
            expires_at=now + timedelta(seconds=self.settings.upload_url_ttl),
        )

    @staticmethod
    async def _insert(
        conn: asyncpg.Connection,
        asks: list[_Ask],
        planned: list[tuple[int, _Plan, asyncpg.Record]],
    ) -> tuple[set[str], set[str]]:
        """One statement for the pending rows (and new tenants): (ids inserted, tenants made)."""
        cols: list[list[Any]] = [[] for _ in range(15)]
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
                ),
                strict=True,
            ):
                col.append(value)
        row = await conn.fetchrow(Q.insert_uploads, *cols)
        assert row is not None
        return set(row["inserted"]), set(row["new_tenants"])

    async def _forget_upload(self, upload_id: str) -> None:
        try:
            await self.db.execute(Q.delete_upload, upload_id)
        except DependencyUnavailable:
            log.warning("could not drop rejected upload row; the sweeper will", upload_id=upload_id)

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
        self, plan: _Plan, req: UploadRequest, idem: str | None
    ) -> UploadResponse | None:
        """The earlier upload for this key, or None when the key is free again."""
        assert idem is not None
        project_id, max_file, request_hash = plan.project_id, plan.max_file, _request_hash(req)
        row = await self.db.fetchrow(Q.get_upload_by_idempotency_key, project_id, idem)
        if row is None:  # released between our insert and this read
            return None
        if row["created_at"] < datetime.now(UTC) - IDEMPOTENCY_WINDOW:
            await self.db.execute(Q.release_idempotency_key, project_id, idem)
            return None
        if bytes(row["request_hash"] or b"") != request_hash:
            raise IdempotencyConflict()
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
        file_path = row["object_key"].split("/", 1)[1]
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
            expires_at=_iso(expires_at),
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
            file_path=row["object_key"].split("/", 1)[1],
            key=row["object_key"],
            filename=row["filename"],
            content_type=row["content_type"],
            method=row["method"],
            declared_size_bytes=row["declared_size"],
            actual_size_bytes=row["actual_size"],
            flagged=row["flagged"],
            created_at=_iso(row["created_at"]),
            expires_at=_iso(row["expires_at"]),
            settled_at=_iso(row["settled_at"]) if row["settled_at"] else None,
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
        await self.quota.apply(
            project_id=project_id, tenant_id=row["tenant_id"], released=[upload_id]
        )
        return await self.status(project_id, upload_id)

    async def sweep(self, batch: int = 500) -> int:
        """Frees reservations not settled by expires_at + grace. Safe on many replicas."""
        total = 0
        while True:
            rows = await self.db.fetch(
                Q.expire_uploads, float(self.settings.reservation_grace), batch
            )
            if not rows:
                return total
            groups: dict[tuple[str, str], list[str]] = defaultdict(list)
            for r in rows:
                groups[(r["project_id"], r["tenant_id"])].append(r["id"])
            for (project_id, tenant_id), ids in groups.items():
                await self.quota.apply(project_id=project_id, tenant_id=tenant_id, released=ids)
            total += len(rows)
            log.info("reservations expired", count=len(rows))
            if len(rows) < batch:
                return total

    async def run_sweeper(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except DependencyUnavailable as exc:
                log.warning("sweep skipped", dependency=exc.dependency)
            except Exception:
                log.exception("sweep failed")

    # -- files -------------------------------------------------------------------------

    def _key_for(self, project_id: str, file_path: str) -> str:
        if file_path.startswith("/") or ".." in file_path.split("/"):
            raise NotFound("No such file", extra={"file_path": file_path})
        return f"{project_id}/{file_path}"

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
        filename = key.rsplit("/", 1)[-1]
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
