"""The mixture SPRT: its closed forms against direct computation, its monotonicity, its edges."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from kubeserve.experiment import sequential


def _mixture_by_grid(estimate: float, variance: float, tau2: float) -> float:
    """Integrate the likelihood ratio of θ against 0 over the N(0, τ²) prior, on a grid.

    Written from the definition, not from the closed form: Λ = ∫ L(θ)/L(0) π(θ) dθ with
    L(θ) = exp(-(Δ̂ - θ)² / 2V), by the trapezoid rule over ±12 posterior SDs.
    """
    centre = estimate * tau2 / (variance + tau2)
    spread = math.sqrt(variance * tau2 / (variance + tau2))
    theta = np.linspace(centre - 12 * spread, centre + 12 * spread, 200_001)
    log_ratio = ((estimate**2) - (estimate - theta) ** 2) / (2 * variance)
    prior = np.exp(-(theta**2) / (2 * tau2)) / math.sqrt(2 * math.pi * tau2)
    integrand = np.exp(log_ratio) * prior
    step = theta[1] - theta[0]
    return float(step * (integrand.sum() - (integrand[0] + integrand[-1]) / 2))


@pytest.mark.parametrize(
    ("estimate", "variance", "tau2"),
    [
        (0.02, 1e-4, 1e-4),
        (0.0, 1e-4, 1e-4),
        (-0.013, 4e-5, 1e-4),
        (0.004, 2e-6, 2.5e-5),
        (1.7, 0.3, 0.01),
        (-0.05, 1e-3, 0.04),
    ],
)
def test_closed_form_ratio_equals_the_mixture_integrated_over_a_grid(
    estimate: float, variance: float, tau2: float
) -> None:
    closed = math.exp(
        sequential.log_likelihood_ratio(sequential.Difference(estimate, variance), tau2)
    )
    assert closed == pytest.approx(_mixture_by_grid(estimate, variance, tau2), rel=1e-6)


def test_ratio_at_equal_variance_and_mixing_variance_is_e_over_root_two() -> None:
    # V = τ² = 1e-4 and Δ̂ = 0.02: Λ = sqrt(1/2) · exp(τ²Δ̂² / (2V·2V)) = e / √2.
    difference = sequential.Difference(estimate=0.02, variance=1e-4)
    assert math.exp(sequential.log_likelihood_ratio(difference, 1e-4)) == pytest.approx(
        math.e / math.sqrt(2), rel=1e-12
    )
    assert sequential.p_value(difference, 1e-4) == pytest.approx(math.sqrt(2) / math.e)


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.05 / 8])
@pytest.mark.parametrize(("variance", "tau2"), [(1e-4, 1e-4), (3e-6, 1e-4), (0.2, 0.01)])
def test_interval_edge_is_where_the_ratio_reaches_one_over_alpha(
    alpha: float, variance: float, tau2: float
) -> None:
    width = sequential.half_width(variance, tau2, alpha)
    for edge in (width, -width):
        assert sequential.p_value(sequential.Difference(edge, variance), tau2) == pytest.approx(
            alpha, rel=1e-9
        )
    inside = sequential.Difference(0.999 * width, variance)
    assert sequential.p_value(inside, tau2) > alpha


def test_bernoulli_variance_is_pooled_with_one_success_and_one_failure_added() -> None:
    difference = sequential.bernoulli_difference(
        control_n=1000, control_x=100, variant_n=1000, variant_x=120
    )
    pooled = 221 / 2002
    assert difference is not None
    assert difference.estimate == pytest.approx(0.02)
    assert difference.variance == pytest.approx(pooled * (1 - pooled) * (2 / 1000))


def test_laplace_never_shrinks_the_pooled_variance() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        n_c, n_v = (int(n) for n in rng.integers(1, 10_000, size=2))
        x_c, x_v = int(rng.integers(0, n_c + 1)), int(rng.integers(0, n_v + 1))
        plain = (x_c + x_v) / (n_c + n_v)
        difference = sequential.bernoulli_difference(
            control_n=n_c, control_x=x_c, variant_n=n_v, variant_x=x_v
        )
        assert difference is not None
        assert difference.variance >= plain * (1 - plain) * (1 / n_c + 1 / n_v) * (1 - 1e-12)


def test_normal_difference_uses_the_pooled_sample_variance_of_the_raw_values() -> None:
    rng = np.random.default_rng(7)
    control, variant = rng.normal(3.0, 2.0, 400), rng.normal(3.5, 2.0, 250)
    difference = sequential.normal_difference(
        sequential.Moments(control.size, float(control.sum()), float((control**2).sum())),
        sequential.Moments(variant.size, float(variant.sum()), float((variant**2).sum())),
    )
    pooled = (
        (control.size - 1) * control.var(ddof=1) + (variant.size - 1) * variant.var(ddof=1)
    ) / (control.size + variant.size - 2)
    assert difference is not None
    assert difference.estimate == pytest.approx(variant.mean() - control.mean())
    assert difference.variance == pytest.approx(pooled * (1 / 400 + 1 / 250))


def _random_walk(seed: int, looks: int, rate_c: float, rate_v: float) -> list[sequential.Look]:
    rng = np.random.default_rng(seed)
    n_c = n_v = x_c = x_v = 0
    state = sequential.State()
    walk = []
    for _ in range(looks):
        add_c, add_v = (int(n) for n in rng.integers(0, 400, size=2))
        n_c, n_v = n_c + add_c, n_v + add_v
        x_c += int(rng.binomial(add_c, rate_c))
        x_v += int(rng.binomial(add_v, rate_v))
        look = sequential.step(
            state,
            sequential.bernoulli_difference(
                control_n=n_c, control_x=x_c, variant_n=n_v, variant_x=x_v
            ),
            tau2=1e-4,
            alpha=0.05,
        )
        walk.append(look)
        state = look.state
    return walk


@pytest.mark.parametrize("seed", range(20))
def test_p_value_never_rises_over_a_random_walk_of_looks(seed: int) -> None:
    walk = _random_walk(seed, looks=60, rate_c=0.1, rate_v=0.1 + 0.01 * (seed % 3))
    p_values = [look.state.p_value for look in walk]
    assert all(later <= earlier for earlier, later in itertools.pairwise(p_values))
    assert all(0.0 <= p <= 1.0 for p in p_values)


@pytest.mark.parametrize("seed", range(20))
def test_intervals_only_shrink_unless_a_look_disagrees(seed: int) -> None:
    walk = _random_walk(seed, looks=60, rate_c=0.05, rate_v=0.05 + 0.01 * (seed % 3))
    started = [look for look in walk if look.state.low is not None]
    assert started
    for earlier, later in itertools.pairwise(started):
        if later.disagreed:
            continue
        assert earlier.state.low is not None and later.state.low is not None
        assert earlier.state.high is not None and later.state.high is not None
        assert earlier.state.low <= later.state.low <= later.state.high <= earlier.state.high


def test_a_look_that_misses_the_running_interval_replaces_it_and_says_so() -> None:
    state = sequential.State(p_value=0.001, low=0.05, high=0.07)
    look = sequential.step(
        state, sequential.Difference(estimate=0.0, variance=1e-6), tau2=1e-4, alpha=0.05
    )
    assert look.disagreed
    assert look.state.low is not None and look.state.high is not None
    assert look.state.low < 0.0 < look.state.high
    assert look.state.p_value == 0.001  # the least p-value is kept: it never rises
    assert sequential.side(look.state, 0.05) == 0  # the interval covers 0: not decided


def test_side_needs_both_a_small_p_value_and_an_interval_off_zero() -> None:
    assert sequential.side(sequential.State(0.01, 0.001, 0.02), 0.05) == 1
    assert sequential.side(sequential.State(0.01, -0.02, -0.001), 0.05) == -1
    assert sequential.side(sequential.State(0.01, -0.001, 0.02), 0.05) == 0
    assert sequential.side(sequential.State(0.06, 0.001, 0.02), 0.05) == 0
    assert sequential.side(sequential.State(), 0.05) == 0


@pytest.mark.parametrize(
    ("control", "variant"),
    [((0, 0), (100, 3)), ((100, 3), (0, 0)), ((0, 0), (0, 0)), ((-5, 0), (10, 1))],
)
def test_an_empty_arm_gives_no_difference(
    control: tuple[int, int], variant: tuple[int, int]
) -> None:
    assert (
        sequential.bernoulli_difference(
            control_n=control[0], control_x=control[1], variant_n=variant[0], variant_x=variant[1]
        )
        is None
    )


@pytest.mark.parametrize("events", ["none", "all"])
def test_zero_or_all_events_still_give_an_honest_interval_around_zero(events: str) -> None:
    x = 0 if events == "none" else 5000
    difference = sequential.bernoulli_difference(
        control_n=5000, control_x=x, variant_n=5000, variant_x=x
    )
    assert difference is not None
    look = sequential.step(sequential.State(), difference, tau2=1e-4, alpha=0.05)
    assert look.state.low is not None and look.state.high is not None
    assert look.state.low < 0.0 < look.state.high
    assert look.state.high - look.state.low > 1e-4
    assert look.state.p_value == 1.0


def test_events_outside_zero_to_n_are_clamped() -> None:
    over = sequential.bernoulli_difference(
        control_n=100, control_x=150, variant_n=100, variant_x=-3
    )
    assert over is not None
    assert over.estimate == -1.0
    assert math.isfinite(over.variance)


@pytest.mark.parametrize(
    ("control", "variant"),
    [
        (sequential.Moments(1, 2.0, 4.0), sequential.Moments(1, 3.0, 9.0)),  # no freedom left
        (sequential.Moments(0, 0.0, 0.0), sequential.Moments(50, 10.0, 4.0)),  # empty arm
        (sequential.Moments(50, 50.0, 50.0), sequential.Moments(50, 50.0, 50.0)),  # all equal
        (sequential.Moments(50, math.inf, math.inf), sequential.Moments(50, 1.0, 1.0)),
        (sequential.Moments(50, math.nan, 1.0), sequential.Moments(50, 1.0, 1.0)),
        (sequential.Moments(50, 5e200, math.inf), sequential.Moments(50, 5e200, math.inf)),
    ],
)
def test_values_without_a_usable_variance_give_no_difference(
    control: sequential.Moments, variant: sequential.Moments
) -> None:
    assert sequential.normal_difference(control, variant) is None


def test_negative_and_large_values_give_finite_results() -> None:
    control = sequential.Moments(100, -5e9, 2.6e17)  # mean -5e7, sd about 1e7
    variant = sequential.Moments(100, -4e9, 1.7e17)
    difference = sequential.normal_difference(control, variant)
    assert difference is not None
    look = sequential.step(sequential.State(), difference, tau2=1e12, alpha=0.05)
    assert look.state.low is not None and look.state.high is not None
    assert all(math.isfinite(x) for x in (look.state.low, look.state.high, look.state.p_value))


def test_overwhelming_evidence_gives_p_zero_not_an_overflow() -> None:
    difference = sequential.Difference(estimate=1e150, variance=1e-290)
    look = sequential.step(sequential.State(), difference, tau2=1e-4, alpha=0.05)
    assert look.state.p_value == 0.0
    assert look.state.low is not None and math.isfinite(look.state.low)


def test_a_look_with_no_difference_leaves_the_state_as_it_was() -> None:
    state = sequential.State(p_value=0.2, low=-0.01, high=0.02)
    assert sequential.step(state, None, tau2=1e-4, alpha=0.05) == sequential.Look(state=state)
    unusable = sequential.Difference(estimate=0.01, variance=0.0)
    assert sequential.step(state, unusable, tau2=1e-4, alpha=0.05).state == state


def test_a_mixing_variance_negligible_beside_v_lowers_nothing_and_sets_no_interval() -> None:
    state = sequential.step(
        sequential.State(), sequential.Difference(0.3, 1e10), tau2=1e-300, alpha=0.05
    ).state
    assert state == sequential.State()


@pytest.mark.parametrize(("tau2", "alpha"), [(0.0, 0.05), (-1.0, 0.05), (1e-4, 0.0), (1e-4, 1.0)])
def test_a_mixing_variance_or_alpha_out_of_range_is_refused(tau2: float, alpha: float) -> None:
    with pytest.raises(ValueError):
        sequential.step(
            sequential.State(), sequential.Difference(0.0, 1e-4), tau2=tau2, alpha=alpha
        )


def test_tau_is_the_margin() -> None:
    assert sequential.tau_squared(0.01) == pytest.approx(1e-4)
    with pytest.raises(ValueError):
        sequential.tau_squared(0.0)


def _single_look_power(
    n: int, base: float, difference: float, margin: float, alpha: float
) -> float:
    other = base + difference
    pooled = (base + other) / 2
    width = sequential.half_width(pooled * (1 - pooled) * 2 / n, margin**2, alpha)
    sd = math.sqrt((base * (1 - base) + other * (1 - other)) / n)
    return 1 - statistics.NormalDist(abs(difference), sd).cdf(width)


def test_samples_for_power_is_the_least_n_whose_single_look_reaches_the_power() -> None:
    n = sequential.samples_for_power(0.10, 0.02, margin=0.01, alpha=0.05, power=0.8)
    assert _single_look_power(n, 0.10, 0.02, 0.01, 0.05) >= 0.8
    assert _single_look_power(n - 1, 0.10, 0.02, 0.01, 0.05) < 0.8


def test_always_valid_samples_cost_more_than_a_fixed_horizon_z_test_but_not_thrice() -> None:
    fixed = (1.959964 + 0.841621) ** 2 * (0.1 * 0.9 + 0.12 * 0.88) / 0.02**2
    n = sequential.samples_for_power(0.10, 0.02, margin=0.01)
    assert 1.5 * fixed < n < 3 * fixed


def test_samples_for_power_grows_as_the_difference_shrinks_and_alpha_tightens() -> None:
    base = sequential.samples_for_power(0.10, 0.02, margin=0.01)
    assert sequential.samples_for_power(0.10, 0.01, margin=0.01) > 3 * base
    assert sequential.samples_for_power(0.10, -0.02, margin=0.01) < 1.1 * base
    assert sequential.samples_for_power(0.10, 0.02, margin=0.01, alpha=0.05 / 8) > base


def test_samples_for_mean_power_scales_with_the_variance() -> None:
    one = sequential.samples_for_mean_power(1.0, 0.1)
    assert sequential.samples_for_mean_power(2.0, 0.2) == one  # same standardised effect
    assert sequential.samples_for_mean_power(2.0, 0.1, margin=0.2) > 3 * one


def test_samples_for_power_refuses_impossible_rates() -> None:
    with pytest.raises(ValueError):
        sequential.samples_for_power(0.99, 0.02, margin=0.01)
    with pytest.raises(ValueError):
        sequential.samples_for_power(0.10, 0.0, margin=0.01)


def test_a_state_read_back_from_an_edited_status_keeps_only_what_is_usable() -> None:
    assert sequential.resumed(0.2, -0.1, 0.3) == sequential.State(0.2, -0.1, 0.3)
    assert sequential.resumed(7.0, -0.1, 0.3).p_value == 1.0
    assert sequential.resumed(0.2, 0.3, -0.1) == sequential.State(0.2)  # inverted
    assert sequential.resumed(0.2, -math.inf, 0.3) == sequential.State(0.2)
    assert sequential.resumed(0.2, None, 0.3) == sequential.State(0.2)
