"""Janitor: removes the rows and reservations of uploads that no URL was issued for.

Whatever fails after a request wrote its pending row (docs/quota.md, "No reservation
without a request"), the admission path hands the upload here: its row is deleted
(``forget_uploads``: still pending only), then its reservation ended (a no-op where
none was made). What cannot be done at once, because Postgres or Redis does not
answer, is retried every ``JANITOR_INTERVAL`` until it works; the audit
(gateway/uploads/sweeper.py) repairs what a crashed process left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence

import structlog

from gateway.batching import MicroBatcher
from gateway.db import Database, Q
from gateway.quota import QuotaStore

log = structlog.get_logger(__name__)

JANITOR_INTERVAL = 0.5
JANITOR_BATCH = 1000  # rows, and reservations, per round
RELEASE_ROUNDS = 3  # a reservation the janitor ends is ended again on the next rounds

# (project id, tenant id, upload id) of an upload whose reservation is to be ended
UploadRef = tuple[str, str, str]


class Janitor:
    def __init__(self, db: Database, quota: QuotaStore, *, close_timeout: float) -> None:
        self.db = db
        self.quota = quota
        self.close_timeout = close_timeout  # how long close() waits for removals under way
        self._forgetting: MicroBatcher[UploadRef, None] = MicroBatcher(
            self._forget_batch, max_batch=256
        )
        # rows to remove that Postgres could not be reached for: retried until it answers
        self._orphans: dict[str, UploadRef] = {}
        self._unreleased: dict[str, tuple[UploadRef, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """After the admission path closed (which may still hand uploads here)."""
        if self._cleanups:
            await asyncio.wait(list(self._cleanups), timeout=self.close_timeout)
        await self._forgetting.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def abandon(self, uploads: Sequence[UploadRef]) -> None:
        """Removes the rows and reservations of uploads that no URL was issued for. Runs
        to its end even when the request is being cancelled."""
        task = asyncio.ensure_future(self._forget_together(uploads))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)

    def keep_orphans(self, uploads: Iterable[UploadRef], *, rows: bool = True) -> None:
        """Rows to delete and then reservations to end (``rows``), or reservations only,
        retried every ``JANITOR_INTERVAL`` until Postgres and Redis answer."""
        for u in uploads:
            if rows:
                self._orphans[u[2]] = u
            else:
                self._unreleased[u[2]] = (u, RELEASE_ROUNDS)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run_janitor(), name="gateway-upload-janitor"
            )

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
            self.keep_orphans(uploads)
        try:
            await self.quota.release(uploads)
        except Exception as exc:  # retried by the janitor, and the audit's net
            log.warning("could not end failed uploads' reservations; retrying", error=repr(exc))
            self.keep_orphans(uploads, rows=False)

    async def _run_janitor(self) -> None:
        while self._orphans or self._unreleased:
            await asyncio.sleep(JANITOR_INTERVAL)
            rows = list(self._orphans.values())[:JANITOR_BATCH]
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
            todo = list(self._unreleased.values())[:JANITOR_BATCH]
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


__all__ = ["JANITOR_INTERVAL", "Janitor", "UploadRef"]
