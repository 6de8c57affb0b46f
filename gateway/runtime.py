"""Runtime(settings): the services every command runs on, and its background jobs.

The one composition root: it opens Postgres, Redis, S3 (and SQS when asked), builds
the services on them, and runs the background jobs its caller asks for. ``serve``
(through the HTTP lifespan in gateway/app.py), ``events poll-sqs``, ``reservations
sweep`` and ``tenants recalculate`` each enter one; none of them builds another's
parts. No Litestar here: the HTTP layer sits on top of this.

Everything is opened on one ``AsyncExitStack``, each close registered as soon as its
resource exists, so a start-up failing half-way closes what it had opened, in
reverse order, and a normal exit does the same.

Background jobs run as named tasks that are watched: a job that raises (or returns
before the runtime stops) is logged with its name and started again after a
back-off, instead of vanishing with its task. On close they are asked to stop (the
``stopping`` event, which the SQS poller honours by finishing the batch in hand),
given their grace, then cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog

from gateway.audit import AuditLog
from gateway.config import Settings
from gateway.db import Database, create_database
from gateway.db.rebuild import PostgresReservationSource
from gateway.errors import DependencyUnavailable
from gateway.events.ingest import EventIngestor, LedgerBatcher
from gateway.events.sqs import SqsPoller, sqs_client
from gateway.files import FileService
from gateway.ledger import Ledger, Policy
from gateway.observability import Metrics
from gateway.projects import ProjectService
from gateway.quota import QuotaStore, create_redis
from gateway.storage.presigner import BotocoreCredentialSource, S3Presigner
from gateway.storage.s3 import S3ObjectStore
from gateway.tenants import TenantService
from gateway.uploads import (
    AdmissionService,
    Idempotency,
    Janitor,
    LifecycleService,
    Sweeper,
    UploadUrls,
)
from gateway.webhooks import Webhooks

log = structlog.get_logger(__name__)

Job = Callable[[], Awaitable[None]]


class _NoCredentials:
    def current(self) -> Any:
        raise DependencyUnavailable("s3 credentials", cause="no AWS credentials found")


def _credentials(found: Any) -> Any:
    if found is None:
        log.error(
            "no S3 credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS chain)"
        )
        return _NoCredentials()
    return BotocoreCredentialSource(found)


@dataclass
class _Watched:
    name: str
    task: asyncio.Task[None]
    grace: float  # seconds it may take to stop by itself once ``stopping`` is set


class Runtime:
    """``async with Runtime(settings, sweeper=..., sqs_queue_url=...) as rt``: the
    services as attributes (``rt.db``, ``rt.admission``, ``rt.ingestor``, …).

    Which background jobs run is the caller's choice, not the settings': ``sweeper``
    (kept as ``rt.runs_sweeper``) runs ``rt.sweeper.run(settings.sweep_interval)``;
    ``sqs_queue_url`` runs one SQS poller on that queue with ``settings.sqs_receivers``
    receive loops; ``webhook_delivery`` runs a webhook deliverer on the outbox. More
    jobs can be started with ``start_task`` once it is open.
    """

    db: Database
    redis: Any  # redis.asyncio.Redis or RedisCluster (gateway.quota.create_redis)
    store: S3ObjectStore
    quota: QuotaStore
    presigner: S3Presigner
    ledger: Ledger
    urls: UploadUrls
    janitor: Janitor
    idempotency: Idempotency
    admission: AdmissionService  # POST /upload/
    lifecycle: LifecycleService  # an upload's status, complete, cancel
    sweeper: Sweeper  # expiry and the audit (``reservations sweep``, the sweeper job)
    files: FileService  # delete, download
    tenants: TenantService
    projects: ProjectService
    batcher: LedgerBatcher
    ingestor: EventIngestor
    audit: AuditLog
    webhooks: Webhooks
    poller: SqsPoller | None = None

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        sweeper: bool = False,
        sqs_queue_url: str | None = None,
        webhook_delivery: bool = False,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
    ) -> None:
        if sweeper and settings.sweep_interval <= 0:
            raise ValueError("the sweeper needs a sweep interval > 0 (GATEWAY_SWEEP_INTERVAL)")
        if not 0 < restart_delay <= max_restart_delay:
            raise ValueError("need 0 < restart_delay <= max_restart_delay")
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.runs_sweeper = sweeper
        self.sqs_queue_url = sqs_queue_url
        self.webhook_delivery = webhook_delivery
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        # set when the runtime starts closing: jobs that can stop cleanly watch it
        self.stopping = asyncio.Event()
        self._tasks: list[_Watched] = []
        self._stack: AsyncExitStack | None = None
        self._entered = False

    # -- opening and closing -------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        if self._entered:
            raise RuntimeError("a Runtime is entered once")
        self._entered = True
        async with AsyncExitStack() as stack:
            await self._open(stack)
            # opened: from here on the closes run on __aexit__
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def _open(self, stack: AsyncExitStack) -> None:
        """Each close is registered as soon as its object exists (closing one that is
        not or only half open is safe), before anything else may fail."""
        s = self.settings
        self.db = create_database(s)
        stack.push_async_callback(self.db.close)
        await self.db.open()
        self.redis = create_redis(s)  # connects on first use
        stack.push_async_callback(self._close_redis)
        self.store = S3ObjectStore(s)
        stack.push_async_callback(self.store.close)
        await self.store.open()
        self.quota = QuotaStore(
            self.redis, PostgresReservationSource(self.db), retry_after=s.retry_after
        )
        self.presigner = S3Presigner(
            bucket=s.s3_bucket,
            region=s.s3_region,
            endpoint_url=s.presign_endpoint_url,
            addressing=s.s3_addressing,
            credentials=_credentials(self.store.botocore_credentials()),
        )
        self.ledger = Ledger(
            self.db, self.quota, self.store, policy=Policy(oversize=s.oversize_policy)
        )
        self.urls = UploadUrls(self.presigner, bucket=s.s3_bucket, url_ttl=s.upload_url_ttl)
        self.janitor = Janitor(self.db, self.quota, close_timeout=s.db_timeout)
        # registered first, so closed after admission, which may hand it rows until then
        stack.push_async_callback(self.janitor.close)
        self.idempotency = Idempotency(self.db, self.quota, self.urls)
        self.admission = AdmissionService(
            s, self.db, self.quota, self.urls, self.idempotency, self.janitor
        )
        stack.push_async_callback(self.admission.close)
        self.lifecycle = LifecycleService(self.db, self.quota, self.store, self.ledger)
        self.sweeper = Sweeper(self.db, self.quota)
        self.files = FileService(self.db, self.store, self.presigner, self.ledger)
        self.tenants = TenantService(
            self.db, self.store, self.ledger, max_file_size=s.max_file_size
        )
        self.projects = ProjectService(self.db)
        self.audit = AuditLog(self.db)
        # changes write their events to the outbox in their own transactions
        self.webhooks = Webhooks(s, self.db, self.metrics)
        stack.push_async_callback(self.webhooks.close)
        for service in (self.ledger, self.lifecycle, self.sweeper, self.tenants, self.projects):
            service.outbox = self.webhooks.outbox
        self.batcher = LedgerBatcher(self.ledger, metrics=self.metrics)
        stack.push_async_callback(self.batcher.stop)
        self.ingestor = EventIngestor(
            self.batcher,
            bucket=s.s3_bucket,
            metrics=self.metrics,
            sns_auto_confirm=s.sns_auto_confirm,
        )
        if self.sqs_queue_url is not None:
            client = await stack.enter_async_context(sqs_client(s))
            self.poller = SqsPoller(
                self.ingestor, client, self.sqs_queue_url, receivers=s.sqs_receivers
            )
        # the jobs stop first, while everything they use is still open
        stack.push_async_callback(self._stop_tasks)
        if self.runs_sweeper:
            sweeper, interval = self.sweeper, s.sweep_interval
            self.start_task("sweeper", lambda: sweeper.run(interval))
        if self.webhook_delivery:
            deliverer, stopping = self.webhooks.deliverer, self.stopping
            # the attempts in flight end (or time out) before it stops
            self.start_task(
                "webhook-delivery",
                lambda: deliverer.run(stopping),
                grace=self.webhooks.config.timeout + 1,
            )
        if self.poller is not None:
            poller, stopping = self.poller, self.stopping
            # the poller finishes the batch in hand, then stops
            self.start_task("sqs-poller", lambda: poller.run(stopping), grace=s.db_timeout * 2)

    async def _close_redis(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    # -- background jobs -----------------------------------------------------------

    def start_task(self, name: str, job: Job, *, grace: float = 0.0) -> asyncio.Task[None]:
        """Runs ``job()`` in a task named ``name``, watched: if it raises (or returns
        before the runtime stops) the failure is logged with the name and ``job()``
        runs again after a back-off (``restart_delay`` doubling up to
        ``max_restart_delay``; afresh after a run that lasted that long). On close,
        a job gets ``grace`` seconds to stop by itself after ``stopping`` is set, then
        is cancelled."""
        if not self._entered:
            raise RuntimeError("start_task needs an open Runtime")
        if self.stopping.is_set():
            raise RuntimeError("the Runtime is closing")
        if any(w.name == name for w in self._tasks):
            raise ValueError(f"a task named {name!r} is already running")
        task = asyncio.create_task(self._watch(name, job), name=f"gateway:{name}")
        self._tasks.append(_Watched(name, task, grace))
        log.info("background task started", task=name)
        return task

    async def _watch(self, name: str, job: Job) -> None:
        loop = asyncio.get_running_loop()
        delay = self.restart_delay
        runs = 0
        while True:
            runs += 1
            started = loop.time()
            error: Exception | None = None
            try:
                await job()
            except Exception as exc:
                error = exc
            if self.stopping.is_set():
                if error is not None:
                    log.error("background task failed while stopping", task=name, exc_info=error)
                return
            if loop.time() - started >= self.max_restart_delay:
                delay = self.restart_delay  # it had run a good while: back-off afresh
            log.error(
                "background task crashed; restarting"
                if error is not None
                else "background task returned; restarting",
                task=name,
                runs=runs,
                restart_in=delay,
                exc_info=error,
            )
            del error  # not the traceback's frames for the whole back-off
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=delay)
            if self.stopping.is_set():
                return
            delay = min(delay * 2, self.max_restart_delay)

    async def _stop_tasks(self) -> None:
        self.stopping.set()
        graceful = [w for w in self._tasks if w.grace > 0]
        if graceful:  # they stop by themselves: the poller commits the batch in hand
            await asyncio.wait([w.task for w in graceful], timeout=max(w.grace for w in graceful))
        for w in self._tasks:
            w.task.cancel()
        if self._tasks:
            await asyncio.wait([w.task for w in self._tasks])
        for w in self._tasks:
            log.info("background task stopped", task=w.name)


__all__ = ["Job", "Runtime"]
