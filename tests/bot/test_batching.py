"""Group commit (bot/batching.py): concurrent calls run as batches, each caller gets its own
result or its own exception, and nothing waits for a batch to fill."""

from __future__ import annotations

import asyncio

import pytest

from bot.batching import Batched


class Recorder:
    """A batch operation that doubles numbers, records its batches, fails on a negative
    number, and can be held open to let callers pile up."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if any(i < 0 for i in items):
            raise ValueError(f"negative in {items}")
        return [2 * i for i in items]


async def test_a_lone_call_runs_at_once() -> None:
    recorder = Recorder()
    batched: Batched[int, int] = Batched(recorder.run)
    assert await asyncio.wait_for(batched(21), 5) == 42
    assert recorder.batches == [[21]]


async def test_calls_arriving_during_a_batch_go_in_the_next_one_in_order() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batched: Batched[int, int] = Batched(recorder.run, max_items=4)
    first = asyncio.ensure_future(batched(0))
    await asyncio.sleep(0)  # the first batch starts with the only item there is
    rest = [asyncio.ensure_future(batched(i)) for i in range(1, 7)]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await asyncio.gather(first, *rest) == [0, 2, 4, 6, 8, 10, 12]
    assert recorder.batches == [[0], [1, 2, 3, 4], [5, 6]]
    assert (batched.batches, batched.items) == (3, 7)


async def test_a_failing_item_fails_only_its_caller() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batched: Batched[int, int] = Batched(recorder.run)
    first = asyncio.ensure_future(batched(1))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batched(i)) for i in (2, -3, 4)]
    await asyncio.sleep(0)
    recorder.gate.set()
    outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
    assert outcomes[:2] == [2, 4] and outcomes[3] == 8
    assert isinstance(outcomes[2], ValueError) and "[-3]" in str(outcomes[2])
    # the failed batch, then each of its items alone
    assert recorder.batches == [[1], [2, -3, 4], [2], [-3], [4]]


async def test_a_caller_that_gives_up_does_not_stop_the_others() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batched: Batched[int, int] = Batched(recorder.run)
    first = asyncio.ensure_future(batched(1))
    await asyncio.sleep(0)
    quitter = asyncio.ensure_future(batched(2))
    stayer = asyncio.ensure_future(batched(3))
    await asyncio.sleep(0)
    quitter.cancel()
    recorder.gate.set()
    assert await first == 2 and await stayer == 6
    with pytest.raises(asyncio.CancelledError):
        await quitter
    assert recorder.batches == [[1], [3]]


async def test_a_wrong_number_of_results_fails_every_caller_of_the_batch() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:1]

    batched: Batched[int, int] = Batched(short)
    # submitted in one go: the three are one batch, which gives one result for three
    outcomes = await asyncio.gather(*[batched(i) for i in range(3)], return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
    assert await batched(5) == 5  # alone, one result for one item
