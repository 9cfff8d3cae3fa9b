"""Render the router's nginx.conf from an InferenceService, every spec value checked and quoted.

The config (from `templates/nginx.conf.j2`) splits live traffic between the variants by
weight, keeps sticky users on one variant, sends a request whose path names a version to the
variant of that name (and answers 404 itself for a version no variant has), honours the
override header and mirrors a share of requests to a shadow variant. Where it runs is a
`Placement`: by default a router pod's (fixed ports, the variants' Services by cluster DNS
name, the /tmp emptyDir); `kubeserve up`, the data-plane tests and the router benchmark give
loopback ports and a directory of their own, and get the same config otherwise.

gRPC calls (the Open Inference Protocol's `inference.GRPCInferenceService`, HTTP/2
cleartext) have a listener of their own, in front of each variant's gRPC port, with the same
choice of variant: the override header and the sticky header are gRPC metadata (HTTP/2
headers to nginx), the served-by header is response metadata. A gRPC call's model version is
inside its protobuf body, which nginx cannot read: a client reaches a version through the
override metadata, and the variant's server answers NOT_FOUND for a version it does not have.

Every value from a spec, and every address of a placement, is checked here against a strict
pattern of its own and quoted, whatever the API already enforced: no spec can inject an
nginx directive.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Mapping

import jinja2

from kubeserve.api import names, spec
from kubeserve.builders import variant as variant_objects
from kubeserve.builders.config import BuildConfig

# What nginx listens on in a router pod; its Deployment declares the same ports.
ROUTER_PORT = 8080
HEALTH_PORT = 8081
GRPC_PORT = 8082
# The pod's root filesystem is read-only: nginx writes only under this emptyDir mount.
POD_TEMP_DIR = "/tmp"
# Idle keep-alive connections to each variant per nginx worker (see the template): above the
# 64 concurrent requests of the router benchmark on one worker, so none is closed under load.
UPSTREAM_KEEPALIVE = 128
# Every response carries the variant that served it (the model server sets the same header;
# the router replaces it with its own choice, so errors of an unreachable variant carry it too).
SERVED_BY_HEADER = "x-kubeserve-variant"
# ... and the request's id: the one the client sent, when it is plain, else the router's own.
# The variant receives the same id (and the access log shows it); a feedback names it.
REQUEST_ID_HEADER = "x-request-id"
# The longest client id the router passes on: the longest `requestId` a feedback takes.
REQUEST_ID_MAX = 256
# Where the router answers a request for a version that no variant has; internal, so a client
# cannot ask for it directly.
UNKNOWN_VERSION_LOCATION = "/_kubeserve/unknown-version"
# A variant's gRPC upstream is named after it with this suffix: no variant name (a DNS label)
# contains '_', so no gRPC upstream's name can be another variant's.
GRPC_UPSTREAM_SUFFIX = "_grpc"
# Where the gRPC listener answers a call no variant can take (trailers-only gRPC responses).
GRPC_UNAVAILABLE_LOCATION = "/_kubeserve/grpc-unavailable"
GRPC_UNIMPLEMENTED_LOCATION = "/_kubeserve/grpc-unimplemented"
# The nginx variable that the unknown-version answer names the requested version with: the
# version itself in quotes when it is a plain name, else a phrase (see the template).
_SHOWN_VERSION = "${kubeserve_version_shown}"
# How long a shadow may take before its copy is abandoned; see the mirror location.
MIRROR_CONNECT_TIMEOUT = "250ms"
MIRROR_TIMEOUT = "1s"

# The renderer's own patterns: narrower than nginx needs, so anything else is refused.
_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_COOKIE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HOST_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?:[0-9]+$")
# A path nginx reads as one bare word; any other path is written quoted.
_BARE_PATH_RE = re.compile(r"^[A-Za-z0-9_./+-]+$")
_MAX_NAME = 253


class UnsafeValueError(ValueError):
    """A value that must not reach the nginx config (from a spec: the API should have refused it)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a rendered router runs: what it listens on, where the variants are, where it writes.

    The defaults are a router pod's. `host` None listens on every address; `upstreams` None
    sends each variant's traffic to its Service, otherwise it gives `host:port` for every
    variant by name. `grpc_upstreams` is to gRPC what `upstreams` is to HTTP, except that a
    placement that gives its own `upstreams` and no `grpc_upstreams` has no gRPC listener (its
    servers have no gRPC port): gRPC never goes to the cluster's Services from a placement of
    its own. `grpc_port` None renders no gRPC listener either.
    """

    host: str | None = None
    port: int = ROUTER_PORT
    health_port: int = HEALTH_PORT
    upstreams: Mapping[str, str] | None = None
    grpc_port: int | None = GRPC_PORT
    grpc_upstreams: Mapping[str, str] | None = None
    temp_dir: str | os.PathLike[str] = POD_TEMP_DIR


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


def quote_path(value: str) -> str:
    """Write a file path for nginx: bare when it is one plain word, quoted otherwise."""
    return value if _BARE_PATH_RE.match(value) else quote(value)


def header_variable(header: str) -> str:
    """Name the nginx variable that holds a request header (`x-user-id` -> `$http_x_user_id`)."""
    _check(header, _HEADER_RE, "header name")
    return "$http_" + header.lower().replace("-", "_")


def cookie_regex(cookie: str) -> str:
    """Give the regex that captures a cookie's value from the raw Cookie header."""
    _check(cookie, _COOKIE_RE, "cookie name")
    return r"~(?:^|;\s*)" + re.escape(cookie) + r"=([^;]*)"


def version_pattern(variant: str) -> str:
    """Give the regex that a version named in a path must match exactly to reach `variant`.

    A regex rather than a plain map key: nginx compares plain keys regardless of case, the
    model server compares versions exactly, and the two must agree on what a version names.
    `\\z` (the very end) rather than `$`, which `quote` refuses.
    """
    _check(variant, _LABEL_RE, "variant name")
    return "~^" + re.escape(variant) + r"\z"


def unknown_version_body(variants: list[str]) -> str:
    """Give the quoted body of the router's 404 for an unknown version: JSON naming the versions.

    The requested version comes in at run time through a variable that holds it only when it
    is a plain name (see the template), so no client can put JSON into the body.
    """
    listed = ", ".join(_check(v, _LABEL_RE, "variant name") for v in variants)
    # The marker cannot be a variant name (those are lower case), so it splits the text in two.
    text = json.dumps({"error": f"unknown model version VERSION: versions are {listed}"})
    before, after = text.split("VERSION")
    return quote(before)[:-1] + _SHOWN_VERSION + quote(after)[1:]


def upstream_address(
    isvc: spec.InferenceService,
    variant: str,
    config: BuildConfig,
    *,
    port: int = variant_objects.SERVICE_PORT,
) -> str:
    """Give the `host:port` of a variant's Service (fully qualified when the namespace is known).

    `port` is the Service's HTTP port unless told otherwise (its gRPC port).
    """
    host = names.variant_object_name(isvc.metadata.name, variant)
    if isvc.metadata.namespace:
        host += f".{isvc.metadata.namespace}.svc.{config.cluster_domain}"
    return _check(f"{host}:{port}", _HOST_RE, "upstream address")


def router_settings(isvc: spec.InferenceService) -> spec.Router:
    """Give the router's replicas, workers and resources: the spec's, or the defaults."""
    return isvc.spec.routing.router or spec.Router()


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kubeserve", "templates"),
        undefined=jinja2.StrictUndefined,
        # nginx.conf is not HTML; values are quoted by the `q` and `path` filters instead.
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["q"] = quote
    env.filters["path"] = quote_path
    return env


def _listen(host: str | None, port: int) -> str:
    if host is None:
        return str(port)
    return _check(f"{host}:{port}", _HOST_RE, "listen address")


def _upstreams(
    isvc: spec.InferenceService,
    variants: list[str],
    config: BuildConfig,
    placed: Mapping[str, str] | None,
    *,
    port: int,
) -> dict[str, str]:
    """Give each variant's address: its Service's `port`, or where the placement put it."""
    if placed is None:
        return {v: upstream_address(isvc, v, config, port=port) for v in variants}
    if set(placed) != set(variants):
        raise ValueError(
            f"the placement's upstreams name {sorted(placed)}, the variants are {sorted(variants)}"
        )
    return {v: _check(placed[v], _HOST_RE, "upstream address") for v in variants}


def _grpc_upstreams(
    isvc: spec.InferenceService, variants: list[str], config: BuildConfig, placement: Placement
) -> dict[str, str] | None:
    """Give each variant's gRPC address, or None when the placement has no gRPC listener."""
    if placement.grpc_port is None:
        return None
    if placement.upstreams is not None and placement.grpc_upstreams is None:
        return None
    return _upstreams(
        isvc,
        variants,
        config,
        placement.grpc_upstreams,
        port=variant_objects.GRPC_SERVICE_PORT,
    )


def render_config(
    isvc: spec.InferenceService,
    config: BuildConfig | None = None,
    *,
    placement: Placement = Placement(),
    upstream_keepalive: int = UPSTREAM_KEEPALIVE,
) -> str:
    """Render the router's nginx.conf; the same spec and placement always give the same text.

    `upstream_keepalive` is for the router benchmark, which compares pool sizes.
    """
    config = config or BuildConfig()
    service = _check(isvc.metadata.name, _LABEL_RE, "InferenceService name")
    routing = isvc.spec.routing
    weights = isvc.spec.live_weights()
    variants = [_check(v.name, _LABEL_RE, "variant name") for v in isvc.spec.variants]

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

    http_addresses = _upstreams(
        isvc, variants, config, placement.upstreams, port=variant_objects.SERVICE_PORT
    )
    grpc_addresses = _grpc_upstreams(isvc, variants, config, placement)
    grpc = None
    if grpc_addresses is not None and placement.grpc_port is not None:
        grpc = {
            "listen": _listen(placement.host, int(placement.grpc_port)),
            "upstreams": [
                {"name": v + GRPC_UPSTREAM_SUFFIX, "address": grpc_addresses[v]} for v in variants
            ],
            "upstream_suffix": GRPC_UPSTREAM_SUFFIX,
            "unavailable_location": GRPC_UNAVAILABLE_LOCATION,
            "unimplemented_location": GRPC_UNIMPLEMENTED_LOCATION,
        }

    template = _environment().get_template("nginx.conf.j2")
    return template.render(
        service=service,
        workers=int(router_settings(isvc).workers),
        listen=_listen(placement.host, int(placement.port)),
        health_listen=_listen(placement.host, int(placement.health_port)),
        temp_dir=os.fspath(placement.temp_dir).rstrip("/"),
        upstreams=[{"name": v, "address": http_addresses[v]} for v in variants],
        grpc=grpc,
        upstream_keepalive=int(upstream_keepalive),
        split=split,
        # The salt is a DNS label and the rest is ours: safe inside the quotes as it is.
        split_key=f"{service}/{key_variable}",
        sticky_source=sticky_source,
        sticky_cookie_regex=sticky_cookie,
        version_variants=[{"pattern": version_pattern(v), "variant": v} for v in variants],
        unknown_version_location=UNKNOWN_VERSION_LOCATION,
        unknown_version_body=unknown_version_body(variants),
        override_source=(
            header_variable(routing.override_header) if routing.override_header else None
        ),
        mirror=mirror,
        served_by_header=SERVED_BY_HEADER,
        request_id_header=REQUEST_ID_HEADER,
        request_id_max=REQUEST_ID_MAX,
    )
