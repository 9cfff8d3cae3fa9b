"""The text form of a traffic split: what it reads, what it refuses, and that it round-trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeserve.api import validation
from kubeserve.builders import endpoint, traffic_text
from support import strategies

PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def splits(draw: st.DrawFn) -> traffic_text.Split:
    """Draw valid splits: live weights summing to 100, perhaps a shadow at weight 0."""
    names = draw(st.lists(strategies.dns1035(20), min_size=1, max_size=6, unique=True))
    mirror = None
    if len(names) > 1 and draw(st.booleans()):
        mirror = (names.pop(draw(st.integers(0, len(names) - 1))), draw(st.integers(1, 100)))
    size = len(names) - 1
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=size, max_size=size)))
    bounds = [0, *cuts, 100]
    weights = {n: bounds[i + 1] - bounds[i] for i, n in enumerate(names)}
    if mirror is not None:
        # The shadow may sit anywhere in spec order.
        at = draw(st.integers(0, len(weights)))
        items = list(weights.items())
        items.insert(at, (mirror[0], 0))
        weights = dict(items)
    return traffic_text.Split(weights, mirror)


@PROFILE
@given(splits())
def test_any_split_reads_back_as_itself(split: traffic_text.Split) -> None:
    text = str(split)
    assert traffic_text.parse(text) == split
    assert str(traffic_text.parse(text)) == text


@PROFILE
@given(strategies.inference_services())
def test_the_status_text_of_any_valid_spec_reads_back_as_its_split(obj: dict[str, Any]) -> None:
    isvc = validation.parse(obj)
    text = endpoint.traffic_summary(isvc)
    assert traffic_text.parse(text) == traffic_text.of(isvc)
    assert str(traffic_text.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "weights", "mirror"),
    [
        ("v1=90,v2=10", {"v1": 90, "v2": 10}, None),
        (" v1=100 ", {"v1": 100}, None),
        ("v1=50,v2=30,v3=20", {"v1": 50, "v2": 30, "v3": 20}, None),
        ("v1=100,v3=mirror20%", {"v1": 100, "v3": 0}, ("v3", 20)),
    ],
)
def test_parse_reads_weights_and_the_mirror(
    text: str, weights: dict[str, int], mirror: tuple[str, int] | None
) -> None:
    split = traffic_text.parse(text)
    assert split.weights == weights
    assert split.mirror == mirror


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("v1=90,v2=20", "sum to 110"),
        ("v1=90", "sum to 90"),
        ("v1=90,v1=10", "twice"),
        ("v1:90", "VARIANT=PERCENT"),
        ("v1=abc", "VARIANT=PERCENT"),
        ("V1=100", "VARIANT=PERCENT"),
        ("v1=101", "0 to 100"),
        ("v1=100%", "without '%'"),
        ("v1=100,a=mirror5%,b=mirror5%", "only one"),
        ("v1=100,a=mirror0%", "1 to 100"),
        ("", "VARIANT=PERCENT"),
    ],
)
def test_parse_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(traffic_text.SplitTextError, match=says):
        traffic_text.parse(text)
