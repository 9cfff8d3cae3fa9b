"""Traffic changes as pure logic: parse `v1=50,v2=50`, promote, roll back, and the patch to send.

Every change works on the InferenceService as a dict (as read from the API or from a file) and
gives a `Change`: the new weights, whether the mirror goes or comes back, and the split being
replaced. The split being replaced is kept in the annotation `serving.kubeserve.dev/
previous-traffic`, in the same form as `status.traffic` (`v1=90,v2=10,v3=mirror20%`), so that
`rollback` can restore it; rolling back twice therefore returns to where it started.

Choices: `traffic` sets the named variants and gives every variant it does not name weight 0
(dark, still deployed). `promote V` gives V 100 and every other variant 0; they stay deployed,
so a rollback is instant. Promoting the shadow removes the mirror (a live variant cannot be
mirrored to). Nothing here talks to the API: see `traffic_cli`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

from kubeserve.api import validation
from kubeserve.api.errors import SpecError
from kubeserve.builders import router

PREVIOUS_ANNOTATION = "serving.kubeserve.dev/previous-traffic"
_PART_RE = re.compile(r"^([a-z]([-a-z0-9]*[a-z0-9])?)=(mirror)?([0-9]{1,3})(%?)$")


class TrafficError(ValueError):
    """A traffic change that cannot be made; the message says why, for a person."""


@dataclasses.dataclass(frozen=True)
class Split:
    """A traffic split: weight per variant and the optional mirror (variant, percent)."""

    weights: dict[str, int]
    mirror: tuple[str, int] | None = None

    def __str__(self) -> str:
        parts = []
        for name, weight in self.weights.items():
            if self.mirror and name == self.mirror[0]:
                parts.append(f"{name}=mirror{self.mirror[1]}%")
            else:
                parts.append(f"{name}={weight}")
        return ",".join(parts)


@dataclasses.dataclass(frozen=True)
class Change:
    """What a command does to one InferenceService: the split before and after."""

    before: Split
    after: Split


def parse_split(text: str) -> Split:
    """Parse `v1=90,v2=10` (and `v3=mirror20%`, the form status.traffic and the annotation use)."""
    weights: dict[str, int] = {}
    mirror = None
    for raw in text.split(","):
        part = raw.strip()
        match = _PART_RE.match(part)
        if not match:
            raise TrafficError(
                f"cannot read {part!r}: write VARIANT=PERCENT, e.g. v1=90,v2=10 "
                "(or VARIANT=mirrorPERCENT% for the shadow)"
            )
        name, is_mirror, number = match.group(1), match.group(3), int(match.group(4))
        if name in weights:
            raise TrafficError(f"{name!r} is given twice")
        if number > 100:
            raise TrafficError(f"{name}={number}: a weight is a percent from 0 to 100")
        if is_mirror:
            if mirror is not None:
                raise TrafficError("only one variant can be the mirror")
            if number < 1:
                raise TrafficError(f"{part}: a mirror copies 1 to 100 percent")
            mirror = (name, number)
            weights[name] = 0
        else:
            if match.group(5):
                raise TrafficError(f"{part}: write weights without '%', e.g. {name}={number}")
            weights[name] = number
    total = sum(weights.values())
    if total != 100:
        raise TrafficError(f"weights sum to {total}, must be 100 ({text})")
    return Split(weights, mirror)


def current_split(obj: dict[str, Any]) -> Split:
    """Give the split an InferenceService dict has now."""
    isvc = _parse(obj)
    m = isvc.spec.routing.mirror
    return Split(isvc.spec.live_weights(), (m.variant, m.percent) if m else None)


def _parse(obj: dict[str, Any]) -> Any:
    try:
        return validation.parse(obj)
    except SpecError as exc:
        problems = "; ".join(map(str, exc.errors))
        raise TrafficError(f"the InferenceService is not valid: {problems}") from None


def _complete(before: Split, weights: dict[str, int], mirror: tuple[str, int] | None) -> Split:
    unknown = sorted(set(weights) - set(before.weights))
    if unknown:
        raise TrafficError(
            f"no variant named {', '.join(unknown)} (variants: {', '.join(before.weights)})"
        )
    return Split({name: weights.get(name, 0) for name in before.weights}, mirror)


def set_traffic(obj: dict[str, Any], text: str) -> Change:
    """Plan `kubeserve traffic NAME v1=50,v2=50`: named weights, every other variant 0."""
    before = current_split(obj)
    wanted = parse_split(text)
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
        wanted = parse_split(previous)
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
    return router.traffic_summary(_parse(obj))
