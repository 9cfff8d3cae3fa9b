"""The real operator (kopf, in a subprocess) against the API emulator: the scenarios a user lives."""

from __future__ import annotations

import time

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.kube_client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    EVENTS,
    ISVC,
    PODS,
    SERVICES,
    Kube,
    wait_for,
)
from kubeserve.testing.operator_process import OperatorProcess
from support import specs
from support.isvcs import (
    actual_children,
    condition,
    create,
    mark_ready,
    wait_children,
    wait_reason,
)


def test_create_gives_children_owner_references_and_ready_status(
    kube: Kube, operator: OperatorProcess, namespace: str
) -> None:
    obj = specs.canary()
    isvc = create(kube, namespace, obj)
    found = wait_children(kube, namespace, obj)
    for (kind, name), child in found.items():
        refs = child["metadata"]["ownerReferences"]
        assert refs == [
            {
                "apiVersion": "serving.kubeserve.dev/v1alpha1",
                "kind": "InferenceService",
                "name": "digits",
                "uid": isvc["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], (kind, name)
    progressing = wait_for(lambda: condition(kube, namespace, "digits"), what="a Ready condition")
    assert progressing["status"] == "False"
    mark_ready(kube, namespace)
    wait_for(
        lambda: (condition(kube, namespace, "digits") or {}).get("status") == "True",
        what="Ready=True",
    )
    status = kube.get(ISVC, namespace, "digits")["status"]
    assert status["url"] == f"http://digits.{namespace}.svc.cluster.local"
    assert status["traffic"] == "v1=90,v2=10"
    assert status["observedGeneration"] == 1
    assert status["variants"]["v1"] == {
        "replicas": 1,
        "readyReplicas": 1,
        "weight": 90,
        "storageUri": "file:///models/digits/v1",
        "ready": True,
    }
    types = [c["type"] for c in status["conditions"]]
    assert types == ["Ready", "VariantsReady", "RoutingReady"]
    annotations = kube.get(ISVC, namespace, "digits")["metadata"].get("annotations", {})
    assert all(not k.startswith("kopf.zalando.org") for k in annotations)
    assert "finalizers" not in kube.get(ISVC, namespace, "digits")["metadata"], (
        "deletion must never wait for the operator"
    )


def test_weight_change_patches_the_router_only(
    kube: Kube, operator: OperatorProcess, namespace: str
) -> None:
    obj = specs.canary()
    create(kube, namespace, obj)
    before = wait_children(kube, namespace, obj)
    mark_ready(kube, namespace)
    wait_for(
        lambda: (condition(kube, namespace, "digits") or {}).get("status") == "True",
        what="Ready=True",
    )
    before = actual_children(kube, namespace, "digits")
    kube.patch(
        ISVC,
        namespace,
        "digits",
        {"spec": {"variants": [specs.variant("v1", 50), specs.variant("v2", 50)]}},
    )
    wait_for(
        lambda: kube.get(ISVC, namespace, "digits")["status"].get("traffic") == "v1=50,v2=50",
        what="new traffic",
    )
    after = actual_children(kube, namespace, "digits")
    changed = {
        key
        for key in before
        if before[key]["metadata"]["resourceVersion"] != after[key]["metadata"]["resourceVersion"]
    }
    # The variants' own objects are untouched; the router's config and its pods' config hash change.
    assert ("ConfigMap", "digits-router") in changed
    assert changed <= {("ConfigMap", "digits-router"), ("Deployment", "digits-router")}
    for name in ("digits-v1", "digits-v2"):
        assert (
            before[("Deployment", name)]["metadata"]["generation"]
            == after[("Deployment", name)]["metadata"]["generation"]
        )
        assert (
            before[("Service", name)]["metadata"]["resourceVersion"]
            == after[("Service", name)]["metadata"]["resourceVersion"]
        )
    assert ("ConfigMap", "digits-router") in changed


def test_removed_variant_is_pruned(kube: Kube, operator: OperatorProcess, namespace: str) -> None:
    obj = specs.isvc(
        specs.variant("v1", 50),
        specs.variant("v2", 30),
        specs.variant("v3", 20, replicas=2, disruptionBudget={"minAvailable": 1}),
    )
    create(kube, namespace, obj)
    wait_children(kube, namespace, obj)
    smaller = specs.isvc(specs.variant("v1", 60), specs.variant("v2", 40))
    kube.patch(ISVC, namespace, "digits", {"spec": smaller["spec"]})
    found = wait_children(kube, namespace, smaller)
    assert not any(name.endswith("-v3") for _, name in found)


def test_router_disruption_budget_follows_the_router_replicas(
    kube: Kube, operator: OperatorProcess, namespace: str
) -> None:
    pdb = ("PodDisruptionBudget", "digits-router")
    two = specs.isvc(specs.variant("v1", 90), specs.variant("v2", 10))
    owner = create(kube, namespace, two)
    found = wait_children(kube, namespace, two)
    assert found[pdb]["spec"]["maxUnavailable"] == 1
    assert found[pdb]["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    one = specs.isvc(
        specs.variant("v1", 90), specs.variant("v2", 10), routing={"router": {"replicas": 1}}
    )
    kube.patch(ISVC, namespace, "digits", {"spec": one["spec"]})
    wait_children(kube, namespace, one)
    # Kinds are listed one after the other: wait for both changes rather than read one list.
    wait_for(
        lambda: (
            (found := actual_children(kube, namespace, "digits")).get(pdb) is None
            and found[("Deployment", "digits-router")]["spec"]["replicas"] == 1
        ),
        what="one router replica and no budget",
    )
    three = specs.isvc(
        specs.variant("v1", 90), specs.variant("v2", 10), routing={"router": {"replicas": 3}}
    )
    kube.patch(ISVC, namespace, "digits", {"spec": three["spec"]})
    assert pdb in wait_children(kube, namespace, three)
    gateway = {"mode": "gateway-api", "parentRefs": [{"name": "gw"}], "router": None}
    kube.patch(ISVC, namespace, "digits", {"spec": {"routing": gateway}})
    # The operator of these tests runs without --gateway-api: the router's objects go.
    wait_for(
        lambda: (
            not any(
                name.startswith("digits-router")
                for _, name in actual_children(kube, namespace, "digits")
            )
        ),
        what="the router's objects pruned",
    )


def test_deleted_child_is_restored(kube: Kube, operator: OperatorProcess, namespace: str) -> None:
    obj = specs.canary()
    create(kube, namespace, obj)
    found = wait_children(kube, namespace, obj)
    for key in [("Deployment", "digits-v2"), ("Service", "digits"), ("ConfigMap", "digits-router")]:
        old_uid = found[key]["metadata"]["uid"]
        kube.delete(
            {"Deployment": DEPLOYMENTS, "Service": SERVICES, "ConfigMap": CONFIGMAPS}[key[0]],
            namespace,
            key[1],
        )
        wait_for(
            lambda k=key, u=old_uid: (
                (c := actual_children(kube, namespace, "digits").get(k))
                and c["metadata"]["uid"] != u
            ),
            what=f"{key} to be recreated",
        )


def test_edited_child_is_restored_and_foreign_fields_kept(
    kube: Kube, operator: OperatorProcess, namespace: str
) -> None:
    obj = specs.canary()
    create(kube, namespace, obj)
    wait_children(kube, namespace, obj)
    kube.patch(
        DEPLOYMENTS,
        namespace,
        "digits-v2",
        {
            "metadata": {
                "labels": {"serving.kubeserve.dev/variant": "hacked"},
                "annotations": {"team": "ml"},
            },
            "spec": {
                "replicas": 7,
                "template": {"spec": {"containers": [{"name": "server", "image": "evil:latest"}]}},
            },
        },
    )

    def restored() -> bool:
        dep = kube.get(DEPLOYMENTS, namespace, "digits-v2") or {}
        return (
            dep["spec"]["replicas"] == 1
            and dep["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
                "ghcr.io/kubeserve/"
            )
            and dep["metadata"]["labels"]["serving.kubeserve.dev/variant"] == "v2"
        )

    wait_for(restored, what="the Deployment to be restored")
    assert kube.get(DEPLOYMENTS, namespace, "digits-v2")["metadata"]["annotations"]["team"] == "ml"


def test_invalid_spec_gives_condition_and_event_and_others_are_unaffected(
    kube: Kube, emulator: EmulatorThread, operator: OperatorProcess, namespace: str
) -> None:
    bad = specs.isvc(specs.variant("v1", 80), specs.variant("v2", 10), name="broken")
    bad["spec"]["variants"][0]["model"]["storageUri"] = "ftp://nowhere/model"
    create(kube, namespace, bad)
    good = specs.canary()
    create(kube, namespace, good)
    cond = wait_for(lambda: condition(kube, namespace, "broken"), what="the broken one's condition")
    assert cond["status"] == "False" and cond["reason"] == "InvalidSpec"
    assert (
        "spec.variants[1].weight: weights of live variants sum to 90, must be 100"
        in cond["message"]
    )
    assert "spec.variants[0].model.storageUri: unsupported storage URI 'ftp'" in cond["message"]
    events = wait_for(
        lambda: [e for e in kube.list(EVENTS, namespace) if e.get("reason") == "InvalidSpec"],
        what="an Event",
    )
    assert events[0]["type"] == "Warning" and events[0]["involvedObject"]["name"] == "broken"
    assert actual_children(kube, namespace, "broken") == {}
    wait_children(kube, namespace, good)
    # No retry storm: the broken resource is not written again and again.
    writes = lambda: emulator.emulator.counts[("patch", "inferenceservices")]  # noqa: E731
    first = writes()
    time.sleep(4)
    assert writes() - first <= 4
    # Fixing the spec heals it.
    kube.patch(
        ISVC,
        namespace,
        "broken",
        {"spec": {"variants": [specs.variant("v1", 90), specs.variant("v2", 10)]}},
    )
    wait_children(
        kube, namespace, specs.isvc(specs.variant("v1", 90), specs.variant("v2", 10), name="broken")
    )
    wait_for(
        lambda: (condition(kube, namespace, "broken") or {}).get("reason") != "InvalidSpec",
        what="InvalidSpec to clear",
    )


def test_deleting_the_inferenceservice_removes_everything(
    kube: Kube, operator: OperatorProcess, namespace: str
) -> None:
    obj = specs.canary()
    create(kube, namespace, obj)
    wait_children(kube, namespace, obj)
    kube.delete(ISVC, namespace, "digits")
    wait_for(lambda: actual_children(kube, namespace) == {}, what="all children to be gone")
    time.sleep(1.5)  # and the operator does not bring any back
    assert actual_children(kube, namespace) == {}


def test_pod_problems_reach_the_status(
    kube: Kube, operator: OperatorProcess, namespace: str
) -> None:
    obj = specs.isvc(
        specs.variant("v1", 50, gpu={"count": 1, "product": "NVIDIA-A100-SXM4-40GB"}),
        specs.variant("v2", 50),
    )
    create(kube, namespace, obj)
    wait_children(kube, namespace, obj)
    labels = {
        "app.kubernetes.io/managed-by": "kubeserve-operator",
        "serving.kubeserve.dev/inferenceservice": "digits",
        "serving.kubeserve.dev/variant": "v1",
    }
    pod = kube.create(
        PODS,
        namespace,
        {"metadata": {"name": "digits-v1-abc", "labels": labels}, "spec": {"containers": []}},
    )
    kube.patch(
        PODS,
        namespace,
        pod["metadata"]["name"],
        {
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ],
            }
        },
        sub="status",
    )
    cond = wait_reason(kube, namespace, "digits", "VariantsReady", "GPUUnavailable")
    assert (
        "no node offers 1 free nvidia.com/gpu of product NVIDIA-A100-SXM4-40GB" in cond["message"]
    )
    labels["serving.kubeserve.dev/variant"] = "v2"
    pod = kube.create(
        PODS,
        namespace,
        {"metadata": {"name": "digits-v2-abc", "labels": labels}, "spec": {"containers": []}},
    )
    kube.delete(PODS, namespace, "digits-v1-abc")
    kube.patch(
        PODS,
        namespace,
        "digits-v2-abc",
        {
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [
                    {
                        "name": "fetch-model",
                        "ready": False,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {
                            "terminated": {
                                "exitCode": 1,
                                "message": "404 Not Found: http://models/v2.onnx",
                            }
                        },
                    }
                ],
            }
        },
        sub="status",
    )
    cond = wait_reason(kube, namespace, "digits", "VariantsReady", "ModelFetchFailed")
    assert "404 Not Found" in cond["message"]


def test_gateway_mode_without_gateway_api_reports_it(
    kube: Kube, operator: OperatorProcess, namespace: str
) -> None:
    obj = specs.isvc(
        routing={"mode": "gateway-api", "parentRefs": [{"name": "gw", "namespace": "infra"}]}
    )
    create(kube, namespace, obj)
    cond = wait_for(
        lambda: (c := condition(kube, namespace, "digits", "RoutingReady")) and c,
        what="RoutingReady",
    )
    assert cond["reason"] == "GatewayAPIDisabled" and cond["status"] == "False"
    assert set(actual_children(kube, namespace, "digits")) == {
        ("Deployment", "digits-v1"),
        ("Service", "digits-v1"),
    }
