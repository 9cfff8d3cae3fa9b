"""The real operator runs rollouts against the emulator, judging stand-in pods' real /metrics.

Each variant has one stand-in pod (a real HTTP server on its own loopback address) whose
counters the test sets; the operator looks at every running rollout every half second (a
test-only setting; the API's least interval is 5 s). The router's split is read from its
ConfigMap (split_clients, in order) and, in gateway-api mode, from the HTTPRoute.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytest

from kubeserve.rollout import decide
from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.kube_client import CONFIGMAPS, DEPLOYMENTS, EVENTS, ISVC, Kube, wait_for
from kubeserve.testing.operator_process import OperatorProcess
from kubeserve.testing.pod_metrics import StandInPods
from support import settling, specs, split_model

INTERVAL = 0.5
NAME = "digits"
ROUTES = ("gateway.networking.k8s.io/v1", "httproutes")


@pytest.fixture(scope="module")
def operator(start_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    return start_operator(
        "rollout-operator", "--gateway-api", "--testing-rollout-interval", str(INTERVAL)
    )


def rollout_isvc(**rollout: Any) -> dict[str, Any]:
    obj = specs.isvc(specs.variant("v1", 100), specs.variant("v2", 0), name=NAME)
    obj["spec"]["rollout"] = {
        "candidate": "v2",
        "steps": [10, 50],
        "minStepDuration": "0s",
        "minRequestsPerStep": 50,
    } | rollout
    return obj


def isvc(kube: Kube, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = kube.get(ISVC, namespace, NAME) or {}
    return found


def rollout(kube: Kube, namespace: str) -> dict[str, Any]:
    return dict((isvc(kube, namespace).get("status") or {}).get("rollout") or {})


def split(kube: Kube, namespace: str) -> list[tuple[str, str]]:
    """The router's split_clients, in order: (share, variant)."""
    config = kube.get(CONFIGMAPS, namespace, f"{NAME}-router") or {}
    return split_model.parts((config.get("data") or {}).get("nginx.conf", ""))


def router_carries(kube: Kube, namespace: str, expected: list[tuple[str, str]]) -> None:
    """Wait for the router's config to carry `expected`.

    status.rollout (and status.traffic) is written before the children follow it (so that a
    restart moves the router on rather than back): the ConfigMap lags the status a moment.
    """
    wait_for(lambda: split(kube, namespace) == expected, what=f"the router at {expected}")


def events(kube: Kube, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.list(EVENTS, namespace) if e.get("reason") == reason]


def mark_ready(kube: Kube, namespace: str, *names: str) -> None:
    for name in names:
        wait_for(lambda n=name: kube.get(DEPLOYMENTS, namespace, n), what=f"Deployment {name}")
        kube.mark_deployment_ready(namespace, name)


def live(kube: Kube, namespace: str, obj: dict[str, Any], pods: StandInPods) -> None:
    """Create the InferenceService at its spec's weights, ready, with one pod per variant."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    kube.create(ISVC, namespace, obj)
    mark_ready(kube, namespace, f"{NAME}-v1", f"{NAME}-v2")
    pods.add(f"{NAME}-v1-a", "v1")
    pods.add(f"{NAME}-v2-a", "v2")
    wait_for(lambda: isvc(kube, namespace).get("status", {}).get("traffic"), what="a status")


def send_to_candidate(kube: Kube, namespace: str, weight: int = 100, **v2: Any) -> None:
    """Commit "v2: `weight`" (and whatever else of v2's spec), as a GitOps change would."""
    variants = [specs.variant("v1", 100 - weight), specs.variant("v2", weight, **v2)]
    kube.patch(ISVC, namespace, NAME, {"spec": {"variants": variants}})


def serve_until(
    kube: Kube,
    namespace: str,
    pods: StandInPods,
    done: Any,
    *,
    v2: int = 100,
    v2_error_rate: float = 0.01,
    what: str,
    timeout: float = 30,
) -> dict[str, Any]:
    """Serve traffic at both pods, a batch at a time, until `done(status.rollout)` holds.

    v1 answers 1% of its requests with a 503; v2 `v2_error_rate` of its `v2`. The next batch
    waits until the operator has counted the last one (or a few intervals have passed): a
    batch served before the operator's decision on the previous one is written could carry it
    through two steps before the test sees the first (CI once saw step 1 go to Succeeded).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = rollout(kube, namespace)
        if done(found):
            return found
        counted = candidate_requests(found)
        pods.serve(f"{NAME}-v1-a", 4 * v2 * 99 // 100, code=200)
        pods.serve(f"{NAME}-v1-a", 4 * v2 // 100, code=503)
        errors = round(v2 * v2_error_rate)
        pods.serve(f"{NAME}-v2-a", v2 - errors, code=200)
        pods.serve(f"{NAME}-v2-a", errors, code=503)
        patience = time.monotonic() + 4 * INTERVAL
        while time.monotonic() < patience:
            time.sleep(INTERVAL / 5)
            found = rollout(kube, namespace)
            if done(found) or candidate_requests(found) != counted:
                break
    raise AssertionError(f"timed out waiting for {what}; last: {rollout(kube, namespace)!r}")


def candidate_requests(found: dict[str, Any]) -> Any:
    return ((found.get("variants") or {}).get("v2") or {}).get("requests")


def at_step(step: int) -> Any:
    return lambda r: r.get("phase") == "Progressing" and r.get("step") == step


def test_a_healthy_candidate_walks_every_step_and_succeeds(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    live(kube, namespace, rollout_isvc(), pods)
    assert split(kube, namespace) == [("*", "v1")]
    send_to_candidate(kube, namespace)
    wait_for(lambda: rollout(kube, namespace).get("step") == 1, what="the first step")
    router_carries(kube, namespace, [("90%", "v1"), ("*", "v2")])
    assert isvc(kube, namespace)["status"]["traffic"] == "v1=90,v2=10"
    serve_until(kube, namespace, pods, at_step(2), what="step 2")
    router_carries(kube, namespace, [("50%", "v1"), ("*", "v2")])
    assert isvc(kube, namespace)["status"]["traffic"] == "v1=50,v2=50"
    done = serve_until(kube, namespace, pods, lambda r: r.get("phase") == "Succeeded", what="done")
    assert done["progress"] == "Succeeded 3/3" and done["liveWeights"] == {"v1": 0, "v2": 100}
    router_carries(kube, namespace, [("*", "v2")])
    st = isvc(kube, namespace)["status"]
    assert st["traffic"] == "v1=0,v2=100" and st["variants"]["v2"]["weight"] == 100
    condition = next(c for c in st["conditions"] if c["type"] == decide.CONDITION)
    assert condition["status"] == "False" and condition["reason"] == "Succeeded"
    assert [v["weight"] for v in isvc(kube, namespace)["spec"]["variants"]] == [0, 100]
    started = wait_for(lambda: events(kube, namespace, decide.STARTED), what="RolloutStarted")
    assert started[0]["type"] == "Normal" and "now at 10" in started[0]["message"]
    advanced = wait_for(lambda: events(kube, namespace, decide.ADVANCED), what="RolloutAdvanced")
    assert [e["message"][:14] for e in advanced] == ["Advance 10→50:"]
    wait_for(lambda: events(kube, namespace, decide.SUCCEEDED), what="RolloutSucceeded")


def test_a_candidate_with_five_points_more_errors_is_rolled_back_at_the_first_step(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    # The step needs more requests than harm takes to show: it is judged at the first step.
    live(kube, namespace, rollout_isvc(minRequestsPerStep=100_000), pods)
    send_to_candidate(kube, namespace)
    wait_for(lambda: rollout(kube, namespace).get("step") == 1, what="the first step")
    back = serve_until(
        kube,
        namespace,
        pods,
        lambda r: r.get("phase") == "RolledBack",
        v2=1000,
        v2_error_rate=0.06,
        what="a rollback",
    )
    assert back["step"] == 1 and back["liveWeights"] == {"v1": 100, "v2": 0}
    assert "harm on errorRate" in back["lastDecision"]["reason"]
    router_carries(kube, namespace, [("*", "v1")])
    assert isvc(kube, namespace)["status"]["traffic"] == "v1=100,v2=0"
    warning = wait_for(lambda: events(kube, namespace, decide.ROLLED_BACK), what="a RolledBack")
    assert warning[0]["type"] == "Warning" and warning[0]["message"].startswith("Roll back 10→0")
    for _ in range(4):  # it stays there until the spec changes again
        pods.serve(f"{NAME}-v2-a", 100)
        time.sleep(INTERVAL)
    assert rollout(kube, namespace)["phase"] == "RolledBack"
    assert split(kube, namespace) == [("*", "v1")]
    kube.patch(ISVC, namespace, NAME, {"spec": {"rollout": {"steps": [5, 50]}}})
    wait_for(lambda: split(kube, namespace) == [("95%", "v1"), ("*", "v2")], what="a new walk")


def test_an_operator_killed_mid_rollout_continues_without_skipping_or_repeating_a_step(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    live(kube, namespace, rollout_isvc(steps=[10, 30, 50]), pods)
    send_to_candidate(kube, namespace)
    serve_until(kube, namespace, pods, at_step(2), what="step 2")
    # Killed once step 2 is acted on: its router split and its Event follow the status
    # write, and a kill between them loses the Event (Events are best effort, as in any
    # controller; CI saw it), while the split is put right on resume either way.
    router_carries(kube, namespace, [("70%", "v1"), ("*", "v2")])
    wait_for(lambda: events(kube, namespace, decide.ADVANCED), what="RolloutAdvanced 10→30")
    operator.stop(kill=True)
    try:
        pods.serve(f"{NAME}-v1-a", 400)
        pods.serve(f"{NAME}-v2-a", 200)
    finally:
        operator.start()
    assert rollout(kube, namespace)["step"] in (2, 3)
    serve_until(kube, namespace, pods, lambda r: r.get("phase") == "Succeeded", what="done")
    # Events follow the status write: wait for the last, then a while for any repeat.
    wait_for(lambda: events(kube, namespace, decide.SUCCEEDED), what="RolloutSucceeded")
    time.sleep(2 * INTERVAL)
    messages = sorted(
        e["message"].split(":")[0] for e in events(kube, namespace, "RolloutAdvanced")
    )
    assert messages == ["Advance 10→30", "Advance 30→50"]
    assert len(events(kube, namespace, decide.SUCCEEDED)) == 1


def test_a_spec_change_mid_rollout_starts_it_again_from_the_live_split(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    live(kube, namespace, rollout_isvc(), pods)
    send_to_candidate(kube, namespace)
    serve_until(kube, namespace, pods, at_step(2), what="step 2")
    kube.patch(ISVC, namespace, NAME, {"spec": {"rollout": {"steps": [60, 80]}}})
    again = wait_for(
        lambda: (r := rollout(kube, namespace)).get("generation") == 3 and r, what="a restart"
    )
    assert again["startWeights"] == {"v1": 50, "v2": 50}
    assert again["liveWeights"] == {"v1": 40, "v2": 60} and again["progress"] == "Progressing 1/3"
    router_carries(kube, namespace, [("40%", "v1"), ("*", "v2")])


def test_a_candidate_not_ready_holds_the_split_until_it_is(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    live(kube, namespace, rollout_isvc(), pods)
    send_to_candidate(kube, namespace, model={"format": "onnx", "storageUri": "file:///m/v2b"})
    held = wait_for(lambda: (r := rollout(kube, namespace)).get("phase") == "Holding" and r)
    assert held["step"] == 0 and held["liveWeights"] == {"v1": 100, "v2": 0}
    time.sleep(3 * INTERVAL)
    assert rollout(kube, namespace)["phase"] == "Holding"
    assert split(kube, namespace) == [("*", "v1")]
    mark_ready(kube, namespace, f"{NAME}-v2")  # its new template's replicas are ready now
    wait_for(lambda: split(kube, namespace) == [("90%", "v1"), ("*", "v2")], what="step 1")
    assert rollout(kube, namespace)["phase"] == "Progressing"


def test_the_manual_abort_and_promote_annotations_are_honoured(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    live(kube, namespace, rollout_isvc(), pods)
    send_to_candidate(kube, namespace)
    wait_for(lambda: rollout(kube, namespace).get("step") == 1, what="the first step")
    command = {"metadata": {"annotations": {decide.MANUAL_ANNOTATION: "abort/1"}}}
    kube.patch(ISVC, namespace, NAME, command)
    wait_for(lambda: rollout(kube, namespace).get("phase") == "RolledBack", what="an abort")
    router_carries(kube, namespace, [("*", "v1")])
    assert rollout(kube, namespace)["manual"] == "abort/1"
    command = {"metadata": {"annotations": {decide.MANUAL_ANNOTATION: "promote/2"}}}
    kube.patch(ISVC, namespace, NAME, command)
    wait_for(lambda: rollout(kube, namespace).get("phase") == "Succeeded", what="a promotion")
    router_carries(kube, namespace, [("*", "v2")])
    assert isvc(kube, namespace)["status"]["traffic"] == "v1=0,v2=100"
    wait_for(lambda: events(kube, namespace, decide.PROMOTED), what="RolloutPromoted")


def test_in_gateway_api_mode_the_httproute_weights_follow_the_live_split(
    kube: Kube, operator: OperatorProcess, namespace: str, pods: StandInPods
) -> None:
    obj = rollout_isvc()
    obj["spec"]["routing"] = {"mode": "gateway-api", "parentRefs": [{"name": "gateway"}]}
    live(kube, namespace, obj, pods)

    def weights() -> dict[str, int]:
        route = kube.get(ROUTES, namespace, NAME) or {"spec": {"rules": [{}]}}
        refs = route["spec"]["rules"][-1].get("backendRefs") or []
        return {ref["name"]: ref["weight"] for ref in refs}

    assert wait_for(weights, what="an HTTPRoute") == {"digits-v1": 100}
    send_to_candidate(kube, namespace)
    wait_for(lambda: weights() == {"digits-v1": 90, "digits-v2": 10}, what="the first step")
    serve_until(kube, namespace, pods, at_step(2), what="step 2")
    assert weights() == {"digits-v1": 50, "digits-v2": 50}


def test_a_rollout_holding_on_a_quiet_service_writes_no_status(
    kube: Kube,
    operator: OperatorProcess,
    emulator: EmulatorThread,
    namespace: str,
    pods: StandInPods,
) -> None:
    live(kube, namespace, rollout_isvc(), pods)
    send_to_candidate(kube, namespace)
    wait_for(lambda: len(rollout(kube, namespace).get("pods") or {}) == 2, what="baselines")
    time.sleep(4 * INTERVAL)
    mark = emulator.emulator.writes
    time.sleep(8 * INTERVAL)
    assert settling.inference_service_writes(emulator, namespace, mark) == []
    assert rollout(kube, namespace)["lastDecision"]["action"] == "Hold"
    assert rollout(kube, namespace)["step"] == 1
