"""Micro-batching: concurrent callers share one round trip.

``MicroBatcher.submit(item)`` queues the item and waits for its own result. Items
queued in the same event-loop iteration, or while earlier batches are in flight,
are handed together to one ``run(items)`` call. When the batcher is idle a lone
item is flushed on the next loop iteration, so at low load nothing waits; under
load the batches grow by themselves (a form of group commit).

``run`` answers one result per item, in order; an item's result may be an
exception instance, which is raised to that caller only. An exception raised by
``run`` itself goes to every caller of the batch. A result whose caller went away
(cancelled) while its batch ran is handed to ``undelivered``, so a stage that made
something on the caller's behalf (a database row) can undo it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = 256,
        max_in_flight: int = 1,
        weight: Callable[[T], int] | None = None,
        undelivered: Callable[[R], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._run = run
        self.max_batch = max_batch  # in weight units (items, unless weight is given)
        self.max_in_flight = max_in_flight
        self._weight = weight
        self._undelivered = undelivered
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, fut))
        self._kick(loop)
        return await fut

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._queue and not self._scheduled and self._in_flight < self.max_in_flight:
            self._scheduled = True
            loop.call_soon(self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        while self._queue and self._in_flight < self.max_in_flight:
            batch = self._take()
            if not batch:
                continue
            self._in_flight += 1
            task = loop.create_task(self._run_batch(batch, loop))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        total = 0
        while self._queue:
            item, fut = self._queue[0]
            w = self._weight(item) if self._weight is not None else 1
            if batch and total + w > self.max_batch:
                break
            self._queue.popleft()
            if fut.done():  # the caller went away (cancelled) before its batch ran
                continue
            batch.append((item, fut))
            total += w
        return batch

    async def _run_batch(
        self, batch: list[tuple[T, asyncio.Future[R]]], loop: asyncio.AbstractEventLoop
    ) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch runner answered {len(results)} of {len(batch)}")
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
        else:
            self.batches += 1
            self.items += len(batch)
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    if self._undelivered is not None and not isinstance(result, BaseException):
                        self._undelivered(result)
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
        finally:
            self._in_flight -= 1
            self._kick(loop)

    async def close(self) -> None:
        """Cancels batches in flight; their callers get CancelledError."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue:
            _, fut = self._queue.popleft()
            if not fut.done():
                fut.set_exception(RuntimeError("shutting down"))
