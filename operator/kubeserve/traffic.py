"""Traffic changes as pure logic: set a split, promote, roll back, and the patch to send.

Every change works on the InferenceService as a dict (as read from the API or from a file) and
gives a `Change`: the new weights, whether the mirror goes or comes back, and the split being
replaced. The split being replaced is kept in the annotation `serving.kubeserve.dev/
previous-traffic`, in the text form of `status.traffic` (`v1=90,v2=10,v3=mirror20%`, written
and read by `builders.traffic_text`), so that `rollback` can restore it; rolling back twice
therefore returns to where it started.

Choices: `traffic` sets the named variants and gives every variant it does not name weight 0
(dark, still deployed). `promote V` gives V 100 and every other variant 0; they stay deployed,
so a rollback is instant. Promoting the shadow removes the mirror (a live variant cannot be
mirrored to). Nothing here talks to the API: see `traffic_cli`.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from kubeserve.api import validation
from kubeserve.api.errors import SpecError
from kubeserve.builders import traffic_text

PREVIOUS_ANNOTATION = "serving.kubeserve.dev/previous-traffic"


class TrafficError(ValueError):
    """A traffic change that cannot be made; the message says why, for a person."""


@dataclasses.dataclass(frozen=True)
class Change:
    """What a command does to one InferenceService: the split before and after."""

    before: traffic_text.Split
    after: traffic_text.Split


def _read(text: str) -> traffic_text.Split:
    try:
        return traffic_text.parse(text)
    except traffic_text.SplitTextError as exc:
        raise TrafficError(str(exc)) from None


def current_split(obj: dict[str, Any]) -> traffic_text.Split:
    """Give the split an InferenceService dict has now."""
    return traffic_text.of(_parse(obj))


def _parse(obj: dict[str, Any]) -> Any:
    try:
        return validation.parse(obj)
    except SpecError as exc:
        problems = "; ".join(map(str, exc.errors))
        raise TrafficError(f"the InferenceService is not valid: {problems}") from None


def _complete(
    before: traffic_text.Split, weights: dict[str, int], mirror: tuple[str, int] | None
) -> traffic_text.Split:
    unknown = sorted(set(weights) - set(before.weights))
    if unknown:
        raise TrafficError(
            f"no variant named {', '.join(unknown)} (variants: {', '.join(before.weights)})"
        )
    return traffic_text.Split({name: weights.get(name, 0) for name in before.weights}, mirror)


def set_traffic(obj: dict[str, Any], text: str) -> Change:
    """Plan `kubeserve traffic NAME v1=50,v2=50`: named weights, every other variant 0."""
    before = current_split(obj)
    wanted = _read(text)
    mirror = wanted.mirror if wanted.mirror else before.mirror
    if mirror and wanted.weights.get(mirror[0], 0) > 0:
        raise TrafficError(
            f"{mirror[0]!r} is the mirror (shadow) and cannot take live traffic: "
            f"promote it, or remove routing.mirror first"
        )
    return Change(before, _complete(before, wanted.weights, mirror))


def promote(obj: dict[str, Any], variant: str) -> Change:
    """Plan `kubeserve promote NAME V`: V takes 100%, the others 0 (kept for a rollback)."""
    before = current_split(obj)
    mirror = before.mirror if before.mirror and before.mirror[0] != variant else None
    return Change(before, _complete(before, {variant: 100}, mirror))


def rollback(obj: dict[str, Any]) -> Change:
    """Plan `kubeserve rollback NAME`: back to the split kept in the annotation."""
    before = current_split(obj)
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    previous = annotations.get(PREVIOUS_ANNOTATION)
    if not previous:
        raise TrafficError(
            f"nothing to roll back to: no {PREVIOUS_ANNOTATION} annotation "
            "(it is written by `kubeserve traffic` and `kubeserve promote`)"
        )
    try:
        wanted = _read(previous)
    except TrafficError as exc:
        raise TrafficError(f"the {PREVIOUS_ANNOTATION} annotation is unreadable: {exc}") from None
    return Change(before, _complete(before, wanted.weights, wanted.mirror))


def apply(obj: dict[str, Any], change: Change) -> dict[str, Any]:
    """Give a copy of `obj` with the change made, checked as a whole InferenceService."""
    new = copy.deepcopy(obj)
    for v in new["spec"]["variants"]:
        v["weight"] = change.after.weights[v["name"]]
    routing = new["spec"].setdefault("routing", {})
    if change.after.mirror:
        routing["mirror"] = {"variant": change.after.mirror[0], "percent": change.after.mirror[1]}
    else:
        routing.pop("mirror", None)
    if not routing:
        del new["spec"]["routing"]
    meta = new.setdefault("metadata", {})
    meta.setdefault("annotations", {})[PREVIOUS_ANNOTATION] = str(change.before)
    problems = validation.validate(new)
    if problems:
        raise TrafficError("the new split is not valid: " + "; ".join(map(str, problems)))
    return new


def _pointer(*parts: str | int) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def json_patch(obj: dict[str, Any], change: Change) -> list[dict[str, Any]]:
    """Give the JSON Patch (RFC 6902) that makes the change on the API server.

    `test` operations pin the resourceVersion and each variant's position, so a concurrent
    edit makes the patch fail instead of setting weights on the wrong variants.
    """
    new = apply(obj, change)
    meta = obj.get("metadata") or {}
    ops: list[dict[str, Any]] = []
    if meta.get("resourceVersion"):
        ops.append(
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
        )
    for i, v in enumerate(obj["spec"]["variants"]):
        ops.append(
            {"op": "test", "path": _pointer("spec", "variants", i, "name"), "value": v["name"]}
        )
        ops.append(
            {
                "op": "add",
                "path": _pointer("spec", "variants", i, "weight"),
                "value": new["spec"]["variants"][i]["weight"],
            }
        )
    # Only the mirror changes within routing; an emptied routing goes as a whole.
    old_routing, new_routing = obj["spec"].get("routing"), new["spec"].get("routing")
    if new_routing != old_routing:
        if new_routing is None:
            ops.append({"op": "remove", "path": "/spec/routing"})
        elif old_routing is None:
            ops.append({"op": "add", "path": "/spec/routing", "value": new_routing})
        elif "mirror" not in new_routing:
            ops.append({"op": "remove", "path": "/spec/routing/mirror"})
        else:
            ops.append(
                {"op": "add", "path": "/spec/routing/mirror", "value": new_routing["mirror"]}
            )
    if meta.get("annotations") is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    ops.append(
        {
            "op": "add",
            "path": _pointer("metadata", "annotations", PREVIOUS_ANNOTATION),
            "value": str(change.before),
        }
    )
    return ops


def summary(obj: dict[str, Any]) -> str:
    """Give the split of an InferenceService dict as status.traffic shows it."""
    return str(current_split(obj))
