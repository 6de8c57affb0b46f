"""Delivering the outbox: at least once, from any number of workers, never in a request.

Every server runs a ``Deliverer`` as a watched background task (gateway/runtime.py),
and so does ``gateway webhooks deliver``. A worker claims due deliveries in one
statement (``claim_deliveries``: ``FOR UPDATE SKIP LOCKED`` on the endpoints, at most
``GATEWAY_WEBHOOK_ENDPOINT_IN_FLIGHT`` in flight per endpoint across all workers,
each claim leased so that a worker that dies leaves its deliveries to others), posts
them concurrently (at most ``GATEWAY_WEBHOOK_MAX_IN_FLIGHT`` per worker), and writes
the outcomes in batches (``finish_attempts``).

An attempt: the event's body, signed afresh (Standard Webhooks: ``webhook-id`` the
event id, ``webhook-timestamp`` now, ``webhook-signature`` one ``v1,…`` per live
secret) and posted through one pooled aiohttp client session, redirects not
followed, no more than ``GATEWAY_WEBHOOK_TIMEOUT`` (10 s) for the whole exchange.
(aiohttp rather than httpx: at 64 requests in flight httpcore's connection pool
spends its time matching requests to connections, 320 against aiohttp's 2,500
requests/s to the same local receiver; bench/README.md.) A 2xx is
delivered; anything else (another status, a time-out, a refused or failed
connection, an address the SSRF rule refuses) is retried after a growing back-off
(5 s doubling to at most an hour, ±20 %) until ``GATEWAY_WEBHOOK_RETRY_FOR`` (24 h)
has passed since the first attempt; then it is ``failed``. An endpoint whose every
attempt has failed for ``GATEWAY_WEBHOOK_DISABLE_AFTER`` (5 days) is disabled, with an
audit entry and a metric.

At least once, and not more in the normal case: a delivery's outcome is written
before its lease runs out; only a worker stalled past its lease (or Postgres
unreachable until then) leads to a second attempt under the same ``webhook-id``,
which receivers de-duplicate by.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway import audit
from gateway.batching import MicroBatcher
from gateway.db import Database
from gateway.errors import DependencyUnavailable
from gateway.webhooks.outbox import WQ
from gateway.webhooks.signing import SecretBox, SecretUnreadable, sign
from gateway.webhooks.ssrf import (
    AddressPolicy,
    GuardedResolver,
    Refused,
    RefusedAddress,
    is_ip_literal,
    url_parts,
)

log = structlog.get_logger(__name__)

USER_AGENT = "upload-gateway-webhooks/1"
# Claims and outcomes are bookkeeping that a crash may lose without harm: a claim
# lost is claimed again, an outcome lost is attempted again (at least once either
# way). Their commits do not wait for the WAL flush (the outbox rows themselves are
# written with their changes, durably).
_ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"
MAX_RESPONSE_BYTES = 64 * 1024  # what is read of an answer (then the connection is dropped)


@dataclass(frozen=True)
class DeliveryConfig:
    timeout: float = 10.0
    max_in_flight: int = 64  # per worker
    endpoint_in_flight: int = 8  # per endpoint, all workers together
    poll_interval: float = 1.0
    retry_for: float = 86_400.0
    disable_after: float = 5 * 86_400.0
    retention: float = 30 * 86_400.0
    first_retry: float = 5.0
    max_retry: float = 3_600.0
    housekeeping_interval: float = 10.0

    @property
    def lease(self) -> float:
        """How long a claim holds: the attempt's time-out and time to record it."""
        return self.timeout + 20.0


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "gateway_webhook_attempts_total",
            "Webhook delivery attempts by result (delivered, http_error, timeout, "
            "connection_error, refused, secret_unreadable)",
            ["result"],
            registry=registry,
        )
        self.sent = Counter(
            "gateway_webhook_delivered_total", "Webhook deliveries delivered", registry=registry
        )
        self.failed = Counter(
            "gateway_webhook_failed_total",
            "Webhook deliveries given up after the retry window",
            registry=registry,
        )
        self.latency = Histogram(
            "gateway_webhook_attempt_duration_seconds",
            "Time from sending a webhook to its answer (or the attempt's end)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "gateway_webhook_queue_depth",
            "Deliveries pending (all workers; refreshed by each worker's housekeeping)",
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "gateway_webhook_oldest_pending_seconds",
            "Age of the oldest pending delivery",
            registry=registry,
        )
        self.disabled = Counter(
            "gateway_webhook_endpoints_disabled_total",
            "Endpoints disabled after failing for GATEWAY_WEBHOOK_DISABLE_AFTER",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class _Claimed:
    endpoint_id: str
    event_id: str
    attempts: int
    retry_since: datetime
    body: str
    url: str
    secret: str
    previous_secret: str | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    endpoint_id: str
    event_id: str
    outcome: str  # delivered | retry | failed
    code: int | None
    error: str | None
    next_at: datetime | None


def backoff(attempts: int, config: DeliveryConfig) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 5 s, 10 s,
    20 s, … at most an hour, ±20 % so that a crowd of retries spreads."""
    base = min(config.first_retry * 2 ** max(attempts - 1, 0), config.max_retry)
    return float(base * random.uniform(0.8, 1.2))


def make_session(policy: AddressPolicy, config: DeliveryConfig) -> aiohttp.ClientSession:
    """One pooled client session for all deliveries: no redirects, no proxies from the
    environment, every new connection resolved (and checked) by the SSRF rule, no DNS
    cache (a name is checked when it is connected to). Made on the running loop."""
    connector = aiohttp.TCPConnector(
        limit=config.max_in_flight,
        use_dns_cache=False,
        resolver=GuardedResolver(policy),
        keepalive_timeout=30,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=config.timeout),
        headers={"user-agent": USER_AGENT},
        trust_env=False,
        auto_decompress=False,
    )


class Deliverer:
    def __init__(
        self,
        db: Database,
        session: aiohttp.ClientSession,
        policy: AddressPolicy,
        box: SecretBox,
        metrics: WebhookMetrics,
        config: DeliveryConfig,
    ) -> None:
        self.db = db
        self.session = session
        self.policy = policy
        self.box = box
        self.metrics = metrics
        self.config = config
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # attempts (the in-flight slots)
        self._recording: set[asyncio.Task[None]] = set()  # their outcomes being written
        self._results: MicroBatcher[_Outcome, None] = MicroBatcher(
            self._write_outcomes, max_batch=500
        )
        self._last_housekeeping = 0.0

    # -- the loop --------------------------------------------------------------------

    def wake(self) -> None:
        """Something may be due (an event was recorded in this process): claim soon.
        Soon, not now: the recording transaction commits after the call."""
        with contextlib.suppress(RuntimeError):  # no running loop: the poll finds it
            asyncio.get_running_loop().call_later(0.02, self._changed.set)

    async def run(self, stopping: asyncio.Event) -> None:
        """Delivers until ``stopping`` is set, then lets the attempts in flight end
        (the runtime gives it the time-out as its grace)."""
        # claim again once a quarter of the slots is free (or soon after any is):
        # a claim per finished attempt would cost a statement per delivery
        batch = max(self.config.max_in_flight // 4, 1)
        try:
            while not stopping.is_set():
                await self._housekeeping_due()
                free = self.config.max_in_flight - len(self._tasks)
                if free > 0:
                    try:
                        claimed = await self._claim(free)
                    except DependencyUnavailable as exc:
                        log.warning("webhook claim skipped", dependency=exc.dependency)
                        claimed = []
                    for c in claimed:
                        self._start(c)
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        _first(self._changed.wait(), stopping.wait()),
                        timeout=self.config.poll_interval,
                    )
                if self._tasks and self.config.max_in_flight - len(self._tasks) < batch:
                    await asyncio.sleep(0.005)  # let more attempts finish first
        finally:
            await self._drain()

    async def _drain(self) -> None:
        """Waits for the attempts in flight and the writing of their outcomes."""
        while self._tasks or self._recording:
            await asyncio.wait([*self._tasks, *self._recording])

    async def deliver_due(self) -> int:
        """Delivers what is due now: claims (up to the in-flight bound at a time) and
        waits for the attempts' outcomes to be written, until nothing is due but
        retries of what this call already attempted. Answers how many attempts."""
        total = 0
        seen: set[tuple[str, str]] = set()
        while True:
            claimed = await self._claim(self.config.max_in_flight)
            for c in claimed:
                self._start(c)
            total += len(claimed)
            await self._drain()
            fresh = {(c.endpoint_id, c.event_id) for c in claimed} - seen
            if not fresh:
                return total
            seen |= fresh

    async def close(self) -> None:
        for task in [*self._tasks, *self._recording]:
            task.cancel()
        if self._tasks or self._recording:
            await asyncio.wait([*self._tasks, *self._recording])
        await self._results.close()

    def _start(self, c: _Claimed) -> None:
        task = asyncio.create_task(self._deliver(c), name=f"webhook:{c.event_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._recording.discard(task)
        self._changed.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery task failed", exc_info=task.exception())

    async def _claim(self, limit: int) -> list[_Claimed]:
        async with self.db.transaction() as conn:
            await conn.execute(_ASYNC_COMMIT)
            rows = await conn.fetch(
                WQ.claim_deliveries, limit, self.config.endpoint_in_flight, self.config.lease
            )
        return [
            _Claimed(
                r["endpoint_id"],
                r["event_id"],
                r["attempts"],
                r["retry_since"],
                r["body"],
                r["url"],
                r["secret"],
                r["previous_secret"],
            )
            for r in rows
        ]

    # -- one attempt -------------------------------------------------------------------

    async def _deliver(self, c: _Claimed) -> None:
        outcome = await self._attempt(c)
        # the slot is free once the answer is in; the outcome is written beside
        task = asyncio.create_task(self._record(c, outcome), name=f"webhook-outcome:{c.event_id}")
        self._recording.add(task)
        task.add_done_callback(self._done)

    async def _record(self, c: _Claimed, outcome: _Outcome) -> None:
        # the outcome must be written before the lease runs out, or another worker
        # sends the event again (at least once, but once is the aim)
        deadline = time.monotonic() + self.config.lease - self.config.timeout
        delay = 0.2
        while True:
            try:
                await self._results.submit(outcome)
                return
            except DependencyUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    log.warning(
                        "webhook outcome not recorded; the delivery will be attempted again",
                        event_id=c.event_id,
                        endpoint_id=c.endpoint_id,
                        dependency=exc.dependency,
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _attempt(self, c: _Claimed) -> _Outcome:
        code: int | None = None
        error: str | None = None
        started = time.perf_counter()
        try:
            secrets_ = [self.box.unseal(c.secret)]
            if c.previous_secret is not None:
                secrets_.append(self.box.unseal(c.previous_secret))
        except SecretUnreadable as exc:
            result, error = "secret_unreadable", str(exc)
        else:
            result, code, error = await self._post(c, secrets_)
        elapsed = time.perf_counter() - started
        self.metrics.attempts.labels(result).inc()
        if result != "secret_unreadable":
            self.metrics.latency.observe(elapsed)
        now = datetime.now(UTC)
        if result == "delivered":
            self.metrics.sent.inc()
            return _Outcome(c.endpoint_id, c.event_id, "delivered", code, None, None)
        if now >= c.retry_since + timedelta(seconds=self.config.retry_for):
            self.metrics.failed.inc()
            log.warning(
                "webhook delivery given up",
                event_id=c.event_id,
                endpoint_id=c.endpoint_id,
                attempts=c.attempts,
            )
            return _Outcome(c.endpoint_id, c.event_id, "failed", code, error, None)
        next_at = now + timedelta(seconds=backoff(c.attempts, self.config))
        return _Outcome(c.endpoint_id, c.event_id, "retry", code, error, next_at)

    async def _post(self, c: _Claimed, secrets_: Sequence[str]) -> tuple[str, int | None, str]:
        """(result, status code, what went wrong) of one POST."""
        sent_at = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": c.event_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": sign(secrets_, c.event_id, sent_at, c.body),
        }
        try:
            literal = _literal_target(c.url)
            if literal is not None:  # not resolved, so not seen by the guarded resolver
                await self.policy.addresses(*literal)
            async with (
                asyncio.timeout(self.config.timeout),
                self.session.post(
                    c.url, data=c.body.encode(), headers=headers, allow_redirects=False
                ) as response,
            ):
                read = 0
                async for chunk in response.content.iter_any():
                    read += len(chunk)
                    if read > MAX_RESPONSE_BYTES:
                        break
                code = response.status
        except TimeoutError:
            return "timeout", None, f"no answer within {self.config.timeout:g} s"
        except Refused as exc:
            return "refused", None, f"refused: {exc}"[:500]
        except (aiohttp.ClientError, ValueError) as exc:
            text = str(exc) or type(exc).__name__
            refused = isinstance(getattr(exc, "os_error", None), RefusedAddress)
            return "refused" if refused else "connection_error", None, text[:500]
        if 200 <= code < 300:
            return "delivered", code, ""
        return "http_error", code, f"answered {code}"

    async def _write_outcomes(self, outcomes: list[_Outcome]) -> list[None]:
        async with self.db.transaction() as conn:
            await conn.execute(_ASYNC_COMMIT)
            await conn.execute(
                WQ.finish_attempts,
                [o.endpoint_id for o in outcomes],
                [o.event_id for o in outcomes],
                [o.outcome for o in outcomes],
                [o.code for o in outcomes],
                [o.error for o in outcomes],
                [o.next_at for o in outcomes],
            )
        return [None] * len(outcomes)

    # -- housekeeping --------------------------------------------------------------------

    async def _housekeeping_due(self) -> None:
        now = time.monotonic()
        if now - self._last_housekeeping < self.config.housekeeping_interval:
            return
        self._last_housekeeping = now
        try:
            await self.housekeeping()
        except DependencyUnavailable as exc:
            log.warning("webhook housekeeping skipped", dependency=exc.dependency)

    async def housekeeping(self) -> list[str]:
        """Refreshes the queue gauges, disables endpoints failing for too long (with
        an audit entry each) and prunes old finished events. Answers the endpoints
        it disabled."""
        stats = await self.db.fetchrow(WQ.queue_stats)
        if stats is not None:
            self.metrics.queue_depth.set(stats["pending"])
            self.metrics.oldest_pending.set(stats["oldest_age"])
        disabled: list[str] = []
        async with self.db.transaction() as conn:
            for row in await conn.fetch(WQ.disable_failing, self.config.disable_after):
                disabled.append(row["id"])
                await audit.record(
                    conn,
                    project_id=row["project_id"],
                    action="webhook.disabled",
                    actor=audit.SYSTEM_WEBHOOKS,
                    before={"id": row["id"], "enabled": True},
                    after={"id": row["id"], "enabled": False, "disabled_reason": "failing"},
                )
        for endpoint_id in disabled:
            self.metrics.disabled.inc()
            log.warning("webhook endpoint disabled after failing", endpoint_id=endpoint_id)
        await self.db.execute(WQ.prune_events, self.config.retention, 1000)
        return disabled


@functools.lru_cache(maxsize=4096)
def _literal_target(url: str) -> tuple[str, int] | None:
    """(host, port) of a URL whose host is an IP literal, else None."""
    host, port = url_parts(url)
    return (host, port) if is_ip_literal(host) else None


async def _first(*aws: Any) -> None:
    """Returns when the first of the awaitables finishes (the others are cancelled)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


__all__ = ["Deliverer", "DeliveryConfig", "WebhookMetrics", "backoff", "make_session"]
