"""The HTTPRoute sends a request that names a version to that variant, within the CRD's limits.

Where a request goes is read off the rendered route with Gateway API's own precedence (an
Exact path, then the longest PathPrefix, then the most header matches, then rule order), so
the tests state outcomes, not the shape of the matches.
"""

from __future__ import annotations

from typing import Any

import pytest

from kubeserve.api import spec, validation
from kubeserve.builders import httproute
from support import gateway_schema, specs

OVERRIDE = "x-kubeserve-variant"


def route_of(*variants: dict[str, Any], **routing: Any) -> dict[str, Any]:
    obj = specs.isvc(*variants)
    obj["spec"]["routing"] = {"mode": "gateway-api", "parentRefs": [{"name": "gw"}], **routing}
    isvc: spec.InferenceService = validation.parse(obj)
    route = httproute.http_route(isvc)
    gateway_schema.assert_valid(route)
    return route


def _path_matches(match: dict[str, str], path: str) -> bool:
    value = match["value"]
    if match["type"] == "Exact":
        return path == value
    # PathPrefix compares whole path elements.
    prefix = value.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


def _rank(match: dict[str, Any]) -> tuple[int, int, int]:
    path = match["path"]
    exact = path["type"] == "Exact"
    return (int(exact), 0 if exact else len(path["value"]), len(match.get("headers", [])))


def destination(route: dict[str, Any], path: str, headers: dict[str, str] | None = None) -> str:
    """Give where Gateway API sends the request: a variant's Service, or "split"."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    path = path.split("?", 1)[0]
    best: tuple[tuple[int, int, int], int] | None = None
    chosen = None
    for order, rule in enumerate(route["spec"]["rules"]):
        for match in rule["matches"]:
            if not _path_matches(match["path"], path):
                continue
            if any(headers.get(h["name"].lower()) != h["value"] for h in match.get("headers", [])):
                continue
            # Higher rank wins; on a tie, the earlier rule.
            key = (_rank(match), -order)
            if best is None or key > best:
                best, chosen = key, rule
    assert chosen is not None, f"no rule matches {path}"
    # The split is the last rule; every other rule sends to one variant.
    if chosen is route["spec"]["rules"][-1]:
        return "split"
    [ref] = chosen["backendRefs"]
    return str(ref["name"]).removeprefix("digits-")


def versioned(version: str) -> list[str]:
    return [
        f"/v2/models/digits/versions/{version}",
        f"/v2/models/digits/versions/{version}/",
        f"/v2/models/digits/versions/{version}/infer",
        f"/v2/models/digits/versions/{version}/ready?x=1",
        f"/v1/models/digits/versions/{version}:predict",
        f"/v1/models/digits/versions/{version}",
    ]


UNVERSIONED = [
    "/v2/models/digits",
    "/v2/models/digits/infer",
    "/v1/models/digits:predict",
    "/v2/health/ready",
    # Another version whose name starts with a variant's is not that variant's.
    "/v2/models/digits/versions/v10/infer",
    "/v1/models/digits/versions/v1x:predict",
    "/v1/models/digits/versions/v1:explain",
]


def test_a_path_that_names_a_version_goes_to_that_variant_even_at_zero_weight() -> None:
    route = route_of(specs.variant("v1", 100), specs.variant("v2", 0), specs.variant("dark", 0))
    for variant in ("v1", "v2", "dark"):
        for path in versioned(variant):
            assert destination(route, path) == variant, path
    for path in UNVERSIONED:
        assert destination(route, path) == "split", path
    # One rule per variant and the split: the rule count did not grow with version routing.
    assert len(route["spec"]["rules"]) == 4


def test_version_paths_name_the_model_the_servers_serve_the_inference_service() -> None:
    route = route_of(specs.variant("v1", 100))
    assert [m["path"] for m in route["spec"]["rules"][0]["matches"]] == [
        {"type": "PathPrefix", "value": "/v2/models/digits/versions/v1"},
        {"type": "PathPrefix", "value": "/v1/models/digits/versions/v1"},
        {"type": "Exact", "value": "/v1/models/digits/versions/v1:predict"},
    ]
    # Another model's name in the path is not routed by version.
    assert destination(route, "/v2/models/other/versions/v1/infer") == "split"


@pytest.mark.parametrize("count", [2, 6], ids=["two-variants", "six-variants"])
def test_the_override_header_outranks_the_version_in_the_path(count: int) -> None:
    names = [f"v{i}" for i in range(1, count + 1)]
    route = route_of(
        *(specs.variant(n, 100 if i == 0 else 0) for i, n in enumerate(names)),
        overrideHeader=OVERRIDE,
    )
    for forced in names:
        for named in names:
            for path in versioned(named):
                assert destination(route, path, {OVERRIDE: forced}) == forced, (forced, path)
        for path in UNVERSIONED:
            assert destination(route, path, {OVERRIDE: forced}) == forced
    # An override naming no variant is ignored: the path decides.
    assert destination(route, "/v2/models/digits/versions/v2/infer", {OVERRIDE: "x"}) == "v2"
    assert destination(route, "/v2/models/digits/infer", {OVERRIDE: "x"}) == "split"
    matches = sum(len(r["matches"]) for r in route["spec"]["rules"])
    assert matches == count * (3 * count + 1) + 1 <= httproute.MAX_ROUTE_MATCHES


def test_past_the_match_limit_the_version_in_the_path_outranks_the_override() -> None:
    # 7 variants with an override would need 155 matches for the override to come first: the
    # pairs are left out, the route stays valid, and each path and header still routes.
    names = [f"v{i}" for i in range(1, 8)]
    route = route_of(
        *(specs.variant(n, 100 if i == 0 else 0) for i, n in enumerate(names)),
        overrideHeader=OVERRIDE,
    )
    assert sum(len(r["matches"]) for r in route["spec"]["rules"]) == 7 * 4 + 1
    assert destination(route, "/v2/models/digits/versions/v3/infer", {OVERRIDE: "v5"}) == "v3"
    assert destination(route, "/v2/models/digits/infer", {OVERRIDE: "v5"}) == "v5"
    assert destination(route, "/v1/models/digits/versions/v7:predict") == "v7"


def test_with_sixteen_variants_the_last_has_no_rule_and_is_reached_by_weight_only() -> None:
    names = [f"v{i}" for i in range(16)]
    route = route_of(
        *(specs.variant(n, 50 if i in (0, 15) else 0) for i, n in enumerate(names)),
        overrideHeader=OVERRIDE,
    )
    assert len(route["spec"]["rules"]) == 16
    assert destination(route, "/v2/models/digits/versions/v14/infer") == "v14"
    assert destination(route, "/v2/models/digits/versions/v15/infer") == "split"
    assert destination(route, "/v2/models/digits/infer", {OVERRIDE: "v15"}) == "split"


def test_the_mirror_stays_on_the_split_only() -> None:
    route = route_of(
        specs.variant("v1", 100),
        specs.variant("shadow", 0),
        mirror={"variant": "shadow", "percent": 20},
    )
    *per_variant, split = route["spec"]["rules"]
    assert "filters" in split
    assert all("filters" not in r for r in per_variant)
