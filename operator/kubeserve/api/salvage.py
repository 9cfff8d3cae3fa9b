"""Keep what parses of an InferenceService with wrong-typed fields, so the rules can still run.

Pydantic reports every field it refuses, but builds no object when one is refused, and the
rules of `validation` that span fields need the object: `weight: "fifty"` used to hide a bad
storage URI two variants further on. `salvage` drops each refused value from a copy of the
input until the rest parses (the whole mapping when the refused field is a required one; a
list item leaves a gap, so later items keep their indices) and says what it dropped. A rule
that would read a dropped field is skipped: `weight: "fifty"` hides no other problem, and the
weights that are left do not make up a false "sum to 90" either.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import pydantic

import kubeserve
from kubeserve.api import spec
from kubeserve.api.errors import Loc, user_loc

# Fields that, dropped, would leave nothing to check: stand-ins that let the rest parse. The
# rules that read metadata.name are skipped when it is a stand-in.
_STAND_INS: dict[Loc, Any] = {
    ("apiVersion",): f"{kubeserve.API_GROUP}/{kubeserve.API_VERSION}",
    ("kind",): kubeserve.KIND,
    ("metadata",): {},
    ("metadata", "name"): "unnamed",
}
# Each round drops at least one value; a spec has far fewer levels of nesting than this.
_MAX_ROUNDS = 32


class _Gap:
    """A dropped list item: the later items keep their indices."""


_GAP = _Gap()


@dataclasses.dataclass(frozen=True)
class Dropped:
    """What was dropped from the input before the rules ran, located as in the input."""

    locs: tuple[Loc, ...] = ()
    # For each list with gaps: the input index of every item that was kept.
    kept: Mapping[Loc, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    def touches(self, *fields: str) -> bool:
        """Tell whether a dropped value lies in, or holds, one of `fields`.

        Fields are dotted, `*` standing for any list index: `spec.variants.*.weight`.
        """
        wanted = [f.split(".") for f in fields]
        return any(
            all(w == "*" or w == str(part) for w, part in zip(field, loc, strict=False))
            for loc in self.locs
            for field in wanted
        )

    def position(self, list_loc: Loc, index: int) -> int:
        """Give the input index of the list item that parsed as item `index`."""
        kept = self.kept.get(list_loc)
        return kept[index] if kept is not None else index


NOTHING = Dropped()


def salvage(obj: dict[str, Any]) -> tuple[spec.InferenceService, Dropped] | None:
    """Parse what is left of `obj` once every refused value is dropped; None if nothing is."""
    data = copy.deepcopy(obj)
    dropped: list[Loc] = []
    for _ in range(_MAX_ROUNDS):
        kept: dict[Loc, tuple[int, ...]] = {}
        view = _without_gaps(data, (), kept)
        try:
            isvc = spec.InferenceService.model_validate(view)
        except pydantic.ValidationError as exc:
            locs = sorted({_refused(err, kept) for err in exc.errors(include_url=False)}, key=str)
            changed = [loc for loc in locs if loc and _drop(data, loc)]
            if () in locs or not changed:
                return None
            dropped += changed
            continue
        return isvc, Dropped(tuple(dropped), kept)
    return None


def _refused(err: Any, kept: Mapping[Loc, tuple[int, ...]]) -> Loc:
    """Give the location, in the input, of what to drop for one error."""
    loc: Loc = ()
    for part in user_loc(err["loc"]):
        if isinstance(part, int) and loc in kept:
            part = kept[loc][part]
        loc += (part,)
    # A missing required field takes its mapping with it, unless it has a stand-in.
    if err["type"] == "missing" and loc not in _STAND_INS:
        return loc[:-1]
    return loc


def _drop(data: Any, loc: Loc) -> bool:
    """Drop the value at `loc` (or put its stand-in there); False when there was none."""
    *parents, last = loc
    target = data
    for part in parents:
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return False
    if loc in _STAND_INS and isinstance(target, dict):
        if target.get(last) == _STAND_INS[loc]:
            return False
        target[last] = copy.deepcopy(_STAND_INS[loc])
    elif isinstance(target, list) and isinstance(last, int) and last < len(target):
        if target[last] is _GAP:
            return False
        target[last] = _GAP
    elif isinstance(target, dict) and last in target:
        del target[last]
    else:
        return False
    return True


def _without_gaps(value: Any, loc: Loc, kept: dict[Loc, tuple[int, ...]]) -> Any:
    """Copy `value` without its gaps, noting in `kept` where each list item came from."""
    if isinstance(value, dict):
        return {k: _without_gaps(v, (*loc, k), kept) for k, v in value.items()}
    if isinstance(value, list):
        indices = tuple(i for i, item in enumerate(value) if item is not _GAP)
        if len(indices) < len(value):
            kept[loc] = indices
        return [_without_gaps(value[i], (*loc, i), kept) for i in indices]
    return value
