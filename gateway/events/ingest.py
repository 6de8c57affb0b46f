"""From notification bodies to ledger changes, applied in shared transactions.

Both paths (webhook, SQS) parse with ``gateway.storage.s3events`` and settle through
``LedgerBatcher``: concurrent deliveries are coalesced into one ledger transaction,
and each caller learns the outcome of the transaction that carried its records (so
a webhook answers 2xx only once its events are committed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from gateway.batching import MicroBatcher
from gateway.ledger import Ledger, ObjectChange, Settlement
from gateway.storage.s3events import (
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
                kind=r.kind,
                key=r.key,
                event_time=r.event_time,
                size=r.size,
                etag=r.etag,
                version_id=r.version_id,
                sequencer=sequencer_order_key(r.sequencer) if r.sequencer else None,
            )
        )
    return changes, other


class LedgerBatcher:
    """Coalesces concurrent ``submit`` calls into shared ledger transactions.

    Each caller learns the outcome of the transaction that carried its changes.
    One transaction runs at a time: a second one in flight measured no faster
    (bench_events: concurrent callers all wait in the batch in flight, so no second
    batch forms) and would contend on the same project row.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        max_changes: int = 500,
        metrics: Any = None,
    ) -> None:
        self.ledger = ledger
        self.metrics = metrics  # gateway_ledger_batch_changes: transactions and changes
        self._batcher: MicroBatcher[list[ObjectChange], Settlement] = MicroBatcher(
            self._settle, max_batch=max_changes, weight=len
        )

    async def submit(self, changes: list[ObjectChange]) -> Settlement:
        if not changes:
            return Settlement()
        return await self._batcher.submit(changes)

    async def stop(self) -> None:
        await self._batcher.close()

    async def _settle(self, batch: list[list[ObjectChange]]) -> list[Settlement]:
        changes = [c for item in batch for c in item]
        result = await self.ledger.settle(changes)
        if self.metrics is not None:  # once per batch: its callers share the result
            self.metrics.ledger_batches.observe(len(changes))
            if result.ignored:
                self.metrics.events.labels("outside_project").inc(result.ignored)
        return [result] * len(batch)


@dataclass
class IngestResult:
    records: int
    applied: int  # committed (duplicates and stale records apply as no-ops)
    ignored: int


class EventIngestor:
    def __init__(
        self,
        batcher: LedgerBatcher,
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
        return await self.ingest_changes(changes, ignored=parsed.ignored + other)

    async def ingest_changes(
        self, changes: list[ObjectChange], *, ignored: int = 0
    ) -> IngestResult:
        if changes:
            # The batch result covers everyone's changes; report ours by count only.
            await self.batcher.submit(changes)
        out = IngestResult(records=len(changes) + ignored, applied=len(changes), ignored=ignored)
        if self.metrics is not None:
            self.metrics.events.labels("received").inc(len(changes))
            if ignored:
                self.metrics.events.labels("ignored").inc(ignored)
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
