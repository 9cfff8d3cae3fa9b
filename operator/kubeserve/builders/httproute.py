"""The Gateway API HTTPRoute of an InferenceService in `routing.mode: gateway-api`.

Instead of the built-in nginx router, the user's Gateway splits traffic: one rule with the
live variants as weighted backendRefs (and a RequestMirror filter for the shadow), and one
rule per variant whose matches send it what names it:

- the paths that name its version (the model server's model is named after the
  InferenceService; a variant serves the version named after it): PathPrefix
  `/v2/models/<m>/versions/<v>` and `/v1/models/<m>/versions/<v>`, and Exact
  `/v1/models/<m>/versions/<v>:predict` (PathPrefix compares whole path elements, and
  `<v>:predict` is not the element `<v>`);
- with an override header, `<header>: <variant>` on any path, and on every other variant's
  version paths: Gateway API ranks an Exact path, then the longest prefix, above header
  matches, so only a header match on the same path outranks another variant's version path.
  Those pairs grow with the square of the variants; when they would take the route past the
  CRD's 128 matches (7 variants or more), none is rendered and a version in the path then
  outranks the override header.

A version that no variant has falls to the split; the variant that gets it answers 404 itself
(the Gateway cannot answer on its own).

Sticky cohorts: the standard channel of Gateway API v1.6.1 has no session persistence
(`sessionPersistence` is experimental and its support differs per implementation), so in this
mode requests are split by weight only and `routing.sticky` is not rendered. The served-by
header comes from the model server itself (it sets `x-kubeserve-variant`).

No router Deployment and no Service named after the InferenceService exist in this mode: the
Gateway's address is the endpoint. The HTTPRoute carries the InferenceService's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubeserve.api import names, spec
from kubeserve.builders import meta, variant

COMPONENT = "router"
API_VERSION = "gateway.networking.k8s.io/v1"
# An HTTPRoute holds at most 16 rules and the split needs one: with 16 variants, the last
# one in spec order has no rule of its own (no override, no version path). The API does not
# refuse that spec yet, so that variant is then reachable by weight only.
MAX_VARIANT_RULES = 15
# The CRD's limit on the matches of all rules of one route together.
MAX_ROUTE_MATCHES = 128


def weighted_split(
    isvc: spec.InferenceService, backend_ref: Callable[[spec.InferenceService, str], dict[str, Any]]
) -> dict[str, Any]:
    """Give a route rule's weighted backends and its shadow, for HTTPRoute and GRPCRoute alike."""
    routing = isvc.spec.routing
    split: dict[str, Any] = {
        # Zero-weight variants are left out: a dark launch gets no live traffic.
        "backendRefs": [
            backend_ref(isvc, name) | {"weight": weight}
            for name, weight in isvc.spec.live_weights().items()
            if weight > 0
        ],
    }
    if routing.mirror:
        mirror: dict[str, Any] = {"backendRef": backend_ref(isvc, routing.mirror.variant)}
        if routing.mirror.percent < 100:
            mirror["percent"] = routing.mirror.percent
        split["filters"] = [{"type": "RequestMirror", "requestMirror": mirror}]
    return split


def _backend_ref(isvc: spec.InferenceService, name: str) -> dict[str, Any]:
    return {
        "group": "",
        "kind": "Service",
        "name": names.variant_object_name(isvc.metadata.name, name),
        "port": variant.SERVICE_PORT,
    }


def parent_ref(ref: spec.ParentReference) -> dict[str, Any]:
    """Give a parentRef to a Gateway (or one of its listeners); the GRPCRoute shares it."""
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


def _version_paths(isvc: spec.InferenceService, name: str) -> list[dict[str, str]]:
    model = isvc.metadata.name
    return [
        {"type": "PathPrefix", "value": f"/v2/models/{model}/versions/{name}"},
        {"type": "PathPrefix", "value": f"/v1/models/{model}/versions/{name}"},
        {"type": "Exact", "value": f"/v1/models/{model}/versions/{name}:predict"},
    ]


def _variant_matches(
    isvc: spec.InferenceService, name: str, *, others: list[str], with_pairs: bool
) -> list[dict[str, Any]]:
    """Give the matches that send a request to variant `name`: its versions, its override."""
    matches: list[dict[str, Any]] = [{"path": p} for p in _version_paths(isvc, name)]
    header = isvc.spec.routing.override_header
    if header:
        forced = [{"type": "Exact", "name": header, "value": name}]
        matches.append({"path": {"type": "PathPrefix", "value": "/"}, "headers": forced})
        if with_pairs:
            matches += [
                {"path": p, "headers": forced}
                for other in others
                if other != name
                for p in _version_paths(isvc, other)
            ]
    return matches


def _variant_rules(isvc: spec.InferenceService, *, with_pairs: bool) -> list[dict[str, Any]]:
    ruled = [v.name for v in isvc.spec.variants[:MAX_VARIANT_RULES]]
    return [
        {
            "matches": _variant_matches(isvc, name, others=ruled, with_pairs=with_pairs),
            "backendRefs": [_backend_ref(isvc, name) | {"weight": 1}],
        }
        for name in ruled
    ]


def http_route(isvc: spec.InferenceService) -> dict[str, Any]:
    """Build the HTTPRoute: one rule per variant (versions, override), then the weighted split."""
    routing = isvc.spec.routing
    rules = _variant_rules(isvc, with_pairs=True)
    # The split's one match counts too.
    if sum(len(r["matches"]) for r in rules) + 1 > MAX_ROUTE_MATCHES:
        rules = _variant_rules(isvc, with_pairs=False)
    split = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        **weighted_split(isvc, _backend_ref),
    }
    rules.append(split)
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": meta.object_meta(isvc, isvc.metadata.name, component=COMPONENT),
        "spec": {
            "parentRefs": [parent_ref(r) for r in routing.parent_refs or []],
            "rules": rules,
        },
    }
