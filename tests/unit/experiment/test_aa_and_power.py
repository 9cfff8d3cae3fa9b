"""The test keeps its promises under peeking: A/A false positives, power, and the naive contrast.

Each simulation runs the code that ships (`sequential`, and `verdicts.evaluate` end to end)
look by look on data drawn with fixed seeds; the weights ramp 5% -> 10% -> 20% -> 30% -> 50%
between looks as in a rollout. A false-positive rate is allowed alpha plus three binomial
standard errors of alpha at this many runs; scripts/experiment_simulation.py runs the same at
larger scale for docs/experiments.md.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from kubeserve.api import spec, status
from kubeserve.experiment import sequential, simulation, verdicts

ALPHA = 0.05
RUNS = 500
LOOKS = 40
ALLOWED = ALPHA + simulation.binomial_margin(ALPHA, RUNS)


@functools.cache
def _aa(kind: str, base: float, seed: int) -> simulation.Result:
    scenario = simulation.Scenario(
        kind="rate" if kind == "rate" else "value",
        base=base,
        difference=0.0,
        margin=0.01 if kind == "rate" else None,
        requests_per_look=1000,
        shares=simulation.ramp(LOOKS),
        alpha=ALPHA,
        sd=2.0,
    )
    return simulation.simulate(scenario, runs=RUNS, seed=seed)


@pytest.mark.parametrize(
    ("kind", "base", "seed"), [("rate", 0.02, 1), ("rate", 0.10, 2), ("value", 5.0, 3)]
)
def test_aa_false_positive_rate_stays_within_alpha_over_forty_looks_with_ramping_weights(
    kind: str, base: float, seed: int
) -> None:
    result = _aa(kind, base, seed)
    assert result.decided_rate <= ALLOWED
    # The confidence sequences held the true difference, 0, at every look just as often.
    assert result.coverage >= 1 - ALLOWED


@pytest.mark.parametrize(
    ("kind", "base", "seed"), [("rate", 0.02, 1), ("rate", 0.10, 2), ("value", 5.0, 3)]
)
def test_a_naive_z_test_rerun_at_every_look_on_the_same_data_is_far_above_alpha(
    kind: str, base: float, seed: int
) -> None:
    assert _aa(kind, base, seed).naive_rate > 4 * ALPHA


def test_two_points_on_ten_percent_are_detected_with_the_reported_power_at_the_reported_size() -> (
    None
):
    n = sequential.samples_for_power(0.10, 0.02, margin=0.01, alpha=ALPHA, power=0.8)
    looks = 30
    scenario = simulation.Scenario(
        kind="rate",
        base=0.10,
        difference=0.02,
        margin=0.01,
        requests_per_look=-(-2 * n // looks),
        shares=(0.5,) * looks,
        alpha=ALPHA,
    )
    result = simulation.simulate(scenario, runs=RUNS, seed=4)
    assert result.variant_samples >= n
    assert result.power >= 0.8
    assert result.decided == result.correct  # never the wrong way
    assert result.coverage >= 1 - ALLOWED


def test_a_tenth_of_a_standard_deviation_is_detected_with_the_reported_power() -> None:
    n = sequential.samples_for_mean_power(2.0, 0.2, alpha=ALPHA, power=0.8)
    looks = 30
    scenario = simulation.Scenario(
        kind="value",
        base=5.0,
        difference=0.2,
        margin=None,
        requests_per_look=-(-2 * n // looks),
        shares=(0.5,) * looks,
        alpha=ALPHA,
        sd=2.0,
    )
    result = simulation.simulate(scenario, runs=RUNS, seed=5)
    assert result.power >= 0.8
    assert result.decided == result.correct


def test_aa_through_evaluate_rarely_says_better_or_worse_on_any_metric() -> None:
    """Family-wise: two metrics, minSamples, carried state, a sample-ratio check, all as shipped."""
    experiment = spec.Experiment.model_validate({"control": "v1", "minSamples": 1000})
    rng = np.random.default_rng(6)
    looks = 30
    shares = simulation.ramp(looks)
    per_look = 1000
    variant = np.rint(np.asarray(shares) * per_look).astype(np.int64)
    control = per_look - variant
    errors_c = np.cumsum(rng.binomial(np.broadcast_to(control, (RUNS, looks)), 0.02), axis=1)
    errors_v = np.cumsum(rng.binomial(np.broadcast_to(variant, (RUNS, looks)), 0.02), axis=1)
    slow_c = np.cumsum(rng.binomial(np.broadcast_to(control, (RUNS, looks)), 0.10), axis=1)
    slow_v = np.cumsum(rng.binomial(np.broadcast_to(variant, (RUNS, looks)), 0.10), axis=1)
    n_c, n_v = np.cumsum(control), np.cumsum(variant)
    false_positives = mismatches = 0
    for run in range(RUNS):
        previous: list[status.Comparison] = []
        decided = flagged = False
        for k in range(looks):
            share = round(shares[k] * 100)
            evaluation = verdicts.evaluate(
                experiment,
                {
                    "v1": status.VariantCounts(
                        requests=int(n_c[k]),
                        errors=int(errors_c[run, k]),
                        slow=int(slow_c[run, k]),
                        expected=float(n_c[k]),
                    ),
                    "v2": status.VariantCounts(
                        requests=int(n_v[k]),
                        errors=int(errors_v[run, k]),
                        slow=int(slow_v[run, k]),
                        expected=float(n_v[k]),
                    ),
                },
                {"v1": 100 - share, "v2": share},
                previous,
            )
            previous = evaluation.comparisons
            decided = decided or evaluation.verdict in ("Better", "Worse")
            flagged = flagged or evaluation.sample_ratio.mismatch
        false_positives += decided
        mismatches += flagged
    assert false_positives / RUNS <= ALLOWED
    assert mismatches == 0  # the split was exactly as expected
