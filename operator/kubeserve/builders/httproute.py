"""The Gateway API HTTPRoute of an InferenceService in `routing.mode: gateway-api`.

Instead of the built-in nginx router, the user's Gateway splits traffic: one rule with the
live variants as weighted backendRefs (and a RequestMirror filter for the shadow) and, with an
override header, one rule per variant that matches `<header>: <variant>` exactly. Header
matches outrank a rule without them in Gateway API's precedence, so the override wins.

Sticky cohorts: the standard channel of Gateway API v1.6.1 has no session persistence
(`sessionPersistence` is experimental and its support differs per implementation), so in this
mode requests are split by weight only and `routing.sticky` is not rendered. The served-by
header comes from the model server itself (it sets `x-kubeserve-variant`).

No router Deployment and no Service named after the InferenceService exist in this mode: the
Gateway's address is the endpoint. The HTTPRoute carries the InferenceService's name.
"""

from __future__ import annotations

from typing import Any

from kubeserve.api import names, spec
from kubeserve.builders import meta, variant

COMPONENT = "router"
API_VERSION = "gateway.networking.k8s.io/v1"
# An HTTPRoute holds at most 16 rules and the split needs one: with 16 variants, the last
# one in spec order has no override rule. The API does not refuse that spec yet, so that
# variant is then reachable by weight only.
MAX_OVERRIDE_RULES = 15


def _backend_ref(isvc: spec.InferenceService, name: str) -> dict[str, Any]:
    return {
        "group": "",
        "kind": "Service",
        "name": names.variant_object_name(isvc.metadata.name, name),
        "port": variant.SERVICE_PORT,
    }


def _parent_ref(ref: spec.ParentReference) -> dict[str, Any]:
    out: dict[str, Any] = {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": ref.name,
    }
    if ref.namespace:
        out["namespace"] = ref.namespace
    if ref.section_name:
        out["sectionName"] = ref.section_name
    if ref.port:
        out["port"] = ref.port
    return out


def http_route(isvc: spec.InferenceService) -> dict[str, Any]:
    """Build the HTTPRoute: override rules first, then the weighted split (with the mirror)."""
    routing = isvc.spec.routing
    rules: list[dict[str, Any]] = []
    if routing.override_header:
        for v in isvc.spec.variants[:MAX_OVERRIDE_RULES]:
            rules.append(
                {
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/"},
                            "headers": [
                                {"type": "Exact", "name": routing.override_header, "value": v.name}
                            ],
                        }
                    ],
                    "backendRefs": [_backend_ref(isvc, v.name) | {"weight": 1}],
                }
            )
    split: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        # Zero-weight variants are left out: a dark launch gets no live traffic.
        "backendRefs": [
            _backend_ref(isvc, name) | {"weight": weight}
            for name, weight in isvc.spec.live_weights().items()
            if weight > 0
        ],
    }
    if routing.mirror:
        mirror: dict[str, Any] = {"backendRef": _backend_ref(isvc, routing.mirror.variant)}
        if routing.mirror.percent < 100:
            mirror["percent"] = routing.mirror.percent
        split["filters"] = [{"type": "RequestMirror", "requestMirror": mirror}]
    rules.append(split)
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": meta.object_meta(isvc, isvc.metadata.name, component=COMPONENT),
        "spec": {
            "parentRefs": [_parent_ref(r) for r in routing.parent_refs or []],
            "rules": rules,
        },
    }
