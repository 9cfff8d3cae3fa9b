"""Status: per-variant verdicts from Deployments and pods, rolled up with actionable reasons."""

from __future__ import annotations

from typing import Any

from kubeserve.api import validation
from kubeserve.controller import status
from support import specs

NOW = "2026-01-01T00:00:00Z"


def deployment(
    replicas: int = 1,
    ready: int = 1,
    *,
    generation: int = 1,
    observed: int = 1,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
            "conditions": conditions
            if conditions is not None
            else [{"type": "Available", "status": "True"}],
        },
    }


def compute(
    obj: dict[str, Any],
    children: dict[tuple[str, str], Any],
    pods: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return status.compute(validation.parse(obj), children, pods or {}, previous or {}, now=NOW)


def conditions(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in st["conditions"]}


def ready_children(obj: dict[str, Any]) -> dict[tuple[str, str], Any]:
    isvc = validation.parse(obj)
    out: dict[tuple[str, str], Any] = {
        ("Deployment", f"digits-{v.name}"): deployment() for v in isvc.spec.variants
    }
    out[("Deployment", "digits-router")] = deployment(2, 2)
    return out


def test_all_ready() -> None:
    obj = specs.canary()
    st = compute(obj, ready_children(obj))
    c = conditions(st)
    assert c["Ready"]["status"] == "True" and c["VariantsReady"]["reason"] == "AllVariantsReady"
    assert c["RoutingReady"]["reason"] == "RouterReady"
    assert st["traffic"] == "v1=90,v2=10"
    assert st["url"] == "http://digits.default.svc.cluster.local"
    assert st["variants"]["v2"] == {
        "replicas": 1,
        "readyReplicas": 1,
        "weight": 10,
        "storageUri": "file:///models/digits/v2",
        "ready": True,
    }


def test_missing_deployment() -> None:
    obj = specs.canary()
    children = ready_children(obj)
    del children[("Deployment", "digits-v2")]
    c = conditions(compute(obj, children))
    assert c["VariantsReady"]["reason"] == "DeploymentMissing"
    assert c["Ready"]["status"] == "False" and c["Ready"]["message"].startswith("VariantsReady:")


def test_progress_deadline_and_replica_failure() -> None:
    obj = specs.isvc()
    children = ready_children(obj)
    children[("Deployment", "digits-v1")] = deployment(
        2,
        1,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "took too long",
            }
        ],
    )
    assert (
        conditions(compute(obj, children))["VariantsReady"]["reason"] == "ProgressDeadlineExceeded"
    )
    children[("Deployment", "digits-v1")] = deployment(
        2,
        1,
        conditions=[
            {
                "type": "ReplicaFailure",
                "status": "True",
                "message": "exceeded quota: compute-resources",
            }
        ],
    )
    c = conditions(compute(obj, children))["VariantsReady"]
    assert c["reason"] == "ReplicaFailure" and "exceeded quota" in c["message"]


def test_not_yet_observed_generation_is_progressing() -> None:
    obj = specs.isvc()
    children = ready_children(obj)
    children[("Deployment", "digits-v1")] = deployment(generation=2, observed=1)
    assert conditions(compute(obj, children))["VariantsReady"]["reason"] == "Progressing"


def pod(**status_fields: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": status_fields}


def test_gpu_variant_unschedulable_says_no_node_offers_the_gpu() -> None:
    obj = specs.isvc(specs.variant("v1", gpu={"count": 2, "product": "Tesla-T4"}))
    children = ready_children(obj)
    children[("Deployment", "digits-v1")] = deployment(1, 0)
    pods = {
        "v1": [
            pod(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                    }
                ]
            )
        ]
    }
    c = conditions(compute(obj, children, pods))["VariantsReady"]
    assert c["reason"] == "GPUUnavailable"
    assert "no node offers 2 free nvidia.com/gpu of product Tesla-T4" in c["message"]


def test_cpu_variant_unschedulable() -> None:
    obj = specs.isvc()
    children = ready_children(obj)
    children[("Deployment", "digits-v1")] = deployment(1, 0)
    pods = {
        "v1": [
            pod(
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "cpu",
                    }
                ]
            )
        ]
    }
    assert conditions(compute(obj, children, pods))["VariantsReady"]["reason"] == "Unschedulable"


def test_image_pull_and_fetch_and_server_failures() -> None:
    obj = specs.isvc()
    children = ready_children(obj)
    children[("Deployment", "digits-v1")] = deployment(1, 0)
    cases = [
        (
            pod(
                containerStatuses=[
                    {
                        "name": "server",
                        "state": {
                            "waiting": {"reason": "ImagePullBackOff", "message": "not found"}
                        },
                    }
                ]
            ),
            "ImagePullFailed",
        ),
        (
            pod(
                initContainerStatuses=[
                    {
                        "name": "fetch-model",
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1, "message": "403 Forbidden"}},
                    }
                ]
            ),
            "ModelFetchFailed",
        ),
        (
            pod(
                containerStatuses=[
                    {
                        "name": "server",
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1, "message": "no model.onnx"}},
                    }
                ]
            ),
            "ServerFailing",
        ),
    ]
    for p, reason in cases:
        c = conditions(compute(obj, children, {"v1": [p]}))["VariantsReady"]
        assert c["reason"] == reason, (reason, c)


def test_a_failed_fetch_names_the_uri_without_its_secrets() -> None:
    uri = "https://alice:hunter2@models.example.com/m.onnx?X-Amz-Signature=s3cr3t"
    obj = specs.isvc(specs.variant(model={"format": "onnx", "storageUri": uri}))
    children = ready_children(obj)
    children[("Deployment", "digits-v1")] = deployment(1, 0)
    failing = pod(
        initContainerStatuses=[
            {
                "name": "fetch-model",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": f"{uri}: 403 Forbidden"}},
            }
        ]
    )
    c = conditions(compute(obj, children, {"v1": [failing]}))["VariantsReady"]
    assert c["reason"] == "ModelFetchFailed" and "models.example.com/m.onnx" in c["message"]
    assert "hunter2" not in c["message"] and "s3cr3t" not in c["message"]


def test_actionable_reason_wins_over_waiting() -> None:
    obj = specs.canary()
    children = ready_children(obj)
    children[("Deployment", "digits-v1")] = deployment(2, 1)
    children[("Deployment", "digits-v2")] = deployment(1, 0)
    pods = {
        "v2": [
            pod(
                containerStatuses=[
                    {"name": "server", "state": {"waiting": {"reason": "ErrImagePull"}}}
                ]
            )
        ]
    }
    c = conditions(compute(obj, children, pods))["VariantsReady"]
    assert c["reason"] == "ImagePullFailed"
    assert "1/2 replicas ready" in c["message"]


def test_router_not_ready() -> None:
    obj = specs.isvc()
    children = ready_children(obj)
    children[("Deployment", "digits-router")] = deployment(2, 1)
    c = conditions(compute(obj, children))
    assert c["RoutingReady"]["reason"] == "RouterNotReady" and c["Ready"]["status"] == "False"


def test_gateway_route_acceptance() -> None:
    obj = specs.isvc(routing={"mode": "gateway-api", "parentRefs": [{"name": "gw"}]})
    children = ready_children(obj)
    assert conditions(compute(obj, children))["RoutingReady"]["reason"] == "RouteMissing"
    children[("HTTPRoute", "digits")] = {
        "status": {
            "parents": [
                {
                    "parentRef": {"name": "gw"},
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "False",
                            "reason": "NotAllowedByListeners",
                            "message": "no listener",
                        }
                    ],
                }
            ]
        }
    }
    c = conditions(compute(obj, children))["RoutingReady"]
    assert c["reason"] == "RouteNotAllowedByListeners" and "gw" in c["message"]
    children[("HTTPRoute", "digits")]["status"]["parents"][0]["conditions"][0]["status"] = "True"
    assert conditions(compute(obj, children))["RoutingReady"]["status"] == "True"


def accepted(accepted: bool) -> dict[str, Any]:
    cond = {"type": "Accepted", "status": str(accepted), "reason": "NoMatchingListenerHostname"}
    return {"status": {"parents": [{"parentRef": {"name": "gw"}, "conditions": [cond]}]}}


def test_a_refused_grpc_route_is_said_but_keeps_the_endpoint_ready() -> None:
    obj = specs.isvc(routing={"mode": "gateway-api", "parentRefs": [{"name": "gw"}]})
    children = ready_children(obj)
    children[("HTTPRoute", "digits")] = accepted(True)
    c = conditions(compute(obj, children))["RoutingReady"]
    assert c["status"] == "True" and "GRPCRoute digits is not created yet" in c["message"]
    children[("GRPCRoute", "digits")] = accepted(False)
    c = conditions(compute(obj, children))["RoutingReady"]
    assert c["status"] == "True" and "gRPC is not served yet" in c["message"]
    assert "NoMatchingListenerHostname" not in c["reason"]
    children[("GRPCRoute", "digits")] = accepted(True)
    c = conditions(compute(obj, children))["RoutingReady"]
    assert c["status"] == "True" and "and the GRPCRoute too" in c["message"]


def test_transition_time_kept_while_status_unchanged() -> None:
    obj = specs.isvc()
    first = compute(obj, ready_children(obj))
    later = status.compute(
        validation.parse(obj), ready_children(obj), {}, first, now="2030-01-01T00:00:00Z"
    )
    assert conditions(later)["Ready"]["lastTransitionTime"] == NOW
    assert status.same_status(first, later)


def test_invalid_keeps_the_rest_of_the_status() -> None:
    obj = specs.isvc()
    previous = compute(obj, ready_children(obj))
    st = status.invalid(["spec.x: bad"], previous, generation=2, now=NOW, reason="InvalidSpec")
    c = conditions(st)
    assert c["Ready"]["reason"] == "InvalidSpec" and "spec.x: bad" in c["Ready"]["message"]
    assert st["url"] == previous["url"] and st["observedGeneration"] == 2


def test_gateway_mode_without_gateway_api_support_says_so() -> None:
    obj = specs.isvc(routing={"mode": "gateway-api", "parentRefs": [{"name": "gw"}]})
    st = status.compute(
        validation.parse(obj),
        ready_children(obj),
        {},
        {},
        now=NOW,
        unmanaged_kinds=frozenset({"HTTPRoute"}),
    )
    c = conditions(st)["RoutingReady"]
    assert c["reason"] == "GatewayAPIDisabled" and "--gateway-api" in c["message"]


def test_the_experiments_keys_and_conditions_are_kept_for_their_own_writer() -> None:
    obj = specs.canary()
    previous = compute(obj, ready_children(obj))
    previous["experiment"] = {"verdict": "Better", "summary": "v2 better"}
    previous["conditions"].append({"type": "ExperimentConclusive", "status": "True"})
    st = compute(obj, ready_children(obj), previous=previous)
    assert st["experiment"] == previous["experiment"]
    assert conditions(st)["ExperimentConclusive"] == {
        "type": "ExperimentConclusive",
        "status": "True",
    }
    assert status.same_status(previous, st)
