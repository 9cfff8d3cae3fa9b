"""The one text form of a traffic split, `v1=90,v2=10,v3=mirror20%`: written and read here.

`status.traffic` shows it, `kubeserve traffic NAME v1=50,v2=50` takes it, and the
`serving.kubeserve.dev/previous-traffic` annotation keeps it for a rollback, so whatever is
written here can be read back here (`parse(str(split)) == split`). Every variant appears in
spec order: live ones with their percent, dark launches as `=0`, the shadow as
`=mirror<percent>%`.
"""

from __future__ import annotations

import dataclasses
import re

from kubeserve.api import spec

_PART_RE = re.compile(r"^([a-z]([-a-z0-9]*[a-z0-9])?)=(mirror)?([0-9]{1,3})(%?)$")


class SplitTextError(ValueError):
    """Text that is not a traffic split; the message says why, for a person."""


@dataclasses.dataclass(frozen=True)
class Split:
    """A traffic split: weight per variant and the optional mirror (variant, percent).

    The mirror's variant is one of `weights`, at weight 0: a shadow takes no live traffic.
    `str()` gives the text form.
    """

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


def of(isvc: spec.InferenceService) -> Split:
    """Give the split an InferenceService has: its live weights and its mirror."""
    m = isvc.spec.routing.mirror
    return Split(isvc.spec.live_weights(), (m.variant, m.percent) if m else None)


def parse(text: str) -> Split:
    """Read `v1=90,v2=10` (and `v3=mirror20%`); the weights must sum to 100."""
    weights: dict[str, int] = {}
    mirror = None
    for raw in text.split(","):
        part = raw.strip()
        match = _PART_RE.match(part)
        if not match:
            raise SplitTextError(
                f"cannot read {part!r}: write VARIANT=PERCENT, e.g. v1=90,v2=10 "
                "(or VARIANT=mirrorPERCENT% for the shadow)"
            )
        name, is_mirror, number = match.group(1), match.group(3), int(match.group(4))
        if name in weights:
            raise SplitTextError(f"{name!r} is given twice")
        if number > 100:
            raise SplitTextError(f"{name}={number}: a weight is a percent from 0 to 100")
        if is_mirror:
            if mirror is not None:
                raise SplitTextError("only one variant can be the mirror")
            if number < 1:
                raise SplitTextError(f"{part}: a mirror copies 1 to 100 percent")
            mirror = (name, number)
            weights[name] = 0
        else:
            if match.group(5):
                raise SplitTextError(f"{part}: write weights without '%', e.g. {name}={number}")
            weights[name] = number
    total = sum(weights.values())
    if total != 100:
        raise SplitTextError(f"weights sum to {total}, must be 100 ({text})")
    return Split(weights, mirror)
