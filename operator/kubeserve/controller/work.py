"""The kinds of work the operator does for one InferenceService, and how they combine.

Events ask for one of three things: a full reconcile (the InferenceService changed, a resync),
a comparison of the children an event named (a child edited or deleted), or a fresh status
(a pod changed, a settled status is due). Work noted for one InferenceService while it waits
becomes one piece of work (`merge`): a full reconcile covers everything, child comparisons
join, and a status refresh rides along with anything.

A fourth kind carries data: a collection (`Collect`) of the variant pods' counters, for the
experiment (added to status.experiment), for the rollout (its look at this interval), or
both. It wraps whatever other work waits with it, and for each of the two a newer reading
replaces an older one: the counters read are cumulative, so the latest readings hold all
that the older ones did (and a rollout looks at most once per collection, never twice for
one interval).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from kubeserve.experiment import readings as pod_readings

ChildKey = tuple[str, str]  # kind, name (the namespace is the InferenceService's)


@dataclasses.dataclass(frozen=True)
class FullReconcile:
    """Compare every desired child, prune the children no longer desired, write the status."""


@dataclasses.dataclass(frozen=True)
class RefreshStatus:
    """Compute the status again from the caches; compare no child.

    `settled`: this is the write a settling status was put off to (see `settle`), so it is
    written now rather than put off again.
    """

    settled: bool = False


@dataclasses.dataclass(frozen=True)
class CompareChildren:
    """Compare these children with their desired state (putting back one that is missing).

    The status is computed again when one of them is a kind the status reads, or when a
    status refresh was noted while they waited (`status`).
    """

    children: frozenset[ChildKey]
    status: RefreshStatus | None = None


@dataclasses.dataclass(frozen=True)
class Readings:
    """One collection's counters: a reading per pod, or Prometheus' totals (experiments only).

    `seq` numbers the collections of one operator process in the order they were read: a
    collection's rollout look is taken once, even when its work is tried again.
    """

    pods: Sequence[pod_readings.PodReading]
    totals: pod_readings.VariantTotals | None = None
    seq: int = 0


@dataclasses.dataclass(frozen=True)
class Collect:
    """Take these readings into status.experiment and status.rollout, and do `then` too.

    `experiment`: readings to add to the experiment's counts; `rollout`: the rollout's
    interval is due, with readings of its pods. The status is computed and written at once
    (a collection is never put off to settle).
    """

    experiment: Readings | None = None
    rollout: Readings | None = None
    then: FullReconcile | CompareChildren | RefreshStatus | None = None

    def other_work(self) -> FullReconcile | CompareChildren | RefreshStatus:
        """Give the work done beside the collection, with the status always written now."""
        now = RefreshStatus(settled=True)
        if self.then is None:
            return now
        joined = merge(self.then, now)
        assert not isinstance(joined, Collect)
        return joined


Work = FullReconcile | CompareChildren | RefreshStatus | Collect


def compare(*children: ChildKey) -> CompareChildren:
    """Give the work of comparing these children."""
    return CompareChildren(frozenset(children))


def _join(a: RefreshStatus | None, b: RefreshStatus | None) -> RefreshStatus | None:
    if a is None or b is None:
        return a or b
    return RefreshStatus(settled=a.settled or b.settled)


def merge(old: Work, new: Work) -> Work:
    """Give one piece of work that does what both do."""
    if isinstance(old, Collect) or isinstance(new, Collect):
        older = old if isinstance(old, Collect) else Collect()
        newer = new if isinstance(new, Collect) else Collect()
        return Collect(
            experiment=newer.experiment or older.experiment,
            rollout=newer.rollout or older.rollout,
            then=_then(_beside(old), _beside(new)),
        )
    match old, new:
        case (FullReconcile(), _) | (_, FullReconcile()):
            return FullReconcile()
        case CompareChildren(), CompareChildren():
            return CompareChildren(old.children | new.children, _join(old.status, new.status))
        case CompareChildren(), RefreshStatus():
            return CompareChildren(old.children, _join(old.status, new))
        case RefreshStatus(), CompareChildren():
            return CompareChildren(new.children, _join(old, new.status))
        case RefreshStatus(), RefreshStatus():
            return RefreshStatus(settled=old.settled or new.settled)
    raise TypeError(f"not work: {old!r}, {new!r}")


def _then(
    a: FullReconcile | CompareChildren | RefreshStatus | None,
    b: FullReconcile | CompareChildren | RefreshStatus | None,
) -> FullReconcile | CompareChildren | RefreshStatus | None:
    if a is None or b is None:
        return a or b
    joined = merge(a, b)
    assert not isinstance(joined, Collect)
    return joined


def _beside(todo: Work) -> FullReconcile | CompareChildren | RefreshStatus | None:
    return todo.then if isinstance(todo, Collect) else todo
