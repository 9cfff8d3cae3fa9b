"""Plan the live split at each step of a rollout, and the order a sticky router lists it in.

A rollout walks the candidate's weight up through the spec's steps towards the destination
(the spec's weights). At each step the candidate has the step's weight and every other variant
shares the rest in proportion to its weight before the rollout, so their relative shares stay
as they were; the last step is exactly the destination, which may also move the other
variants. Steps at or below the candidate's weight before the rollout, or at or beyond the
destination's, are skipped: the candidate's share only grows, and never past where the spec
sends it.

Stickiness: nginx's split_clients gives each variant a range of the 32-bit MurmurHash2 of the
user's key, one after another in the order the variants are listed. With the candidate at one
end of the list its range only grows from that end, so raising its share moves users onto it
and never off it (`split_order`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kubeserve.api import spec

TOTAL = 100


def candidate_weights(current: int, destination: int, steps: Sequence[int]) -> list[int]:
    """Give the candidate's weight at each step: those above `current` and below the destination, then it.

    Empty when the destination does not raise the candidate's weight: nothing to walk.
    """
    if destination <= current:
        return []
    between = sorted({s for s in steps if current < s < destination})
    return [*between, destination]


def heaviest(start: Mapping[str, int], candidate: str) -> str | None:
    """Give the variant besides the candidate with the most traffic (the first of equals).

    None when no variant but the candidate had traffic.
    """
    others = [v for v, w in start.items() if v != candidate and w > 0]
    if not others:
        return None
    return max(others, key=lambda v: (start[v], -others.index(v)))


def split_at(
    start: Mapping[str, int], candidate: str, weight: int, *, baseline: str | None
) -> dict[str, int]:
    """Give the split with the candidate at `weight` and the others in proportion to `start`.

    Rounding by largest remainder: each other variant gets the floor of its exact share, and
    the points left go one each to the largest fractions, the baseline first among equal
    ones, then `start`'s order. So the weights are integers summing to exactly 100, and each
    is the floor or the ceiling of its exact share: never negative, and never above the
    variant's weight before the rollout (no user moves between the other variants' ranges
    more than the proportions force). Variants keep the order of `start`.
    """
    if not 0 <= weight <= TOTAL:
        raise ValueError(f"the candidate's weight must lie in 0..{TOTAL}, not {weight}")
    rest = TOTAL - weight
    others = [v for v, w in start.items() if v != candidate and w > 0]
    total = sum(start[v] for v in others)
    if not others:
        raise ValueError("no variant but the candidate had traffic: nothing to share the rest")
    split = dict.fromkeys(start, 0)
    split[candidate] = weight
    fractions: dict[str, int] = {}
    for v in others:
        split[v], fractions[v] = divmod(rest * start[v], total)
    left = rest - sum(split[v] for v in others)
    ranked = sorted(others, key=lambda v: (-fractions[v], v != baseline, others.index(v)))
    for v in ranked[:left]:
        split[v] += 1
    return split


def walkable(start: Mapping[str, int], destination: Mapping[str, int], candidate: str) -> bool:
    """Tell whether a walk from `start` to `destination` is possible and needed.

    It needs a split before (summing to 100 over the destination's variants, so a rollback has
    somewhere valid to return to), a variant besides the candidate that had traffic, and a
    destination that raises the candidate's weight.
    """
    if candidate not in destination or set(start) != set(destination):
        return False
    if sum(start.values()) != TOTAL or any(w < 0 for w in start.values()):
        return False
    if all(w == 0 for v, w in start.items() if v != candidate):
        return False
    return destination[candidate] > start[candidate]


def plan(
    start: Mapping[str, int],
    destination: Mapping[str, int],
    candidate: str,
    steps: Sequence[int],
    *,
    baseline: str | None,
) -> list[dict[str, int]]:
    """Give the live split at each step, the last exactly the destination; empty when not walkable.

    Every split has the destination's variants in the destination's order.
    """
    if not walkable(start, destination, candidate):
        return []
    ordered = {v: start[v] for v in destination}
    weights = candidate_weights(start[candidate], destination[candidate], steps)
    walk = [split_at(ordered, candidate, w, baseline=baseline) for w in weights[:-1]]
    return [*walk, dict(destination)]


def split_order(variants: Sequence[str], candidate: str) -> list[str]:
    """Give the order the router must list the split in so that the candidate's range only grows.

    The candidate goes to an end of the list: last when the spec already lists it last (the
    usual `[v1, v2]` with v2 the candidate, so adding spec.rollout reorders nothing and moves
    nobody), first otherwise; the others keep the spec's order. The router must use this order
    whenever spec.rollout is set, before, during and after a rollout, so no order change moves
    users mid-walk.
    """
    if candidate not in variants:
        raise ValueError(f"{candidate!r} is not among the variants {list(variants)}")
    others = [v for v in variants if v != candidate]
    if variants[-1] == candidate:
        return [*others, candidate]
    return [candidate, *others]


def live_spec(isvc: spec.InferenceService, live: Mapping[str, int]) -> spec.InferenceService:
    """Give the InferenceService as the router must carry it: the live split, in split order.

    The builders render weights from the spec's variants in their order; a rollout hands
    them this copy instead, so the spec itself (the destination) is never rewritten. Without
    spec.rollout, or without a live split, the InferenceService is given back unchanged.
    """
    rollout = isvc.spec.rollout
    if rollout is None or not live:
        return isvc
    by_name = {v.name: v for v in isvc.spec.variants}
    if set(live) != set(by_name) or rollout.candidate not in by_name:
        return isvc  # a split of another set of variants: the spec changed since; wait for it
    order = split_order(list(by_name), rollout.candidate)
    variants = [by_name[n].model_copy(update={"weight": live[n]}) for n in order]
    return isvc.model_copy(update={"spec": isvc.spec.model_copy(update={"variants": variants})})
