"""Group commit: concurrent calls of one operation run as one batch.

`Batched(run)` is awaited like the single call it replaces (`await batched(item)` gives that
item's result), but items that arrive while a batch is running wait for it and then go in one
`run` call together: a Postgres transaction committed once for every transcript row in it,
one embedding call for every text to score. Nothing waits for a batch to fill: an item that
finds nothing running starts at once, so an idle process pays no latency, and a busy one gets
batches as large as its concurrency (the items that came in during one run).

A batch that fails with an error one item can cause (`rerun_if`: Postgres refused a row, for
an atomic `run` that the failure undid) is run again item by item, skipping the callers that
gave up meanwhile, so one item's bad data fails that item's caller only. Any other failure (the
connection broke; a Redis pipeline, whose commands may have run) is every caller's: each gets
the batch's exception, as it would have had its own call failed the same way. `run` may also
return an exception in an item's place: that item's caller alone raises it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batched(Generic[T, R]):
    """Runs `run(items)` for items submitted concurrently, one batch at a time.

    Args:
        run: takes a batch (a list of 1 to `max_items` items, in arrival order) and returns
            one result per item, in the same order (an exception instance: that item failed);
            raises to fail the batch.
        max_items: the largest batch; more items wait for the next one.
        rerun_if: when a batch of several items raises an exception this accepts, run each
            item alone (only for a `run` that has no effect when it raises); None: never.

    Raises from `__call__`: the exception of the item's own run (its batch's, when the item
    was alone in it), or `CancelledError` when the batching task is cancelled (shutdown).
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R | Exception]]], *,
                 max_items: int = 256,
                 rerun_if: Callable[[Exception], bool] | None = None) -> None:
        self._run = run
        self._max_items = max_items
        self._rerun_if = rerun_if
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        #: batches run, and items in them (for tests and benchmarks)
        self.batches = 0
        self.items = 0

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Run what is pending, batch after batch, until nothing is."""
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch = self._pending[:self._max_items]
                del self._pending[:self._max_items]
                batch = [(item, f) for item, f in batch if not f.done()]  # (cancelled)
                if batch:
                    await self._run_batch(batch)
        except asyncio.CancelledError:  # shutting down: so are the callers
            for _, f in [*batch, *self._pending]:
                f.cancel()
            self._pending = []
            raise

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or self._rerun_if is None or not self._rerun_if(exc):
                for _, f in batch:
                    _resolve(f, exc)
                return
            # one item may be what failed: each alone, so that the others still succeed
            for k, (item, f) in enumerate(batch):
                if f.done():  # its caller gave up meanwhile: nothing of it was written
                    continue
                try:
                    [one] = await self._run([item])
                    _resolve(f, one)
                except Exception as failure:
                    _resolve(f, failure)
                    if not self._rerun_if(failure):  # not this item's: every one's now
                        for _, rest in batch[k + 1:]:
                            _resolve(rest, failure)
                        return
            return
        if len(results) != len(batch):
            error = RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
            for _, f in batch:
                _resolve(f, error)
            return
        for (_, f), result in zip(batch, results, strict=True):
            _resolve(f, result)


def _resolve(future: asyncio.Future[R], outcome: R | BaseException) -> None:
    """Settle `future` with a result or an exception, unless its caller gave up on it."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
