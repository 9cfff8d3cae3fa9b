"""The nginx router of an InferenceService: its nginx.conf, ConfigMap, Deployment and Service.

The router is the stable endpoint: a Service named after the InferenceService in front of a
small nginx Deployment whose config (rendered from `templates/nginx.conf.j2`) splits live
traffic between the variants' Services by weight, keeps sticky users on one variant, honours
the override header and mirrors a share of requests to a shadow variant.

Every value from a spec that reaches the config is checked here against a strict pattern of
its own and quoted, whatever the API already enforced: no spec can inject an nginx directive.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any

import jinja2

from kubeserve.api import names, spec
from kubeserve.builders import meta, pod
from kubeserve.builders import variant as variant_objects
from kubeserve.builders.config import BuildConfig

COMPONENT = "router"
CONFIG_KEY = "nginx.conf"
CONFIG_DIR = "/etc/kubeserve/router"
CONFIG_HASH_ANNOTATION = f"{meta.LABEL_PREFIX}/router-config-hash"
ROUTER_PORT = 8080
HEALTH_PORT = 8081
SERVICE_PORT = 80
# The uid/gid of the nginx-unprivileged image's `nginx` user.
ROUTER_UID = 101
# Defaults for `spec.routing.router`, kept in its model (api/spec.py, `Router`): two replicas
# so that a node drain or a rollout never leaves the endpoint without a router; two workers
# because nginx's `worker_processes auto` counts the node's CPUs, not the pod's share of them.
ROUTER_RESOURCES: dict[str, Any] = {
    "limits": {"memory": "128Mi"},
    "requests": {"cpu": "50m", "memory": "32Mi"},
}
# Idle keep-alive connections to each variant per nginx worker (see the template): above the
# 64 concurrent requests of the router benchmark on one worker, so none is closed under load.
UPSTREAM_KEEPALIVE = 128
# Every response carries the variant that served it (the model server sets the same header;
# the router replaces it with its own choice, so errors of an unreachable variant carry it too).
SERVED_BY_HEADER = "x-kubeserve-variant"
# How long a shadow may take before its copy is abandoned; see the mirror location.
MIRROR_CONNECT_TIMEOUT = "250ms"
MIRROR_TIMEOUT = "1s"
# Keeps endpoints controllers and kube-proxy time to stop sending to a terminating router.
PRESTOP_SLEEP_SECONDS = 5

# The builder's own patterns: narrower than nginx needs, so anything else is refused.
_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_COOKIE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HOST_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?:[0-9]+$")
_MAX_NAME = 253


class UnsafeValueError(ValueError):
    """A spec value that must not reach the nginx config (the API should have refused it)."""


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if len(value) > _MAX_NAME or not pattern.match(value):
        raise UnsafeValueError(f"refusing to put {what} {value!r} into the nginx config")
    return value


def quote(value: str) -> str:
    """Quote a literal for nginx: a double-quoted string with no variable in it.

    nginx has no escape for '$' inside strings, so a literal carrying one is refused rather
    than escaped; control characters are refused too.
    """
    if "$" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UnsafeValueError(f"refusing to put {value!r} into the nginx config")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def header_variable(header: str) -> str:
    """Name the nginx variable that holds a request header (`x-user-id` -> `$http_x_user_id`)."""
    _check(header, _HEADER_RE, "header name")
    return "$http_" + header.lower().replace("-", "_")


def cookie_regex(cookie: str) -> str:
    """Give the regex that captures a cookie's value from the raw Cookie header."""
    _check(cookie, _COOKIE_RE, "cookie name")
    return r"~(?:^|;\s*)" + re.escape(cookie) + r"=([^;]*)"


def upstream_address(isvc: spec.InferenceService, variant: str, config: BuildConfig) -> str:
    """Give the `host:port` of a variant's Service (fully qualified when the namespace is known)."""
    host = names.variant_object_name(isvc.metadata.name, variant)
    if isvc.metadata.namespace:
        host += f".{isvc.metadata.namespace}.svc.{config.cluster_domain}"
    return _check(f"{host}:{variant_objects.SERVICE_PORT}", _HOST_RE, "upstream address")


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kubeserve", "templates"),
        undefined=jinja2.StrictUndefined,
        # nginx.conf is not HTML; values are quoted by the `q` filter instead.
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["q"] = quote
    return env


def router_settings(isvc: spec.InferenceService) -> spec.Router:
    """Give the router's replicas, workers and resources: the spec's, or the defaults."""
    return isvc.spec.routing.router or spec.Router()


def render_config(isvc: spec.InferenceService, config: BuildConfig | None = None) -> str:
    """Render the router's nginx.conf; the same spec always gives the same text."""
    config = config or BuildConfig()
    service = _check(isvc.metadata.name, _LABEL_RE, "InferenceService name")
    routing = isvc.spec.routing
    weights = isvc.spec.live_weights()
    variants = [_check(v.name, _LABEL_RE, "variant name") for v in isvc.spec.variants]
    upstreams = [{"name": v, "address": upstream_address(isvc, v, config)} for v in variants]

    live = [(v, w) for v, w in weights.items() if w > 0]
    # Hash ranges follow spec order; the last live variant takes the remainder ('*').
    split = [{"variant": v, "share": f"{w}%"} for v, w in live[:-1]]
    split.append({"variant": live[-1][0], "share": "*"})

    sticky_source = sticky_cookie = None
    if routing.sticky and routing.sticky.header:
        sticky_source = header_variable(routing.sticky.header)
    elif routing.sticky and routing.sticky.cookie:
        sticky_cookie = cookie_regex(routing.sticky.cookie)
        sticky_source = "$kubeserve_sticky_value"
    key_variable = "$kubeserve_key" if sticky_source else "$request_id"

    mirror = None
    if routing.mirror:
        mirror = {
            "variant": _check(routing.mirror.variant, _LABEL_RE, "mirror variant"),
            "percent": int(routing.mirror.percent),
            "sample_key": "mirror/$request_id",
            "connect_timeout": MIRROR_CONNECT_TIMEOUT,
            "timeout": MIRROR_TIMEOUT,
        }
        if mirror["variant"] not in variants:
            raise UnsafeValueError(f"mirror variant {mirror['variant']!r} is not a variant")

    template = _environment().get_template("nginx.conf.j2")
    return template.render(
        service=service,
        workers=int(router_settings(isvc).workers),
        port=ROUTER_PORT,
        health_port=HEALTH_PORT,
        upstreams=upstreams,
        upstream_keepalive=UPSTREAM_KEEPALIVE,
        split=split,
        # The salt is a DNS label and the rest is ours: safe inside the quotes as it is.
        split_key=f"{service}/{key_variable}",
        sticky_source=sticky_source,
        sticky_cookie_regex=sticky_cookie,
        override_source=(
            header_variable(routing.override_header) if routing.override_header else None
        ),
        mirror=mirror,
        served_by_header=SERVED_BY_HEADER,
    )


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
        "data": {CONFIG_KEY: render_config(isvc, config)},
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
            {"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": _probe(period=2, failures=2),
        "livenessProbe": _probe(period=10, failures=3),
        # nginx finishes in-flight requests on SIGQUIT (the image's stop signal); the sleep
        # first lets the Service stop sending new ones.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}},
        "resources": _resources(router_settings(isvc)),
        "securityContext": pod.container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": pod.TMP_VOLUME, "mountPath": "/tmp"},
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
            "replicas": router_settings(isvc).replicas,
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
    """Build the Service named after the InferenceService: the stable endpoint."""
    return meta.http_service(isvc, isvc.metadata.name, port=SERVICE_PORT, component=COMPONENT)


def disruption_budget(isvc: spec.InferenceService) -> dict[str, Any] | None:
    """Build the router's PodDisruptionBudget, or None when it runs a single replica.

    maxUnavailable 1 rather than minAvailable 1: both keep a router serving through a drain
    at two replicas, but with more replicas minAvailable 1 would let a drain evict all but one
    at once, and that one would take the whole endpoint's load. With one replica there is
    nothing to keep: a budget could only block the drain or do nothing, so there is none.
    """
    if router_settings(isvc).replicas < 2:
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


def endpoint_url(isvc: spec.InferenceService, config: BuildConfig | None = None) -> str:
    """Give the URL where the InferenceService is served, for `status.url`.

    nginx mode: the router Service's cluster DNS name. gateway-api mode: the URL depends on
    the Gateway's listeners, which no spec says, so this names the first parent Gateway as
    `gateway://<namespace>/<name>`; an operator that reads the Gateway may replace it.
    """
    config = config or BuildConfig()
    name, ns = isvc.metadata.name, isvc.metadata.namespace
    if isvc.spec.routing.mode == "gateway-api":
        refs = isvc.spec.routing.parent_refs
        if not refs:
            return ""
        ref = refs[0]
        return f"gateway://{ref.namespace or ns or 'default'}/{ref.name}"
    if not ns:
        return f"http://{name}"
    return f"http://{name}.{ns}.svc.{config.cluster_domain}"


def traffic_summary(isvc: spec.InferenceService) -> str:
    """Summarise the split for `status.traffic`, e.g. `v1=90,v2=10,v3=mirror20%`.

    Every variant appears in spec order: live ones with their percent, dark launches as `=0`,
    the shadow as `=mirror<percent>%`.
    """
    mirror = isvc.spec.routing.mirror
    parts = []
    for v, w in isvc.spec.live_weights().items():
        if mirror is not None and v == mirror.variant:
            parts.append(f"{v}=mirror{mirror.percent}%")
        else:
            parts.append(f"{v}={w}")
    return ",".join(parts)
