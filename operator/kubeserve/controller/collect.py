"""When each experiment and rollout is collected, and the threads that read its pods.

Every InferenceService with spec.experiment is collected once per `experiment.interval`, and
one with a running rollout once per `rollout.interval` (each purpose has a schedule of its
own: the intervals differ, and a rollout counts a failed check per look); one without costs
nothing (it is not in the schedule). The reconciles say what to collect (`track`), so the
schedule follows the specs and statuses without a watch of its own.

Threads (see `runtime` for how they meet the rest):
- `kubeserve-collect` keeps the schedule: it sleeps until the next collection is due and
  hands its pods to the readers. It only reads the pod cache and submits work.
- `kubeserve-scrape-<n>` (`threads` of them) read one pod each at a time (see `scrape`);
  the last read of a collection delivers the readings, which notes a `work.Collect` for
  the InferenceService: the status is written by the reconciles, like any other status.
  With `query` (Prometheus, see `prometheus`) an experiment's collection is one question
  instead; a rollout's always reads the pods (its look counts per pod).

No thundering herd: each InferenceService has a fixed phase inside its interval (a hash of
its name and purpose), so 1,000 of them created at once, or an operator restart, spread their
collections over the interval instead of reading every pod in the same second; and the next
collection is due one interval after the last was due, not after it finished, so the phases
never drift together. A collection still reading when the next is due skips that one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import heapq
import itertools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Collection, Hashable
from typing import Literal

from kubeserve.controller import scrape
from kubeserve.experiment import readings

logger = logging.getLogger(__name__)

Owner = Hashable  # (namespace, name) of an InferenceService
# What a collection is for: each has its own schedule.
Purpose = Literal["experiment", "rollout"]
_Key = tuple[Owner, Purpose]
# The pods to read for an owner, given the variants being compared.
Targets = Callable[[Owner, Collection[str]], list[scrape.Target]]
Read = Callable[[scrape.Target], readings.PodReading]
# Prometheus mode: the counts of an owner's variants (None: nothing to ask for yet).
Query = Callable[[Owner, Collection[str]], readings.VariantTotals | None]
# Hand over one collection: its purpose, the pod readings, or Prometheus' totals.
Deliver = Callable[[Owner, Purpose, list[readings.PodReading], readings.VariantTotals | None], None]
THREADS = 8


@dataclasses.dataclass
class _Plan:
    every: float
    variants: frozenset[str]
    token: int  # which schedule entry is current: a changed interval makes a new one
    busy: bool = False


def phase(owner: Owner, every: float, purpose: Purpose = "experiment") -> float:
    """Give an owner's fixed offset inside its interval, in seconds: spread, and stable."""
    key = owner if purpose == "experiment" else (owner, purpose)
    return zlib.crc32(repr(key).encode()) / 2**32 * every


class Collector:
    """The schedule of every tracked experiment and rollout, and the pool that reads pods."""

    def __init__(
        self,
        targets: Targets,
        deliver: Deliver,
        *,
        read: Read = scrape.read_pod,
        query: Query | None = None,
        threads: int = THREADS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._targets = targets
        self._deliver = deliver
        self._read = read
        self._query = query
        self._threads = threads
        self._clock = clock
        self._plans: dict[_Key, _Plan] = {}
        self._heap: list[tuple[float, int, _Key]] = []
        self._tokens = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def track(
        self,
        owner: Owner,
        every: float | None,
        variants: Collection[str],
        *,
        purpose: Purpose = "experiment",
    ) -> None:
        """Collect `owner` for `purpose` every `every` seconds from the pods of `variants`.

        None: never (for that purpose).
        """
        key: _Key = (owner, purpose)
        with self._cond:
            if every is None:
                self._plans.pop(key, None)  # its schedule entry is skipped when due
                return
            plan = self._plans.get(key)
            if plan is not None and plan.every == every:
                plan.variants = frozenset(variants)
                return
            token = next(self._tokens)
            self._plans[key] = _Plan(
                every, frozenset(variants), token, plan.busy if plan else False
            )
            now = self._clock()
            due = now + (phase(owner, every, purpose) - now) % every
            heapq.heappush(self._heap, (due, token, key))
            self._cond.notify()

    def untrack(self, owner: Owner) -> None:
        """Collect `owner` no more, for any purpose (it was deleted)."""
        with self._cond:
            for purpose in ("experiment", "rollout"):
                self._plans.pop((owner, purpose), None)

    def tracked(self, purpose: Purpose = "experiment") -> int:
        """Give how many InferenceServices are collected for `purpose`."""
        with self._cond:
            return sum(1 for _, p in self._plans if p == purpose)

    def start(self) -> None:
        """Start the schedule's thread and the readers."""
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self._threads, thread_name_prefix="kubeserve-scrape"
        )
        threading.Thread(target=self._loop, name="kubeserve-collect", daemon=True).start()

    def stop(self) -> None:
        """Stop scheduling; reads under way finish and deliver nothing more."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > self._clock()):
                    wait = self._heap[0][0] - self._clock() if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
                due, token, key = heapq.heappop(self._heap)
                plan = self._plans.get(key)
                if plan is None or plan.token != token:
                    continue  # untracked, or rescheduled under another token
                later = due + plan.every
                now = self._clock()
                if later <= now:  # fell behind (a paused process): the next slot of its phase
                    later = now + (due - now) % plan.every or plan.every
                heapq.heappush(self._heap, (later, token, key))
                if plan.busy:
                    logger.debug(f"{key}: the last collection is still reading; skipped one")
                    continue
                plan.busy = True
                variants = plan.variants
            try:
                self._collect(key, variants)
            except Exception:  # one InferenceService's failure must not end the schedule
                logger.exception(f"{key}: collecting failed")
                self._done(key)

    def _collect(self, key: _Key, variants: Collection[str]) -> None:
        assert self._pool is not None
        owner, purpose = key
        if self._query is not None and purpose == "experiment":
            self._pool.submit(self._ask, key, variants)
            return
        found = self._targets(owner, variants)
        if not found:
            self._done(key)
            self._deliver(owner, purpose, [], None)
            return
        gathered: list[readings.PodReading] = []
        lock = threading.Lock()

        def read_one(target: scrape.Target) -> None:
            try:
                got = self._read(target)
            except Exception as exc:  # a bug in a read: the pod is unreadable, not the rest
                logger.exception(f"{owner}: reading {target.name} failed")
                got = target.reading(None, f"reading failed: {exc!r}"[:200])
            with lock:
                gathered.append(got)
                last = len(gathered) == len(found)
            if last:
                self._done(key)
                if not self._stopped:
                    self._deliver(owner, purpose, list(gathered), None)

        for target in found:
            self._pool.submit(read_one, target)

    def _ask(self, key: _Key, variants: Collection[str]) -> None:
        assert self._query is not None
        owner, purpose = key
        try:
            totals = self._query(owner, variants)
        except Exception:
            logger.exception(f"{owner}: asking Prometheus failed")
            totals = None
        self._done(key)
        if totals is not None and not self._stopped:
            self._deliver(owner, purpose, [], totals)

    def _done(self, key: _Key) -> None:
        with self._cond:
            plan = self._plans.get(key)
            if plan is not None:
                plan.busy = False
