"""Sweeper: expiry and the audit of Redis against Postgres, and the loop that runs
them every ``GATEWAY_SWEEP_INTERVAL`` (docs/quota.md, "Expiry on time", "The audit").

Room comes back at a reservation's deadline without it (``reserve.lua`` ends expired
reservations itself); the sweep only marks those rows ``expired`` and tidies their
Redis fields. The audit ends reservations that no pending upload backs, and removes
pending rows older than ``AUDIT_AGE`` that hold no reservation (their requests failed,
and a crash kept them from removing the row). Safe on many replicas.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog

from gateway.db import Database, Q
from gateway.errors import DependencyUnavailable
from gateway.quota import QuotaStore
from gateway.uploads.windows import AUDIT_AGE
from gateway.webhooks.outbox import Outbox

log = structlog.get_logger(__name__)

AUDIT_BATCH = 1000


class Sweeper:
    # set by the Runtime: expiries are told in their transaction
    outbox: Outbox | None = None

    def __init__(self, db: Database, quota: QuotaStore) -> None:
        self.db = db
        self.quota = quota
        # the audit's place in its walks (per process; any replica may audit)
        self._audit_rows_after: tuple[datetime, str] | None = None
        self._audit_projects: list[str] = []
        self._audit_project_after = ""
        self._audit_zcursor = 0

    async def sweep(self, batch: int = 500) -> int:
        """Marks uploads past their reservation's deadline ``expired`` (they stopped
        counting for admission at that moment already) and tidies their Redis fields.
        Safe on many replicas."""
        total = 0
        while True:
            async with self.db.transaction() as conn:
                rows = await conn.fetch(Q.expire_uploads, batch)
                if rows and self.outbox is not None:  # told in the same transaction
                    await self.outbox.record(conn, settled=[r["id"] for r in rows])
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

    async def run(self, interval: float) -> None:
        """Sweep, then audit, every ``interval`` seconds; a failure is logged and the
        next round goes on."""
        while True:
            await asyncio.sleep(interval)
            for job in (self.sweep, self.audit):
                try:
                    await job()
                except DependencyUnavailable as exc:
                    log.warning("sweep skipped", job=job.__name__, dependency=exc.dependency)
                except Exception:
                    log.exception("sweep failed", job=job.__name__)


__all__ = ["AUDIT_BATCH", "Sweeper"]
