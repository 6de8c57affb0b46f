"""From notification bodies to ledger changes, applied in shared transactions.

Both paths (webhook, SQS) parse with ``gateway.storage.s3events`` and apply through
``ApplyBatcher``: concurrent deliveries are coalesced into one ledger transaction,
and each caller learns the outcome of the transaction that carried its records (so
a webhook answers 2xx only once its events are committed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from gateway.ledger import ApplyResult, ChangeKind, Ledger, ObjectChange
from gateway.storage.s3events import (
    EventKind,
    ParsedBody,
    S3Record,
    SnsConfirmation,
    parse_notification,
    sequencer_order_key,
)

log = structlog.get_logger(__name__)


def to_changes(records: Sequence[S3Record], bucket: str) -> tuple[list[ObjectChange], int]:
    """Changes for our bucket; the count of records about other buckets."""
    changes: list[ObjectChange] = []
    other = 0
    for r in records:
        if r.bucket != bucket:
            other += 1
            continue
        changes.append(
            ObjectChange(
                kind=ChangeKind.CREATED if r.kind is EventKind.CREATED else ChangeKind.REMOVED,
                key=r.key,
                event_time=r.event_time,
                size=r.size,
                etag=r.etag,
                version_id=r.version_id,
                sequencer=sequencer_order_key(r.sequencer) if r.sequencer else None,
            )
        )
    return changes, other


@dataclass
class _Pending:
    changes: list[ObjectChange]
    future: asyncio.Future[ApplyResult]


@dataclass
class BatchStats:
    batches: int = 0
    changes: int = 0


class ApplyBatcher:
    """Coalesces concurrent ``submit`` calls into one ledger transaction."""

    def __init__(self, ledger: Ledger, *, max_changes: int = 500) -> None:
        self.ledger = ledger
        self.max_changes = max_changes
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(RuntimeError("shutting down"))
        self._queue.clear()

    async def submit(self, changes: list[ObjectChange]) -> ApplyResult:
        if not changes:
            return ApplyResult()
        if self._task is None:  # no loop running (CLI, tests): apply directly
            return await self.ledger.apply(changes)
        fut: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(changes, fut))
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch: list[_Pending] = []
                count = 0
                while self._queue and (
                    not batch or count + len(self._queue[0].changes) <= self.max_changes
                ):
                    item = self._queue.pop(0)
                    batch.append(item)
                    count += len(item.changes)
                await self._apply(batch)

    async def _apply(self, batch: list[_Pending]) -> None:
        changes = [c for p in batch for c in p.changes]
        try:
            result = await self.ledger.apply(changes)
        except BaseException as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.stats.batches += 1
        self.stats.changes += len(changes)
        for p in batch:
            if not p.future.done():
                p.future.set_result(result)


@dataclass
class IngestResult:
    records: int
    applied: int  # committed (duplicates and stale records apply as no-ops)
    ignored: int


class EventIngestor:
    def __init__(
        self,
        batcher: ApplyBatcher,
        *,
        bucket: str,
        metrics: Any = None,
        sns_auto_confirm: bool = False,
    ) -> None:
        self.batcher = batcher
        self.bucket = bucket
        self.metrics = metrics
        self.sns_auto_confirm = sns_auto_confirm

    def parse(self, body: bytes | str) -> tuple[ParsedBody, list[ObjectChange], int]:
        parsed = parse_notification(body)  # raises S3EventError on bad input
        changes, other = to_changes(parsed.records, self.bucket)
        return parsed, changes, other

    async def ingest(self, body: bytes | str) -> IngestResult:
        parsed, changes, other = self.parse(body)
        for confirmation in parsed.confirmations:
            await self.confirm(confirmation)
        return await self.apply(changes, ignored=parsed.ignored + other)

    async def apply(self, changes: list[ObjectChange], *, ignored: int = 0) -> IngestResult:
        result = await self.batcher.submit(changes) if changes else ApplyResult()
        # The batch result covers everyone's changes; report ours by count only.
        out = IngestResult(records=len(changes) + ignored, applied=len(changes), ignored=ignored)
        if self.metrics is not None:
            self.metrics.events.labels("received").inc(len(changes))
            if ignored:
                self.metrics.events.labels("ignored").inc(ignored)
            if result.ignored:
                self.metrics.events.labels("outside_project").inc(result.ignored)
        return out

    async def confirm(self, c: SnsConfirmation) -> None:
        if c.type != "SubscriptionConfirmation":
            log.info("sns message ignored", type=c.type, topic=c.topic_arn)
            return
        if not self.sns_auto_confirm:
            log.warning(
                "sns subscription not confirmed (GATEWAY_SNS_AUTO_CONFIRM is off)",
                topic=c.topic_arn,
                subscribe_url=c.subscribe_url,
            )
            return
        host = urlsplit(c.subscribe_url).hostname or ""
        if urlsplit(c.subscribe_url).scheme != "https" or not (
            host.startswith("sns.") and host.endswith(".amazonaws.com")
        ):
            log.warning("sns subscribe url refused", url=c.subscribe_url)
            return
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(c.subscribe_url)
        log.info("sns subscription confirmed", topic=c.topic_arn, status=r.status_code)
