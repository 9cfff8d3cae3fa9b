"""The reconciler runs rollouts: the router follows the live split, looks come only when due."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubeserve import cluster
from kubeserve.api import status as api_status
from kubeserve.controller import rollouts, work
from kubeserve.experiment import readings
from kubeserve.rollout import decide
from support import specs, split_model
from support.reconciler_harness import NAME, NAMESPACE, ROUTER_CONFIG, V2, Harness


def rollout_isvc(*variants: dict[str, Any], **rollout: Any) -> dict[str, Any]:
    obj = specs.isvc(
        *(variants or (specs.variant("v1", 100), specs.variant("v2", 0))),
        name=NAME,
        namespace=NAMESPACE,
    )
    obj["spec"]["rollout"] = {
        "candidate": "v2",
        "steps": [10, 50],
        "minStepDuration": "0s",
        "minRequestsPerStep": 10,
    } | rollout
    return obj


def split(h: Harness) -> list[tuple[str, str]]:
    """The router's split_clients, in order: (share, variant)."""
    return split_model.parts(h.api.child(ROUTER_CONFIG)["data"]["nginx.conf"])


def rollout_of(h: Harness) -> dict[str, Any]:
    found: dict[str, Any] = h.status().get("rollout") or {}
    return found


def edit(h: Harness, change: dict[str, Any]) -> None:
    """Change the InferenceService as `kubectl apply` would (a spec change: a new generation)."""
    h.api.patch(cluster.INFERENCE_SERVICE, NAMESPACE, NAME, change)


def to_candidate(h: Harness, weight: int = 100) -> None:
    edit(
        h, {"spec": {"variants": [specs.variant("v1", 100 - weight), specs.variant("v2", weight)]}}
    )


def started(**rollout: Any) -> Harness:
    """A live InferenceService at v1=100 whose spec now sends v2 to 100: the rollout started."""
    h = Harness(rollout_isvc(**rollout))
    h.run(work.FullReconcile())
    h.all_ready()
    h.run(work.FullReconcile())
    to_candidate(h)
    h.run(work.FullReconcile())
    return h


def pods(v1: tuple[int, int], v2: tuple[int, int]) -> list[readings.PodReading]:
    """One pod per variant, with (requests, errors) served since it started."""
    return [
        readings.PodReading(
            uid=f"uid-{variant}",
            name=f"digits-{variant}-a",
            variant=variant,
            restarts=0,
            started=None,  # serving before the rollout: its first reading is a baseline
            counters=api_status.PodCounters(variant=variant, requests=n, errors=errors),
        )
        for variant, (n, errors) in (("v1", v1), ("v2", v2))
    ]


def collect(h: Harness, seq: int, v1: tuple[int, int], v2: tuple[int, int]) -> work.Collect:
    todo = work.Collect(rollout=work.Readings(pods(v1, v2), seq=seq))
    h.run(todo)
    return todo


def test_a_brand_new_inferenceservice_gets_its_destination_at_once_and_no_rollout() -> None:
    h = Harness(rollout_isvc())
    h.run(work.FullReconcile())
    assert split(h) == [("*", "v1")]
    assert "rollout" not in h.status() and h.status()["traffic"] == "v1=100,v2=0"


def test_a_new_destination_starts_from_the_live_split_in_the_same_reconcile() -> None:
    h = Harness(rollout_isvc())
    h.run(work.FullReconcile())
    h.all_ready()
    h.run(work.FullReconcile())
    to_candidate(h)
    outcome = h.run(work.FullReconcile())
    assert split(h) == [("90%", "v1"), ("*", "v2")], "the first step, never the destination"
    st = h.status()
    assert st["traffic"] == "v1=90,v2=10"
    assert st["variants"]["v2"]["weight"] == 10
    assert st["rollout"]["progress"] == "Progressing 1/3"
    assert st["rollout"]["liveWeights"] == {"v1": 90, "v2": 10}
    assert st["rollout"]["startWeights"] == {"v1": 100, "v2": 0}
    assert [reason for reason, _ in outcome.events] == [decide.STARTED]
    condition = next(c for c in st["conditions"] if c["type"] == decide.CONDITION)
    assert condition["status"] == "True" and condition["reason"] == "Progressing"
    spec = h.body()["spec"]["variants"]
    assert [v["weight"] for v in spec] == [0, 100], "the operator never writes the spec"
    assert outcome.rollout_every == 30.0 and outcome.rollout_variants == ("v1", "v2")


def test_status_rollout_is_written_before_the_router_follows_it() -> None:
    h = Harness(rollout_isvc())
    h.run(work.FullReconcile())
    h.all_ready()
    h.run(work.FullReconcile())
    to_candidate(h)
    h.run(work.FullReconcile())
    writes = h.api.writes()
    assert writes.index(("patch-status", "InferenceService", NAME)) < writes.index(
        ("patch", *ROUTER_CONFIG)
    )


def test_a_healthy_candidate_walks_every_step_at_the_collections_only() -> None:
    h = started()
    collect(h, 1, (0, 0), (0, 0))  # the first reading of each pod is its baseline
    assert rollout_of(h)["step"] == 1
    collect(h, 2, (100, 1), (20, 0))
    assert rollout_of(h)["progress"] == "Progressing 2/3"
    assert split(h) == [("50%", "v1"), ("*", "v2")]
    assert h.status()["traffic"] == "v1=50,v2=50"
    # Nothing but a collection judges the step: resyncs, refreshes and child events look at nothing.
    before = rollout_of(h)
    for todo in (
        work.FullReconcile(),
        work.RefreshStatus(settled=True),
        work.compare(ROUTER_CONFIG),
    ):
        h.run(todo)
        assert h.api.writes() == [] and rollout_of(h) == before
    collect(h, 3, (150, 1), (40, 0))
    assert rollout_of(h)["phase"] == "Succeeded" and rollout_of(h)["progress"] == "Succeeded 3/3"
    assert split(h) == [("*", "v2")]
    assert h.status()["traffic"] == "v1=0,v2=100"


def test_a_collection_tried_again_is_not_looked_at_twice() -> None:
    h = started(gates=[{"metric": "errorRate", "maxIncrease": 0.5, "max": 0.01}])
    collect(h, 1, (0, 0), (0, 0))
    failing = collect(h, 2, (100, 0), (20, 10))
    assert rollout_of(h)["failedChecks"] == 1
    h.run(failing)  # the same work again, as after a refused write
    assert rollout_of(h)["failedChecks"] == 1
    collect(h, 3, (100, 0), (20, 10))  # the next interval counts again
    assert rollout_of(h)["failedChecks"] == 2


def test_a_harmful_candidate_is_rolled_back_to_the_split_before_the_rollout() -> None:
    h = started()
    collect(h, 1, (0, 0), (0, 0))
    outcome = h.run(work.Collect(rollout=work.Readings(pods((4000, 40), (1000, 200)), seq=2)))
    assert rollout_of(h)["phase"] == "RolledBack"
    assert split(h) == [("*", "v1")]
    assert h.status()["traffic"] == "v1=100,v2=0"
    assert [reason for reason, _ in outcome.events] == [decide.ROLLED_BACK]
    collect(h, 3, (5000, 40), (1000, 200))
    h.run(work.FullReconcile())
    assert rollout_of(h)["phase"] == "RolledBack", "it stays there until a new generation"
    assert split(h) == [("*", "v1")]


def test_an_operator_killed_between_the_status_and_the_router_carries_on_to_the_status() -> None:
    h = started()
    collect(h, 1, (0, 0), (0, 0))
    patch = h.api.patch

    def refuse_config(kind: cluster.Kind, *args: Any, **kwargs: Any) -> Any:
        if kind.kind == "ConfigMap":
            raise cluster.ApiError(503, "ServiceUnavailable", "killed here")
        return patch(kind, *args, **kwargs)

    h.api.patch = refuse_config  # type: ignore[method-assign]
    with pytest.raises(cluster.ApiError):
        collect(h, 2, (100, 1), (20, 0))
    h.api.patch = patch  # type: ignore[method-assign]
    assert rollout_of(h)["step"] == 2 and split(h) == [("90%", "v1"), ("*", "v2")]
    assert h.status()["traffic"] == "v1=50,v2=50", "status.traffic moves with status.rollout"
    h.run(work.FullReconcile())  # a restarted operator's resume
    assert split(h) == [("50%", "v1"), ("*", "v2")]
    assert rollout_of(h)["step"] == 2, "no step taken again, none skipped"


def test_a_candidate_not_ready_holds_the_rollout_until_it_is() -> None:
    h = Harness(rollout_isvc())
    h.run(work.FullReconcile())
    h.all_ready()
    h.run(work.FullReconcile())
    v2 = specs.variant("v2", 100)
    v2["model"]["storageUri"] = "file:///models/digits/v2-new"
    edit(h, {"spec": {"variants": [specs.variant("v1", 0), v2]}})
    h.run(work.FullReconcile())
    assert rollout_of(h)["phase"] == "Holding" and rollout_of(h)["step"] == 0
    assert split(h) == [("*", "v1")]
    collect(h, 1, (0, 0), (0, 0))
    assert rollout_of(h)["phase"] == "Holding"
    # The Hold says what is not ready, as rollouts.candidate_problem finds it.
    assert rollout_of(h)["lastDecision"]["reason"] == (
        "Hold at 0: the candidate's pods are not ready: "
        "Deployment digits-v2 has not observed its latest template yet"
    )
    h.ready(V2)
    collect(h, 2, (10, 0), (0, 0))
    assert rollout_of(h)["phase"] == "Progressing" and split(h) == [("90%", "v1"), ("*", "v2")]


def test_a_manual_command_is_honoured_at_once_and_only_once() -> None:
    h = started()
    edit(h, {"metadata": {"annotations": {decide.MANUAL_ANNOTATION: "abort/1"}}})
    assert h.body()["metadata"]["generation"] == 2, "an annotation is no new generation"
    outcome = h.run(work.FullReconcile())
    assert rollout_of(h)["phase"] == "RolledBack" and rollout_of(h)["manual"] == "abort/1"
    assert split(h) == [("*", "v1")]
    assert [reason for reason, _ in outcome.events] == [decide.ROLLED_BACK]
    h.run(work.FullReconcile())
    assert h.api.writes() == []
    edit(h, {"metadata": {"annotations": {decide.MANUAL_ANNOTATION: "promote/2"}}})
    h.run(work.FullReconcile())
    assert rollout_of(h)["phase"] == "Succeeded" and split(h) == [("*", "v2")]


def test_a_command_look_reads_nothing_and_keeps_what_the_pods_served_counted() -> None:
    h = started()
    collect(h, 1, (0, 0), (0, 0))
    collect(h, 2, (100, 0), (5, 0))
    assert rollout_of(h)["variants"]["v2"]["requests"] == 5
    edit(h, {"metadata": {"annotations": {decide.MANUAL_ANNOTATION: "pause/1"}}})
    h.run(work.FullReconcile())
    assert rollout_of(h)["phase"] == "Paused"
    assert rollout_of(h)["pods"]["uid-v2"]["requests"] == 5, "the baseline stays"
    collect(h, 3, (200, 0), (9, 0))
    assert rollout_of(h)["variants"]["v2"]["requests"] == 9


def test_a_spec_change_mid_rollout_starts_again_from_the_live_split() -> None:
    h = started()
    collect(h, 1, (0, 0), (0, 0))
    collect(h, 2, (100, 1), (20, 0))
    assert rollout_of(h)["liveWeights"] == {"v1": 50, "v2": 50}
    edit(h, {"spec": {"rollout": {"steps": [60, 80]}}})
    h.run(work.FullReconcile())
    rollout = rollout_of(h)
    assert rollout["startWeights"] == {"v1": 50, "v2": 50}
    assert rollout["liveWeights"] == {"v1": 40, "v2": 60}
    assert rollout["generation"] == 3 and rollout["progress"] == "Progressing 1/3"


def test_the_router_lists_the_candidate_at_an_end_whenever_a_rollout_is_set() -> None:
    h = Harness(
        rollout_isvc(specs.variant("v1", 60), specs.variant("v2", 0), specs.variant("v3", 40))
    )
    h.run(work.FullReconcile())
    assert split(h) == [("60%", "v1"), ("*", "v3")]
    h.all_ready()
    h.run(work.FullReconcile())
    edit(
        h,
        {
            "spec": {
                "variants": [
                    specs.variant("v1", 30),
                    specs.variant("v2", 50),
                    specs.variant("v3", 20),
                ]
            }
        },
    )
    h.run(work.FullReconcile())
    assert split(h) == [("10%", "v2"), ("54%", "v1"), ("*", "v3")]
    assert h.status()["traffic"] == "v2=10,v1=54,v3=36"


def test_removing_the_rollout_applies_the_spec_and_removes_its_status() -> None:
    h = started()
    edit(h, {"spec": {"rollout": None}})
    h.run(work.FullReconcile())
    st = h.status()
    assert "rollout" not in st
    assert decide.CONDITION not in [c["type"] for c in st["conditions"]]
    assert split(h) == [("*", "v2")]


def test_in_gateway_api_mode_the_httproute_weights_follow_the_live_split() -> None:
    obj = rollout_isvc()
    obj["spec"]["routing"] = {"mode": "gateway-api", "parentRefs": [{"name": "gw"}]}
    h = Harness(obj)
    h.run(work.FullReconcile())
    h.all_ready()
    h.run(work.FullReconcile())
    to_candidate(h)
    h.run(work.FullReconcile())
    for kind in ("HTTPRoute", "GRPCRoute"):
        rule = h.api.child((kind, NAME))["spec"]["rules"][-1]
        weights = {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}
        assert weights == {"digits-v1": 90, "digits-v2": 10}, kind


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "digits-v2", "generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
        }
        | status,
    }


@pytest.mark.parametrize(
    ("actual", "problem"),
    [
        (deployment(), None),
        (None, "not created yet"),
        (deployment(observedGeneration=1), "has not observed its latest template"),
        (deployment(readyReplicas=1), "2/2 replicas updated, 1/2 ready"),
        (deployment(updatedReplicas=1), "1/2 replicas updated"),
        (deployment(replicas=3), "1 old still running"),
    ],
)
def test_the_candidate_is_ready_when_every_replica_serves_its_current_template(
    actual: dict[str, Any] | None, problem: str | None
) -> None:
    found = rollouts.candidate_problem(None, actual)
    assert found == problem if problem is None else problem in (found or "")


def test_a_candidate_whose_template_is_not_applied_yet_is_not_ready() -> None:
    h = Harness(rollout_isvc())
    h.run(work.FullReconcile())
    h.all_ready()
    desired = copy.deepcopy(h.api.child(V2))
    assert rollouts.candidate_problem(desired, h.api.child(V2)) is None
    desired["spec"]["template"]["spec"]["containers"][0]["image"] = "another:1"
    assert "template" in (rollouts.candidate_problem(desired, h.api.child(V2)) or "")


def test_an_invalid_spec_mid_rollout_leaves_the_live_split_and_the_rollout_as_they_were() -> None:
    h = started()
    before_split, before_rollout = split(h), copy.deepcopy(rollout_of(h))
    edit(h, {"spec": {"rollout": {"steps": [50, 10]}}})  # steps must increase
    h.run(work.FullReconcile())
    ready = next(c for c in h.status()["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "spec.rollout.steps[1]" in ready["message"]
    assert split(h) == before_split == [("90%", "v1"), ("*", "v2")]
    assert rollout_of(h) == before_rollout
    assert h.status()["traffic"] == "v1=90,v2=10"
