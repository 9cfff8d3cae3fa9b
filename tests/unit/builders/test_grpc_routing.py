"""gRPC from client to variant: the ports that carry it, the router's listener, the GRPCRoute.

Where a gRPC call goes is read off the rendered GRPCRoute with Gateway API's precedence (the
most header matches, then rule order), so the tests state outcomes, not the shape of rules.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from kubeserve.api import names, spec, validation
from kubeserve.builders import children, grpcroute, httproute, nginx_config, pod, router, variant
from support import gateway_schema, k8s_schema, specs, strategies

OVERRIDE = "x-kubeserve-variant"
H2C = "kubernetes.io/h2c"


def parse(obj: dict[str, Any]) -> spec.InferenceService:
    return validation.parse(obj)


def by_name(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def ports_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in obj["spec"]["ports"]}


def container_ports(deployment: dict[str, Any]) -> dict[str, int]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_a_variant_service_sends_its_grpc_port_to_the_servers_grpc_port() -> None:
    objects = children.build_children(parse(specs.canary()))
    for name in ("digits-v1", "digits-v2"):
        service = by_name(objects, "Service", name)
        k8s_schema.assert_valid(service)
        assert ports_of(service) == {
            "http": {
                "name": "http",
                "port": 80,
                "targetPort": "http",
                "protocol": "TCP",
                "appProtocol": "http",
            },
            "grpc": {
                "name": "grpc",
                "port": 8081,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": H2C,
            },
        }
        # The named target ports exist in the pods, on the ports the server is told to use.
        deployment = by_name(objects, "Deployment", name)
        k8s_schema.assert_valid(deployment)
        assert container_ports(deployment) == {"http": pod.SERVER_PORT, "grpc": 8081}
        [server] = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in server["env"] if "value" in e}
        assert env["KUBESERVE_GRPC_PORT"] == str(container_ports(deployment)["grpc"])


def test_the_endpoint_service_has_a_grpc_port_to_the_routers_grpc_listener() -> None:
    isvc = parse(specs.canary())
    objects = children.build_children(isvc)
    service = by_name(objects, "Service", "digits")
    k8s_schema.assert_valid(service)
    assert ports_of(service)["http"]["port"] == router.SERVICE_PORT == 80
    assert ports_of(service)["grpc"] == {
        "name": "grpc",
        "port": 8081,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": H2C,
    }
    deployment = by_name(objects, "Deployment", "digits-router")
    k8s_schema.assert_valid(deployment)
    # nginx-unprivileged runs as a user that cannot bind ports below 1024.
    assert container_ports(deployment)["grpc"] == nginx_config.GRPC_PORT > 1024
    text = by_name(objects, "ConfigMap", "digits-router")["data"][router.CONFIG_KEY]
    assert f"listen {nginx_config.GRPC_PORT} http2;" in text
    # Readiness stays on the HTTP health port.
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["port"] == "health"


def test_the_router_sends_grpc_calls_to_each_variants_grpc_service_port() -> None:
    isvc = parse(specs.sticky_ab())
    text = nginx_config.render_config(isvc)
    for v in ("v1", "v2", "v3", "shadow"):
        upstream = text.split(f"upstream {v}_grpc {{")[1].split("}")[0]
        assert f"server digits-{v}.default.svc.cluster.local:8081;" in upstream
    assert "grpc_pass grpc://${kubeserve_variant}_grpc;" in text
    # The shadow's copies go to its gRPC upstream too.
    assert "grpc_pass grpc://shadow_grpc;" in text


@pytest.mark.parametrize(
    "placement",
    [
        nginx_config.Placement(grpc_port=None),
        # Never a mix: loopback HTTP upstreams with the cluster's gRPC addresses.
        nginx_config.Placement(upstreams={"v1": "127.0.0.1:1", "v2": "127.0.0.1:2"}),
    ],
    ids=["no-grpc-port", "own-http-upstreams-only"],
)
def test_a_placement_without_grpc_renders_no_grpc_listener(
    placement: nginx_config.Placement,
) -> None:
    text = nginx_config.render_config(parse(specs.canary()), placement=placement)
    assert "http2" not in text
    assert "grpc" not in text


def test_grpc_upstreams_name_every_variant_and_no_other() -> None:
    placement = nginx_config.Placement(
        upstreams={"v1": "127.0.0.1:1", "v2": "127.0.0.1:2"},
        grpc_upstreams={"v1": "127.0.0.1:3"},
    )
    with pytest.raises(ValueError, match="the variants are"):
        nginx_config.render_config(parse(specs.canary()), placement=placement)


@pytest.mark.parametrize(
    "placement",
    [
        nginx_config.Placement(grpc_upstreams={"v1": "127.0.0.1:1; return 200 pwned"}),
        nginx_config.Placement(host="127.0.0.1", grpc_upstreams={"v1": "unix:/run/x.sock"}),
    ],
    ids=["upstream", "upstream-socket"],
)
def test_hostile_grpc_placements_never_reach_the_config(
    placement: nginx_config.Placement,
) -> None:
    with pytest.raises(nginx_config.UnsafeValueError):
        nginx_config.render_config(parse(specs.isvc()), placement=placement)


def test_grpc_upstream_names_cannot_be_variant_names() -> None:
    # A variant may be named "v1-grpc"; the gRPC upstream of "v1" must not be.
    assert not nginx_config._LABEL_RE.match("v1" + nginx_config.GRPC_UPSTREAM_SUFFIX)
    text = nginx_config.render_config(
        parse(specs.isvc(specs.variant("v1", 50), specs.variant("v1-grpc", 50)))
    )
    names = [line.split()[1] for line in text.splitlines() if line.strip().startswith("upstream ")]
    assert sorted(names) == sorted(["v1", "v1-grpc", "v1_grpc", "v1-grpc_grpc"])


# The GRPCRoute


def gateway(obj: dict[str, Any], **routing: Any) -> spec.InferenceService:
    obj["spec"]["routing"] = {"mode": "gateway-api", "parentRefs": [{"name": "gw"}], **routing}
    return parse(obj)


def route_of(isvc: spec.InferenceService) -> dict[str, Any]:
    route = grpcroute.grpc_route(isvc)
    gateway_schema.assert_valid(route)
    return route


def destination(route: dict[str, Any], metadata: dict[str, str] | None = None) -> str:
    """Give where Gateway API sends a call: a variant's Service, or "split"."""
    metadata = {k.lower(): v for k, v in (metadata or {}).items()}
    best: tuple[int, int] | None = None
    chosen = None
    for order, rule in enumerate(route["spec"]["rules"]):
        for match in rule.get("matches") or [{}]:
            headers = match.get("headers", [])
            if any(metadata.get(h["name"].lower()) != h["value"] for h in headers):
                continue
            key = (len(headers), -order)
            if best is None or key > best:
                best, chosen = key, rule
    assert chosen is not None
    if chosen is route["spec"]["rules"][-1]:
        return "split"
    [ref] = chosen["backendRefs"]
    return str(ref["name"]).removeprefix("digits-")


def test_gateway_mode_renders_a_grpcroute_beside_the_httproute_on_the_same_gateways() -> None:
    isvc = gateway(specs.canary())
    objects = children.build_children(isvc)
    http, grpc = by_name(objects, "HTTPRoute", "digits"), by_name(objects, "GRPCRoute", "digits")
    assert grpc["spec"]["parentRefs"] == http["spec"]["parentRefs"]
    assert grpc["metadata"]["labels"] == http["metadata"]["labels"]
    route = route_of(isvc)
    # No override header: one rule, the weighted split to the variants' gRPC ports.
    [split] = route["spec"]["rules"]
    assert "matches" not in split
    assert split["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "digits-v1", "port": 8081, "weight": 90},
        {"group": "", "kind": "Service", "name": "digits-v2", "port": 8081, "weight": 10},
    ]


def test_grpcroute_override_metadata_reaches_every_variant_and_the_rest_is_split() -> None:
    isvc = gateway(
        specs.sticky_ab(), overrideHeader=OVERRIDE, mirror={"variant": "shadow", "percent": 20}
    )
    route = route_of(isvc)
    for v in ("v1", "v2", "v3", "shadow"):
        assert destination(route, {OVERRIDE: v}) == v
        assert destination(route, {OVERRIDE.upper(): v}) == v
    assert destination(route) == "split"
    assert destination(route, {OVERRIDE: "nope"}) == "split"
    split = route["spec"]["rules"][-1]
    # The shadow (0%) is left out of the split and gets its copies by the mirror filter.
    assert [b["name"] for b in split["backendRefs"]] == ["digits-v1", "digits-v2", "digits-v3"]
    assert split["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {
                    "group": "",
                    "kind": "Service",
                    "name": "digits-shadow",
                    "port": 8081,
                },
                "percent": 20,
            },
        }
    ]


def test_a_full_mirror_names_no_percent() -> None:
    route = route_of(gateway(specs.sticky_ab(), mirror={"variant": "shadow", "percent": 100}))
    [mirror] = route["spec"]["rules"][-1]["filters"]
    assert "percent" not in mirror["requestMirror"]


def test_the_grpcroute_is_stored_as_sent() -> None:
    # Every field the CRD defaults is given, so the API server adds nothing for the operator
    # to see as drift.
    route = route_of(
        gateway(
            specs.sticky_ab(), overrideHeader=OVERRIDE, mirror={"variant": "shadow", "percent": 5}
        )
    )
    assert gateway_schema._defaulted(gateway_schema.schema("GRPCRoute"), route) == route


def test_grpcroute_with_sixteen_variants_fits_the_rule_limit() -> None:
    variants = [specs.variant(f"v{i}", 100 if i == 0 else 0) for i in range(16)]
    route = route_of(gateway(specs.isvc(*variants), overrideHeader="x-v"))
    assert len(route["spec"]["rules"]) == 16
    # As in the HTTPRoute, the last variant in spec order has no rule of its own.
    assert len(route["spec"]["rules"]) - 1 == grpcroute.MAX_VARIANT_RULES
    assert grpcroute.MAX_VARIANT_RULES == httproute.MAX_VARIANT_RULES


# CEL evaluation in Python is slow: fewer examples.
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.inference_services())
def test_any_valid_gateway_spec_renders_a_valid_grpcroute(obj: dict[str, Any]) -> None:
    kept = ("overrideHeader", "mirror")
    routing = {k: v for k, v in obj["spec"].get("routing", {}).items() if k in kept}
    isvc = gateway(obj, **routing)
    route = route_of(isvc)
    live = [n for n, w in isvc.spec.live_weights().items() if w > 0]
    assert [b["name"] for b in route["spec"]["rules"][-1]["backendRefs"]] == [
        names.variant_object_name(isvc.metadata.name, n) for n in live
    ]
    assert all(
        ref["port"] == variant.GRPC_SERVICE_PORT
        for rule in route["spec"]["rules"]
        for ref in rule["backendRefs"]
    )
