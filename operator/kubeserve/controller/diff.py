"""Decide what to send so a child matches its desired state, touching only our own fields.

Like `kubectl apply`, a child carries what we last applied in an annotation — only the
shape of it, the field names down to the lists, since removal needs names, not values: a
field in it but no longer desired is removed; a field someone else set is left alone; a
field we set and someone changed is put back. Values the API server normalises (`1` for `"1"`, `1Gi` for
`1073741824`) compare equal, and list items may carry defaults the server added, so an
unchanged child gives no patch at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubeserve.api import quantity
from kubeserve.builders import meta

APPLIED_ANNOTATION = f"{meta.LABEL_PREFIX}/last-applied"
# Fields we set once and then leave to another controller even when we stop setting them:
# an HPA owns spec.replicas of an autoscaled Deployment.
_NEVER_REMOVE = {("spec", "replicas")}
_IDENTITY = {"apiVersion", "kind"}


def applied_state(desired: dict[str, Any]) -> str:
    """Serialise what we apply, for the annotation (compact and key-sorted: stable)."""
    body = {k: v for k, v in desired.items() if k not in _IDENTITY}
    body["metadata"] = {
        k: v for k, v in desired["metadata"].items() if k in {"labels", "annotations"}
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def with_applied_annotation(desired: dict[str, Any]) -> dict[str, Any]:
    """Give the desired object carrying its own last-applied annotation."""
    out = dict(desired)
    out["metadata"] = dict(desired["metadata"])
    out["metadata"]["annotations"] = {
        **desired["metadata"].get("annotations", {}),
        APPLIED_ANNOTATION: applied_state(desired),
    }
    return out


def same(desired: Any, actual: Any) -> bool:
    """Tell whether an actual value already says what the desired value says."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(same(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(map(same, desired, actual))
        )
    if isinstance(desired, bool) or isinstance(actual, bool):
        return desired is actual
    if desired == actual:
        return True
    if isinstance(desired, bool) or isinstance(actual, bool) or desired is None or actual is None:
        return False
    if isinstance(desired, int | str) and isinstance(actual, int | str):
        try:
            return quantity.parse_quantity(desired) == quantity.parse_quantity(actual)
        except ValueError:
            return False
    return False


def _diff(
    desired: dict[str, Any], actual: Mapping[str, Any], applied: Any, path: tuple[str, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, want in desired.items():
        have = actual.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            sub = _diff(
                want, have, applied.get(key) if isinstance(applied, dict) else None, (*path, key)
            )
            if sub:
                out[key] = sub
        elif not same(want, have):
            out[key] = want
    if isinstance(applied, dict):
        for key in applied:
            if key not in desired and key in actual and (*path, key) not in _NEVER_REMOVE:
                out[key] = None
    return out


def patch_for(desired: dict[str, Any], actual: Mapping[str, Any]) -> dict[str, Any] | None:
    """Give the merge patch that brings `actual` to `desired`, or None when nothing differs."""
    target = with_applied_annotation(desired)
    annotations = actual.get("metadata", {}).get("annotations") or {}
    try:
        applied = json.loads(annotations.get(APPLIED_ANNOTATION, "{}"))
    except ValueError:
        applied = {}
    body = {k: v for k, v in target.items() if k not in _IDENTITY}
    body["metadata"] = {
        k: v
        for k, v in target["metadata"].items()
        if k in {"labels", "annotations", "ownerReferences"}
    }
    patch = _diff(body, actual, applied, ())
    return patch or None
