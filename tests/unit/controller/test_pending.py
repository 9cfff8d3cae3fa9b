"""The work queue behind the operator's handlers: coalescing, one owner at a time, retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

import pytest

from kubeserve.controller import pending, work

DEPLOYMENT = ("Deployment", "a-v1")
SERVICE = ("Service", "a-v1")


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Recorder:
    def __init__(self, gate: threading.Event | None = None, fail: int = 0) -> None:
        self.calls: list[tuple[Hashable, work.Work, str]] = []
        self.gate, self.fail = gate, fail
        self.running: set[Hashable] = set()
        self.overlaps = 0
        self.lock = threading.Lock()

    def __call__(self, owner: Hashable, todo: work.Work, trigger: str) -> None:
        with self.lock:
            if owner in self.running:
                self.overlaps += 1
            self.running.add(owner)
        try:
            if self.gate is not None:
                self.gate.wait(5)
            with self.lock:
                self.calls.append((owner, todo, trigger))
                if self.fail and owner == "a":
                    self.fail -= 1
                    raise pending.Retry()
        finally:
            with self.lock:
                self.running.discard(owner)


def test_events_of_one_owner_waiting_together_are_one_call() -> None:
    recorder = Recorder()
    queue = pending.PendingWork(recorder, threads=2, retry_delay=0.05)
    queue.add("a", work.compare(DEPLOYMENT), "deployment-event")
    queue.add("a", work.compare(SERVICE), "service-event")
    queue.add("b", work.RefreshStatus(), "pod-event")
    assert len(queue) == 2
    queue.start()
    try:
        wait_until(lambda: len(recorder.calls) == 2)
        by_owner = {owner: (todo, trigger) for owner, todo, trigger in recorder.calls}
        assert by_owner["a"] == (work.compare(DEPLOYMENT, SERVICE), "deployment-event")
        assert by_owner["b"] == (work.RefreshStatus(), "pod-event")
    finally:
        queue.stop()


def test_a_full_reconcile_absorbs_child_comparisons_and_keeps_its_reason() -> None:
    recorder = Recorder()
    queue = pending.PendingWork(recorder, threads=1, retry_delay=0.05)
    queue.add("a", work.compare(DEPLOYMENT), "deployment-event")
    queue.add("a", work.FullReconcile(), "update")
    queue.add("a", work.compare(SERVICE), "service-event")
    queue.add("a", work.FullReconcile(), "resync")
    queue.start()
    try:
        wait_until(lambda: len(recorder.calls) == 1)
        assert recorder.calls == [("a", work.FullReconcile(), "update")]
    finally:
        queue.stop()


def coalesced(*noted: tuple[work.Work, str]) -> tuple[work.Work, str]:
    """Note these for one owner before the workers start; give the one call they become."""
    recorder = Recorder()
    queue = pending.PendingWork(recorder, threads=1, retry_delay=0.05)
    for todo, trigger in noted:
        queue.add("a", todo, trigger)
    queue.start()
    try:
        wait_until(lambda: len(recorder.calls) == 1)
        time.sleep(0.05)
        assert len(recorder.calls) == 1
        _, todo, trigger = recorder.calls[0]
        return todo, trigger
    finally:
        queue.stop()


def test_a_full_reconcile_noted_after_a_status_refresh_takes_over_work_and_trigger() -> None:
    assert coalesced(
        (work.RefreshStatus(), "pod-event"),
        (work.FullReconcile(), "resync"),
        (work.RefreshStatus(settled=True), "settled-status"),
    ) == (work.FullReconcile(), "resync")


def test_a_status_refresh_rides_along_with_child_comparisons() -> None:
    todo, trigger = coalesced(
        (work.compare(SERVICE), "service-event"),
        (work.RefreshStatus(), "pod-event"),
    )
    assert todo == work.CompareChildren(frozenset({SERVICE}), status=work.RefreshStatus())
    assert trigger == "service-event", "the first trigger stays when no full reconcile comes"


def test_a_settled_status_refresh_stays_settled_whatever_it_joins() -> None:
    assert coalesced(
        (work.RefreshStatus(), "pod-event"),
        (work.RefreshStatus(settled=True), "settled-status"),
    ) == (work.RefreshStatus(settled=True), "pod-event")
    todo, _ = coalesced(
        (work.RefreshStatus(settled=True), "settled-status"),
        (work.compare(DEPLOYMENT), "deployment-event"),
        (work.RefreshStatus(), "pod-event"),
    )
    assert todo == work.CompareChildren(
        frozenset({DEPLOYMENT}), status=work.RefreshStatus(settled=True)
    )


@pytest.mark.parametrize(
    ("old", "new", "merged"),
    [
        (work.compare(DEPLOYMENT), work.compare(SERVICE), work.compare(DEPLOYMENT, SERVICE)),
        (work.compare(DEPLOYMENT), work.compare(DEPLOYMENT), work.compare(DEPLOYMENT)),
        (work.FullReconcile(), work.compare(SERVICE), work.FullReconcile()),
        (work.compare(SERVICE), work.FullReconcile(), work.FullReconcile()),
        (work.RefreshStatus(settled=True), work.FullReconcile(), work.FullReconcile()),
        (work.RefreshStatus(), work.RefreshStatus(), work.RefreshStatus()),
        (
            work.RefreshStatus(),
            work.compare(SERVICE),
            work.CompareChildren(frozenset({SERVICE}), status=work.RefreshStatus()),
        ),
        (
            work.CompareChildren(frozenset({SERVICE}), status=work.RefreshStatus(settled=True)),
            work.CompareChildren(frozenset({DEPLOYMENT}), status=work.RefreshStatus()),
            work.CompareChildren(
                frozenset({SERVICE, DEPLOYMENT}), status=work.RefreshStatus(settled=True)
            ),
        ),
    ],
)
def test_merged_work_does_what_both_did(old: work.Work, new: work.Work, merged: work.Work) -> None:
    assert work.merge(old, new) == merged
    assert work.merge(new, old) == merged, "the order events came in does not matter"


def test_an_owner_is_worked_on_by_one_thread_at_a_time_and_news_are_not_lost() -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    queue = pending.PendingWork(recorder, threads=4, retry_delay=0.05)
    queue.start()
    try:
        queue.add("a", work.FullReconcile(), "create")
        wait_until(lambda: "a" in recorder.running)
        # Arrives while "a" is being worked on: must run after, not beside, that call.
        queue.add("a", work.compare(DEPLOYMENT), "deployment-event")
        time.sleep(0.1)
        gate.set()
        wait_until(lambda: len(recorder.calls) == 2)
        assert recorder.overlaps == 0
        assert recorder.calls[1] == ("a", work.compare(DEPLOYMENT), "deployment-event")
    finally:
        queue.stop()


def test_retry_comes_back_after_the_delay_and_other_owners_go_on() -> None:
    recorder = Recorder(fail=2)
    queue = pending.PendingWork(recorder, threads=1, retry_delay=0.1)
    queue.start()
    try:
        queue.add("a", work.FullReconcile(), "create")
        wait_until(lambda: len(recorder.calls) >= 1)
        queue.add("b", work.RefreshStatus(), "pod-event")
        wait_until(lambda: len(recorder.calls) == 4)
        owners = [owner for owner, _, _ in recorder.calls]
        assert owners.count("a") == 3, "two refusals, then the call that succeeds"
        assert owners.index("b") < 3, "b is not held up behind a's retries"
        assert all(
            (todo, trigger) == (work.FullReconcile(), "create")
            for owner, todo, trigger in recorder.calls
            if owner == "a"
        )
    finally:
        queue.stop()


def test_work_the_api_refused_comes_back_as_the_same_work() -> None:
    recorder = Recorder(fail=1)
    queue = pending.PendingWork(recorder, threads=1, retry_delay=0.05)
    queue.start()
    try:
        queue.add("a", work.compare(DEPLOYMENT), "deployment-event")
        wait_until(lambda: len(recorder.calls) == 2)
        assert recorder.calls == [("a", work.compare(DEPLOYMENT), "deployment-event")] * 2
    finally:
        queue.stop()


def test_an_unexpected_error_is_tried_again_slowly_and_the_workers_carry_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pending, "UNEXPECTED_DELAY", 0.2)
    calls: list[Hashable] = []

    def work_off(owner: Hashable, todo: work.Work, trigger: str) -> None:
        calls.append(owner)
        if owner == "bad" and calls.count("bad") == 1:
            raise ValueError("boom")

    queue = pending.PendingWork(work_off, threads=1, retry_delay=0.05)
    queue.start()
    try:
        queue.add("bad", work.FullReconcile(), "create")
        queue.add("good", work.FullReconcile(), "create")
        wait_until(lambda: calls == ["bad", "good", "bad"])
    finally:
        queue.stop()


def test_timers_call_in_order_of_when_from_one_thread() -> None:
    timers = pending.Timers()
    calls: list[tuple[str, str]] = []
    timers.start()
    try:
        started = time.monotonic()
        timers.call_later(0.3, lambda: calls.append(("late", threading.current_thread().name)))
        timers.call_later(0.1, lambda: calls.append(("early", threading.current_thread().name)))
        timers.call_later(0.2, lambda: 1 / 0)  # a failing call is logged, the rest go on
        wait_until(lambda: len(calls) == 2)
        assert [what for what, _ in calls] == ["early", "late"]
        assert {name for _, name in calls} == {"kubeserve-timers"}
        assert time.monotonic() - started >= 0.3
    finally:
        timers.stop()
