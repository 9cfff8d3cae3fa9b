"""The real operator collects experiments from variant pods served by real HTTP servers.

Pods are created by the test (`StandInPods`), as kubelets would report them: an IP on the loopback network
(127.0.0.x, one per pod) where a stand-in server answers /metrics with the counters a
kubeserve server keeps, and a container port named http. The operator collects every half
second (a test-only setting; the API's least interval is 5 s).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.kube_client import EVENTS, ISVC, Kube, wait_for
from kubeserve.testing.operator_process import OperatorProcess
from kubeserve.testing.pod_metrics import StandInPods
from support import settling, specs
from support.experiments import INTERVAL, experiment, experiment_isvc, requests, wait_requests


@pytest.fixture(scope="module")
def operator(start_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    return start_operator("experiment-operator", "--testing-experiment-interval", str(INTERVAL))


def start(kube: Kube, namespace: str, pods: StandInPods, obj: dict[str, Any] | None = None) -> None:
    """Create the InferenceService and its pods; wait until every pod is a baseline."""
    obj = copy.deepcopy(obj or experiment_isvc())
    obj["metadata"]["namespace"] = namespace
    kube.create(ISVC, namespace, obj)
    pods.add("digits-v1-a", "v1")
    pods.add("digits-v2-a", "v2")
    pods.serve("digits-v1-a", 1000)  # served before the experiment: never counted
    wait_for(
        lambda: len(experiment(kube, namespace).get("pods") or {}) == 2,
        timeout=20,
        what="both pods read",
    )


def test_counts_converge_and_a_pod_restart_is_counted_once(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    start(kube, namespace, pods)
    pods.serve("digits-v1-a", 300)
    pods.serve("digits-v1-a", 30, code=503)
    pods.serve("digits-v2-a", 200, seconds=0.4)
    e = wait_requests(kube, namespace, {"v1": 330, "v2": 200})
    assert e["variants"]["v1"]["errors"] == 30 and e["variants"]["v1"]["errorRate"] == 0.0909091
    assert e["variants"]["v2"]["slow"] == 200 and e["slowThresholdSeconds"] == 0.25
    pods.restart("digits-v2-a")
    pods.serve("digits-v2-a", 50)
    wait_requests(kube, namespace, {"v1": 330, "v2": 250})
    # A new pod started after the experiment counts everything it served.
    late = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))
    pods.add("digits-v2-b", "v2", started=late)
    pods.serve("digits-v2-b", 7)
    wait_requests(kube, namespace, {"v1": 330, "v2": 257})
    time.sleep(4 * INTERVAL)
    assert requests(kube, namespace) == {"v1": 330, "v2": 257}  # nothing counted twice


def test_an_operator_restart_continues_from_the_status(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    start(kube, namespace, pods)
    pods.serve("digits-v1-a", 100)
    wait_requests(kube, namespace, {"v1": 100, "v2": 0})
    began = experiment(kube, namespace)["startTime"]
    operator.stop()
    try:
        pods.serve("digits-v1-a", 40)
        pods.serve("digits-v2-a", 60)
    finally:
        operator.start()
    e = wait_requests(kube, namespace, {"v1": 140, "v2": 60})
    assert e["startTime"] == began
    time.sleep(4 * INTERVAL)
    assert requests(kube, namespace) == {"v1": 140, "v2": 60}


@pytest.mark.parametrize("failure", ["error", "garbage", "hang", "refused"])
def test_an_unreadable_pod_is_listed_with_its_reason_and_the_rest_still_count(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods, failure: str
) -> None:
    start(kube, namespace, pods)
    if failure == "refused":
        pods.add("digits-v2-bad", "v2", port=1)  # nothing listens there
    else:
        pods.add("digits-v2-bad", "v2").mode = failure  # type: ignore[assignment]
    pods.serve("digits-v1-a", 10)
    pods.serve("digits-v2-a", 20)
    wait_requests(kube, namespace, {"v1": 10, "v2": 20})
    reason = {
        "error": "answered HTTP 500",
        "garbage": "not Prometheus text",
        "hang": "no answer within 2s",
        "refused": "refused",
    }[failure]
    unreadable = wait_for(
        lambda: experiment(kube, namespace).get("unreadable"), timeout=20, what="unreadable"
    )
    assert [u["pod"] for u in unreadable] == ["digits-v2-bad"]
    assert reason in unreadable[0]["reason"]
    pods.serve("digits-v1-a", 5)
    wait_requests(kube, namespace, {"v1": 15, "v2": 20})
    assert "Traceback" not in operator.log()


def test_a_clear_difference_reaches_a_verdict_with_a_condition_and_an_event(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    start(kube, namespace, pods, experiment_isvc(metrics=["outcome"]))
    for _ in range(20):
        pods.serve("digits-v1-a", 500)
        pods.serve("digits-v2-a", 500)
        pods.outcome("digits-v1-a", 500, 50)
        pods.outcome("digits-v2-a", 500, 150)
        time.sleep(INTERVAL)
        if experiment(kube, namespace).get("verdict") == "Better":
            break
    e = wait_for(
        lambda: (e := experiment(kube, namespace)).get("verdict") == "Better" and e,
        timeout=10,
        what="verdict Better",
    )
    assert e["summary"].startswith("v2 better on outcome")
    conditions = {c["type"]: c for c in kube.get(ISVC, namespace, "digits")["status"]["conditions"]}
    assert conditions["ExperimentConclusive"]["status"] == "True"
    assert conditions["ExperimentConclusive"]["reason"] == "Better"
    assert conditions["SampleRatioMismatch"]["status"] == "False"
    events = wait_for(
        lambda: [e for e in kube.list(EVENTS, namespace) if e.get("reason") == "VerdictBetter"],
        what="a VerdictBetter Event",
    )
    assert events[0]["type"] == "Normal" and "v2 better on outcome" in events[0]["message"]


def test_nothing_new_means_no_status_writes(
    kube: Kube,
    operator: OperatorProcess,
    emulator: EmulatorThread,
    namespace: str,
    pods: StandInPods,
) -> None:
    start(kube, namespace, pods)
    pods.serve("digits-v1-a", 10)
    wait_requests(kube, namespace, {"v1": 10, "v2": 0})
    time.sleep(2 * INTERVAL)
    mark = emulator.emulator.writes
    collected = experiment(kube, namespace)["lastCollected"]
    time.sleep(8 * INTERVAL)
    assert settling.inference_service_writes(emulator, namespace, mark) == []
    assert experiment(kube, namespace)["lastCollected"] == collected
    pods.serve("digits-v2-a", 3)  # and news is written
    wait_requests(kube, namespace, {"v1": 10, "v2": 3})


def test_changing_the_experiment_restarts_it_and_changing_weights_does_not(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    start(kube, namespace, pods)
    pods.serve("digits-v1-a", 10)
    began = wait_requests(kube, namespace, {"v1": 10, "v2": 0})["startTime"]
    time.sleep(1.1)  # startTime is in seconds
    weights = {"spec": {"variants": [specs.variant("v1", 70), specs.variant("v2", 30)]}}
    weights["spec"]["experiment"] = experiment_isvc()["spec"]["experiment"]
    kube.patch(ISVC, namespace, "digits", weights)
    wait_for(
        lambda: (
            (experiment(kube, namespace).get("variants") or {}).get("v1", {}).get("weight") == 70
        ),
        what="weight 70 in status",
    )
    pods.serve("digits-v1-a", 5)
    e = wait_requests(kube, namespace, {"v1": 15, "v2": 0})
    assert e["startTime"] == began
    kube.patch(ISVC, namespace, "digits", {"spec": {"experiment": {"minSamples": 500}}})
    e = wait_for(
        lambda: (e := experiment(kube, namespace)).get("startTime") != began and e,
        what="a new startTime",
    )
    assert requests(kube, namespace) == {"v1": 0, "v2": 0}
    # The first collection after the restart takes every pod's counters as its baseline.
    wait_for(lambda: len(experiment(kube, namespace).get("pods") or {}) == 2, what="baselines")
    pods.serve("digits-v1-a", 2)
    wait_requests(kube, namespace, {"v1": 2, "v2": 0})
    wait_for(
        lambda: [
            e for e in kube.list(EVENTS, namespace) if e.get("reason") == "ExperimentRestarted"
        ],
        what="an ExperimentRestarted Event",
    )


def test_removing_the_experiment_removes_its_status(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    start(kube, namespace, pods)
    kube.patch(ISVC, namespace, "digits", {"spec": {"experiment": None}})
    status = wait_for(
        lambda: "experiment" not in (s := kube.get(ISVC, namespace, "digits")["status"]) and s,
        what="status.experiment removed",
    )
    assert {c["type"] for c in status["conditions"]} == {"Ready", "VariantsReady", "RoutingReady"}


def test_an_invalid_experiment_changes_nothing_else(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    start(kube, namespace, pods)
    pods.serve("digits-v1-a", 10)
    before = wait_requests(kube, namespace, {"v1": 10, "v2": 0})
    kube.patch(ISVC, namespace, "digits", {"spec": {"experiment": {"control": "nope"}}})
    ready = wait_for(
        lambda: next(
            (
                c
                for c in kube.get(ISVC, namespace, "digits")["status"]["conditions"]
                if c["type"] == "Ready" and c["reason"] == "InvalidSpec"
            ),
            None,
        ),
        what="InvalidSpec",
    )
    assert "spec.experiment.control" in ready["message"]
    pods.serve("digits-v1-a", 10)
    time.sleep(4 * INTERVAL)
    after = experiment(kube, namespace)
    assert after["variants"] == before["variants"] and after["startTime"] == before["startTime"]
    # Fixed, it continues from its counts: what the pods served meanwhile is counted then.
    kube.patch(ISVC, namespace, "digits", {"spec": {"experiment": {"control": "v1"}}})
    wait_requests(kube, namespace, {"v1": 20, "v2": 0})
