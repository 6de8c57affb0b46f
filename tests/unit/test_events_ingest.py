"""gateway.events.ingest: the LedgerBatcher's concurrent submissions share one ledger
call, and the batch-wide metrics are counted once per batch (its callers share one
result)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.changes import ChangeKind
from gateway.events.ingest import EventIngestor, LedgerBatcher
from gateway.keys import parse_object_key
from gateway.ledger import ObjectChange, Settlement
from gateway.observability import Metrics

T0 = datetime(2026, 12, 1, tzinfo=UTC)


class FakeLedger:
    """Counts keys outside any project as ignored, as the real ledger does."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def settle(self, changes: Sequence[ObjectChange], **_: Any) -> Settlement:
        self.calls.append(len(changes))
        outside = sum(1 for c in changes if parse_object_key(c.key) is None)
        return Settlement(applied=len(changes) - outside, ignored=outside)


def change(key: str) -> ObjectChange:
    return ObjectChange(kind=ChangeKind.CREATED, key=key, event_time=T0, size=1)


async def test_one_batch_counts_its_metrics_once() -> None:
    metrics, ledger = Metrics(), FakeLedger()
    batcher = LedgerBatcher(ledger, metrics=metrics)  # type: ignore[arg-type]
    ingestor = EventIngestor(batcher, bucket="uploads", metrics=metrics)
    bodies = [[change("prj_a/t/upl_1/x"), change("outside/key")] for _ in range(5)]
    results = await asyncio.gather(*(ingestor.ingest_changes(b) for b in bodies))
    assert ledger.calls == [10]  # one transaction for the five deliveries
    assert [r.applied for r in results] == [2] * 5
    sample = metrics.registry.get_sample_value
    assert sample("gateway_s3_events_total", {"result": "outside_project"}) == 5
    assert sample("gateway_s3_events_total", {"result": "received"}) == 10
    assert sample("gateway_ledger_batch_changes_count", {}) == 1
    assert sample("gateway_ledger_batch_changes_sum", {}) == 10
    await batcher.stop()
