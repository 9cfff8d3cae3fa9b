"""The work queue behind the operator's handlers: coalescing, one owner at a time, retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

import pytest

from kubeserve.controller import pending

ChildSet = set[tuple[str, str]] | None


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Recorder:
    def __init__(self, gate: threading.Event | None = None, fail: int = 0) -> None:
        self.calls: list[tuple[Hashable, ChildSet, str]] = []
        self.gate, self.fail = gate, fail
        self.running: set[Hashable] = set()
        self.overlaps = 0
        self.lock = threading.Lock()

    def __call__(self, owner: Hashable, children: ChildSet, reason: str) -> None:
        with self.lock:
            if owner in self.running:
                self.overlaps += 1
            self.running.add(owner)
        try:
            if self.gate is not None:
                self.gate.wait(5)
            with self.lock:
                self.calls.append((owner, None if children is None else set(children), reason))
                if self.fail and owner == "a":
                    self.fail -= 1
                    raise pending.Retry()
        finally:
            with self.lock:
                self.running.discard(owner)


def test_events_of_one_owner_waiting_together_are_one_call() -> None:
    work = Recorder()
    queue = pending.PendingWork(work, threads=2, retry_delay=0.05)
    queue.compare("a", ("Deployment", "a-v1"), "deployment-event")
    queue.compare("a", ("Service", "a-v1"), "service-event")
    queue.refresh_status("b", "pod-event")
    assert len(queue) == 2
    queue.start()
    try:
        wait_until(lambda: len(work.calls) == 2)
        by_owner = {owner: (children, reason) for owner, children, reason in work.calls}
        assert by_owner["a"] == ({("Deployment", "a-v1"), ("Service", "a-v1")}, "deployment-event")
        assert by_owner["b"] == (set(), "pod-event"), "an empty set asks for the status only"
    finally:
        queue.stop()


def test_a_full_reconcile_absorbs_child_comparisons_and_keeps_its_reason() -> None:
    work = Recorder()
    queue = pending.PendingWork(work, threads=1, retry_delay=0.05)
    queue.compare("a", ("Deployment", "a-v1"), "deployment-event")
    queue.reconcile("a", "update")
    queue.compare("a", ("Service", "a-v1"), "service-event")
    queue.start()
    try:
        wait_until(lambda: len(work.calls) == 1)
        assert work.calls == [("a", None, "update")]
    finally:
        queue.stop()


def test_an_owner_is_worked_on_by_one_thread_at_a_time_and_news_are_not_lost() -> None:
    gate = threading.Event()
    work = Recorder(gate=gate)
    queue = pending.PendingWork(work, threads=4, retry_delay=0.05)
    queue.start()
    try:
        queue.reconcile("a", "create")
        wait_until(lambda: "a" in work.running)
        # Arrives while "a" is being worked on: must run after, not beside, that call.
        queue.compare("a", ("Deployment", "a-v1"), "deployment-event")
        time.sleep(0.1)
        gate.set()
        wait_until(lambda: len(work.calls) == 2)
        assert work.overlaps == 0
        assert work.calls[1] == ("a", {("Deployment", "a-v1")}, "deployment-event")
    finally:
        queue.stop()


def test_retry_comes_back_after_the_delay_and_other_owners_go_on() -> None:
    work = Recorder(fail=2)
    queue = pending.PendingWork(work, threads=1, retry_delay=0.1)
    queue.start()
    try:
        queue.reconcile("a", "create")
        wait_until(lambda: len(work.calls) >= 1)
        queue.refresh_status("b", "pod-event")
        wait_until(lambda: len(work.calls) == 4)
        owners = [owner for owner, _, _ in work.calls]
        assert owners.count("a") == 3, "two refusals, then the call that succeeds"
        assert owners.index("b") < 3, "b is not held up behind a's retries"
        assert all(reason == "create" for owner, _, reason in work.calls if owner == "a")
    finally:
        queue.stop()


def test_an_unexpected_error_is_tried_again_slowly_and_the_workers_carry_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pending, "UNEXPECTED_DELAY", 0.2)
    calls: list[Hashable] = []

    def work(owner: Hashable, children: ChildSet, reason: str) -> None:
        calls.append(owner)
        if owner == "bad" and calls.count("bad") == 1:
            raise ValueError("boom")

    queue = pending.PendingWork(work, threads=1, retry_delay=0.05)
    queue.start()
    try:
        queue.reconcile("bad", "create")
        queue.reconcile("good", "create")
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
