"""MicroBatcher: concurrent submits share runs, each caller gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway.batching import MicroBatcher


class Recorder:
    """A runner that records its batches and answers item * 10 (ValueError for < 0)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.running = 0
        self.max_running = 0

    async def __call__(self, items: list[int]) -> Sequence[int | BaseException]:
        self.batches.append(list(items))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        return [ValueError(i) if i < 0 else i * 10 for i in items]


async def test_concurrent_submits_share_one_run_and_keep_their_own_results() -> None:
    run = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(run)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(50)))
    assert results == [i * 10 for i in range(50)]
    assert run.batches == [list(range(50))]
    assert (batcher.batches, batcher.items) == (1, 50)


async def test_a_lone_submit_runs_at_once() -> None:
    run = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(run)
    assert await asyncio.wait_for(batcher.submit(7), timeout=1) == 70
    assert run.batches == [[7]]


async def test_an_item_error_reaches_only_its_caller() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(Recorder())
    results = await asyncio.gather(
        batcher.submit(1), batcher.submit(-2), batcher.submit(3), return_exceptions=True
    )
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError) and results[1].args == (-2,)


async def test_a_failed_run_fails_every_caller_of_that_batch_only() -> None:
    calls = 0

    async def run(items: list[int]) -> Sequence[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(run)
    first = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in first)
    assert await batcher.submit(5) == 5  # the next batch is unaffected


async def test_items_queued_during_a_run_form_the_next_batch() -> None:
    run = Recorder(delay=0.05)
    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_in_flight=1)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.01)  # batch [0] is in flight
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
    assert await asyncio.gather(first, *rest) == [0, 10, 20, 30, 40, 50]
    assert run.batches == [[0], [1, 2, 3, 4, 5]]
    assert run.max_running == 1


async def test_max_batch_and_max_in_flight_are_respected() -> None:
    run = Recorder(delay=0.02)
    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=4, max_in_flight=2)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert [len(b) for b in run.batches] == [4, 4, 2]
    assert sorted(i for b in run.batches for i in b) == list(range(10))
    assert run.max_running == 2


async def test_weight_bounds_a_batch_but_a_heavy_item_still_runs_alone() -> None:
    run = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch=10, weight=lambda i: i)
    results = await asyncio.gather(*(batcher.submit(i) for i in (3, 4, 5, 20, 1)))
    assert results == [30, 40, 50, 200, 10]
    assert run.batches == [[3, 4], [5], [20], [1]]


async def test_a_cancelled_caller_is_skipped_and_others_proceed() -> None:
    run = Recorder(delay=0.05)
    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_in_flight=1)
    busy = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(batcher.submit(1))
    kept = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    assert await busy == 0 and await kept == 20
    assert run.batches == [[0], [2]]


async def test_a_runner_that_answers_the_wrong_count_fails_loudly() -> None:
    async def run(items: list[int]) -> Sequence[int]:
        return items[:-1]

    batcher: MicroBatcher[int, int] = MicroBatcher(run)
    with pytest.raises(RuntimeError, match="answered 1 of 2"):
        await asyncio.gather(batcher.submit(1), batcher.submit(2))


async def test_close_cancels_runs_in_flight() -> None:
    run = Recorder(delay=10)
    batcher: MicroBatcher[int, int] = MicroBatcher(run)
    pending = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.01)
    await batcher.close()
    with pytest.raises(asyncio.CancelledError):
        await pending


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch=0)
