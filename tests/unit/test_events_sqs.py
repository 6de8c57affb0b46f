"""gateway.events.sqs: the SqsPoller's receive → ingest → delete cycle, and how it
stops (a received batch is finished and deleted; a dead receiver takes the others)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.events.ingest import EventIngestor
from gateway.ledger import ObjectChange, Settlement


class GatedBatcher:
    """Holds every batch until ``release`` is set, as a slow transaction would."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.applied = 0

    async def submit(self, changes: list[ObjectChange]) -> Settlement:
        self.entered.set()
        await self.release.wait()
        self.applied += len(changes)
        return Settlement(applied=len(changes))


class FakeSqs:
    def __init__(self, body: str) -> None:
        self.body: str | None = body
        self.deleted: list[dict[str, str]] = []

    async def receive_message(self, **_: Any) -> dict[str, Any]:
        if self.body is None:
            await asyncio.sleep(3600)  # a long poll with nothing to receive
        body, self.body = self.body, None
        return {"Messages": [{"MessageId": "m1", "ReceiptHandle": "rh1", "Body": body}]}

    async def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.deleted.extend(kwargs["Entries"])
        return {}


async def test_a_stop_lets_a_received_batch_finish_and_be_deleted() -> None:
    import json

    from gateway.events.sqs import SqsPoller

    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "eventTime": "2026-12-01T10:00:00.000Z",
        "s3": {"bucket": {"name": "uploads"}, "object": {"key": "prj_a/t/k", "size": 5}},
    }
    batcher = GatedBatcher()
    ingestor = EventIngestor(batcher, bucket="uploads")  # type: ignore[arg-type]
    sqs = FakeSqs(json.dumps({"Records": [record]}))
    poller = SqsPoller(ingestor, sqs, "queue-url", receivers=2)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    await asyncio.wait_for(batcher.entered.wait(), 5)
    stop.set()  # while the batch is being applied, and the other receiver long-polls
    await asyncio.sleep(0.05)
    batcher.release.set()
    await asyncio.wait_for(task, 5)
    assert batcher.applied == 1
    assert sqs.deleted == [{"Id": "0", "ReceiptHandle": "rh1"}]
    assert poller.processed == 1


class SlowDeleteSqs:
    """Hands out one message per receive; each delete waits until released."""

    def __init__(self, bodies: list[str]) -> None:
        self.bodies = list(bodies)
        self.receives = 0
        self.deleted: list[str] = []
        self.deleting = asyncio.Event()
        self.release = asyncio.Event()

    async def receive_message(self, **_: Any) -> dict[str, Any]:
        self.receives += 1
        if not self.bodies:
            await asyncio.sleep(3600)  # a long poll with nothing to receive
        n = len(self.deleted) + self.receives
        return {
            "Messages": [
                {"MessageId": f"m{n}", "ReceiptHandle": f"rh{n}", "Body": self.bodies.pop(0)}
            ]
        }

    async def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.deleting.set()
        await self.release.wait()
        self.deleted.extend(e["ReceiptHandle"] for e in kwargs["Entries"])
        return {}


class CountingBatcher:
    def __init__(self) -> None:
        self.applied = 0

    async def submit(self, changes: list[ObjectChange]) -> Settlement:
        self.applied += len(changes)
        return Settlement(applied=len(changes))


def _body(key: str) -> str:
    import json

    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "eventTime": "2026-12-01T10:00:00.000Z",
        "s3": {"bucket": {"name": "uploads"}, "object": {"key": key, "size": 5}},
    }
    return json.dumps({"Records": [record]})


def _run_poller(sqs: Any) -> tuple[CountingBatcher, Any, asyncio.Event, asyncio.Task[None]]:
    from gateway.events.sqs import SqsPoller

    batcher = CountingBatcher()
    ingestor = EventIngestor(batcher, bucket="uploads")  # type: ignore[arg-type]
    poller = SqsPoller(ingestor, sqs, "queue-url", receivers=1)
    stop = asyncio.Event()
    return batcher, poller, stop, asyncio.create_task(poller.run(stop))


async def test_the_next_receive_overlaps_the_delete_and_a_stop_waits_for_it() -> None:
    sqs = SlowDeleteSqs([_body("prj_a/t/k1"), _body("prj_a/t/k2")])
    batcher, poller, stop, task = _run_poller(sqs)
    await asyncio.wait_for(sqs.deleting.wait(), 5)
    for _ in range(100):  # the second message is received and applied meanwhile
        if batcher.applied == 2:
            break
        await asyncio.sleep(0.01)
    assert batcher.applied == 2
    assert sqs.deleted == []  # the first delete is still in flight
    stop.set()
    await asyncio.sleep(0.05)
    assert not task.done()  # the stop waits for the deletes of what was committed
    sqs.release.set()
    await asyncio.wait_for(task, 5)
    assert sqs.deleted == ["rh1", "rh2"]
    assert poller.processed == 2


async def test_a_failed_delete_is_logged_and_the_receiver_goes_on() -> None:
    class FailingDeleteSqs(SlowDeleteSqs):
        async def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
            raise ConnectionError("sqs is down")

    sqs = FailingDeleteSqs([_body("prj_a/t/k1"), _body("prj_a/t/k2")])
    batcher, poller, stop, task = _run_poller(sqs)
    for _ in range(100):
        if poller.processed == 2:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert batcher.applied == 2  # both committed; redelivery would apply as no-ops
    assert poller.processed == 2


async def test_a_receiver_that_dies_takes_the_others_with_it() -> None:
    """The poller's caller (the Runtime) restarts the poller whole: the restarted one
    never runs beside receivers of the old one."""
    from gateway.events.sqs import SqsPoller

    cancelled: list[int] = []

    class OneDies(SqsPoller):
        async def _receive_loop(self, stop: asyncio.Event, index: int = 0) -> None:
            if index == 1:
                await asyncio.sleep(0.01)
                raise RuntimeError("receiver 1 died")
            try:
                await stop.wait()
            except asyncio.CancelledError:
                cancelled.append(index)
                raise

    ingestor = EventIngestor(CountingBatcher(), bucket="uploads")  # type: ignore[arg-type]
    poller = OneDies(ingestor, object(), "queue-url", receivers=3)
    with pytest.raises(ExceptionGroup) as raised:
        await asyncio.wait_for(poller.run(asyncio.Event()), 5)
    assert [str(e) for e in raised.value.exceptions] == ["receiver 1 died"]
    assert sorted(cancelled) == [0, 2]
