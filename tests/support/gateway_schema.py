"""Validate HTTPRoutes against the Gateway API v1.6.1 CRD's openAPIV3Schema and CEL rules.

The CRD lives in `../shared/schemas/` beside the checkout (CI has it). Unknown fields fail
too: the API server would prune them silently, which hides a builder's typo.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from support import cel

ROOT = Path(__file__).resolve().parents[2]
CRD = (
    ROOT.parent
    / "shared"
    / "schemas"
    / "gateway-api-v1.6.1"
    / "gateway.networking.k8s.io_httproutes.yaml"
)


@functools.cache
def schema() -> dict[str, Any] | None:
    """Give the v1 HTTPRoute openAPIV3Schema, or None when the CRD file is absent."""
    if not CRD.exists():
        return None
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def require_schema() -> dict[str, Any]:
    """Give the schema or skip the test, saying why."""
    s = schema()
    if s is None:
        pytest.skip(f"Gateway API CRD not found at {CRD}: HTTPRoute schema checks skipped")
    return s


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


def assert_valid(route: dict[str, Any]) -> None:
    """Fail on any schema error, unknown field or CEL rule the HTTPRoute breaks."""
    s = require_schema()
    # metadata is the API server's ObjectMeta; the CRD schema only says `type: object`.
    jsonschema.validate(route, s)
    assert _unknown_fields(s, route, "") == []
    assert list(cel.violations(s, route)) == []
