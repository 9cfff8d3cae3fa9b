"""One look at an experiment: counts, rates, verdicts, conditions, events, restarts, history."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from kubeserve.api import spec, status, validation
from kubeserve.experiment import look, readings
from kubeserve.testing.pod_metrics import PodMetrics

T0 = datetime.datetime(2025, 3, 1, 9, 0, tzinfo=datetime.UTC)
BEFORE = "2025-03-01T08:00:00Z"
BASE: dict[str, Any] = {
    "apiVersion": "serving.kubeserve.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "digits", "namespace": "default", "generation": 1},
    "spec": {
        "variants": [
            {"name": "v1", "weight": 50, "model": {"format": "onnx", "storageUri": "file:///m/1"}},
            {"name": "v2", "weight": 50, "model": {"format": "onnx", "storageUri": "file:///m/2"}},
        ],
        "experiment": {"control": "v1", "minSamples": 100, "metrics": ["outcome"]},
    },
}


def isvc(**changes: Any) -> spec.InferenceService:
    obj = copy.deepcopy(BASE)
    for path, value in changes.items():
        where = obj["spec"]
        *parents, leaf = path.split("__")
        for part in parents:
            where = where[int(part)] if isinstance(where, list) else where[part]
        where[leaf] = value
    return validation.parse(obj)


def at(minutes: float) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


class Pods:
    """Two stand-in pods, one per variant, read the way the operator reads them."""

    def __init__(self) -> None:
        self.servers = {"v1": PodMetrics(version="v1"), "v2": PodMetrics(version="v2")}
        self.restarts = {"v1": 0, "v2": 0}

    def read(self) -> list[readings.PodReading]:
        return [
            readings.PodReading(
                uid=f"uid-{variant}",
                name=f"digits-{variant}-0",
                variant=variant,
                restarts=self.restarts[variant],
                started=BEFORE,
                counters=readings.parse_metrics(pod.render(), variant, self.restarts[variant]),
            )
            for variant, pod in self.servers.items()
        ]


def step(
    obj: spec.InferenceService, previous: dict[str, Any], pods: Pods, minutes: float
) -> tuple[look.Look, dict[str, Any]]:
    result = look.look(obj, previous, pods.read(), at(minutes))
    return result, result.apply(previous)


def test_the_first_look_starts_the_experiment_with_every_pod_a_baseline() -> None:
    pods = Pods()
    pods.servers["v1"].serve(500)
    result = look.look(isvc(), {}, pods.read(), at(0))
    e = result.experiment
    assert e["startTime"] == e["lastCollected"] == "2025-03-01T09:00:00Z"
    assert e["verdict"] == "Collecting" and e["control"] == "v1"
    assert e["variants"]["v1"]["requests"] == 0 and e["variants"]["v1"]["weight"] == 50
    assert e["pods"]["uid-v1"]["requests"] == 500
    assert e["slowThresholdSeconds"] == 0.25
    assert [c["type"] for c in result.conditions] == [look.CONCLUSIVE, look.SAMPLE_RATIO]
    assert [c["status"] for c in result.conditions] == ["False", "False"]
    assert result.events == []
    status.ExperimentStatus.model_validate(e)  # the schema's own fields, nothing else


def test_counts_rates_and_latency_since_the_start() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    pods.servers["v1"].serve(90, seconds=0.003)
    pods.servers["v1"].serve(10, code=503, seconds=0.4)
    pods.servers["v2"].outcome(40, 10)
    pods.servers["v2"].value(1.0, 2.0, 6.0)
    second, current = step(isvc(), current, pods, 1)
    v1, v2 = second.experiment["variants"]["v1"], second.experiment["variants"]["v2"]
    assert (v1["requests"], v1["errors"], v1["slow"]) == (100, 10, 10)
    assert (v1["errorRate"], v1["slowRate"]) == (0.1, 0.1)
    assert v1["latency"]["p50"] == pytest.approx(0.0025 + 0.0025 * (50 / 90), rel=1e-5)
    assert v1["latency"]["p99"] == pytest.approx(0.25 + 0.25 * (9 / 10), rel=1e-5)
    assert (v2["feedback"], v2["positives"], v2["outcomeRate"]) == (40, 10, 0.25)
    assert (v2["values"], v2["valueMean"]) == (3, 3.0)
    assert second.experiment["lastCollected"] == "2025-03-01T09:01:00Z"
    assert len(second.experiment["history"]) == 2


def test_a_look_with_nothing_new_changes_nothing_not_even_last_collected() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    pods.servers["v1"].serve(10)
    _, current = step(isvc(), current, pods, 1)
    again, after = step(isvc(), current, pods, 2)
    assert again.experiment == current["experiment"]
    assert after == current
    assert again.events == []


def test_rates_are_rounded_to_six_significant_digits() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    pods.servers["v1"].serve(2999)
    pods.servers["v1"].serve(1, code=500)
    pods.servers["v1"].serve(2, code=500)
    result, _ = step(isvc(), current, pods, 1)
    assert result.experiment["variants"]["v1"]["errorRate"] == 0.000999334  # 3 of 3,002


@pytest.mark.parametrize(
    "change",
    [
        {"experiment__minSamples": 200},
        {"experiment__slowThreshold": "500ms"},
        {"variants__1__model__storageUri": "file:///m/2b"},
    ],
)
def test_changing_the_experiment_or_a_model_starts_it_again(change: dict[str, Any]) -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    pods.servers["v1"].serve(30)
    _, current = step(isvc(), current, pods, 1)
    pods.servers["v1"].serve(5)
    restarted, _ = step(isvc(**change), current, pods, 2)
    e = restarted.experiment
    assert e["startTime"] == "2025-03-01T09:02:00Z"
    assert e["variants"]["v1"]["requests"] == 0 and e["pods"]["uid-v1"]["requests"] == 35
    assert len(e["history"]) == 1
    assert [reason for reason, _ in restarted.events] == [look.RESTARTED]


def test_changing_the_weights_does_not_start_it_again() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    pods.servers["v1"].serve(30)
    _, current = step(isvc(), current, pods, 1)
    pods.servers["v1"].serve(5)
    reweighted = isvc(variants__0__weight=80, variants__1__weight=20)
    result, _ = step(reweighted, current, pods, 2)
    e = result.experiment
    assert e["startTime"] == current["experiment"]["startTime"]
    assert e["variants"]["v1"]["requests"] == 35 and e["variants"]["v1"]["weight"] == 80
    # 30 requests shared 50/50, then 5 shared 80/20
    assert e["variants"]["v1"]["expected"] == pytest.approx(15 + 4)


def test_a_clear_difference_concludes_with_a_condition_and_an_event() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    events: list[tuple[str, str]] = []
    for minute in range(1, 30):
        pods.servers["v1"].serve(200)
        pods.servers["v2"].serve(200)
        pods.servers["v1"].outcome(200, 20)
        pods.servers["v2"].outcome(200, 60)
        result, current = step(isvc(), current, pods, minute)
        events += result.events
        if result.experiment["verdict"] == "Better":
            break
    assert current["experiment"]["verdict"] == "Better"
    assert "v2 better on outcome" in current["experiment"]["summary"]
    conclusive = next(c for c in current["conditions"] if c["type"] == look.CONCLUSIVE)
    assert (conclusive["status"], conclusive["reason"]) == ("True", "Better")
    assert events[-1][0] == "VerdictBetter" and "v2 better on outcome" in events[-1][1]


def test_a_sample_ratio_mismatch_is_flagged_once_with_a_warning_event() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    flagged: list[str] = []
    for minute in range(1, 4):
        pods.servers["v1"].serve(3000)
        pods.servers["v2"].serve(1000)
        result, current = step(isvc(), current, pods, minute)
        flagged += [reason for reason, _ in result.events if reason == look.SAMPLE_RATIO]
    assert flagged == [look.SAMPLE_RATIO]
    assert look.SAMPLE_RATIO in look.WARNING_REASONS
    srm = next(c for c in current["conditions"] if c["type"] == look.SAMPLE_RATIO)
    assert srm["status"] == "True" and srm["lastTransitionTime"] == "2025-03-01T09:01:00Z"


def test_an_unreadable_pod_is_listed_and_keeps_its_counters() -> None:
    pods = Pods()
    pods.servers["v2"].serve(7)
    _, current = step(isvc(), {}, pods, 0)
    broken = [
        r
        if r.variant == "v1"
        else readings.PodReading(r.uid, r.name, r.variant, r.restarts, r.started, None, "HTTP 500")
        for r in pods.read()
    ]
    result = look.look(isvc(), current, broken, at(1))
    assert result.experiment["unreadable"] == [{"pod": "digits-v2-0", "reason": "HTTP 500"}]
    assert result.experiment["pods"]["uid-v2"]["requests"] == 7


@pytest.mark.parametrize(
    ("threshold", "bound"), [("200ms", 0.25), ("250ms", 0.25), ("300ms", 0.5), ("10s", 10.0)]
)
def test_slow_is_counted_above_the_bucket_bound_at_or_above_the_threshold(
    threshold: str, bound: float
) -> None:
    assert (
        readings.BOUNDS[
            look.slow_bucket(
                spec.Experiment(control="v1", slow_threshold=threshold).slow_threshold_seconds()
            )
        ]
        == bound
    )


def test_quantiles_interpolate_inside_a_bucket_and_stop_at_the_largest_bound() -> None:
    buckets = [0.0] * len(readings.BOUNDS)
    buckets[0] = 10  # (0, 0.1 ms]
    assert look.quantile(buckets, 0.5) == pytest.approx(0.00005)
    buckets[-1] = 90  # above 10 s
    assert look.quantile(buckets, 0.99) == 10.0
    assert look.quantile([0.0] * len(readings.BOUNDS), 0.5) is None


def test_history_stays_bounded_keeping_the_first_and_last_looks() -> None:
    points = [status.HistoryPoint(time=f"t{i}", comparisons=[]) for i in range(250)]
    kept = look.thin(points)
    assert len(kept) <= look.MAX_HISTORY_POINTS
    assert kept[0].time == "t0" and kept[-1].time == "t249"
    many = status.HistoryEstimate(variant="v2", metric="outcome")
    wide = [status.HistoryPoint(time=f"t{i}", comparisons=[many] * 60) for i in range(100)]
    assert sum(len(p.comparisons) for p in look.thin(wide)) <= look.MAX_HISTORY_ESTIMATES


def test_history_grows_one_point_per_look_that_counted_something() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    for minute in range(1, 150):
        pods.servers["v1"].serve(1)
        _, current = step(isvc(), current, pods, minute)
    history = current["experiment"]["history"]
    assert len(history) <= look.MAX_HISTORY_POINTS
    assert history[0]["time"] == "2025-03-01T09:00:00Z"
    assert history[-1]["time"] == current["experiment"]["lastCollected"]


def test_removing_the_experiment_removes_its_status_and_conditions_only() -> None:
    before = {
        "observedGeneration": 2,
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": look.CONCLUSIVE, "status": "False"},
            {"type": look.SAMPLE_RATIO, "status": "False"},
        ],
        "experiment": {"verdict": "Collecting"},
    }
    assert look.without_experiment(before) == {
        "observedGeneration": 2,
        "conditions": [{"type": "Ready", "status": "True"}],
    }


def test_apply_replaces_the_experiment_conditions_in_place() -> None:
    result = look.Look(
        experiment={"verdict": "Better"},
        conditions=[
            {"type": look.CONCLUSIVE, "status": "True"},
            {"type": look.SAMPLE_RATIO, "status": "False"},
        ],
        events=[],
    )
    before = {"conditions": [{"type": "Ready"}, {"type": look.CONCLUSIVE, "status": "False"}]}
    assert result.apply(before)["conditions"] == [
        {"type": "Ready"},
        {"type": look.CONCLUSIVE, "status": "True"},
        {"type": look.SAMPLE_RATIO, "status": "False"},
    ]


def test_two_looks_in_one_second_leave_one_history_point() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    pods.servers["v1"].serve(3)
    _, current = step(isvc(), current, pods, 0.001)
    assert [p["time"] for p in current["experiment"]["history"]] == ["2025-03-01T09:00:00Z"]


def test_a_restart_that_read_nothing_counts_from_the_last_look_s_counters() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    pods.servers["v1"].serve(30)
    _, current = step(isvc(), current, pods, 1)
    changed = isvc(experiment__minSamples=200)
    # The operator looks at once when the experiment starts again, reading no pod.
    restarted = look.look(changed, current, None, at(1.25))
    e = restarted.experiment
    assert e["startTime"] == "2025-03-01T09:01:15Z" and e["variants"]["v1"]["requests"] == 0
    assert e["pods"]["uid-v1"]["requests"] == 30 and e["lastCollected"] == "2025-03-01T09:01:00Z"
    pods.servers["v1"].serve(5)
    after, _ = step(changed, restarted.apply(current), pods, 2)
    assert after.experiment["variants"]["v1"]["requests"] == 5


def test_a_restart_that_read_nothing_takes_no_baseline_older_than_an_interval() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    restarted = look.look(isvc(experiment__minSamples=200), current, None, at(5))
    assert "pods" not in restarted.experiment and "lastCollected" not in restarted.experiment


def test_a_look_that_read_nothing_changes_nothing() -> None:
    pods = Pods()
    _, current = step(isvc(), {}, pods, 0)
    pods.servers["v1"].serve(30)
    _, current = step(isvc(), current, pods, 1)
    assert look.look(isvc(), current, None, at(2)).experiment == current["experiment"]
