"""The nginx router of an InferenceService as Kubernetes objects: ConfigMap, Deployment, Service, PDB.

The router is the stable endpoint: a Service named after the InferenceService in front of a
small nginx Deployment. Its config is rendered by `nginx_config` and kept in the ConfigMap;
the Deployment's pods carry a hash of it, so a new config rolls them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kubeserve.api import names, spec
from kubeserve.builders import meta, nginx_config, pod, variant
from kubeserve.builders.config import BuildConfig

COMPONENT = "router"
CONFIG_KEY = "nginx.conf"
CONFIG_DIR = "/etc/kubeserve/router"
CONFIG_HASH_ANNOTATION = f"{meta.LABEL_PREFIX}/router-config-hash"
SERVICE_PORT = 80
# gRPC clients dial the endpoint on the port they would dial a model server on.
GRPC_SERVICE_PORT = variant.GRPC_SERVICE_PORT
# The uid/gid of the nginx-unprivileged image's `nginx` user.
ROUTER_UID = 101
# The router container's resources when `spec.routing.router.resources` is not given (its
# description in api/spec.py, `Router`, says the same). The other defaults live in that model:
# two replicas so that a node drain or a rollout never leaves the endpoint without a router;
# two workers because nginx's `worker_processes auto` counts the node's CPUs, not the pod's.
ROUTER_RESOURCES: dict[str, Any] = {
    "limits": {"memory": "128Mi"},
    "requests": {"cpu": "50m", "memory": "32Mi"},
}
# Keeps endpoints controllers and kube-proxy time to stop sending to a terminating router.
PRESTOP_SLEEP_SECONDS = 5


def config_hash(text: str) -> str:
    """Hash a router config; the Deployment's pod template carries it, so a change rolls pods."""
    return hashlib.sha256(text.encode()).hexdigest()


def config_map(isvc: spec.InferenceService, config: BuildConfig) -> dict[str, Any]:
    """Build the ConfigMap that holds the router's nginx.conf."""
    name = names.router_object_name(isvc.metadata.name)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta.object_meta(isvc, name, component=COMPONENT),
        "data": {CONFIG_KEY: nginx_config.render_config(isvc, config)},
    }


def _probe(*, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/healthz", "port": "health"},
        "periodSeconds": period,
        "timeoutSeconds": 1,
        "failureThreshold": failures,
    }


def _resources(settings: spec.Router) -> dict[str, Any]:
    chosen = (
        settings.resources.to_wire()
        if settings.resources is not None
        else {k: dict(v) for k, v in ROUTER_RESOURCES.items()}
    )
    return {k: dict(sorted(v.items())) for k, v in sorted(chosen.items()) if v}


def deployment(
    isvc: spec.InferenceService, config: BuildConfig, *, nginx_conf: str
) -> dict[str, Any]:
    """Build the router Deployment; `nginx_conf` is the ConfigMap's text, hashed into the pods."""
    name = names.router_object_name(isvc.metadata.name)
    container = {
        "name": COMPONENT,
        "image": config.router_image,
        "imagePullPolicy": config.image_pull_policy,
        # `-e stderr`: nginx opens its compiled-in error log before reading the config.
        "command": ["nginx", "-e", "stderr", "-c", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        "ports": [
            {"name": "http", "containerPort": nginx_config.ROUTER_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": nginx_config.HEALTH_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": nginx_config.GRPC_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": _probe(period=2, failures=2),
        "livenessProbe": _probe(period=10, failures=3),
        # nginx finishes in-flight requests on SIGQUIT (the image's stop signal); the sleep
        # first lets the Service stop sending new ones.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}},
        "resources": _resources(nginx_config.router_settings(isvc)),
        "securityContext": pod.container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": pod.TMP_VOLUME, "mountPath": nginx_config.POD_TEMP_DIR},
        ],
    }
    pod_security = pod.pod_security_context(config) | {
        "runAsUser": ROUTER_UID,
        "runAsGroup": ROUTER_UID,
        "fsGroup": ROUTER_UID,
    }
    template = {
        "metadata": {
            "labels": meta.labels(isvc, component=COMPONENT),
            "annotations": {CONFIG_HASH_ANNOTATION: config_hash(nginx_conf)},
        },
        "spec": {
            "automountServiceAccountToken": False,
            # Service links would put every Service of the namespace into nginx's environment.
            "enableServiceLinks": False,
            "securityContext": pod_security,
            "terminationGracePeriodSeconds": 30,
            "containers": [container],
            "volumes": [
                {"name": "config", "configMap": {"name": name}},
                {"name": pod.TMP_VOLUME, "emptyDir": {"sizeLimit": "512Mi"}},
            ],
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.object_meta(isvc, name, component=COMPONENT),
        "spec": {
            "replicas": nginx_config.router_settings(isvc).replicas,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 300,
            "selector": {"matchLabels": meta.selector_labels(isvc, component=COMPONENT)},
            # A new config starts a new pod first and removes an old one only once it is ready.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": template,
        },
    }


def service(isvc: spec.InferenceService) -> dict[str, Any]:
    """Build the Service named after the InferenceService: the stable endpoint, HTTP and gRPC."""
    http = meta.http_service(isvc, isvc.metadata.name, port=SERVICE_PORT, component=COMPONENT)
    return variant.with_grpc_port(http, port=GRPC_SERVICE_PORT)


def disruption_budget(isvc: spec.InferenceService) -> dict[str, Any] | None:
    """Build the router's PodDisruptionBudget, or None when it runs a single replica.

    maxUnavailable 1 rather than minAvailable 1: both keep a router serving through a drain
    at two replicas, but with more replicas minAvailable 1 would let a drain evict all but one
    at once, and that one would take the whole endpoint's load. With one replica there is
    nothing to keep: a budget could only block the drain or do nothing, so there is none.
    """
    if nginx_config.router_settings(isvc).replicas < 2:
        return None
    name = names.router_object_name(isvc.metadata.name)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.object_meta(isvc, name, component=COMPONENT),
        "spec": {
            "selector": {"matchLabels": meta.selector_labels(isvc, component=COMPONENT)},
            "maxUnavailable": 1,
            # A router that never gets ready (a bad image, a crash loop) must not block node
            # drains: it serves nothing, so evicting it costs nothing.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def router_objects(isvc: spec.InferenceService, config: BuildConfig) -> list[dict[str, Any]]:
    """Build the router's objects in the order they are applied.

    ConfigMap, Deployment, Service, then the PodDisruptionBudget when there is one.
    """
    cm = config_map(isvc, config)
    objects = [cm, deployment(isvc, config, nginx_conf=cm["data"][CONFIG_KEY]), service(isvc)]
    pdb = disruption_budget(isvc)
    return objects if pdb is None else [*objects, pdb]
