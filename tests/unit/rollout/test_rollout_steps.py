"""The walk's splits and the sticky order: examples, then properties over any start and destination.

Stickiness is checked on the model of nginx's split_clients that the data-plane tests check key
by key against real nginx (tests/support/split_model): the candidate's hash range at each step
must contain its range at the step before, so no key ever leaves the candidate as it grows.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeserve.rollout import steps
from support import split_model

HASHES = 1 << 32


def test_a_canary_walks_the_default_steps_to_the_destination() -> None:
    walk = steps.plan(
        {"v1": 100, "v2": 0}, {"v1": 0, "v2": 100}, "v2", [1, 5, 25, 50, 100], baseline="v1"
    )
    assert walk == [
        {"v1": 99, "v2": 1},
        {"v1": 95, "v2": 5},
        {"v1": 75, "v2": 25},
        {"v1": 50, "v2": 50},
        {"v1": 0, "v2": 100},
    ]


def test_steps_at_or_below_the_live_weight_and_at_or_beyond_the_destination_are_skipped() -> None:
    assert steps.candidate_weights(10, 100, [1, 5, 10, 25, 50, 100]) == [25, 50, 100]
    assert steps.candidate_weights(0, 30, [1, 5, 25, 50, 100]) == [1, 5, 25, 30]
    assert steps.candidate_weights(0, 25, [1, 5, 25, 50, 100]) == [1, 5, 25]
    assert steps.candidate_weights(0, 1, [5, 25]) == [1]


def test_a_destination_that_does_not_raise_the_candidate_needs_no_walk() -> None:
    assert steps.candidate_weights(30, 30, [50]) == []
    assert steps.candidate_weights(30, 10, [50]) == []
    assert steps.plan({"v1": 70, "v2": 30}, {"v1": 90, "v2": 10}, "v2", [50], baseline="v1") == []


def test_nothing_to_walk_from_when_the_split_before_does_not_fit_the_variants() -> None:
    dest = {"v1": 50, "v2": 50}
    assert not steps.walkable({"v1": 100}, dest, "v2")  # a variant added: no split for it
    assert not steps.walkable({"v0": 100, "v2": 0}, dest, "v2")  # renamed
    assert not steps.walkable({"v1": 90, "v2": 0}, dest, "v2")  # not a split of 100
    assert not steps.walkable({"v1": 0, "v2": 100}, {"v1": 0, "v2": 100}, "v2")


def test_the_others_keep_their_proportions_rounded_by_largest_remainder() -> None:
    start = {"v1": 60, "v2": 10, "v3": 30}
    walk = steps.plan(start, {"v1": 0, "v2": 100, "v3": 0}, "v2", [25, 50], baseline="v1")
    assert walk[0] == {"v1": 50, "v2": 25, "v3": 25}
    assert walk[1] == {"v1": 33, "v2": 50, "v3": 17}  # 33.3 and 16.7
    assert walk[2] == {"v1": 0, "v2": 100, "v3": 0}


def test_the_baseline_takes_the_rounding_among_equal_fractions() -> None:
    even = {"v1": 50, "v2": 0, "v3": 50}
    assert steps.split_at(even, "v2", 1, baseline="v3") == {"v1": 49, "v2": 1, "v3": 50}
    assert steps.split_at(even, "v2", 1, baseline="v1") == {"v1": 50, "v2": 1, "v3": 49}
    assert steps.split_at(even, "v2", 1, baseline=None) == {"v1": 50, "v2": 1, "v3": 49}


def test_the_default_baseline_is_the_heaviest_other_variant() -> None:
    assert steps.heaviest({"v1": 0, "v2": 0, "v3": 70, "v4": 30}, "v2") == "v3"
    assert steps.heaviest({"v1": 50, "v2": 0, "v3": 50}, "v2") == "v1"
    assert steps.heaviest({"v1": 0, "v2": 100}, "v2") is None


def test_split_at_refuses_weights_outside_0_to_100() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        steps.split_at({"v1": 100, "v2": 0}, "v2", 101, baseline="v1")


def test_the_candidate_goes_to_the_end_of_the_list_it_is_nearest() -> None:
    assert steps.split_order(["v1", "v2"], "v2") == ["v1", "v2"]
    assert steps.split_order(["v2", "v1"], "v2") == ["v2", "v1"]
    assert steps.split_order(["v1", "v2", "v3"], "v2") == ["v2", "v1", "v3"]
    with pytest.raises(ValueError, match="not among"):
        steps.split_order(["v1"], "v9")


# --- properties --------------------------------------------------------------------------------


@st.composite
def walks(draw: st.DrawFn) -> tuple[list[str], str, dict[str, int], dict[str, int], list[int]]:
    """Draw variants, a candidate, a split before, a destination raising it, and steps."""
    n = draw(st.integers(2, 5))
    names = [f"v{i}" for i in range(n)]
    candidate = draw(st.sampled_from(names))
    others = [v for v in names if v != candidate]

    def shares(total: int, count: int) -> list[int]:
        cuts = sorted(draw(st.lists(st.integers(0, total), min_size=count - 1, max_size=count - 1)))
        return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]

    # Before: the candidate below 100, the others not all empty.
    now = draw(st.integers(0, 99))
    start = {candidate: now, **dict(zip(others, shares(100 - now, len(others)), strict=True))}
    start = {v: start[v] for v in names}
    want = draw(st.integers(now + 1, 100))
    destination = {
        candidate: want,
        **dict(zip(others, shares(100 - want, len(others)), strict=True)),
    }
    destination = {v: destination[v] for v in names}
    step_list = sorted(set(draw(st.lists(st.integers(1, 100), min_size=1, max_size=8))))
    return names, candidate, start, destination, step_list


def _candidate_range(order: list[str], split: dict[str, int], candidate: str) -> tuple[int, int]:
    low = 0
    for variant, bound in split_model.boundaries([(v, split[v]) for v in order]):
        high = HASHES if bound is None else bound
        if variant == candidate:
            return low, high
        low = high
    return 0, 0  # weight 0: no range


@settings(max_examples=300, deadline=None)
@given(walks())
def test_every_split_sums_to_100_and_the_candidate_only_grows_to_the_destination(
    drawn: tuple[list[str], str, dict[str, int], dict[str, int], list[int]],
) -> None:
    names, candidate, start, destination, step_list = drawn
    baseline = steps.heaviest(start, candidate)
    walk = steps.plan(start, destination, candidate, step_list, baseline=baseline)
    assert walk, "a destination above the live weight is walked"
    assert walk[-1] == destination
    weights = [start[candidate], *(s[candidate] for s in walk)]
    assert weights == sorted(set(weights)), "strictly increasing"
    for split in walk:
        assert list(split) == names
        assert sum(split.values()) == 100
        assert all(w >= 0 for w in split.values())
        assert split[candidate] <= destination[candidate]
    for split in walk[:-1]:
        # In between, the others only shrink, each from its weight before the rollout.
        assert all(split[v] <= start[v] for v in names if v != candidate)
        assert split[candidate] in step_list


@settings(max_examples=300, deadline=None)
@given(walks(), st.lists(st.integers(0, HASHES - 1), min_size=50, max_size=50))
def test_no_sticky_key_ever_leaves_the_candidate_as_the_walk_advances(
    drawn: tuple[list[str], str, dict[str, int], dict[str, int], list[int]],
    hashes: list[int],
) -> None:
    names, candidate, start, destination, step_list = drawn
    order = steps.split_order(names, candidate)
    walk = [start, *steps.plan(start, destination, candidate, step_list, baseline=None)]
    for before, after in itertools.pairwise(walk):
        old_low, old_high = _candidate_range(order, before, candidate)
        new_low, new_high = _candidate_range(order, after, candidate)
        if old_low < old_high:
            assert new_low <= old_low and old_high <= new_high, (before, after)
        # The same, key by key, as split_clients assigns them.
        for h in hashes:
            was = _variant_of(h, order, before)
            if was == candidate:
                assert _variant_of(h, order, after) == candidate


def _variant_of(h: int, order: list[str], split: dict[str, int]) -> str:
    for variant, bound in split_model.boundaries([(v, split[v]) for v in order]):
        if bound is None or h < bound:
            return variant
    raise AssertionError("unreachable")


def test_real_keys_through_murmur_hash_stay_on_the_candidate() -> None:
    order = steps.split_order(["v1", "v2"], "v2")
    walk = [
        {"v1": 90, "v2": 10},
        *steps.plan(
            {"v1": 90, "v2": 10}, {"v1": 0, "v2": 100}, "v2", [1, 5, 25, 50, 100], baseline="v1"
        ),
    ]
    keys = [f"digits/user-{i}" for i in range(2000)]
    on = {k for k in keys if split_model.variant_for(k, [(v, walk[0][v]) for v in order]) == "v2"}
    assert 120 < len(on) < 280  # about 10%
    for split in walk[1:]:
        now = {
            k for k in keys if split_model.variant_for(k, [(v, split[v]) for v in order]) == "v2"
        }
        assert on <= now
        on = now
    assert on == set(keys)


def test_the_live_spec_carries_the_live_split_in_split_order_and_leaves_the_spec_alone() -> None:
    from kubeserve.api import validation

    obj = {
        "apiVersion": "serving.kubeserve.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "digits"},
        "spec": {
            "variants": [
                {"name": n, "weight": w, "model": {"format": "onnx", "storageUri": f"file:///{n}"}}
                for n, w in (("v2", 100), ("v1", 0))
            ],
            "rollout": {"candidate": "v2"},
        },
    }
    isvc = validation.parse(obj)
    live = steps.live_spec(isvc, {"v1": 95, "v2": 5})
    assert [(v.name, v.weight) for v in live.spec.variants] == [("v2", 5), ("v1", 95)]
    assert [(v.name, v.weight) for v in isvc.spec.variants] == [("v2", 100), ("v1", 0)]
    assert steps.live_spec(isvc, {"v1": 95, "v3": 5}) is isvc
    assert steps.live_spec(isvc, {}) is isvc
