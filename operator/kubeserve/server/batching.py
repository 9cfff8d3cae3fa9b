"""Dynamic batching: concurrent requests to one model version share a model call.

Requests queue until ``max_batch_size`` rows wait, or for at most ``max_wait`` seconds; with
``max_wait`` 0 the batcher never waits on purpose: an idle model takes what arrived in the
same event-loop turn at once, and requests that arrive while it computes form the next
batch (no latency cost with few clients, full batches under load). Then their inputs are
concatenated along the batch dim, the model runs once in a worker
thread (so the event loop keeps accepting the next batch meanwhile), and each caller gets
back exactly its own rows. Requests whose inputs cannot be concatenated (other dtypes or
trailing dims) go in separate groups. When a batch's model call fails, each of its requests
is run again on its own, so that a request the model refuses fails alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

import numpy as np

from kubeserve.server import model, row_slices

Arrays = dict[str, np.ndarray]
_Signature = tuple[tuple[str, str, tuple[int, ...]], ...]


class Batcher:
    """Queue and batch ``predict`` calls for one model version."""

    def __init__(
        self,
        target: model.Model,
        *,
        max_batch_size: int,
        max_wait: float,
        on_batch: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self.model = target
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.on_batch = on_batch
        # One thread: model calls run one at a time, which is what lets the queue fill.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"batch-{target.version}"
        )
        self._pending: list[tuple[_Signature, Arrays, int, asyncio.Future[Arrays]]] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._running = 0  # batches being computed
        self._soon = False  # a flush is scheduled for the end of this loop turn

    async def predict(self, inputs: Arrays) -> Arrays:
        """Return the model's outputs for ``inputs`` (rows along the first dim)."""
        loop = asyncio.get_running_loop()
        rows = int(next(iter(inputs.values())).shape[0]) if inputs else 0
        signature = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
        future: asyncio.Future[Arrays] = loop.create_future()
        self._pending.append((signature, inputs, rows, future))
        self._rows += rows
        if self._rows >= self.max_batch_size:
            self._flush()
        elif self.max_wait <= 0:
            if self._running == 0 and not self._soon:
                self._soon = True
                loop.call_soon(self._flush_if_idle)
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait, self._flush)
        return await future

    def _flush_if_idle(self) -> None:
        self._soon = False
        if self._pending and self._running == 0:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending, self._rows = self._pending, [], 0
        groups: dict[_Signature, list[tuple[Arrays, int, asyncio.Future[Arrays]]]] = {}
        for signature, inputs, rows, future in pending:
            groups.setdefault(signature, []).append((inputs, rows, future))
        for members in groups.values():
            task = asyncio.ensure_future(self._run(members))
            # The loop keeps only weak references to tasks; hold it until it finishes.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, members: list[tuple[Arrays, int, asyncio.Future[Arrays]]]) -> None:
        loop = asyncio.get_running_loop()
        names = list(members[0][0])
        # A lone request skips the copy that concatenation would make.
        merged = (
            members[0][0]
            if len(members) == 1
            else {n: np.concatenate([m[0][n] for m in members]) for n in names}
        )
        total = sum(m[1] for m in members)
        self._running += 1
        try:
            outputs = await loop.run_in_executor(
                self._executor, row_slices.predict, self.model, merged
            )
        except Exception as exc:
            if len(members) == 1:
                _fail(members[0][2], exc)
            else:
                # One caller's values may be what the model refused (1e308 overflowing a
                # scaler): each caller gets its own call, and only the culprit the error.
                await self._one_by_one(loop, members)
            return
        finally:
            self._running -= 1
            if self.max_wait <= 0 and self._running == 0 and self._pending:
                self._flush()  # what queued while the model was busy is the next batch
        self.on_batch(total)
        start = 0
        for _, rows, future in members:
            own = {
                k: (v[start : start + rows] if v.ndim and v.shape[0] == total else v)
                for k, v in outputs.items()
            }
            start += rows
            if not future.done():  # the caller may have gone away
                future.set_result(own)

    async def _one_by_one(
        self,
        loop: asyncio.AbstractEventLoop,
        members: list[tuple[Arrays, int, asyncio.Future[Arrays]]],
    ) -> None:
        for inputs, rows, future in members:
            if future.done():
                continue  # the caller went away
            try:
                outputs = await loop.run_in_executor(
                    self._executor, row_slices.predict, self.model, inputs
                )
            except Exception as exc:
                _fail(future, exc)
                continue
            self.on_batch(rows)
            if not future.done():
                future.set_result(outputs)

    def close(self) -> None:
        """Stop the worker thread once queued calls finish."""
        self._executor.shutdown(wait=True)


def _fail(future: asyncio.Future[Arrays], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
