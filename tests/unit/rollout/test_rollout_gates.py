"""Gates: the candidate against the baseline on cumulative counts, with the sequential test."""

from __future__ import annotations

from kubeserve.api import spec, status
from kubeserve.experiment import sequential
from kubeserve.rollout import gates


def counts(requests: int, errors: int = 0, **more: float) -> status.VariantCounts:
    return status.VariantCounts.model_validate({"requests": requests, "errors": errors, **more})


def rollout(*gate_list: spec.Gate, confidence: float = 0.95) -> spec.Rollout:
    return spec.Rollout(candidate="v2", gates=list(gate_list) or None, confidence=confidence)


ERRORS = spec.Gate(metric="errorRate", max_increase=0.01)


def test_a_candidate_without_requests_is_collecting() -> None:
    [result] = gates.evaluate(rollout(), counts(1000, 10), counts(0), None)
    assert result.result == "Collecting"
    assert (result.baseline, result.candidate, result.low) == (0.01, None, None)


def test_the_default_gate_is_error_rate_within_one_point() -> None:
    [result] = gates.evaluate(rollout(), counts(5000, 100), counts(5000, 105), None)
    assert result.metric == "errorRate"
    assert result.result == "Pass"
    assert result.baseline == 0.02 and result.candidate == 0.021
    assert result.low is not None and result.high is not None
    assert result.low < 0.001 < result.high


def test_five_points_more_errors_is_harm_once_the_interval_clears_the_tolerance() -> None:
    few = gates.evaluate(rollout(), counts(100, 2), counts(20, 2), None)
    assert few[0].result == "Pass"  # +8pp, but on 20 requests the interval is wide
    [result] = gates.evaluate(rollout(), counts(20000, 400), counts(2000, 140), None)
    assert result.result == "Harm"
    assert result.low is not None and result.low > 0.01


def test_a_difference_inside_the_tolerance_is_no_harm_however_sure() -> None:
    [result] = gates.evaluate(rollout(), counts(10**6, 20000), counts(10**6, 25000), None)
    assert result.low is not None and result.low > 0  # surely worse, by half a point
    assert result.result == "Pass"


def test_for_outcome_and_value_a_decrease_is_the_harm() -> None:
    outcome = spec.Gate(metric="outcome", max_increase=0.01)
    base = counts(0, feedback=20000, positives=4000)
    better = counts(0, feedback=20000, positives=5000)
    worse = counts(0, feedback=20000, positives=3000)
    assert gates.evaluate(rollout(outcome), base, better, None)[0].result == "Pass"
    assert gates.evaluate(rollout(outcome), base, worse, None)[0].result == "Harm"
    value = spec.Gate(metric="value", max_increase=0.1)
    # Means 1.0 and 0.5, standard deviation about 1, 10000 each.
    base_v = counts(0, values=10000, value_sum=10000.0, value_squares=20000.0)
    low_v = counts(0, values=10000, value_sum=5000.0, value_squares=12500.0)
    assert gates.evaluate(rollout(value), base_v, low_v, None)[0].result == "Harm"
    assert gates.evaluate(rollout(value), low_v, base_v, None)[0].result == "Pass"


def test_a_rate_above_the_absolute_max_is_a_failed_check() -> None:
    gate = spec.Gate(metric="errorRate", max_increase=0.5, max=0.05)
    [result] = gates.evaluate(rollout(gate), counts(100, 5), counts(50, 4), None)
    assert result.result == "OverMax"
    assert result.candidate == 0.08
    [fine] = gates.evaluate(rollout(gate), counts(100, 5), counts(50, 2), None)
    assert fine.result == "Pass"


def test_the_absolute_max_needs_no_baseline_data() -> None:
    gate = spec.Gate(metric="slowRate", max_increase=0.01, max=0.1)
    [result] = gates.evaluate(rollout(gate), counts(0), counts(10, slow=5), None)
    assert result.result == "OverMax"
    [collecting] = gates.evaluate(rollout(gate), counts(0), counts(10, slow=0), None)
    assert collecting.result == "Collecting"


def test_harm_outranks_the_absolute_max() -> None:
    gate = spec.Gate(metric="errorRate", max_increase=0.01, max=0.05)
    [result] = gates.evaluate(rollout(gate), counts(20000, 400), counts(2000, 200), None)
    assert result.result == "Harm"


def test_the_interval_and_p_value_carry_from_the_last_look() -> None:
    earlier = status.GateResult(
        metric="errorRate", low=-0.001, high=0.002, p_value=0.3, result="Pass"
    )
    [result] = gates.evaluate(rollout(), counts(5000, 100), counts(5000, 105), [earlier])
    assert result.low == -0.001 and result.high == 0.002  # the running intersection
    assert result.p_value <= 0.3
    # A Collecting result carried nothing.
    fresh = status.GateResult(metric="errorRate", low=-0.001, high=0.002, p_value=0.3)
    [again] = gates.evaluate(rollout(), counts(5000, 100), counts(5000, 105), [fresh])
    assert again.low is not None and again.low < -0.001


def test_the_gates_share_alpha_by_bonferroni() -> None:
    one = gates.evaluate(rollout(ERRORS), counts(5000, 100), counts(5000, 120), None)[0]
    slow = spec.Gate(metric="slowRate", max_increase=0.01)
    two = gates.evaluate(rollout(ERRORS, slow), counts(5000, 100), counts(5000, 120), None)[0]
    assert one.low is not None and two.low is not None and one.high is not None
    assert two.high is not None
    assert two.low < one.low and one.high < two.high
    # The same as the sequential test at alpha' = 0.05 / 2.
    difference = sequential.bernoulli_difference(
        control_n=5000, control_x=100, variant_n=5000, variant_x=120
    )
    assert difference is not None
    expected = sequential.step(
        sequential.State(), difference, tau2=sequential.tau_squared(0.01), alpha=0.025
    ).state
    assert (two.low, two.high, two.p_value) == (expected.low, expected.high, expected.p_value)


def test_a_zero_tolerance_sets_tau_from_the_default_margin() -> None:
    strict = spec.Gate(metric="errorRate", max_increase=0.0)
    base, cand = counts(100, 0), counts(100, 0)
    assert gates.mixing_margin(strict, base, cand) == spec.Margins().error_rate
    value = spec.Gate(metric="value", max_increase=0.0)
    flat = counts(0, values=10, value_sum=10.0, value_squares=10.0)
    assert gates.mixing_margin(value, flat, flat) is None  # no spread: no test
    [result] = gates.evaluate(rollout(value), flat, flat, None)
    assert result.result == "Pass" and result.low is None


def test_describe_says_rates_in_points() -> None:
    result = status.GateResult(
        metric="errorRate", estimate=0.0003, low=-0.001, high=0.002, result="Pass"
    )
    assert gates.describe(result) == "errorRate +0.03pp [-0.10, +0.20]"
    assert gates.describe(status.GateResult(metric="value")) == "value collecting"
    value = status.GateResult(metric="value", estimate=-0.5, low=-0.6, high=-0.4)
    assert gates.describe(value) == "value -0.50 [-0.60, -0.40]"
