"""Validate Gateway API routes against their CRDs' openAPIV3Schema and CEL rules.

The CRDs are vendored, unchanged, in `third_party/gateway-api/` (source, version and how to
update them in its README), so these checks run in a fresh clone. Unknown fields fail too:
the API server would prune them silently, which hides a builder's typo.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from support import cel

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "third_party" / "gateway-api"
# The Gateway API release the project targets; every vendored CRD must come from it.
VERSION = "v1.6.1"
GROUP = "gateway.networking.k8s.io"
FILES = {
    "HTTPRoute": f"{GROUP}_httproutes.yaml",
    "GRPCRoute": f"{GROUP}_grpcroutes.yaml",
}


@functools.cache
def crd(kind: str) -> dict[str, Any]:
    """Give the vendored standard-channel CRD of `kind`, checked to be from VERSION."""
    path = CRDS / FILES[kind]
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    annotations = document["metadata"]["annotations"]
    found = (annotations[f"{GROUP}/bundle-version"], annotations[f"{GROUP}/channel"])
    assert found == (VERSION, "standard"), (
        f"{path} is {found}, not ({VERSION!r}, 'standard'): see {CRDS / 'README.md'}"
    )
    return document


@functools.cache
def schema(kind: str = "HTTPRoute") -> dict[str, Any]:
    """Give the openAPIV3Schema of `kind` at version v1."""
    version = next(v for v in crd(kind)["spec"]["versions"] if v["name"] == "v1")
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def _unknown_fields(s: dict[str, Any], obj: Any, path: str) -> list[str]:
    found = []
    if isinstance(obj, dict) and "properties" in s:
        for key, value in obj.items():
            if key not in s["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += _unknown_fields(s["properties"][key], value, f"{path}.{key}")
    elif isinstance(obj, list) and "items" in s:
        for i, value in enumerate(obj):
            found += _unknown_fields(s["items"], value, f"{path}[{i}]")
    return found


def _defaulted(s: dict[str, Any], obj: Any) -> Any:
    """Give `obj` with the schema's defaults filled in where fields are absent.

    The API server defaults before it validates, and some rules read defaulted fields (a
    GRPCRoute method match's `type`); an object that leaves them out is still valid.
    """
    if isinstance(obj, dict) and "properties" in s:
        result = dict(obj)
        for key, sub in s["properties"].items():
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = _defaulted(sub, result[key])
        return result
    if isinstance(obj, list) and "items" in s:
        return [_defaulted(s["items"], value) for value in obj]
    return obj


def assert_valid(route: dict[str, Any]) -> None:
    """Fail on any schema error, unknown field or CEL rule the route (by its kind) breaks."""
    assert route["apiVersion"] == f"{GROUP}/v1"
    s = schema(route["kind"])
    assert _unknown_fields(s, route, "") == []
    stored = _defaulted(s, route)
    # metadata is the API server's ObjectMeta; the CRD schema only says `type: object`.
    jsonschema.validate(stored, s)
    assert list(cel.violations(s, stored)) == []
