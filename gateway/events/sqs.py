"""The SQS worker: S3 → SQS (or S3 → SNS → SQS) notifications into the ledger.

Long polling, batches of up to 10 messages, messages deleted only after the commit
(the delete overlapping the next receive), exponential back-off on errors, a clean
stop when its ``stop`` event is set. Several receive loops run at once
(``receivers``); the LedgerBatcher merges what they receive into shared ledger
transactions, so throughput grows with them while each message is still deleted
only once its own changes are committed. It runs as a job of gateway.runtime.Runtime
(``gateway events poll-sqs``, or ``gateway serve`` with GATEWAY_SQS_QUEUE_URL).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aioboto3
import structlog
from botocore.config import Config

from gateway.config import Settings
from gateway.events.ingest import EventIngestor
from gateway.ledger import ObjectChange
from gateway.storage.s3events import S3EventError

log = structlog.get_logger(__name__)


class SqsPoller:
    def __init__(
        self,
        ingestor: EventIngestor,
        client: Any,
        queue_url: str,
        *,
        wait_seconds: int = 20,
        max_backoff: float = 30.0,
        receivers: int = 1,
    ) -> None:
        self.ingestor = ingestor
        self.client = client
        self.queue_url = queue_url
        self.wait_seconds = wait_seconds
        self.max_backoff = max_backoff
        self.receivers = receivers
        self.processed = 0

    async def poll_once(self) -> int:
        """One receive → ingest → delete cycle. Returns the number of messages handled."""
        messages = await self._receive()
        if not messages:
            return 0
        await self._delete(await self._ingest(messages), len(messages))
        return len(messages)

    async def _receive(self) -> list[dict[str, Any]]:
        resp = await self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds,
        )
        messages: list[dict[str, Any]] = resp.get("Messages", [])
        return messages

    async def _ingest(self, messages: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Parses and commits the messages' changes; answers the delete entries. A
        failure raises, and the messages are left to be redelivered."""
        changes: list[ObjectChange] = []
        ignored = 0
        done: list[dict[str, str]] = []
        for m in messages:
            try:
                parsed, ch, other = self.ingestor.parse(m["Body"])
            except S3EventError as exc:
                # It can never be applied; leaving it would redeliver it forever.
                log.error(
                    "malformed sqs message dropped", message_id=m["MessageId"], error=str(exc)
                )
            else:
                for c in parsed.confirmations:
                    await self.ingestor.confirm(c)
                changes.extend(ch)
                ignored += parsed.ignored + other
            done.append({"Id": str(len(done)), "ReceiptHandle": m["ReceiptHandle"]})
        # raises → not deleted → redelivered
        await self.ingestor.ingest_changes(changes, ignored=ignored)
        return done

    async def _delete(self, entries: list[dict[str, str]], count: int) -> None:
        """Deletes committed messages. A message whose delete fails is redelivered
        and applied again, which changes nothing (the ledger is idempotent)."""
        try:
            resp = await self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            log.warning(
                "sqs delete failed; the messages will be redelivered (harmless)",
                error=repr(exc),
                messages=len(entries),
            )
        else:
            for failed in resp.get("Failed", []):
                log.warning(
                    "sqs delete failed; the message will be redelivered (harmless)",
                    error=failed.get("Message"),
                )
        self.processed += count

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "sqs poller started",
            queue_url=self.queue_url,
            receivers=self.receivers,
            loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
        )
        # A receiver that dies takes the others down with it (the caller restarts the
        # whole poller): never fewer, and after a restart never more, than ``receivers``.
        async with asyncio.TaskGroup() as group:
            for i in range(self.receivers):
                group.create_task(self._receive_loop(stop, i), name=f"sqs-receiver-{i}")
        log.info("sqs poller stopped", processed=self.processed)

    async def _receive_loop(self, stop: asyncio.Event, index: int = 0) -> None:
        """Receive → apply → delete, with the delete of one batch overlapping the
        receive of the next: a receiver waits one SQS round trip per batch, not two.
        At most one delete is in flight per receiver, and a stop waits for it."""
        log.info("sqs receiver started", receiver=index)
        backoff = 1.0
        deleting: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                receive = asyncio.create_task(self._receive())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({receive, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not receive.done():
                    # stopping while long-polling: nothing received is lost (not deleted)
                    receive.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await receive
                    break
                try:
                    messages = receive.result()
                    if messages:  # received: applied and deleted even if a stop comes now
                        entries = await self._ingest(messages)
                        if deleting is not None:
                            await deleting
                        deleting = asyncio.create_task(self._delete(entries, len(messages)))
                    backoff = 1.0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("sqs poll failed; backing off", error=repr(exc), seconds=backoff)
                    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=backoff)
                    backoff = min(backoff * 2, self.max_backoff)
        finally:
            if deleting is not None:
                await deleting


def sqs_client(settings: Settings) -> Any:
    session = aioboto3.Session()
    return session.client(
        "sqs",
        endpoint_url=settings.sqs_endpoint_url or settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=Config(
            connect_timeout=settings.s3_timeout,
            read_timeout=25,  # above the 20 s long poll
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=settings.sqs_receivers + 2,  # long polls + deletes
        ),
    )
