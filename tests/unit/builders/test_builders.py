"""Builders: spec in, manifests out; restricted pods, GPU scheduling, schema-valid, repeatable."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kubeserve import manifests
from kubeserve.api import validation
from kubeserve.builders import children, meta, pod
from kubeserve.builders.config import BuildConfig
from support import k8s_schema, specs


def render(obj: dict[str, Any], config: BuildConfig | None = None) -> list[dict[str, Any]]:
    return children.build_children(validation.parse(obj), config)


def by_kind(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    # Without a name, look among the variants' objects only: the router has its own tests.
    found = [
        o
        for o in objects
        if o["kind"] == kind
        and (
            o["metadata"]["name"] == name
            if name is not None
            else o["metadata"]["labels"][meta.COMPONENT_LABEL] != "router"
        )
    ]
    assert len(found) == 1, [(o["kind"], o["metadata"]["name"]) for o in objects]
    return found[0]


def all_containers(dep: dict[str, Any]) -> list[dict[str, Any]]:
    spec = dep["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def test_one_variant_gives_a_deployment_and_a_service() -> None:
    objects = render(specs.isvc())
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Deployment", "digits-v1"),
        ("Service", "digits-v1"),
        # The router (tests/router/ covers it).
        ("ConfigMap", "digits-router"),
        ("Deployment", "digits-router"),
        ("Service", "digits"),
        ("PodDisruptionBudget", "digits-router"),
    ]
    for o in objects:
        assert o["metadata"]["namespace"] == "default"
        k8s_schema.assert_valid(o)


def test_same_input_gives_byte_identical_output() -> None:
    obj = specs.isvc(
        specs.variant(
            "v1",
            50,
            autoscaling={"maxReplicas": 3},
            disruptionBudget={"maxUnavailable": 1},
            gpu={"product": "T4"},
            nodeSelector={"zone": "a", "disk": "ssd"},
        ),
        specs.variant("v2", 50),
    )
    first = manifests.dump_documents(render(obj))
    assert first == manifests.dump_documents(render(obj))
    assert first == manifests.dump_documents(render(yaml.safe_load(yaml.safe_dump(obj))))


def test_selector_is_a_subset_of_pod_labels_and_service_selects_the_pods() -> None:
    objects = render(specs.canary())
    for name in ("digits-v1", "digits-v2"):
        dep, svc = by_kind(objects, "Deployment", name), by_kind(objects, "Service", name)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
        assert pod_labels["app.kubernetes.io/instance"] == "digits"
        assert pod_labels[meta.VARIANT_LABEL] == name.removeprefix("digits-")
        assert pod_labels["app.kubernetes.io/managed-by"] == "kubeserve-operator"
    assert (
        by_kind(objects, "Deployment", "digits-v1")["spec"]["selector"]
        != by_kind(objects, "Deployment", "digits-v2")["spec"]["selector"]
    )


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    dep = by_kind(render(specs.isvc()), "Deployment")
    pod_spec = dep["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["runAsUser"] != 0
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec["automountServiceAccountToken"] is False
    assert "hostNetwork" not in pod_spec and "hostPID" not in pod_spec
    for c in all_containers(dep):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
        assert "privileged" not in sc
        # Every writable path is an emptyDir mount.
        writable = [m for m in c["volumeMounts"] if not m.get("readOnly")]
        volumes = {v["name"]: v for v in pod_spec["volumes"]}
        assert all("emptyDir" in volumes[m["name"]] for m in writable)


def test_server_container_contract() -> None:
    dep = by_kind(
        render(specs.isvc(specs.variant("v1", env=[{"name": "OMP_NUM_THREADS", "value": "2"}]))),
        "Deployment",
    )
    server = dep["spec"]["template"]["spec"]["containers"][0]
    assert server["command"] == ["kubeserve", "serve"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["KUBESERVE_MODEL_NAME"] == "digits"
    assert env["KUBESERVE_MODEL_DIR"] == pod.MODEL_ROOT
    assert env["KUBESERVE_VARIANT"] == "v1"
    assert env["KUBESERVE_MODEL_FORMAT"] == "onnx"
    assert env["OMP_NUM_THREADS"] == "2"
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # The Open Inference Protocol's gRPC service has a port of its own, passed to the server.
    assert server["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert env["KUBESERVE_PORT"] == "8080"
    assert env["KUBESERVE_GRPC_PORT"] == "8081"
    assert server["resources"] == BuildConfig().default_resources


def test_fetch_init_container_writes_into_the_shared_volume() -> None:
    obj = specs.isvc(
        specs.variant(
            "v1",
            model={
                "format": "sklearn",
                "storageUri": "s3://bucket/digits/v1",
                "sha256": "ab" * 32,
                "credentialsSecret": "s3-creds",
            },
        )
    )
    dep = by_kind(render(obj), "Deployment")
    init = dep["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"] == ["kubeserve", "fetch"]
    assert init["args"] == [
        *("s3://bucket/digits/v1", "/mnt/models/v1", "--sha256", "ab" * 32),
        *("--max-bytes", str(10 * 2**30)),
    ]
    assert init["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert {"name": "model-store", "mountPath": "/mnt/models"} in init["volumeMounts"]
    server = dep["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in server, "credentials are for the fetch step only"
    assert {"name": "model-store", "mountPath": "/mnt/models", "readOnly": True} in server[
        "volumeMounts"
    ]


@pytest.mark.parametrize(
    ("max_size", "size_limit", "max_bytes"),
    [
        (None, "20Gi", 10 * 2**30),
        ("1Gi", "2Gi", 2**30),
        ("1.5Gi", "3Gi", 3 * 2**29),
        (2**20, "2Mi", 2**20),
        ("500M", "1000000000", 500_000_000),
    ],
)
def test_model_volume_size_limit_and_fetch_cap_follow_max_size(
    max_size: str | int | None, size_limit: str, max_bytes: int
) -> None:
    model: dict[str, Any] = {"format": "onnx", "storageUri": "https://example.com/m.onnx"}
    if max_size is not None:
        model["maxSize"] = max_size
    dep = by_kind(render(specs.isvc(specs.variant("v1", model=model))), "Deployment")
    pod_spec = dep["spec"]["template"]["spec"]
    store = next(v for v in pod_spec["volumes"] if v["name"] == "model-store")
    # Room for the download and what it unpacks to, each capped at maxSize by the fetch.
    assert store == {"name": "model-store", "emptyDir": {"sizeLimit": size_limit}}
    args = pod_spec["initContainers"][0]["args"]
    assert args[args.index("--max-bytes") + 1] == str(max_bytes)
    k8s_schema.assert_valid(dep)


def test_pvc_models_are_mounted_without_a_fetch_step() -> None:
    obj = specs.isvc(
        specs.variant("v1", model={"format": "onnx", "storageUri": "pvc://models/digits/v1"})
    )
    dep = by_kind(render(obj), "Deployment")
    pod_spec = dep["spec"]["template"]["spec"]
    assert "initContainers" not in pod_spec
    assert {
        "name": "model-store",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    } in pod_spec["volumes"]
    mount = pod_spec["containers"][0]["volumeMounts"][0]
    assert mount == {
        "name": "model-store",
        "mountPath": "/mnt/models/v1",
        "readOnly": True,
        "subPath": "digits/v1",
    }
    k8s_schema.assert_valid(dep)


def test_gpu_variant_gets_limits_node_selector_and_toleration() -> None:
    obj = specs.isvc(
        specs.variant(
            "v1",
            gpu={"count": 2, "product": "NVIDIA-A100-SXM4-40GB"},
            tolerations=[
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
            ],
        )
    )
    dep = by_kind(render(obj), "Deployment")
    pod_spec = dep["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
    assert pod.GPU_TOLERATION in pod_spec["tolerations"]
    assert {
        "key": "dedicated",
        "operator": "Equal",
        "value": "ml",
        "effect": "NoSchedule",
    } in pod_spec["tolerations"]
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    k8s_schema.assert_valid(dep)


def test_mig_profile_requests_the_mig_resource() -> None:
    dep = by_kind(
        render(specs.isvc(specs.variant("v1", gpu={"migProfile": "1g.5gb"}))), "Deployment"
    )
    limits = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.5gb"] == 1
    assert "nvidia.com/gpu" not in limits
    assert "nodeSelector" not in dep["spec"]["template"]["spec"]


def test_cpu_variant_has_no_gpu_scheduling() -> None:
    pod_spec = by_kind(render(specs.isvc()), "Deployment")["spec"]["template"]["spec"]
    assert "tolerations" not in pod_spec and "nodeSelector" not in pod_spec
    assert (
        by_kind(render(specs.isvc()), "Deployment")["spec"]["strategy"]["rollingUpdate"][
            "maxUnavailable"
        ]
        == 0
    )


def test_autoscaling_gives_an_hpa_and_leaves_replicas_to_it() -> None:
    obj = specs.isvc(
        specs.variant(
            "v1",
            autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60},
        )
    )
    objects = render(obj)
    dep, hpa = by_kind(objects, "Deployment"), by_kind(objects, "HorizontalPodAutoscaler")
    assert "replicas" not in dep["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "digits-v1",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 60,
    }
    k8s_schema.assert_valid(hpa)


@pytest.mark.parametrize("budget", [{"minAvailable": 1}, {"maxUnavailable": "25%"}])
def test_disruption_budget(budget: dict[str, Any]) -> None:
    objects = render(specs.isvc(specs.variant("v1", replicas=3, disruptionBudget=budget)))
    pdb = by_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == by_kind(objects, "Deployment")["spec"]["selector"]
    assert budget.items() <= pdb["spec"].items()
    k8s_schema.assert_valid(pdb)


def test_replicas_default_to_one() -> None:
    assert by_kind(render(specs.isvc()), "Deployment")["spec"]["replicas"] == 1
    assert (
        by_kind(
            render(specs.isvc(specs.variant("v1", 100), specs.variant("v2", 0, replicas=0))),
            "Deployment",
            "digits-v2",
        )["spec"]["replicas"]
        == 0
    )


def test_image_override_and_config_image() -> None:
    config = BuildConfig(server_image="registry.local/kubeserve-server:dev")
    objects = render(
        specs.isvc(specs.variant("v1", 50, image="my/server:1"), specs.variant("v2", 50)), config
    )
    assert {c["image"] for c in all_containers(by_kind(objects, "Deployment", "digits-v1"))} == {
        "my/server:1"
    }
    assert {c["image"] for c in all_containers(by_kind(objects, "Deployment", "digits-v2"))} == {
        "registry.local/kubeserve-server:dev"
    }


def test_no_namespace_when_the_resource_has_none() -> None:
    for o in render(specs.isvc(namespace=None)):
        assert "namespace" not in o["metadata"]


def test_builders_do_not_modify_their_input() -> None:
    isvc = validation.parse(specs.canary())
    before = isvc.model_dump()
    children.build_children(isvc)
    assert isvc.model_dump() == before


def test_shutdown_fits_inside_the_grace_period() -> None:
    [deployment] = [
        o
        for o in children.build_children(validation.parse(specs.isvc()))
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "digits-v1"
    ]
    template = deployment["spec"]["template"]["spec"]
    [server] = [c for c in template["containers"] if c["name"] == pod.SERVER_CONTAINER]
    env = {e["name"]: e.get("value") for e in server["env"]}
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(env["KUBESERVE_DRAIN_TIMEOUT"]) + float(env.get("KUBESERVE_DRAIN_DELAY") or 0)
    # The supervisor of several workers waits drain + 5 s before it gives up on them.
    assert pre_stop + drain + 5 <= template["terminationGracePeriodSeconds"]
