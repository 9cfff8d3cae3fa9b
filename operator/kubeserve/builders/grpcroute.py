"""The Gateway API GRPCRoute of an InferenceService in `routing.mode: gateway-api`.

It sits beside the HTTPRoute, carries the InferenceService's name and attaches to the same
Gateways, and sends gRPC calls (the Open Inference Protocol's `inference.GRPCInferenceService`)
to the variants' Services on their `grpc` port: one rule with the live variants as weighted
backendRefs (and a RequestMirror filter for the shadow), and with an override header, one
rule per variant that matches `<header>: <variant>` (gRPC metadata are HTTP/2 headers). A
rule with a header match outranks the split's rule, which matches every call.

What the HTTPRoute does by path it cannot do here: a call's model version is inside its
protobuf body, so a client reaches a version through the override metadata, and a variant's
server answers NOT_FOUND for a version it does not have. As for HTTP, the standard channel has
no session persistence (`routing.sticky` is not rendered) and the served-by metadata comes
from the model server itself.

Gateway API lets a listener accept only one of an HTTPRoute and a GRPCRoute whose hostnames
intersect (the older one, then the first by namespace/name): both routes name no hostname,
so the Gateway needs separate listeners for them (`allowedRoutes.kinds` HTTPRoute on one,
GRPCRoute on the other), and parentRefs that name the Gateway, not one listener of it.
"""

from __future__ import annotations

from typing import Any

from kubeserve.api import names, spec
from kubeserve.builders import httproute, meta, variant

COMPONENT = httproute.COMPONENT
API_VERSION = httproute.API_VERSION
# A GRPCRoute holds at most 16 rules and the split needs one, as for the HTTPRoute.
MAX_VARIANT_RULES = httproute.MAX_VARIANT_RULES


def _backend_ref(isvc: spec.InferenceService, name: str) -> dict[str, Any]:
    return {
        "group": "",
        "kind": "Service",
        "name": names.variant_object_name(isvc.metadata.name, name),
        "port": variant.GRPC_SERVICE_PORT,
    }


def _override_rules(isvc: spec.InferenceService) -> list[dict[str, Any]]:
    header = isvc.spec.routing.override_header
    if not header:
        return []
    return [
        {
            "matches": [{"headers": [{"type": "Exact", "name": header, "value": v.name}]}],
            "backendRefs": [_backend_ref(isvc, v.name) | {"weight": 1}],
        }
        for v in isvc.spec.variants[:MAX_VARIANT_RULES]
    ]


def grpc_route(isvc: spec.InferenceService) -> dict[str, Any]:
    """Build the GRPCRoute: one rule per variant for the override metadata, then the split."""
    routing = isvc.spec.routing
    split = httproute.weighted_split(isvc, _backend_ref)
    return {
        "apiVersion": API_VERSION,
        "kind": "GRPCRoute",
        "metadata": meta.object_meta(isvc, isvc.metadata.name, component=COMPONENT),
        "spec": {
            "parentRefs": [httproute.parent_ref(r) for r in routing.parent_refs or []],
            "rules": [*_override_rules(isvc), split],
        },
    }
