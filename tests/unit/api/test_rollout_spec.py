"""spec.rollout: defaults, and every refusal names its field."""

from __future__ import annotations

from typing import Any

import pytest

from kubeserve.api import validation
from support import specs


def _with(**rollout: Any) -> dict[str, Any]:
    obj = specs.isvc(specs.variant("v1", 0), specs.variant("v2", 100))
    obj["spec"]["rollout"] = {"candidate": "v2"} | rollout
    return obj


def _paths(obj: dict[str, Any]) -> dict[str, str]:
    return {e.path: e.message for e in validation.validate(obj)}


def test_a_rollout_naming_only_its_candidate_gets_the_documented_defaults() -> None:
    r = validation.parse(_with()).spec.rollout
    assert r is not None
    assert r.steps == [1, 5, 25, 50, 100] and r.baseline is None
    assert (r.interval_seconds(), r.min_step_seconds(), r.min_requests_per_step) == (30, 60, 500)
    assert (r.max_failed_checks, r.on_failure) == (3, "Rollback")
    assert [(g.metric, g.max_increase) for g in r.effective_gates()] == [("errorRate", 0.01)]


@pytest.mark.parametrize(
    ("field", "value", "path", "words"),
    [
        ("candidate", "v3", "spec.rollout.candidate", "is not a variant"),
        ("baseline", "v3", "spec.rollout.baseline", "is not a variant"),
        ("baseline", "v2", "spec.rollout.baseline", "must differ"),
        ("steps", [5, 5, 50], "spec.rollout.steps[1]", "must increase"),
        ("steps", [25, 10], "spec.rollout.steps[1]", "must increase"),
        ("steps", [0, 50], "spec.rollout.steps[0]", "from 1 to 100"),
        ("steps", [50, 101], "spec.rollout.steps[1]", "from 1 to 100"),
        ("steps", [], "spec.rollout.steps", ""),
        ("gates", [{"metric": "latency", "maxIncrease": 0.1}], "spec.rollout.gates[0].metric", ""),
        (
            "gates",
            [{"metric": "errorRate", "maxIncrease": 5}],
            "spec.rollout.gates[0].maxIncrease",
            "not a rate",
        ),
        ("gates", [{"metric": "errorRate"}], "spec.rollout.gates[0].maxIncrease", ""),
        (
            "gates",
            [{"metric": "errorRate", "maxIncrease": 0.01}] * 2,
            "spec.rollout.gates[1].metric",
            "duplicate",
        ),
        ("onFailure", "Explode", "spec.rollout.onFailure", ""),
        ("maxFailedChecks", 0, "spec.rollout.maxFailedChecks", ""),
        ("interval", "1s", "spec.rollout.interval", "from 5s"),
        ("minStepDuration", "soon", "spec.rollout.minStepDuration", ""),
    ],
)
def test_bad_rollout_fields_are_refused_by_path(
    field: str, value: Any, path: str, words: str
) -> None:
    problems = _paths(_with(**{field: value}))
    assert path in problems, problems
    assert words in problems[path]


def test_the_mirror_variant_cannot_be_the_candidate() -> None:
    obj = _with()
    obj["spec"]["variants"][0]["weight"] = 100
    obj["spec"]["variants"][1]["weight"] = 0
    obj["spec"]["routing"] = {"mirror": {"variant": "v2"}}
    assert "mirror" in _paths(obj)["spec.rollout.candidate"]
