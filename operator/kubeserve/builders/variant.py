"""The objects of one variant: Deployment, Service and, where asked, HPA and PDB."""

from __future__ import annotations

from typing import Any

from kubeserve.api import names, spec
from kubeserve.builders import meta, pod
from kubeserve.builders.config import BuildConfig

COMPONENT = "predictor"
SERVICE_PORT = 80
# The gRPC port of a variant's Service: the model server's own, so a client that talks to
# one server directly and one that talks to the Service dial the same port.
GRPC_SERVICE_PORT = pod.SERVER_GRPC_PORT
# The standard name for HTTP/2 with prior knowledge, which gRPC in cleartext is (KEP-3726);
# Gateway implementations and meshes read it to speak HTTP/2 to the port.
GRPC_APP_PROTOCOL = "kubernetes.io/h2c"


def with_grpc_port(service_object: dict[str, Any], *, port: int) -> dict[str, Any]:
    """Give a Service built by `meta.http_service` a second port, `grpc`, to the pods' `grpc`."""
    grpc = {
        "name": "grpc",
        "port": port,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": GRPC_APP_PROTOCOL,
    }
    service_object["spec"]["ports"].append(grpc)
    return service_object


def deployment(
    isvc: spec.InferenceService, variant: spec.Variant, config: BuildConfig
) -> dict[str, Any]:
    """Build the Deployment that runs a variant's model server pods."""
    name = names.variant_object_name(isvc.metadata.name, variant.name)
    # GPUs are scarce: a surge pod could wait forever for a free GPU and stall the rollout,
    # so GPU variants replace pods one at a time instead.
    rolling = (
        {"maxSurge": 0, "maxUnavailable": 1}
        if variant.gpu
        else {"maxSurge": "25%", "maxUnavailable": 0}
    )
    dep_spec: dict[str, Any] = {}
    if variant.autoscaling is None:
        # With autoscaling the HPA owns the replica count; writing it here would fight it.
        dep_spec["replicas"] = 1 if variant.replicas is None else variant.replicas
    dep_spec |= {
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": 600,
        "selector": {
            "matchLabels": meta.selector_labels(isvc, component=COMPONENT, variant=variant.name)
        },
        "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
        "template": pod.pod_template(isvc, variant, config),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.object_meta(isvc, name, component=COMPONENT, variant=variant.name),
        "spec": dep_spec,
    }


def service(isvc: spec.InferenceService, variant: spec.Variant) -> dict[str, Any]:
    """Build the ClusterIP Service in front of one variant (the router's upstream): HTTP, gRPC."""
    name = names.variant_object_name(isvc.metadata.name, variant.name)
    http = meta.http_service(
        isvc, name, port=SERVICE_PORT, component=COMPONENT, variant=variant.name
    )
    return with_grpc_port(http, port=GRPC_SERVICE_PORT)


def autoscaler(isvc: spec.InferenceService, variant: spec.Variant) -> dict[str, Any] | None:
    """Build the HorizontalPodAutoscaler of a variant, or None when it has fixed replicas."""
    if variant.autoscaling is None:
        return None
    name = names.variant_object_name(isvc.metadata.name, variant.name)
    a = variant.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta.object_meta(isvc, name, component=COMPONENT, variant=variant.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": a.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def disruption_budget(isvc: spec.InferenceService, variant: spec.Variant) -> dict[str, Any] | None:
    """Build the PodDisruptionBudget of a variant, or None when none was asked for."""
    if variant.disruption_budget is None:
        return None
    name = names.variant_object_name(isvc.metadata.name, variant.name)
    pdb_spec: dict[str, Any] = {
        "selector": {
            "matchLabels": meta.selector_labels(isvc, component=COMPONENT, variant=variant.name)
        },
        # A crash-looping pod must not block node drains forever.
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    pdb_spec |= variant.disruption_budget.to_wire()
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.object_meta(isvc, name, component=COMPONENT, variant=variant.name),
        "spec": pdb_spec,
    }


def variant_objects(
    isvc: spec.InferenceService, variant: spec.Variant, config: BuildConfig
) -> list[dict[str, Any]]:
    """Build every object of one variant, in the order they are applied."""
    objects = [deployment(isvc, variant, config), service(isvc, variant)]
    return objects + [
        o for o in (autoscaler(isvc, variant), disruption_budget(isvc, variant)) if o is not None
    ]
