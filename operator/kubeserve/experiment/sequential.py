"""Compare two arms at every look without paying for peeking: the mixture SPRT.

The test is the mixture sequential probability ratio test of Johari, Koomen, Pekelis and Walsh
("Peeking at A/B tests", KDD 2017; "Always valid inference", Operations Research 70(3), 2022).
At each look it reduces the cumulative counts to the estimate of the difference
Δ̂ = (variant - control) and its variance V, and computes the likelihood ratio of "the
difference is θ, with θ ~ N(0, τ²)" against "the difference is 0":

    Λ = sqrt(V / (V + τ²)) · exp(τ² Δ̂² / (2 V (V + τ²)))

Under no difference Λ is a martingale with mean 1, so by Ville's inequality it ever reaches
1/alpha with probability at most alpha, however often it is read. Hence the always-valid p-value
p_t = min(p_{t-1}, 1/Λ_t), and its dual, the confidence sequence of the values θ₀ the test does
not reject:

    Δ̂ ± sqrt(V (V + τ²) / τ² · (2 ln(1/alpha) + ln((V + τ²) / V)))

which holds the true difference at every look at once with probability 1 - alpha; the running
intersection over looks does too, and only ever shrinks.

Why weight changes between looks are fine: for normal data with a known variance s², Λ is
exactly the likelihood ratio of the data's location-invariant part (integrate the common mean
out with a flat prior and what is left is N(Δ̂; θ, V) with V = s²(1/n_A + 1/n_B), whatever the
split), so it stays a martingale however the allocation moves, as long as each weight is set
before the data it applies to arrive. The Bernoulli and unknown-variance versions plug in the
pooled variance, the test's large-sample approximation; `simulation` checks the false-positive
rate with the weights ramping from 5% to 50% (tests/unit/experiment, docs/experiments.md).

Variances:
- rates (Bernoulli): V = p̄(1 - p̄)(1/n_A + 1/n_B), with p̄ pooled over both arms under the null,
  counted with one success and one failure added (Laplace). That never makes V smaller (p̄ moves
  towards ½), changes nothing that matters at hundreds of events, and keeps zero counts (no
  errors yet in either arm) from claiming a zero-width interval at 0.
- values (normal): V = s²(1/n_A + 1/n_B) with s² the pooled sample variance around each arm's
  own mean, from the counts, sums and sums of squares.

The mixing variance: τ = the practical margin (`tau_squared(margin)`). For an effect δ and the
sample size at which a look detects it with 80% power (`samples_for_power`), the boundary is
crossed soonest for τ ≈ 0.7-0.8 δ at every alpha from 0.05 to 0.001; τ = δ needs at most 1.2%
more samples, τ = δ/2 (an effect twice the margin) under 3%, anything from δ/2 to 1.5δ under
6%. So τ = margin is all but the best test for effects of about the margin's size, the ones that
matter; tests/unit/experiment and docs/experiments.md check the power by simulation. The
calcTau.R rule of the mixtureSPRT package, τ² = s²Φ(-b)/(φ(b)/b - Φ(-b)) with
b = 2 ln(1/alpha)/√(M s²), needs the experiment's maximum sample size M, which an open-ended
A/B test does not have.
For `value` with no margin set, the margin is 0.1 pooled standard deviation, so τ is a prior on
the standardised difference (Cohen's d, τ = 0.1) and Λ depends on the data only through Δ̂/s,
like a t statistic.

Degenerate inputs (an empty arm, a single value, no spread at all, sums that overflowed) give no
`Difference`: the look carries no information and the state passes through unchanged. Nothing
here returns NaN or an infinity in a state.
"""

from __future__ import annotations

import dataclasses
import math

# The largest variance the test works with: beyond it sums of squares have lost every digit
# that matters, and V + τ² may overflow.
_MAX_VARIANCE = 1e300
# The smallest: below it V (V + τ²) / τ² underflows.
_MIN_VARIANCE = 1e-300
# The standardised margin for values when none is given: a tenth of a standard deviation.
DEFAULT_VALUE_MARGIN_SDS = 0.1


@dataclasses.dataclass(frozen=True)
class Difference:
    """One look's estimate of (variant - control) and the variance V of that estimate."""

    estimate: float
    variance: float


@dataclasses.dataclass(frozen=True)
class Moments:
    """One arm's numeric observations: how many, their sum and the sum of their squares."""

    count: int
    total: float
    squares: float

    def mean(self) -> float | None:
        """Give the mean, or None with no observations or sums that are not finite."""
        if self.count <= 0 or not math.isfinite(self.total):
            return None
        return self.total / self.count

    def spread(self) -> float | None:
        """Give the sum of squared deviations from the mean (never negative), or None."""
        mean = self.mean()
        if mean is None or not math.isfinite(self.squares):
            return None
        # Rounding can take squares - total·mean a little below zero when all values are equal.
        spread = max(0.0, self.squares - self.total * mean)
        return spread if math.isfinite(spread) else None


@dataclasses.dataclass(frozen=True)
class State:
    """What the test carries from one look to the next: the least p-value, the running interval.

    A fresh state (p = 1, no interval) is where every comparison starts.
    """

    p_value: float = 1.0
    low: float | None = None
    high: float | None = None


def resumed(p_value: float, low: float | None, high: float | None) -> State:
    """Give the state a previous look left, read back from status (which anyone can edit).

    A p-value outside [0, 1] reads as 1; an interval not finite, or inverted, is dropped.
    """
    p = p_value if 0.0 <= p_value <= 1.0 else 1.0
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return State(p_value=p)
    if low > high:
        return State(p_value=p)
    return State(p_value=p, low=low, high=high)


@dataclasses.dataclass(frozen=True)
class Look:
    """The state after one look, and whether this look's interval missed the running one.

    `disagreed` is the honest report of an empty intersection: the new look's interval lies
    wholly outside everything seen before. With a constant difference that happens with
    probability at most alpha; more often it means the difference changed over time (a novelty
    effect, a change in the variants mid-test). The running interval is then replaced by this
    look's, which summarises all the data so far; the p-value keeps its minimum (it never
    rises), so a comparison can show a small p-value with an interval around 0 — the verdict
    reads both and calls that Inconclusive.
    """

    state: State
    disagreed: bool = False


def _usable_variance(variance: float) -> bool:
    return math.isfinite(variance) and _MIN_VARIANCE <= variance <= _MAX_VARIANCE


def _check(*, tau2: float, alpha: float) -> None:
    if not (tau2 > 0.0 and math.isfinite(tau2)):
        raise ValueError(f"the mixing variance must be positive and finite, not {tau2!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, not {alpha!r}")


def bernoulli_difference(
    *, control_n: int, control_x: int, variant_n: int, variant_x: int
) -> Difference | None:
    """Give (variant rate - control rate) and its pooled variance, or None for an empty arm.

    Counts of events above the number of trials (a collection skew) are taken as the number of
    trials, negative ones as zero.
    """
    if control_n <= 0 or variant_n <= 0:
        return None
    control_x = min(max(control_x, 0), control_n)
    variant_x = min(max(variant_x, 0), variant_n)
    estimate = variant_x / variant_n - control_x / control_n
    pooled = (control_x + variant_x + 1) / (control_n + variant_n + 2)
    variance = pooled * (1.0 - pooled) * (1.0 / control_n + 1.0 / variant_n)
    if not (math.isfinite(estimate) and _usable_variance(variance)):
        return None
    return Difference(estimate=estimate, variance=variance)


def pooled_standard_deviation(control: Moments, variant: Moments) -> float | None:
    """Give the pooled sample standard deviation of two arms, or None when it is undefined."""
    spread_c, spread_v = control.spread(), variant.spread()
    freedom = control.count + variant.count - 2
    if spread_c is None or spread_v is None or freedom <= 0:
        return None
    sd = math.sqrt((spread_c + spread_v) / freedom)
    return sd if math.isfinite(sd) else None


def default_value_margin(control: Moments, variant: Moments) -> float | None:
    """Give the margin for values when none is set: 0.1 pooled SD, or None with no spread."""
    sd = pooled_standard_deviation(control, variant)
    if sd is None:
        return None
    margin = DEFAULT_VALUE_MARGIN_SDS * sd
    return margin if margin > 0.0 and math.isfinite(margin * margin) else None


def normal_difference(control: Moments, variant: Moments) -> Difference | None:
    """Give (variant mean - control mean) and its variance from the pooled sample variance.

    None when either arm is empty, there is no degree of freedom left for the variance, the
    values do not vary at all, or the sums are not finite.
    """
    mean_c, mean_v = control.mean(), variant.mean()
    sd = pooled_standard_deviation(control, variant)
    if mean_c is None or mean_v is None or sd is None:
        return None
    estimate = mean_v - mean_c
    variance = sd * sd * (1.0 / control.count + 1.0 / variant.count)
    if not (math.isfinite(estimate) and _usable_variance(variance)):
        return None
    return Difference(estimate=estimate, variance=variance)


def tau_squared(margin: float) -> float:
    """Give the mixing variance for a practical margin: τ = margin (see the module docstring)."""
    if not (margin > 0 and math.isfinite(margin)):
        raise ValueError(f"a margin must be positive and finite, not {margin!r}")
    return margin * margin


def log_likelihood_ratio(difference: Difference, tau2: float) -> float:
    """Give ln Λ, the mixture likelihood ratio of a difference with variance V against none.

    Written as -½ ln(1 + τ²/V) + (Δ̂²/2V) · τ²/(V + τ²), which stays finite-or-+inf where the
    textbook form would overflow; +inf means overwhelming evidence.
    """
    v = difference.variance
    if not (math.isfinite(difference.estimate) and _usable_variance(v)):
        return 0.0
    z = difference.estimate / math.sqrt(v)
    shrink = tau2 / (v + tau2)
    if shrink == 0.0:
        return 0.0
    penalty = 0.5 * (math.log(v + tau2) - math.log(v))
    return 0.5 * z * z * shrink - penalty


def p_value(difference: Difference, tau2: float) -> float:
    """Give 1/Λ capped at 1: this look's always-valid p-value before the running minimum."""
    log_ratio = log_likelihood_ratio(difference, tau2)
    if math.isnan(log_ratio) or log_ratio <= 0.0:
        return 1.0
    return math.exp(-log_ratio)


def half_width(variance: float, tau2: float, alpha: float) -> float:
    """Give the half-width of the confidence sequence at this look; +inf where τ²/V underflows."""
    _check(tau2=tau2, alpha=alpha)
    ratio = tau2 / variance
    if ratio == 0.0:
        return math.inf
    return math.sqrt(variance) * math.sqrt(
        (1.0 + 1.0 / ratio) * (2.0 * math.log(1.0 / alpha) + math.log1p(ratio))
    )


def step(state: State, difference: Difference | None, *, tau2: float, alpha: float) -> Look:
    """Take one look: lower the p-value to 1/Λ if that is less, intersect the intervals.

    With no difference (a degenerate look) the state passes through unchanged.
    """
    _check(tau2=tau2, alpha=alpha)
    if difference is None or not (
        math.isfinite(difference.estimate) and _usable_variance(difference.variance)
    ):
        return Look(state=state)
    p = min(state.p_value, p_value(difference, tau2))
    width = half_width(difference.variance, tau2, alpha)
    if not math.isfinite(width):
        return Look(state=dataclasses.replace(state, p_value=p))
    low, high = difference.estimate - width, difference.estimate + width
    if state.low is None or state.high is None:
        return Look(state=State(p_value=p, low=low, high=high))
    running_low, running_high = max(state.low, low), min(state.high, high)
    if running_low > running_high:
        return Look(state=State(p_value=p, low=low, high=high), disagreed=True)
    return Look(state=State(p_value=p, low=running_low, high=running_high))


def side(state: State, alpha: float) -> int:
    """Give +1 or -1 when the test has decided the difference is above or below 0, else 0.

    Decided means the least p-value is at most alpha and the running interval lies on that side
    of 0; at a single look these are the same condition (Λ >= 1/alpha exactly when the interval
    excludes 0), and after a look that disagreed both must still hold.
    """
    if state.low is None or state.high is None or state.p_value > alpha:
        return 0
    if state.low > 0.0:
        return 1
    if state.high < 0.0:
        return -1
    return 0


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _power_at(
    n: float, *, difference: float, null_spread: float, spread: float, tau2: float, alpha: float
) -> float:
    """Give the chance that a single look with n per arm rejects, by the normal approximation."""
    variance = null_spread * 2.0 / n
    boundary = half_width(variance, tau2, alpha)
    sd = math.sqrt(spread * 2.0 / n)
    effect = abs(difference)
    return _normal_cdf((effect - boundary) / sd) + _normal_cdf((-effect - boundary) / sd)


def _samples_for(
    *, difference: float, null_spread: float, spread: float, tau2: float, alpha: float, power: float
) -> int:
    if difference == 0.0 or not 0.0 < power < 1.0:
        raise ValueError("a power needs a difference other than 0 and a power between 0 and 1")

    def enough(n: int) -> bool:
        return (
            _power_at(
                n,
                difference=difference,
                null_spread=null_spread,
                spread=spread,
                tau2=tau2,
                alpha=alpha,
            )
            >= power
        )

    high = 2
    while not enough(high):
        high *= 2
        if high > 10**15:
            raise ValueError("no sample size below 10^15 per arm reaches that power")
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle
    return high


def samples_for_power(
    base_rate: float, difference: float, *, margin: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Give the samples per arm at which the test detects a rate difference with this power.

    This is "the sample size the test reports": the smallest n per arm (equal split) at which
    one look at n alone rejects with probability `power`, by the normal approximation, with
    τ = margin and the level `alpha` (already divided for several comparisons, if any). Looks
    before n only add chances to reject, so a test looked at all along reaches at least this
    power by n; tests/unit/experiment checks it by simulation.
    """
    rate_b = base_rate + difference
    if not (0.0 < base_rate < 1.0 and 0.0 < rate_b < 1.0):
        raise ValueError("both rates must lie strictly between 0 and 1")
    pooled = (base_rate + rate_b) / 2.0
    return _samples_for(
        difference=difference,
        null_spread=pooled * (1.0 - pooled),
        spread=(base_rate * (1.0 - base_rate) + rate_b * (1.0 - rate_b)) / 2.0,
        tau2=tau_squared(margin),
        alpha=alpha,
        power=power,
    )


def samples_for_mean_power(
    standard_deviation: float,
    difference: float,
    *,
    margin: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Give the samples per arm at which the test detects a difference of means with this power.

    As `samples_for_power`, for `value`: both arms with this standard deviation, τ = margin or,
    with none, a tenth of the standard deviation.
    """
    if not (standard_deviation > 0 and math.isfinite(standard_deviation)):
        raise ValueError("the standard deviation must be positive and finite")
    if margin is None:
        margin = DEFAULT_VALUE_MARGIN_SDS * standard_deviation
    variance = standard_deviation * standard_deviation
    return _samples_for(
        difference=difference,
        null_spread=variance,
        spread=variance,
        tau2=tau_squared(margin),
        alpha=alpha,
        power=power,
    )
