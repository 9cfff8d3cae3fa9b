"""Reconciles asked for by events, coalesced per InferenceService and worked off by threads.

Why not a reconcile inside each kopf handler: a burst (1,000 creations, or a restart that
resumes them all) brings a dozen events per InferenceService, and each event waiting for a
thread holds its parsed body and kopf's machinery for it. The backlog, not the live data, made
the operator's peak memory. Here an event costs a small entry; the work of one
InferenceService noted while it waits becomes one piece of work (see `work`), which reads the
latest state from the watch caches; and work the API refused is tried again after a delay,
or later when the API said how long to wait (its Retry-After).
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from kubeserve.controller import work

logger = logging.getLogger(__name__)

UNEXPECTED_DELAY = 30.0
# The longest Retry-After honoured. kube-apiserver asks for a second or a few (priority and
# fairness, max-in-flight); a larger value comes from a proxy or a bug, and obeying it whole
# (a day, say) would leave an InferenceService unreconciled that long with nothing in its
# status to say why. A minute is twelve of the usual retry delays, and a fifth of a resync.
MAX_RETRY_AFTER = 60.0


def honoured(delay: float, after: float | None) -> float:
    """Give how long to wait before trying again: ``delay``, or the API's Retry-After
    (``after``) when that is longer, counted up to MAX_RETRY_AFTER."""
    if after is None:
        return delay
    return max(delay, min(after, MAX_RETRY_AFTER))


# Do `work` for one owner; the trigger (a metrics label: "create", "pod-event" ...) says what
# asked for it.
WorkOff = Callable[[Hashable, work.Work, str], None]


class Timers:
    """Calls functions after a delay, all from one thread.

    A threading.Timer per delay would be a thread per InferenceService in a burst (a status
    to write once it settles, a retry while the API is down); the calls here only note work,
    so one thread serves them all.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        """Call `fn(*args)` in `delay` seconds (it must be quick: one thread calls them all)."""
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn, args))
            self._cond.notify()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="kubeserve-timers", daemon=True).start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                _, _, fn, args = heapq.heappop(self._heap)
            try:
                fn(*args)
            except Exception:
                logger.exception(f"a delayed call of {fn} failed")


class Retry(Exception):
    """Raised by the work function when the owner must be worked on again later.

    `after`: the seconds the API asked to wait (its Retry-After), None when it said nothing.
    """

    def __init__(self, after: float | None = None) -> None:
        super().__init__(after)
        self.after = after


@dataclasses.dataclass
class _Entry:
    todo: work.Work
    trigger: str

    def merge(self, more: work.Work, trigger: str) -> None:
        # A full reconcile's trigger says more than the events it covers; else the first stays.
        if isinstance(more, work.FullReconcile) and not isinstance(self.todo, work.FullReconcile):
            self.trigger = trigger
        self.todo = work.merge(self.todo, more)


class PendingWork:
    """A set of owners with work pending; an owner is worked on by one thread at a time."""

    def __init__(self, work_off: WorkOff, *, threads: int, retry_delay: float) -> None:
        self._work_off = work_off
        self._threads = threads
        self._retry_delay = retry_delay
        self._pending: dict[Hashable, _Entry] = {}
        self._order: collections.deque[Hashable] = collections.deque()
        self._busy: set[Hashable] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self.timers = Timers()

    def add(self, owner: Hashable, more: work.Work, trigger: str) -> None:
        """Note work for `owner`; it joins the work already waiting for it (`work.merge`)."""
        with self._cond:
            entry = self._pending.get(owner)
            if entry is None:
                self._pending[owner] = _Entry(more, trigger)
                # An owner being worked on is queued again when its worker is done.
                if owner not in self._busy:
                    self._order.append(owner)
                    self._cond.notify()
            else:
                entry.merge(more, trigger)

    def retry_delay(self, after: float | None) -> float:
        """Give how long refused work waits: the usual delay, or the API's ask when longer.

        The ask counts up to MAX_RETRY_AFTER; a negative or absent one changes nothing.
        """
        return honoured(self._retry_delay, after)

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def start(self) -> None:
        """Start the worker threads (daemons: they never hold the process up)."""
        self.timers.start()
        for i in range(self._threads):
            threading.Thread(target=self._loop, name=f"kubeserve-pending-{i}", daemon=True).start()

    def stop(self) -> None:
        """Let the workers finish what they hold and exit."""
        self.timers.stop()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _take(self) -> tuple[Hashable, _Entry] | None:
        with self._cond:
            while not self._order and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            owner = self._order.popleft()
            self._busy.add(owner)
            return owner, self._pending.pop(owner)

    def _done(self, owner: Hashable) -> None:
        with self._cond:
            self._busy.discard(owner)
            if owner in self._pending:
                self._order.append(owner)
                self._cond.notify()

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            owner, entry = taken
            try:
                self._work_off(owner, entry.todo, entry.trigger)
            except Retry as retry:
                self._later(self.retry_delay(retry.after), owner, entry)
            except Exception:
                # A bug, not the API: try again, slowly, so it is neither lost nor a storm;
                # one failing owner must not stop the others.
                logger.exception(f"work for {owner} failed, trying again in {UNEXPECTED_DELAY}s")
                self._later(UNEXPECTED_DELAY, owner, entry)
            finally:
                self._done(owner)

    def _later(self, delay: float, owner: Hashable, entry: _Entry) -> None:
        self.timers.call_later(delay, self.add, owner, entry.todo, entry.trigger)
