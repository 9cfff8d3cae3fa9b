"""The runtime's plumbing, without threads or kopf: what events note, and how work is done."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from kubeserve import cluster
from kubeserve.builders import meta
from kubeserve.controller import informer, overlay, packed, pending, reconcile, runtime, work
from kubeserve.controller.config import OperatorConfig
from kubeserve.controller.metrics import OperatorMetrics
from support import specs

OWNER = ("default", "digits")


class StubReconciler:
    """Stands in for the Reconciler: records what it is asked, answers as told."""

    def __init__(self) -> None:
        self.overlay = overlay.WriteOverlay()
        self.asked: list[tuple[dict[str, Any], work.Work, reconcile.Observed]] = []
        self.forgotten: list[tuple[str | None, str, str | None]] = []
        self.answer: reconcile.Outcome | Exception = reconcile.Outcome()
        # What a failing reconcile did before it failed (a status written, its Events).
        self.done_before_failing: reconcile.Outcome | None = None
        self.defer: Callable[..., None] | None = None

    def settle_status(self, seconds: float, defer: Callable[..., None]) -> None:
        self.defer = defer

    def reconcile(
        self,
        body: dict[str, Any],
        observe: Callable[[], reconcile.Observed],
        todo: work.Work,
        outcome: reconcile.Outcome | None = None,
    ) -> reconcile.Outcome:
        self.asked.append((body, todo, observe()))
        if isinstance(self.answer, Exception):
            if outcome is not None and self.done_before_failing is not None:
                outcome.status_written = self.done_before_failing.status_written
                outcome.events = self.done_before_failing.events
            raise self.answer
        return self.answer

    def forget(self, namespace: str | None, name: str, uid: str | None) -> None:
        self.forgotten.append((namespace, name, uid))


Noted = list[tuple[object, work.Work, str]]


def make(**config: Any) -> tuple[runtime.OperatorRuntime, StubReconciler, Noted]:
    stub = StubReconciler()
    operator = runtime.OperatorRuntime(
        OperatorConfig(**config), cast(reconcile.Reconciler, stub), OperatorMetrics()
    )
    noted: Noted = []
    operator.note = lambda owner, todo, trigger: noted.append((owner, todo, trigger))  # type: ignore[method-assign]
    return operator, stub, noted


def child(
    kind: str, name: str, owner: str | None = "digits", revision: str = "3"
) -> dict[str, Any]:
    labels = {meta.ISVC_LABEL: owner} if owner else {}
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": labels,
            "resourceVersion": revision,
        },
    }


def test_a_child_is_owned_by_the_inferenceservice_its_label_names() -> None:
    assert informer.owner_of(child("Service", "digits-v1")) == OWNER
    assert informer.owner_of(child("Service", "other", owner=None)) is None


def test_a_child_event_asks_to_compare_that_child_under_a_trigger_named_for_its_kind() -> None:
    operator, _, noted = make()
    operator._child_changed("MODIFIED", child("Deployment", "digits-v1"))
    operator._child_changed("DELETED", child("ConfigMap", "digits-router"))
    assert noted == [
        (OWNER, work.compare(("Deployment", "digits-v1")), "deployment-event"),
        (OWNER, work.compare(("ConfigMap", "digits-router")), "configmap-event"),
    ]


def test_a_pod_event_asks_for_a_status_refresh() -> None:
    operator, _, noted = make()
    operator._child_changed("MODIFIED", child("Pod", "digits-v1-abc"))
    assert noted == [(OWNER, work.RefreshStatus(), "pod-event")]


def test_our_own_write_coming_back_and_unlabelled_objects_ask_for_nothing() -> None:
    operator, stub, noted = make()
    ours = child("Service", "digits-v1", revision="9")
    stub.overlay.remember(ours)
    operator._child_changed("MODIFIED", ours)
    operator._child_changed("ADDED", child("Service", "stray", owner=None))
    assert noted == []


def test_work_is_done_on_the_body_the_index_holds_and_counted_by_trigger() -> None:
    operator, stub, _ = make()
    body = specs.isvc(name="digits", namespace="default")
    operator.capture({OWNER: [packed.pack(body)]})
    operator._work_off(OWNER, work.RefreshStatus(), "pod-event")
    [(seen, todo, observed)] = stub.asked
    assert seen == body and todo == work.RefreshStatus()
    assert observed.unmanaged_kinds == frozenset({"HTTPRoute", "GRPCRoute"}), "no --gateway-api"
    counted = operator.metrics.registry.get_sample_value(
        "kubeserve_operator_reconciles_total", {"trigger": "pod-event", "result": "ok"}
    )
    assert counted == 1


def test_work_for_an_inferenceservice_the_index_does_not_hold_does_nothing() -> None:
    operator, stub, _ = make()
    operator._work_off(OWNER, work.FullReconcile(), "resync")
    operator.capture({})
    operator._work_off(OWNER, work.FullReconcile(), "resync")
    assert stub.asked == []


def test_a_refusal_worth_retrying_goes_back_to_the_queue_and_others_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    operator, stub, _ = make()
    operator.capture({OWNER: [packed.pack(specs.isvc(name="digits", namespace="default"))]})
    stub.answer = cluster.ApiError(503, "Unavailable", "down")
    with pytest.raises(pending.Retry):
        operator._work_off(OWNER, work.FullReconcile(), "create")
    stub.answer = cluster.ApiError(422, "Invalid", "refused")
    with caplog.at_level(logging.ERROR, logger="kubeserve.reconcile"):
        operator._work_off(OWNER, work.FullReconcile(), "create")
    assert "the API refused a call" in caplog.text


def test_an_invalid_spec_is_told_in_an_event_or_logged_when_none_can_be_posted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    operator, stub, _ = make()
    operator.capture({OWNER: [packed.pack(specs.isvc(name="digits", namespace="default"))]})
    stub.answer = reconcile.Outcome(invalid=["weights sum to 70"], status_written=True)
    with caplog.at_level(logging.WARNING, logger="kubeserve.changes"):
        operator._work_off(OWNER, work.FullReconcile(), "create")
    # Outside kopf there is no context to post from: the event is logged instead.
    assert "event not posted: InvalidSpec: weights sum to 70" in caplog.text


def test_a_settled_status_is_noted_by_the_timer_thread() -> None:
    operator, stub, noted = make()
    assert stub.defer is not None
    operator.work.timers.start()
    try:
        stub.defer(OWNER, 0.01)
        deadline = time.monotonic() + 5
        while not noted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert noted == [(OWNER, work.RefreshStatus(settled=True), "settled-status")]
    finally:
        operator.work.timers.stop()


def test_the_resync_notes_a_full_reconcile_of_every_inferenceservice() -> None:
    operator, _, noted = make(resync_seconds=0.01)
    other = ("team-a", "mnist")
    operator.capture({OWNER: [b""], other: [b""]})
    thread = threading.Thread(target=operator._resync_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while len(noted) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    operator.stop()
    thread.join(5)
    assert set(noted[:2]) == {
        (OWNER, work.FullReconcile(), "resync"),
        (other, work.FullReconcile(), "resync"),
    }


def test_a_deleted_inferenceservice_is_forgotten_and_leaves_the_overlay() -> None:
    operator, stub, _ = make()
    body = specs.isvc(name="digits", namespace="default")
    body["metadata"]["resourceVersion"] = "4"
    stub.overlay.remember(body)
    operator.inferenceservice_seen("DELETED", body, namespace="default", name="digits", uid="u1")
    assert stub.forgotten == [("default", "digits", "u1")]
    assert len(stub.overlay) == 0


def test_only_the_first_handler_call_is_captured() -> None:
    operator, stub, _ = make()
    first: dict[Any, Any] = {}
    operator.capture(first)
    operator.capture({OWNER: [packed.pack(specs.isvc(name="digits", namespace="default"))]})
    operator._work_off(OWNER, work.FullReconcile(), "create")
    assert stub.asked == [], "kopf's index is one object for every call: the first is kept"


class StubCollector:
    """Stands in for the collector: records what the runtime asks it to collect."""

    def __init__(self) -> None:
        self.tracked: list[tuple[str, float | None, tuple[str, ...]]] = []

    def track(
        self, owner: object, every: float | None, variants: Any, *, purpose: str = "experiment"
    ) -> None:
        self.tracked.append((purpose, every, tuple(variants)))


def test_a_running_rollout_is_collected_at_its_interval_whatever_the_experiments_setting() -> None:
    for config, experiment, rollout in [
        ({}, 30.0, 10.0),
        ({"rollout_interval_override": 0.5, "experiment_interval_override": 0.2}, 0.2, 0.5),
        ({"scrape_pods": False}, None, 10.0),
    ]:
        operator, stub, _ = make(**config)
        collector = StubCollector()
        operator.collector = collector  # type: ignore[assignment]
        operator.capture({OWNER: [packed.pack(specs.isvc(name="digits", namespace="default"))]})
        stub.answer = reconcile.Outcome(
            collect_every=30.0,
            collect_variants=("v1",),
            rollout_every=10.0,
            rollout_variants=("v1", "v2"),
        )
        operator._work_off(OWNER, work.FullReconcile(), "resync")
        assert collector.tracked == [
            ("experiment", experiment, ("v1",)),
            ("rollout", rollout, ("v1", "v2")),
        ], config


def test_a_rollouts_collection_is_noted_as_the_rollouts_and_numbered() -> None:
    operator, _, noted = make()
    operator._collected(OWNER, "rollout", [], None)
    operator._collected(OWNER, "experiment", [], None)
    [(_, first, trigger), (_, second, _)] = noted
    assert isinstance(first, work.Collect) and isinstance(second, work.Collect)
    assert first.experiment is None and first.rollout is not None and trigger == "collect"
    assert second.rollout is None and second.experiment is not None
    assert second.experiment.seq > first.rollout.seq > 0


def test_the_rollouts_warnings_are_posted_as_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    operator, stub, _ = make()
    operator.capture({OWNER: [packed.pack(specs.isvc(name="digits", namespace="default"))]})
    posted: list[tuple[str, bool]] = []
    monkeypatch.setattr(
        operator,
        "event",
        lambda body, reason, message, *, warning: posted.append((reason, warning)),
    )
    stub.answer = reconcile.Outcome(
        status_written=True,
        events=[("RolloutAdvanced", "Advance 1→5"), ("RolloutRolledBack", "Roll back 5→0")],
    )
    operator._work_off(OWNER, work.FullReconcile(), "collect")
    assert posted == [("RolloutAdvanced", False), ("RolloutRolledBack", True)]


def test_the_events_of_a_status_written_before_a_failure_are_posted_all_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operator, stub, _ = make()
    operator.capture({OWNER: [packed.pack(specs.isvc(name="digits", namespace="default"))]})
    posted: list[str] = []
    monkeypatch.setattr(
        operator, "event", lambda body, reason, message, *, warning: posted.append(reason)
    )
    stub.answer = cluster.ApiError(503, "Unavailable", "the router's ConfigMap patch failed")
    stub.done_before_failing = reconcile.Outcome(
        status_written=True, events=[("RolloutAdvanced", "Advance 1→5")]
    )
    with pytest.raises(pending.Retry):
        operator._work_off(OWNER, work.Collect(), "collect")
    assert posted == ["RolloutAdvanced"]
