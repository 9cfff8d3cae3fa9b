"""The pod template of a variant: the model server, the model fetch step, GPU scheduling.

Pods meet the `restricted` Pod Security Standard: non-root, no privilege escalation, all
capabilities dropped, RuntimeDefault seccomp, read-only root filesystem. The only writable
paths are emptyDirs: the model store (sized from model.maxSize) and /tmp.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from kubeserve.api import spec, validation
from kubeserve.builders import meta
from kubeserve.builders.config import BuildConfig

MODEL_ROOT = "/mnt/models"
SERVER_PORT = 8080
# The server's Open Inference Protocol gRPC service (HTTP/2 cleartext) has a port of its own.
SERVER_GRPC_PORT = 8081
SERVER_CONTAINER = "server"
FETCH_CONTAINER = "fetch-model"
MODEL_VOLUME = "model-store"
TMP_VOLUME = "tmp"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
# Shutdown must end inside the grace period, or the kubelet kills requests in flight: the
# preStop sleep (endpoints drop the pod meanwhile), then the server's drain, then a margin
# for a supervisor with several workers to reap them (it waits drain + 5 s).
GRACE_SECONDS = 30
PRE_STOP_SECONDS = 5
DRAIN_TIMEOUT_SECONDS = GRACE_SECONDS - PRE_STOP_SECONDS - 5
GPU_RESOURCE = "nvidia.com/gpu"
# The taint NVIDIA's GPU operator and most managed clusters put on GPU nodes.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def gpu_resource_name(gpu: spec.Gpu) -> str:
    """Name the extended resource a GPU request uses: whole GPUs or a MIG slice."""
    return f"nvidia.com/mig-{gpu.mig_profile}" if gpu.mig_profile else GPU_RESOURCE


def container_security_context() -> dict[str, Any]:
    """Give the restricted container security context every kubeserve container runs with."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(config: BuildConfig) -> dict[str, Any]:
    """Give the restricted pod security context; fsGroup makes the emptyDirs writable."""
    return {
        "runAsNonRoot": True,
        "runAsUser": config.run_as_user,
        "runAsGroup": config.run_as_user,
        "fsGroup": config.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def model_size_limit(variant: spec.Variant) -> str:
    """Give the model emptyDir's sizeLimit: room for twice model.maxSize.

    The fetch caps the download and, separately, what an archive unpacks to at maxSize;
    while it unpacks both are on the volume. Past the limit the kubelet evicts the pod, so
    the fetch's own one-line error must come first.
    """
    return _binary_quantity(2 * variant.model.max_bytes())


def _binary_quantity(size: int) -> str:
    """Write a byte count with the largest binary suffix that divides it (20Gi, 1536Mi)."""
    for suffix, unit in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _pvc_source(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlsplit(uri)
    return parsed.netloc, parsed.path.strip("/")


def _resources(variant: spec.Variant, config: BuildConfig) -> dict[str, Any]:
    resources = (
        variant.resources.to_wire()
        if variant.resources
        else {k: dict(v) for k, v in config.default_resources.items()}
    )
    if variant.gpu:
        # Extended resources are requested through limits; requests default to the same.
        limits = dict(resources.get("limits") or {})
        limits[gpu_resource_name(variant.gpu)] = variant.gpu.count
        resources["limits"] = limits
    return {k: dict(sorted(v.items())) for k, v in sorted(resources.items()) if v}


def server_env(isvc: spec.InferenceService, variant: spec.Variant) -> list[dict[str, Any]]:
    """Give the model server container's environment (the local run starts servers with it too)."""
    ours = [
        {"name": "KUBESERVE_MODEL_NAME", "value": isvc.metadata.name},
        {"name": "KUBESERVE_MODEL_DIR", "value": MODEL_ROOT},
        {"name": "KUBESERVE_MODEL_FORMAT", "value": variant.model.format},
        {"name": "KUBESERVE_PORT", "value": str(SERVER_PORT)},
        {"name": "KUBESERVE_GRPC_PORT", "value": str(SERVER_GRPC_PORT)},
        {"name": "KUBESERVE_VARIANT", "value": variant.name},
        {"name": "KUBESERVE_DRAIN_TIMEOUT", "value": str(DRAIN_TIMEOUT_SECONDS)},
        # Libraries that cache under $HOME must find a writable one.
        {"name": "HOME", "value": "/tmp"},
    ]
    return ours + [e.to_wire() for e in variant.env or []]


def _http_probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _server_container(
    isvc: spec.InferenceService, variant: spec.Variant, config: BuildConfig
) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": MODEL_VOLUME, "mountPath": MODEL_ROOT, "readOnly": True}
    if variant.model.storage_uri.startswith("pvc://"):
        _, sub_path = _pvc_source(variant.model.storage_uri)
        mount = {
            "name": MODEL_VOLUME,
            "mountPath": f"{MODEL_ROOT}/{variant.name}",
            "readOnly": True,
        }
        if sub_path:
            mount["subPath"] = sub_path
    return {
        "name": SERVER_CONTAINER,
        "image": variant.image or config.server_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["kubeserve", "serve"],
        "env": server_env(isvc, variant),
        "ports": [
            {"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": SERVER_GRPC_PORT, "protocol": "TCP"},
        ],
        # Startup allows up to 5 minutes to load a large model before liveness counts.
        "startupProbe": _http_probe(LIVE_PATH, period=2, failures=150),
        "readinessProbe": _http_probe(READY_PATH, period=5, failures=3),
        "livenessProbe": _http_probe(LIVE_PATH, period=10, failures=3),
        # Endpoints take a moment to drop a terminating pod; keep serving until they have.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "resources": _resources(variant, config),
        "securityContext": container_security_context(),
        "volumeMounts": [mount, {"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }


def _fetch_container(variant: spec.Variant, config: BuildConfig) -> dict[str, Any]:
    args = [variant.model.storage_uri, f"{MODEL_ROOT}/{variant.name}"]
    if variant.model.sha256:
        args += ["--sha256", variant.model.sha256]
    args += ["--max-bytes", str(variant.model.max_bytes())]
    container: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": variant.image or config.server_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["kubeserve", "fetch"],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}],
    }
    if variant.model.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": variant.model.credentials_secret}}]
    container |= {
        "resources": {k: dict(v) for k, v in config.fetch_resources.items()},
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": MODEL_VOLUME, "mountPath": MODEL_ROOT},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
    }
    return container


def _scheduling(variant: spec.Variant) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node_selector = dict(variant.node_selector or {})
    tolerations = [t.to_wire() for t in variant.tolerations or []]
    if variant.gpu:
        if variant.gpu.product:
            node_selector[validation.GPU_PRODUCT_LABEL] = variant.gpu.product
        if GPU_TOLERATION not in tolerations:
            tolerations.append(dict(GPU_TOLERATION))
    if node_selector:
        out["nodeSelector"] = dict(sorted(node_selector.items()))
    if tolerations:
        out["tolerations"] = tolerations
    if variant.affinity:
        out["affinity"] = variant.affinity.to_wire()
    return out


def pod_template(
    isvc: spec.InferenceService, variant: spec.Variant, config: BuildConfig
) -> dict[str, Any]:
    """Build the pod template of one variant's Deployment."""
    from_pvc = variant.model.storage_uri.startswith("pvc://")
    if from_pvc:
        claim, _ = _pvc_source(variant.model.storage_uri)
        model_volume: dict[str, Any] = {
            "name": MODEL_VOLUME,
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
    else:
        model_volume = {"name": MODEL_VOLUME, "emptyDir": {"sizeLimit": model_size_limit(variant)}}
    pod_spec: dict[str, Any] = {
        # The server never talks to the Kubernetes API: give it no token and no service env.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(config),
        "terminationGracePeriodSeconds": GRACE_SECONDS,
    }
    if not from_pvc:
        pod_spec["initContainers"] = [_fetch_container(variant, config)]
    pod_spec["containers"] = [_server_container(isvc, variant, config)]
    pod_spec["volumes"] = [model_volume, {"name": TMP_VOLUME, "emptyDir": {}}]
    pod_spec |= _scheduling(variant)
    return {
        "metadata": {
            "labels": meta.labels(isvc, component="predictor", variant=variant.name),
            "annotations": {"kubectl.kubernetes.io/default-container": SERVER_CONTAINER},
        },
        "spec": pod_spec,
    }
