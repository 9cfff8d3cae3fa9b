"""What status says about the endpoint: the URL it is served at and its traffic split."""

from __future__ import annotations

from typing import Any

from kubeserve.api import spec, validation
from kubeserve.builders import endpoint
from kubeserve.builders.config import BuildConfig
from support import specs


def parse(obj: dict[str, Any]) -> spec.InferenceService:
    return validation.parse(obj)


def test_endpoint_url_is_the_router_service() -> None:
    isvc = parse(specs.canary())
    assert endpoint.endpoint_url(isvc) == "http://digits.default.svc.cluster.local"
    assert endpoint.endpoint_url(isvc, BuildConfig(cluster_domain="c.example")) == (
        "http://digits.default.svc.c.example"
    )
    assert endpoint.endpoint_url(parse(specs.isvc(namespace=None))) == "http://digits"


def test_endpoint_url_in_gateway_mode_names_the_gateway() -> None:
    obj = specs.canary()
    obj["spec"]["routing"] = {
        "mode": "gateway-api",
        "parentRefs": [{"name": "gw", "namespace": "infra"}],
    }
    assert endpoint.endpoint_url(parse(obj)) == "gateway://infra/gw"


def test_traffic_summary_lists_every_variant_in_spec_order() -> None:
    assert endpoint.traffic_summary(parse(specs.canary())) == "v1=90,v2=10"
    assert endpoint.traffic_summary(parse(specs.isvc())) == "v1=100"
    shadowed = specs.isvc(
        specs.variant("v1", 50),
        specs.variant("v2", 30),
        specs.variant("v3", 20),
        specs.variant("shadow", 0),
        routing={"mirror": {"variant": "shadow", "percent": 20}},
    )
    assert endpoint.traffic_summary(parse(shadowed)) == "v1=50,v2=30,v3=20,shadow=mirror20%"
    dark = specs.isvc(specs.variant("v1", 100), specs.variant("v2", 0))
    assert endpoint.traffic_summary(parse(dark)) == "v1=100,v2=0"
