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
    batches: list[list[int]] = []
    held = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 2:  # the batch with the bad item: held until released
            await held.wait()
        if any(i < 0 for i in items):
            raise ValueError(f"negative in {items}")
        return [2 * i for i in items]

    batched: Batched[int, int] = Batched(run, rerun_if=lambda exc: isinstance(exc, ValueError))
    first = asyncio.ensure_future(batched(1))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batched(i)) for i in (2, -3, 4, 5)]
    assert await first == 2
    while len(batches) < 2:
        await asyncio.sleep(0)
    rest[3].cancel()  # its caller gives up while its batch runs: not run again alone
    held.set()
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert outcomes[0] == 4 and outcomes[2] == 8
    assert isinstance(outcomes[1], ValueError) and "[-3]" in str(outcomes[1])
    assert isinstance(outcomes[3], asyncio.CancelledError)
    # the failed batch, then each of its items alone but the one given up
    assert batches == [[1], [2, -3, 4, 5], [2], [-3], [4]]


async def test_a_failure_not_of_one_item_is_every_callers_and_not_run_again() -> None:
    calls: list[list[int]] = []

    async def down(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0)
        raise ConnectionError("the server went away")

    for rerun_if in (None, lambda exc: isinstance(exc, ValueError)):
        calls.clear()
        batched: Batched[int, int] = Batched(down, rerun_if=rerun_if)
        outcomes = await asyncio.gather(*[batched(i) for i in range(4)],
                                        return_exceptions=True)
        assert all(isinstance(o, ConnectionError) for o in outcomes)
        assert calls == [[0, 1, 2, 3]]


async def test_an_exception_in_an_items_place_is_raised_by_its_caller_alone() -> None:
    async def run(items: list[int]) -> list[int | Exception]:
        return [ValueError(f"no {i}") if i < 0 else i for i in items]

    batched: Batched[int, int] = Batched(run)
    outcomes = await asyncio.gather(batched(1), batched(-2), batched(3),
                                    return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert isinstance(outcomes[1], ValueError)


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


async def test_reruns_stop_at_the_first_failure_that_is_not_an_items() -> None:
    """A batch fails on one item's data, then the server goes away during the reruns: the
    callers left get that failure at once instead of each waiting for its own."""
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        await asyncio.sleep(0)
        if len(items) > 1:
            raise ValueError("one item's data")
        if items == [2]:
            raise ConnectionError("the server went away")
        return items

    batched: Batched[int, int] = Batched(run, rerun_if=lambda exc: isinstance(exc, ValueError))
    outcomes = await asyncio.gather(*[batched(i) for i in range(1, 6)],
                                    return_exceptions=True)
    assert outcomes[0] == 1
    assert all(isinstance(o, ConnectionError) for o in outcomes[1:])
    assert calls == [[1, 2, 3, 4, 5], [1], [2]]
