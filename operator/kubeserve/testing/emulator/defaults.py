"""Default and normalise objects as kube-apiserver does after it decodes a create or an update.

Every object the API server stores has been decoded into its Go type and defaulted, then
encoded again: fields the client left out come back filled in, quantities come back in
canonical form, and zero values of `omitempty` fields are not written at all. A client
that compares what it sent with what it reads must tolerate all three. One function per
kind below; each default names the Kubernetes source it follows (paths in
github.com/kubernetes/kubernetes; `+default` markers are in k8s.io/api's types.go and land
in the generated `zz_generated.defaults.go`). Custom resources are defaulted by their CRD's
structural schema (`structural.py`).

Left out: defaults behind alpha feature gates (HPA selectionStrategy and tolerance,
pod-level resources), admission plugins (service-account token volumes, default
tolerations, priority) and node ports.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubeserve.api import crd
from kubeserve.testing.emulator import quantity, structural

Obj = dict[str, Any]


def _unset(target: Obj, defaults: Mapping[str, Any]) -> None:
    """Default pointer fields: only when absent or null (`if obj.X == nil`)."""
    for key, value in defaults.items():
        if target.get(key) is None:
            target[key] = copy.deepcopy(value)


def _empty(target: Obj, defaults: Mapping[str, Any]) -> None:
    """Default value fields: also when sent as their zero value (`if obj.X == ""`, `== 0`)."""
    for key, value in defaults.items():
        if target.get(key) in (None, "", 0) and target.get(key) is not False:
            target[key] = copy.deepcopy(value)


def _omit_zero(target: Obj, keys: Iterable[str]) -> None:
    """Drop `omitempty` value fields holding their zero value: Go's encoder never writes them."""
    for key in keys:
        if key in target and target[key] in (None, False, 0, "", [], {}):
            del target[key]


def _items(target: Obj, key: str) -> list[Obj]:
    return [item for item in target.get(key) or [] if isinstance(item, dict)]


def _sub(target: Obj, key: str) -> Obj | None:
    value = target.get(key)
    return value if isinstance(value, dict) else None


def _struct(target: Obj, key: str) -> Obj:
    """Give the object at `key`, made an empty one first when absent (a Go struct field)."""
    if not isinstance(target.get(key), dict):
        target[key] = {}
    value: Obj = target[key]
    return value


# ObjectMeta: labels, annotations, finalizers and ownerReferences are all `omitempty`.
_META_OMITTED = ("labels", "annotations", "finalizers", "ownerReferences")


def object_meta(meta: Obj) -> None:
    """Normalise metadata: empty maps and lists are not written."""
    _omit_zero(meta, _META_OMITTED)


# Containers

# pkg/apis/core/v1/defaults.go SetDefaults_Container (value fields).
_CONTAINER = {
    "terminationMessagePath": "/dev/termination-log",  # v1.TerminationMessagePathDefault
    "terminationMessagePolicy": "File",  # v1.TerminationMessageReadFile
}
# pkg/apis/core/v1/defaults.go SetDefaults_Probe: zero counts as unset (int32, not *int32).
_PROBE = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
# pkg/apis/core/v1/defaults.go SetDefaults_HTTPGetAction.
_HTTP_GET = {"path": "/", "scheme": "HTTP"}
# k8s.io/api core/v1 types.go: ContainerPort.Protocol `+default="TCP"`.
_CONTAINER_PORT = {"protocol": "TCP"}
# k8s.io/api core/v1 types.go: GRPCAction.Service `+default=""` (a *string).
_GRPC = {"service": ""}
# pkg/apis/core/v1/defaults.go SetDefaults_ObjectFieldSelector.
_FIELD_REF = {"apiVersion": "v1"}
# k8s.io/api core/v1 types.go: `omitempty` value fields of Container, ContainerPort, VolumeMount.
_CONTAINER_OMITTED = (
    "command",
    "args",
    "workingDir",
    "ports",
    "envFrom",
    "env",
    "volumeMounts",
    "volumeDevices",
    "stdin",
    "stdinOnce",
    "tty",
)
_PORT_OMITTED = ("name", "hostPort", "hostIP")
_MOUNT_OMITTED = ("readOnly", "subPath", "subPathExpr")


def _image_tag(image: str) -> str:
    """Give the tag of an image reference as pkg/util/parsers ParseImageName does."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rpartition(":")[2] if ":" in last else ""
    return tag or ("" if digest else "latest")


def _divisor(selector: Obj | None) -> None:
    """Canonicalise a resourceFieldRef's divisor, a Quantity."""
    if selector is not None and selector.get("divisor") is not None:
        selector["divisor"] = quantity.canonical(selector["divisor"])


def _probe(probe: Obj | None) -> None:
    if probe is None:
        return
    _empty(probe, _PROBE)
    if (http := _sub(probe, "httpGet")) is not None:
        _empty(http, _HTTP_GET)
    if (grpc := _sub(probe, "grpc")) is not None:
        _unset(grpc, _GRPC)


def container(c: Obj) -> None:
    """Default one container (regular, init or ephemeral)."""
    if not c.get("imagePullPolicy"):
        # pkg/apis/core/v1/defaults.go SetDefaults_Container: `:latest` (or no tag) pulls always.
        c["imagePullPolicy"] = (
            "Always" if _image_tag(c.get("image") or "") == "latest" else "IfNotPresent"
        )
    _empty(c, _CONTAINER)
    for port in _items(c, "ports"):
        _empty(port, _CONTAINER_PORT)
        _omit_zero(port, _PORT_OMITTED)
    for env in _items(c, "env"):
        source = _sub(env, "valueFrom") or {}
        if (field := _sub(source, "fieldRef")) is not None:
            _empty(field, _FIELD_REF)
        _divisor(_sub(source, "resourceFieldRef"))
    if (resources := _sub(c, "resources")) is not None:
        # pkg/apis/core/v1/defaults.go SetDefaults_ResourceList: canonical, rounded up to milli.
        for key in ("limits", "requests"):
            quantity.canonical_resource_list(resources.get(key))
        _omit_zero(resources, ("limits", "requests"))
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(_sub(c, key))
    lifecycle = _sub(c, "lifecycle") or {}
    for hook in ("postStart", "preStop"):
        if (handler := _sub(lifecycle, hook)) and (http := _sub(handler, "httpGet")) is not None:
            _empty(http, _HTTP_GET)
    for mount in _items(c, "volumeMounts"):
        _omit_zero(mount, _MOUNT_OMITTED)
    _omit_zero(c, _CONTAINER_OMITTED)


# Volumes

# pkg/apis/core/v1/defaults.go SetDefaults_{Secret,ConfigMap,DownwardAPI,Projected}VolumeSource:
# defaultMode 0644 (v1.*VolumeSourceDefaultMode), written in decimal.
_MODE_SOURCES = ("secret", "configMap", "downwardAPI", "projected")
_DEFAULT_MODE = {"defaultMode": 0o644}
# pkg/apis/core/v1/defaults.go SetDefaults_ServiceAccountTokenProjection: one hour.
_TOKEN = {"expirationSeconds": 3600}
# pkg/apis/core/v1/defaults.go SetDefaults_PersistentVolumeClaimSpec.
_CLAIM_SPEC = {"volumeMode": "Filesystem"}


def volume(v: Obj) -> None:
    """Default one pod volume."""
    if set(v) <= {"name"}:
        v["emptyDir"] = {}  # pkg/apis/core/v1/defaults.go SetDefaults_Volume: no source is emptyDir
    for source in _MODE_SOURCES:
        if (found := _sub(v, source)) is not None:
            _unset(found, _DEFAULT_MODE)
    if (host_path := _sub(v, "hostPath")) is not None:
        _unset(host_path, {"type": ""})  # SetDefaults_HostPathVolumeSource: v1.HostPathUnset
    if (empty_dir := _sub(v, "emptyDir")) is not None and empty_dir.get("sizeLimit") is not None:
        empty_dir["sizeLimit"] = quantity.canonical(empty_dir["sizeLimit"])
    downward = [_sub(v, "downwardAPI") or {}]
    for projection in _items(_sub(v, "projected") or {}, "sources"):
        downward.append(_sub(projection, "downwardAPI") or {})
        if (token := _sub(projection, "serviceAccountToken")) is not None:
            _unset(token, _TOKEN)
    for item in (i for d in downward for i in _items(d, "items")):
        if (field := _sub(item, "fieldRef")) is not None:
            _empty(field, _FIELD_REF)
        _divisor(_sub(item, "resourceFieldRef"))
    template = _sub(_sub(v, "ephemeral") or {}, "volumeClaimTemplate") or {}
    if (claim := _sub(template, "spec")) is not None:
        _unset(claim, _CLAIM_SPEC)
        resources = _sub(claim, "resources") or {}
        for key in ("limits", "requests"):
            quantity.canonical_resource_list(resources.get(key))


# Pod specs

# pkg/apis/core/v1/defaults.go SetDefaults_PodSpec.
_POD_SPEC_VALUES = {
    "dnsPolicy": "ClusterFirst",  # v1.DNSClusterFirst
    "restartPolicy": "Always",  # v1.RestartPolicyAlways
    "schedulerName": "default-scheduler",  # v1.DefaultSchedulerName
}
_POD_SPEC_POINTERS = {
    "securityContext": {},  # an empty v1.PodSecurityContext
    "terminationGracePeriodSeconds": 30,  # v1.DefaultTerminationGracePeriodSeconds
}
# k8s.io/api core/v1 types.go: `omitempty` value fields of PodSpec.
_POD_SPEC_OMITTED = (
    "volumes",
    "initContainers",
    "ephemeralContainers",
    "nodeSelector",
    "serviceAccountName",
    "nodeName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "tolerations",
    "hostAliases",
    "priorityClassName",
    "readinessGates",
    "topologySpreadConstraints",
)


def pod_spec(spec: Obj) -> None:
    """Default a pod spec, in a Pod or in a workload's pod template."""
    _empty(spec, _POD_SPEC_VALUES)
    _unset(spec, _POD_SPEC_POINTERS)
    for v in _items(spec, "volumes"):
        volume(v)
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in _items(spec, key):
            container(c)
    # zz_generated.defaults.go: SetDefaults_ResourceList on the pod's overhead.
    quantity.canonical_resource_list(spec.get("overhead"))
    _omit_zero(spec, _POD_SPEC_OMITTED)


def pod_template(template: Obj) -> None:
    """Default a workload's pod template (the Pod-only defaults do not apply to templates)."""
    object_meta(_struct(template, "metadata"))
    pod_spec(_struct(template, "spec"))


def pod(obj: Obj) -> None:
    """Default a Pod: pkg/apis/core/v1/defaults.go SetDefaults_Pod, then its spec."""
    spec = _struct(obj, "spec")
    for c in _items(spec, "containers") + _items(spec, "initContainers"):
        resources = _sub(c, "resources") or {}
        limits = resources.get("limits")
        if isinstance(limits, dict) and limits:
            # SetDefaults_Pod: a limit without a request asks for the limit.
            requests = _struct(resources, "requests")
            for name, amount in limits.items():
                requests.setdefault(name, amount)
    _unset(spec, {"enableServiceLinks": True})  # v1.DefaultEnableServiceLinks
    if spec.get("hostNetwork"):
        # SetDefaults_Pod (defaultHostNetworkPorts): with host networking, ports are host ports.
        for c in _items(spec, "containers") + _items(spec, "initContainers"):
            for port in _items(c, "ports"):
                if not port.get("hostPort"):
                    port["hostPort"] = port.get("containerPort")
    pod_spec(spec)


def pod_initial_status(obj: Obj) -> Obj:
    """Give a new Pod's status: pkg/registry/core/pod/strategy.go PrepareForCreate."""
    return {"phase": "Pending", "qosClass": _qos_class(obj.get("spec") or {})}


def _qos_class(spec: Obj) -> str:
    """Classify as pkg/apis/core/helper/qos GetPodQOS does (cpu and memory only)."""
    containers = _items(spec, "containers") + _items(spec, "initContainers")
    guaranteed, anything = True, False
    for c in containers:
        resources = _sub(c, "resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        for name in ("cpu", "memory"):
            request, limit = requests.get(name), limits.get(name)
            anything |= any(q not in (None, "0") for q in (request, limit))
            guaranteed &= limit not in (None, "0") and request in (None, limit)
    if not anything:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


# Deployments

# pkg/apis/apps/v1/defaults.go SetDefaults_Deployment (pointer fields).
_DEPLOYMENT_SPEC = {"replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600}
# pkg/apis/apps/v1/defaults.go SetDefaults_Deployment: a rolling update of 25% either way.
_ROLLING_UPDATE = {"maxUnavailable": "25%", "maxSurge": "25%"}
# k8s.io/api apps/v1 types.go: `omitempty` value fields of DeploymentSpec.
_DEPLOYMENT_OMITTED = ("minReadySeconds", "paused")


def deployment(obj: Obj) -> None:
    """Default a Deployment: pkg/apis/apps/v1/zz_generated.defaults.go SetObjectDefaults_Deployment."""
    spec = _struct(obj, "spec")
    _unset(spec, _DEPLOYMENT_SPEC)
    strategy = _struct(spec, "strategy")
    _empty(strategy, {"type": "RollingUpdate"})
    if strategy["type"] == "RollingUpdate":
        _unset(_struct(strategy, "rollingUpdate"), _ROLLING_UPDATE)
    pod_template(_struct(spec, "template"))
    _omit_zero(spec, _DEPLOYMENT_OMITTED)


# Services

# pkg/apis/core/v1/defaults.go SetDefaults_Service.
_SERVICE_SPEC = {"sessionAffinity": "None", "type": "ClusterIP"}
_CLIENT_IP_AFFINITY_SECONDS = 10800  # v1.DefaultClientIPServiceAffinitySeconds
_SERVICE_OMITTED = (
    "selector",
    "externalIPs",
    "publishNotReadyAddresses",
    "loadBalancerSourceRanges",
)


def service(obj: Obj) -> None:
    """Default a Service (cluster IPs are allocated by the registry, see `allocation.py`)."""
    spec = _struct(obj, "spec")
    _empty(spec, _SERVICE_SPEC)
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
            "timeoutSeconds"
        )
        if config is None:
            spec["sessionAffinityConfig"] = {
                "clientIP": {"timeoutSeconds": _CLIENT_IP_AFFINITY_SECONDS}
            }
    for port in _items(spec, "ports"):
        _empty(port, {"protocol": "TCP"})
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")  # the target port is the port unless given
        _omit_zero(port, ("name", "nodePort"))
    kind = spec["type"]
    if kind in ("NodePort", "LoadBalancer") or (kind == "ClusterIP" and spec.get("externalIPs")):
        _empty(spec, {"externalTrafficPolicy": "Cluster"})  # service.ExternallyAccessible
    if kind in ("NodePort", "LoadBalancer", "ClusterIP"):
        _unset(spec, {"internalTrafficPolicy": "Cluster"})
    if kind == "LoadBalancer":
        _unset(spec, {"allocateLoadBalancerNodePorts": True})
    _omit_zero(spec, _SERVICE_OMITTED)


# HorizontalPodAutoscalers

# pkg/apis/autoscaling/v2/defaults.go: with no metrics, scale on 80% CPU
# (autoscaling.DefaultCPUUtilization).
_HPA_METRICS = [
    {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
    }
]
# pkg/apis/autoscaling/v2/defaults.go defaultHPAScaleUpRules: no stabilisation, the larger
# of 4 pods or 100% per 15 seconds.
_SCALE_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
# pkg/apis/autoscaling/v2/defaults.go defaultHPAScaleDownRules: 100% per 15 seconds; the
# stabilisation window stays unset (the controller's flag decides it).
_SCALE_DOWN = {
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}
# copyHPAScalingRules: what a given rule keeps over the defaults.
_SCALING_RULE_FIELDS = ("selectPolicy", "stabilizationWindowSeconds", "policies")
_METRIC_SOURCES = ("resource", "containerResource", "pods", "object", "external")


def horizontal_pod_autoscaler(obj: Obj) -> None:
    """Default an autoscaling/v2 HPA: pkg/apis/autoscaling/v2/defaults.go."""
    spec = _struct(obj, "spec")
    _unset(spec, {"minReplicas": 1})  # SetDefaults_HorizontalPodAutoscaler
    if not spec.get("metrics"):
        spec["metrics"] = copy.deepcopy(_HPA_METRICS)
    behavior = _sub(spec, "behavior")
    if behavior is not None:
        # SetDefaults_HorizontalPodAutoscalerBehavior: a behavior gets both rules, filled in.
        for key, rules in (("scaleUp", _SCALE_UP), ("scaleDown", _SCALE_DOWN)):
            given = _sub(behavior, key) or {}
            filled = copy.deepcopy(rules)
            filled |= {k: given[k] for k in _SCALING_RULE_FIELDS if given.get(k) is not None}
            behavior[key] = filled
    for metric in _items(spec, "metrics"):
        for source in _METRIC_SOURCES:
            target = _sub(_sub(metric, source) or {}, "target") or {}
            for key in ("value", "averageValue"):
                if target.get(key) is not None:
                    target[key] = quantity.canonical(target[key])


# Kinds with nothing to default

# PodDisruptionBudget: policy/v1 has no defaults.go; its spec is a struct, always written.
# ConfigMap: SetDefaults_ConfigMap makes `data` an empty map, which `omitempty` hides again.
_CONFIG_MAP_OMITTED = ("data", "binaryData")


def pod_disruption_budget(obj: Obj) -> None:
    """Normalise a PodDisruptionBudget: nothing is defaulted."""
    _struct(obj, "spec")


def config_map(obj: Obj) -> None:
    """Normalise a ConfigMap: an empty `data` or `binaryData` is not written."""
    _omit_zero(obj, _CONFIG_MAP_OMITTED)


def namespace(obj: Obj) -> None:
    """Label a Namespace with its name: pkg/apis/core/v1/defaults.go SetDefaults_Namespace."""
    name = obj["metadata"].get("name")
    if name:
        _struct(obj["metadata"], "labels")["kubernetes.io/metadata.name"] = name


# Custom resources, by their CRDs' schemas

# Gateway API v1.6.1 gateway.networking.k8s.io_httproutes.yaml: the `default:`s of the v1
# schema (only they: without the whole schema nothing is pruned).
_PARENT_REF = {
    "properties": {
        "group": {"default": "gateway.networking.k8s.io"},
        "kind": {"default": "Gateway"},
    }
}
_SERVICE_REF = {"properties": {"group": {"default": ""}, "kind": {"default": "Service"}}}
_ROOT_PATH = {"type": "PathPrefix", "value": "/"}
_FILTER = {
    "properties": {
        "requestMirror": {
            "properties": {
                "backendRef": _SERVICE_REF,
                "fraction": {"properties": {"denominator": {"default": 100}}},
            }
        },
        "requestRedirect": {"properties": {"statusCode": {"default": 302}}},
        "cors": {"properties": {"maxAge": {"default": 5}}},
    }
}
_MATCH = {
    "properties": {
        "path": {
            "default": _ROOT_PATH,
            "properties": {"type": {"default": "PathPrefix"}, "value": {"default": "/"}},
        },
        "headers": {"items": {"properties": {"type": {"default": "Exact"}}}},
        "queryParams": {"items": {"properties": {"type": {"default": "Exact"}}}},
    }
}
_RULE = {
    "properties": {
        "matches": {"default": [{"path": _ROOT_PATH}], "items": _MATCH},
        "filters": {"items": _FILTER},
        "backendRefs": {
            "items": {
                "properties": {
                    **_SERVICE_REF["properties"],
                    "weight": {"default": 1},
                    "filters": {"items": _FILTER},
                }
            }
        },
    }
}
HTTP_ROUTE_DEFAULTS: structural.Schema = {
    "properties": {
        "spec": {
            "properties": {
                "parentRefs": {"items": _PARENT_REF},
                "rules": {"default": [{"matches": [{"path": _ROOT_PATH}]}], "items": _RULE},
            }
        },
        "status": {
            "properties": {"parents": {"items": {"properties": {"parentRef": _PARENT_REF}}}}
        },
    }
}


@functools.cache
def _inference_service_schema() -> structural.Schema:
    # The CRD kubeserve installs (crds/ is rendered from the same function).
    return crd.openapi_schema()


def http_route(obj: Obj) -> None:
    """Default an HTTPRoute by the `default:`s of Gateway API's CRD."""
    structural.default(obj, HTTP_ROUTE_DEFAULTS)


def inference_service(obj: Obj) -> None:
    """Prune and default an InferenceService by kubeserve's own CRD schema."""
    schema = _inference_service_schema()
    structural.prune(obj, schema)
    structural.default(obj, schema)


DEFAULTERS: dict[str, Callable[[Obj], None]] = {
    "Deployment": deployment,
    "Pod": pod,
    "Service": service,
    "HorizontalPodAutoscaler": horizontal_pod_autoscaler,
    "PodDisruptionBudget": pod_disruption_budget,
    "ConfigMap": config_map,
    "Namespace": namespace,
    "HTTPRoute": http_route,
    "InferenceService": inference_service,
}

# What PrepareForCreate leaves in `status` (the status subresource writes the rest), as Go
# encodes the zero status: fields without `omitempty` are written.
INITIAL_STATUS: dict[str, Callable[[Obj], Obj]] = {
    # pkg/registry/apps/deployment/strategy.go: every DeploymentStatus field is omitempty.
    "Deployment": lambda _: {},
    # pkg/registry/core/service/strategy.go: `loadBalancer` is a struct, always written.
    "Service": lambda _: {"loadBalancer": {}},
    # pkg/registry/autoscaling/horizontalpodautoscaler/strategy.go: desiredReplicas has no omitempty.
    "HorizontalPodAutoscaler": lambda _: {"desiredReplicas": 0},
    # pkg/registry/policy/poddisruptionbudget/strategy.go: four counters without omitempty.
    "PodDisruptionBudget": lambda _: {
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": 0,
        "expectedPods": 0,
    },
    "Pod": pod_initial_status,
    # pkg/apis/core/v1/defaults.go SetDefaults_NamespaceStatus.
    "Namespace": lambda _: {"phase": "Active"},
}


def apply(kind: str, obj: Obj) -> None:
    """Default and normalise `obj` of `kind` in place, as decoding it in the API server does."""
    defaulter = DEFAULTERS.get(kind)
    if defaulter is not None:
        defaulter(obj)
    object_meta(_struct(obj, "metadata"))
