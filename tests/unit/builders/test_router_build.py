"""The router's objects, or the HTTPRoute in their place: schema-valid, deterministic, restricted."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from kubeserve import manifests
from kubeserve.api import spec, validation
from kubeserve.builders import children, httproute, nginx_config, router
from kubeserve.builders.config import BuildConfig
from support import gateway_schema, k8s_schema, specs, strategies


def parse(obj: dict[str, Any]) -> spec.InferenceService:
    return validation.parse(obj)


def by_name(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_nginx_mode_renders_configmap_deployment_and_the_named_service() -> None:
    objects = children.build_children(parse(specs.sticky_ab()))
    router_objects = [
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    ]
    assert router_objects == [
        ("ConfigMap", "digits-router"),
        ("Deployment", "digits-router"),
        ("Service", "digits"),
        ("PodDisruptionBudget", "digits-router"),
    ]
    for o in objects:
        k8s_schema.assert_valid(o)
        assert o["metadata"]["namespace"] == "default"
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubeserve-operator"


def test_router_defaults_without_a_router_block() -> None:
    objects = children.build_children(parse(specs.canary()))
    dep = by_name(objects, "Deployment", "digits-router")
    assert dep["spec"]["replicas"] == 2
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == router.ROUTER_RESOURCES
    assert (
        "worker_processes 2;"
        in by_name(objects, "ConfigMap", "digits-router")["data"][router.CONFIG_KEY]
    )


def test_router_replicas_workers_and_resources_come_from_the_spec() -> None:
    resources = {"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": 1}}
    obj = specs.isvc(routing={"router": {"replicas": 3, "workers": 4, "resources": resources}})
    objects = children.build_children(parse(obj))
    dep = by_name(objects, "Deployment", "digits-router")
    assert dep["spec"]["replicas"] == 3
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "limits": {"cpu": 1},
        "requests": {"cpu": "500m", "memory": "64Mi"},
    }
    text = by_name(objects, "ConfigMap", "digits-router")["data"][router.CONFIG_KEY]
    assert "worker_processes 4;" in text
    for o in objects:
        k8s_schema.assert_valid(o)


def test_router_pdb_keeps_all_but_one_router_through_a_drain() -> None:
    obj = specs.isvc(routing={"router": {"replicas": 5}})
    objects = children.build_children(parse(obj))
    pdb = by_name(objects, "PodDisruptionBudget", "digits-router")
    dep = by_name(objects, "Deployment", "digits-router")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    # It selects the router's pods and nothing else: the variants have their own budgets.
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "router"
    assert pdb["metadata"]["labels"] == dep["metadata"]["labels"]
    assert pdb["metadata"].get("ownerReferences") == dep["metadata"].get("ownerReferences")
    k8s_schema.assert_valid(pdb)


def test_a_single_router_replica_gets_no_pdb() -> None:
    # A budget on one pod could only block a drain (minAvailable 1) or do nothing.
    objects = children.build_children(parse(specs.isvc(routing={"router": {"replicas": 1}})))
    assert by_name(objects, "Deployment", "digits-router")["spec"]["replicas"] == 1
    assert [o for o in objects if o["kind"] == "PodDisruptionBudget"] == []


def test_router_service_selects_router_pods_and_targets_nginx() -> None:
    objects = children.build_children(parse(specs.canary()))
    svc = by_name(objects, "Service", "digits")
    dep = by_name(objects, "Deployment", "digits-router")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert svc["spec"]["ports"][0]["port"] == 80
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": nginx_config.ROUTER_PORT,
        "health": nginx_config.HEALTH_PORT,
        "grpc": nginx_config.GRPC_PORT,
    }


def test_router_pod_is_restricted_non_root_with_a_read_only_root() -> None:
    dep = by_name(children.build_children(parse(specs.canary())), "Deployment", "digits-router")
    pod_spec = dep["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["runAsUser"] == router.ROUTER_UID
    assert pod_spec["automountServiceAccountToken"] is False
    [c] = pod_spec["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp", router.CONFIG_DIR}
    assert c["image"] == BuildConfig().router_image
    assert c["readinessProbe"]["httpGet"]["port"] == "health"
    assert c["livenessProbe"]["httpGet"]["port"] == "health"


def test_rollout_surges_and_never_drops_below_the_replicas() -> None:
    dep = by_name(children.build_children(parse(specs.canary())), "Deployment", "digits-router")
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_a_config_change_changes_the_pod_template_hash() -> None:
    def template(obj: dict[str, Any]) -> dict[str, Any]:
        objects = children.build_children(parse(obj))
        dep = by_name(objects, "Deployment", "digits-router")
        cm = by_name(objects, "ConfigMap", "digits-router")
        annotation = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotation[router.CONFIG_HASH_ANNOTATION] == router.config_hash(
            cm["data"][router.CONFIG_KEY]
        )
        return dict(dep["spec"]["template"])

    base = template(specs.canary())
    assert template(specs.canary()) == base
    moved = specs.isvc(specs.variant("v1", 80), specs.variant("v2", 20))
    assert template(moved) != base


def test_same_spec_gives_byte_identical_router_objects() -> None:
    obj = specs.sticky_ab()
    first = manifests.dump_documents(children.build_children(parse(obj)))
    assert first == manifests.dump_documents(children.build_children(parse(obj)))


# --- Gateway API ----------------------------------------------------------------------------


def gateway(obj: dict[str, Any], **routing: Any) -> dict[str, Any]:
    obj["spec"]["routing"] = {
        "mode": "gateway-api",
        "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "http"}],
        **routing,
    }
    return obj


def test_gateway_mode_renders_an_httproute_instead_of_the_router() -> None:
    objects = children.build_children(parse(gateway(specs.canary())))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects][-2:] == [
        ("HTTPRoute", "digits"),
        ("GRPCRoute", "digits"),
    ]
    assert not [o for o in objects if o["kind"] == "ConfigMap"]
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Service"] == [
        "digits-v1",
        "digits-v2",
    ]
    route = objects[-2]
    gateway_schema.assert_valid(route)
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "gw",
            "namespace": "infra",
            "sectionName": "http",
        }
    ]
    *by_version, split = route["spec"]["rules"]
    assert [r["backendRefs"] for r in by_version] == [
        [{"group": "", "kind": "Service", "name": f"digits-{v}", "port": 80, "weight": 1}]
        for v in ("v1", "v2")
    ]
    assert split["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert [(b["name"], b["port"], b["weight"]) for b in split["backendRefs"]] == [
        ("digits-v1", 80, 90),
        ("digits-v2", 80, 10),
    ]


def test_gateway_override_rules_and_mirror() -> None:
    route = httproute.http_route(
        parse(
            gateway(
                specs.sticky_ab(),
                overrideHeader="x-kubeserve-variant",
                mirror={"variant": "shadow", "percent": 20},
            )
        )
    )
    gateway_schema.assert_valid(route)
    *per_variant, split = route["spec"]["rules"]
    # Each variant's rule forces it on any path with the override header (among its matches).
    forced = [
        next(m for m in r["matches"] if m["path"]["value"] == "/")["headers"] for r in per_variant
    ]
    assert [(h, r["backendRefs"][0]["name"]) for h, r in zip(forced, per_variant, strict=True)] == [
        ([{"type": "Exact", "name": "x-kubeserve-variant", "value": v}], f"digits-{v}")
        for v in ("v1", "v2", "v3", "shadow")
    ]
    assert [b["name"] for b in split["backendRefs"]] == ["digits-v1", "digits-v2", "digits-v3"]
    assert split["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"group": "", "kind": "Service", "name": "digits-shadow", "port": 80},
                "percent": 20,
            },
        }
    ]


def test_gateway_route_with_sixteen_variants_fits_the_rule_limit() -> None:
    variants = [specs.variant(f"v{i}", 100 if i == 0 else 0) for i in range(16)]
    route = httproute.http_route(parse(gateway(specs.isvc(*variants), overrideHeader="x-v")))
    assert len(route["spec"]["rules"]) == 16
    gateway_schema.assert_valid(route)


# CEL evaluation in Python is slow: fewer examples.
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(strategies.inference_services())
def test_any_valid_gateway_spec_renders_a_valid_httproute(obj: dict[str, Any]) -> None:
    kept = ("overrideHeader", "mirror")
    routing = {k: v for k, v in obj["spec"].get("routing", {}).items() if k in kept}
    route = httproute.http_route(parse(gateway(obj, **routing)))
    gateway_schema.assert_valid(route)
