"""spec.experiment: defaults, and every refusal names its field."""

from __future__ import annotations

from typing import Any

import pytest

from kubeserve.api import durations, validation
from support import specs


def _with(**experiment: Any) -> dict[str, Any]:
    obj = specs.isvc(specs.variant("v1", 50), specs.variant("v2", 50))
    obj["spec"]["experiment"] = {"control": "v1"} | experiment
    return obj


def _paths(obj: dict[str, Any]) -> dict[str, str]:
    return {e.path: e.message for e in validation.validate(obj)}


def test_an_experiment_naming_only_its_control_gets_the_documented_defaults() -> None:
    e = validation.parse(_with()).spec.experiment
    assert e is not None
    assert (e.slow_threshold_seconds(), e.interval_seconds()) == (0.25, 30.0)
    assert (e.confidence, e.min_samples, e.metrics) == (0.95, 1000, None)
    assert (e.margin.error_rate, e.margin.outcome, e.margin.value) == (0.005, 0.01, None)


def test_a_control_that_is_not_a_variant_is_refused_with_the_variants_listed() -> None:
    problems = _paths(_with(control="v3"))
    assert "'v3' is not a variant (variants: v1, v2)" in problems["spec.experiment.control"]


def test_a_dark_control_is_refused() -> None:
    obj = _with()
    obj["spec"]["variants"][0]["weight"] = 0
    obj["spec"]["variants"][1]["weight"] = 100
    assert "must be a live variant" in _paths(obj)["spec.experiment.control"]


def test_one_live_variant_leaves_nothing_to_compare() -> None:
    obj = _with()
    obj["spec"]["variants"][0]["weight"] = 100
    obj["spec"]["variants"][1]["weight"] = 0
    assert "at least two live variants" in _paths(obj)["spec.experiment"]


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("metrics", ["errorRate", "latency"], "spec.experiment.metrics[1]"),
        ("metrics", ["outcome", "outcome"], "spec.experiment.metrics[1]"),
        ("metrics", [], "spec.experiment.metrics"),
        ("confidence", 1.5, "spec.experiment.confidence"),
        ("confidence", "high", "spec.experiment.confidence"),
        ("minSamples", 0, "spec.experiment.minSamples"),
        ("slowThreshold", "fast", "spec.experiment.slowThreshold"),
        ("slowThreshold", "11s", "spec.experiment.slowThreshold"),
        ("slowThreshold", "0ms", "spec.experiment.slowThreshold"),
        ("interval", "1s", "spec.experiment.interval"),
        ("interval", "2h", "spec.experiment.interval"),
        ("margin", {"errorRate": 0}, "spec.experiment.margin.errorRate"),
        ("margin", {"outcome": 0.9}, "spec.experiment.margin.outcome"),
        ("margin", {"value": -1}, "spec.experiment.margin.value"),
        ("margin", {"latency": 1}, "spec.experiment.margin.latency"),
        ("surprise", 1, "spec.experiment.surprise"),
    ],
)
def test_bad_experiment_fields_are_refused_by_path(field: str, value: Any, path: str) -> None:
    assert path in _paths(_with(**{field: value}))


def test_durations_round_trip_through_their_shortest_text() -> None:
    for text in ["250ms", "30s", "1m30s", "5m", "2h", "1h30m"]:
        seconds = durations.parse_duration(text)
        assert durations.parse_duration(durations.format_duration(seconds)) == seconds
