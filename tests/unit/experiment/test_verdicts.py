"""evaluate(): verdicts, metric choice, correction, summary and sample ratio on hand-made counts."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from kubeserve.api import spec, status
from kubeserve.experiment import sample_ratio, sequential, verdicts

WEIGHTS = {"v1": 50, "v2": 50}


def _experiment(**fields: Any) -> spec.Experiment:
    return spec.Experiment.model_validate({"control": "v1", **fields})


def _counts(**fields: Any) -> status.VariantCounts:
    return status.VariantCounts(**fields)


def _values(n: int, mean: float, sd: float) -> status.VariantCounts:
    """Counts of n values with this mean and (population) standard deviation."""
    return _counts(values=n, value_sum=n * mean, value_squares=n * (sd * sd + mean * mean))


def _only(evaluation: verdicts.Evaluation, metric: str, variant: str = "v2") -> status.Comparison:
    (comparison,) = [
        c for c in evaluation.comparisons if c.metric == metric and c.variant == variant
    ]
    return comparison


def _finite_everywhere(evaluation: verdicts.Evaluation) -> bool:
    numbers = [evaluation.sample_ratio.chi_square, evaluation.sample_ratio.p_value]
    for c in evaluation.comparisons:
        numbers += [x for x in (c.estimate, c.low, c.high, c.p_value) if x is not None]
    return all(math.isfinite(x) for x in numbers)


def test_below_min_samples_comparisons_collect_and_the_summary_counts_the_short_arm() -> None:
    evaluation = verdicts.evaluate(
        _experiment(),
        {"v1": _counts(requests=5000, errors=50), "v2": _counts(requests=312, errors=9)},
        {"v1": 94, "v2": 6},
        [],
    )
    assert [c.verdict for c in evaluation.comparisons] == ["Collecting", "Collecting"]
    assert evaluation.verdict == "Collecting"
    assert evaluation.summary == "collecting: v2 has 312 of 1000 requests"
    error = _only(evaluation, "errorRate")
    assert error.samples == 312
    assert error.estimate == pytest.approx(9 / 312 - 50 / 5000)
    # Nothing of the test is shown or carried before it starts.
    assert (error.low, error.high, error.p_value) == (None, None, 1.0)


def test_a_short_control_is_named_as_control() -> None:
    evaluation = verdicts.evaluate(
        _experiment(),
        {"v1": _counts(requests=90), "v2": _counts(requests=9000)},
        {"v1": 1, "v2": 99},
        [],
    )
    assert evaluation.summary == "collecting: control v1 has 90 of 1000 requests"


def _clear_difference(metric: spec.Metric, upward: bool) -> dict[str, status.VariantCounts]:
    low, high = (0.10, 0.14) if upward else (0.14, 0.10)
    n = 20_000
    if metric == "value":
        return {"v1": _values(n, 1.0 + low, 1.0), "v2": _values(n, 1.0 + high, 1.0)}
    field = {"errorRate": "errors", "slowRate": "slow", "outcome": "positives"}[metric]
    size = "feedback" if metric == "outcome" else "requests"
    return {
        "v1": _counts(**{size: n, field: int(low * n)}),
        "v2": _counts(**{size: n, field: int(high * n)}),
    }


@pytest.mark.parametrize(
    ("metric", "upward", "verdict"),
    [
        ("errorRate", True, "Worse"),
        ("errorRate", False, "Better"),
        ("slowRate", True, "Worse"),
        ("slowRate", False, "Better"),
        ("outcome", True, "Better"),
        ("outcome", False, "Worse"),
        ("value", True, "Better"),
        ("value", False, "Worse"),
    ],
)
def test_a_clear_difference_is_better_or_worse_as_the_metric_counts_good(
    metric: spec.Metric, upward: bool, verdict: str
) -> None:
    evaluation = verdicts.evaluate(
        _experiment(metrics=[metric]), _clear_difference(metric, upward), WEIGHTS, []
    )
    comparison = _only(evaluation, metric)
    assert comparison.verdict == verdict
    assert evaluation.verdict == verdict
    assert comparison.p_value < 0.05
    assert comparison.low is not None and comparison.high is not None
    assert (comparison.low > 0) == upward and (comparison.high < 0) == (not upward)


def test_equal_rates_on_a_million_requests_are_equivalent() -> None:
    counts = _counts(requests=1_000_000, errors=10_000, slow=40_000)
    evaluation = verdicts.evaluate(_experiment(), {"v1": counts, "v2": counts}, WEIGHTS, [])
    assert [c.verdict for c in evaluation.comparisons] == ["Equivalent", "Equivalent"]
    assert evaluation.verdict == "Equivalent"
    assert evaluation.summary == "v2 equivalent to v1 on errorRate, slowRate (within the margins)"
    for c in evaluation.comparisons:
        assert c.low is not None and c.high is not None
        assert -0.005 <= c.low < 0 < c.high <= 0.005


def test_a_small_sample_with_no_difference_is_inconclusive() -> None:
    counts = _counts(requests=2000, errors=40, slow=100)
    evaluation = verdicts.evaluate(_experiment(), {"v1": counts, "v2": counts}, WEIGHTS, [])
    assert evaluation.verdict == "Inconclusive"
    assert evaluation.summary == "no difference yet on errorRate, slowRate"


def test_a_real_difference_inside_the_margin_is_still_better() -> None:
    # 1.0% against 0.9% errors on 10 million requests each: certain, and under the 0.5pp margin.
    evaluation = verdicts.evaluate(
        _experiment(metrics=["errorRate"]),
        {
            "v1": _counts(requests=10_000_000, errors=100_000),
            "v2": _counts(requests=10_000_000, errors=90_000),
        },
        WEIGHTS,
        [],
    )
    comparison = _only(evaluation, "errorRate")
    assert comparison.verdict == "Better"
    assert comparison.low is not None and comparison.low > -0.005


def test_with_no_metrics_named_the_metrics_with_data_are_compared() -> None:
    requests_only = {"v1": _counts(requests=10), "v2": _counts(requests=10)}
    assert [
        c.metric for c in verdicts.evaluate(_experiment(), requests_only, WEIGHTS, []).comparisons
    ] == [
        "errorRate",
        "slowRate",
    ]
    one_sided = {"v1": _counts(requests=10), "v2": _counts(requests=10, feedback=5, values=3)}
    assert [
        c.metric for c in verdicts.evaluate(_experiment(), one_sided, WEIGHTS, []).comparisons
    ] == [
        "errorRate",
        "slowRate",
    ]
    both = {
        "v1": _counts(requests=10, feedback=2, values=1),
        "v2": _counts(requests=10, feedback=5, values=3),
    }
    assert [c.metric for c in verdicts.evaluate(_experiment(), both, WEIGHTS, []).comparisons] == [
        "errorRate",
        "slowRate",
        "outcome",
        "value",
    ]


def test_named_metrics_are_compared_even_without_data() -> None:
    evaluation = verdicts.evaluate(
        _experiment(metrics=["outcome"]), {"v1": _counts(requests=10)}, WEIGHTS, []
    )
    assert [(c.metric, c.verdict, c.samples) for c in evaluation.comparisons] == [
        ("outcome", "Collecting", 0)
    ]
    assert evaluation.summary == "collecting: v2 has 0 of 1000 outcome feedbacks"


def test_only_live_variants_other_than_control_are_compared() -> None:
    counts = _counts(requests=5000)
    evaluation = verdicts.evaluate(
        _experiment(metrics=["errorRate"]),
        {"v1": counts, "v2": counts, "v3": counts, "v4": counts},
        {"v1": 50, "v2": 30, "v3": 20, "v4": 0},
        [],
    )
    assert [c.variant for c in evaluation.comparisons] == ["v2", "v3"]


def test_bonferroni_divides_alpha_among_every_variant_and_metric_the_experiment_can_compare() -> (
    None
):
    assert verdicts.family_size(_experiment(), {"v1": 80, "v2": 20, "v3": 0}) == 8
    assert verdicts.family_size(_experiment(metrics=["outcome"]), {"v1": 80, "v2": 20}) == 1
    assert verdicts.family_size(_experiment(metrics=["outcome"]), {"v1": 100}) == 1


def _counts_with_p_between(low: float, high: float) -> dict[str, status.VariantCounts]:
    """Outcome counts whose single-look p-value (τ = 1pp) lies between low and high."""
    n = 20_000
    for positives in range(2000, 3000):
        difference = sequential.bernoulli_difference(
            control_n=n, control_x=2000, variant_n=n, variant_x=positives
        )
        assert difference is not None
        if low < sequential.p_value(difference, 1e-4) < high:
            return {
                "v1": _counts(requests=n, feedback=n, positives=2000),
                "v2": _counts(requests=n, feedback=n, positives=positives),
            }
    raise AssertionError("no count gives such a p-value")


def test_a_p_value_significant_alone_is_not_once_corrected_for_eight_comparisons() -> None:
    counts = _counts_with_p_between(0.05 / 8, 0.05)
    alone = verdicts.evaluate(_experiment(metrics=["outcome"]), counts, WEIGHTS, [])
    assert _only(alone, "outcome").verdict == "Better"
    corrected = verdicts.evaluate(
        _experiment(), counts, {"v1": 50, "v2": 50, "v3": 0}, []
    )  # 2 variants x 4 metrics
    outcome = _only(corrected, "outcome")
    assert outcome.verdict == "Inconclusive"
    assert outcome.p_value == _only(alone, "outcome").p_value  # the same evidence...
    assert outcome.low is not None and alone.comparisons[0].low is not None
    assert outcome.low < alone.comparisons[0].low  # ...with a wider interval


def test_the_previous_look_is_carried_by_variant_and_metric() -> None:
    experiment = _experiment(metrics=["errorRate"])
    counts = {"v1": _counts(requests=5000, errors=100), "v2": _counts(requests=5000, errors=110)}
    fresh = _only(verdicts.evaluate(experiment, counts, WEIGHTS, []), "errorRate")
    assert fresh.low is not None and fresh.high is not None
    before = status.Comparison(
        variant="v2",
        metric="errorRate",
        samples=4000,
        low=fresh.low + 0.001,
        high=fresh.high - 0.001,
        p_value=0.3,
        verdict="Inconclusive",
    )
    carried = _only(verdicts.evaluate(experiment, counts, WEIGHTS, [before]), "errorRate")
    assert (carried.low, carried.high, carried.p_value) == (before.low, before.high, 0.3)
    elsewhere = before.model_copy(update={"variant": "v3"})
    assert _only(verdicts.evaluate(experiment, counts, WEIGHTS, [elsewhere]), "errorRate") == fresh


def test_a_previous_look_still_collecting_is_not_carried() -> None:
    experiment = _experiment(metrics=["errorRate"])
    counts = {"v1": _counts(requests=5000, errors=100), "v2": _counts(requests=5000, errors=110)}
    fresh = _only(verdicts.evaluate(experiment, counts, WEIGHTS, []), "errorRate")
    before = status.Comparison(
        variant="v2", metric="errorRate", low=0.0, high=0.0001, p_value=0.0, verdict="Collecting"
    )
    assert _only(verdicts.evaluate(experiment, counts, WEIGHTS, [before]), "errorRate") == fresh


def test_an_interval_that_moved_away_is_inconclusive_and_said_in_the_summary() -> None:
    experiment = _experiment(metrics=["outcome"])
    counts = {
        "v1": _counts(feedback=5000, positives=500),
        "v2": _counts(feedback=5000, positives=500),
    }
    before = status.Comparison(
        variant="v2", metric="outcome", low=0.02, high=0.04, p_value=0.001, verdict="Better"
    )
    evaluation = verdicts.evaluate(experiment, counts, WEIGHTS, [before])
    comparison = _only(evaluation, "outcome")
    assert comparison.verdict == "Inconclusive"
    assert comparison.p_value == 0.001
    assert comparison.low is not None and comparison.low < 0
    assert "interval moved outside the earlier ones" in evaluation.summary


def _comparison(verdict: status.Verdict) -> status.Comparison:
    return status.Comparison(variant="v2", metric="errorRate", verdict=verdict)


@pytest.mark.parametrize(
    ("each", "whole"),
    [
        ([], "Collecting"),
        (["Worse", "Better", "Collecting"], "Worse"),
        (["Better", "Collecting", "Inconclusive"], "Better"),
        (["Collecting", "Equivalent"], "Collecting"),
        (["Collecting", "Inconclusive"], "Collecting"),
        (["Equivalent", "Equivalent"], "Equivalent"),
        (["Equivalent", "Inconclusive"], "Inconclusive"),
        (["Inconclusive"], "Inconclusive"),
    ],
)
def test_overall_verdict_rules(each: list[status.Verdict], whole: str) -> None:
    assert verdicts.overall([_comparison(v) for v in each]) == whole


def test_the_summary_names_the_decisive_comparison_in_percentage_points() -> None:
    evaluation = verdicts.evaluate(
        _experiment(metrics=["outcome"]),
        {
            "v1": _counts(feedback=20_000, positives=2000),
            "v2": _counts(feedback=20_000, positives=2400),
        },
        WEIGHTS,
        [],
    )
    assert re.fullmatch(
        r"v2 better on outcome: \+2\.0pp \[\d\.\d, \d\.\d\], p<0\.001", evaluation.summary
    ), evaluation.summary


def test_the_summary_names_a_regression_first_and_counts_the_rest() -> None:
    counts = {
        "v1": _counts(requests=20_000, errors=200, slow=2000),
        "v2": _counts(requests=20_000, errors=600, slow=1500),
    }
    evaluation = verdicts.evaluate(_experiment(), counts, WEIGHTS, [])
    assert evaluation.verdict == "Worse"
    assert re.match(r"v2 worse on errorRate: \+2\.0+pp \[", evaluation.summary)
    assert evaluation.summary.endswith("(+1 more decided)")


def test_values_are_summarised_in_their_own_units() -> None:
    evaluation = verdicts.evaluate(
        _experiment(metrics=["value"]),
        {"v1": _values(20_000, 10.0, 2.0), "v2": _values(20_000, 10.5, 2.0)},
        WEIGHTS,
        [],
    )
    assert re.fullmatch(
        r"v2 better on value: \+0\.50 \[0\.\d\d, 0\.\d\d\], p<0\.001", evaluation.summary
    ), evaluation.summary


def test_the_summary_stays_one_short_line_with_many_variants() -> None:
    names = [f"variant-with-a-long-name-{i:02d}" for i in range(15)]
    counts = {name: _counts(requests=5000, errors=50) for name in ["v1", *names]}
    evaluation = verdicts.evaluate(_experiment(), counts, {"v1": 10} | dict.fromkeys(names, 6), [])
    assert len(evaluation.summary) <= verdicts.SUMMARY_LIMIT
    assert "\n" not in evaluation.summary


def test_no_live_variant_besides_control_is_collecting() -> None:
    evaluation = verdicts.evaluate(
        _experiment(), {"v1": _counts(requests=5000)}, {"v1": 100, "v2": 0}, []
    )
    assert evaluation.comparisons == []
    assert evaluation.verdict == "Collecting"
    assert evaluation.summary == "collecting: no variant besides control v1 takes live traffic"


def test_a_52_48_split_of_100k_requests_is_a_sample_ratio_mismatch() -> None:
    counts = {
        "v1": _counts(requests=52_000, expected=50_000.0),
        "v2": _counts(requests=48_000, expected=50_000.0),
    }
    ratio = sample_ratio.check(counts, WEIGHTS)
    assert ratio.chi_square == pytest.approx(160.0)
    assert ratio.mismatch and ratio.p_value < 1e-30
    evaluation = verdicts.evaluate(_experiment(), counts, WEIGHTS, [])
    assert evaluation.sample_ratio == ratio
    assert evaluation.summary.startswith("sample ratio mismatch (p<0.001)")


def test_a_50_3_to_49_7_split_of_10k_requests_is_no_mismatch() -> None:
    counts = {
        "v1": _counts(requests=5030, expected=5000.0),
        "v2": _counts(requests=4970, expected=5000.0),
    }
    ratio = sample_ratio.check(counts, WEIGHTS)
    assert ratio.chi_square == pytest.approx(0.36)
    assert ratio.p_value == pytest.approx(0.5485, abs=0.0001)
    assert not ratio.mismatch


def test_with_no_expected_counts_the_current_weights_set_the_shares() -> None:
    counts = {"v1": _counts(requests=9000), "v2": _counts(requests=1000)}
    assert not sample_ratio.check(counts, {"v1": 90, "v2": 10}).mismatch
    assert sample_ratio.check(counts, {"v1": 50, "v2": 50}).mismatch


def test_expected_counts_across_weight_changes_beat_the_current_weights() -> None:
    # 90/10 for the first 10,000 requests, then 50/50 for 10,000 more.
    counts = {
        "v1": _counts(requests=14_000, expected=14_000.0),
        "v2": _counts(requests=6000, expected=6000.0),
    }
    assert not sample_ratio.check(counts, {"v1": 50, "v2": 50}).mismatch


def test_a_mismatch_needs_a_thousand_requests() -> None:
    counts = {"v1": _counts(requests=600), "v2": _counts(requests=300)}
    ratio = sample_ratio.check(counts, WEIGHTS)
    assert ratio.p_value < 0.001
    assert not ratio.mismatch


def test_a_lone_variant_has_no_sample_ratio_to_check() -> None:
    assert sample_ratio.check({"v1": _counts(requests=5000)}, {"v1": 100}) == status.SampleRatio()


@pytest.mark.parametrize(
    "counts",
    [
        {},
        {"v1": _counts(), "v2": _counts()},
        {"v1": _counts(requests=5000, errors=9000, slow=-4), "v2": _counts(requests=5000)},
        {"v1": _counts(requests=5000, errors=5000, slow=5000), "v2": _counts(requests=5000)},
        {
            "v1": _counts(requests=5000, feedback=5000, positives=5000, values=5000),
            "v2": _counts(requests=5000, feedback=5000, values=5000),
        },
        {
            "v1": _counts(requests=5000, values=5000, value_sum=math.inf, value_squares=math.inf),
            "v2": _counts(requests=5000, values=5000, value_sum=1e308, value_squares=math.inf),
        },
        {
            "v1": _counts(requests=5000, values=5000, value_sum=-5e6, value_squares=5e9),
            "v2": _counts(requests=-3, values=1, value_sum=3.0, value_squares=9.0, expected=-1.0),
        },
    ],
)
def test_degenerate_counts_never_crash_nor_give_nan_or_infinity(
    counts: dict[str, status.VariantCounts],
) -> None:
    previous = [
        status.Comparison(
            variant="v2", metric=m, low=-0.1, high=0.1, p_value=0.5, verdict="Inconclusive"
        )
        for m in spec.METRICS
    ]
    for experiment in (_experiment(), _experiment(metrics=list(spec.METRICS), minSamples=10)):
        evaluation = verdicts.evaluate(experiment, counts, WEIGHTS, previous)
        assert _finite_everywhere(evaluation)
        assert evaluation.summary
        assert len(evaluation.summary) <= verdicts.SUMMARY_LIMIT


def test_equal_values_leave_value_inconclusive_with_its_estimate() -> None:
    evaluation = verdicts.evaluate(
        _experiment(metrics=["value"]),
        {"v1": _values(5000, 2.0, 0.0), "v2": _values(5000, 3.0, 0.0)},
        WEIGHTS,
        [],
    )
    comparison = _only(evaluation, "value")
    assert comparison.verdict == "Inconclusive"
    assert comparison.estimate == pytest.approx(1.0)
