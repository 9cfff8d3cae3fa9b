"""Turn an experiment's cumulative counts into comparisons, verdicts and a one-line summary.

`evaluate` is the whole job: each live variant other than control is compared with control on
each metric by the mixture SPRT (`sequential`), carrying last look's running interval and
least p-value forward, and the sample ratio is checked (`sample_ratio`). Pure: no I/O, no clock.

Verdict of one comparison (variant - control):
- Collecting: either arm has fewer than minSamples requests (feedbacks, for outcome and value).
  The test starts at the first look where both have enough; before that only the estimate is
  shown and nothing is carried forward. Starting later only makes the p-value larger and the
  interval wider, so the guarantee holds; and the normal approximation is poor on a few events.
- Better / Worse: the always-valid p-value is at most alpha' and the confidence sequence lies on
  one side of 0 (at a single look the two say the same thing; after an interval that missed
  the running one, see `sequential.Look`, both must hold). The side and the metric's direction
  say which: lower is better for errorRate and slowRate, higher for outcome and value. A real
  difference smaller than the margin is still Better or Worse: it exists, and the interval
  says how small it is.
- Equivalent: the confidence sequence lies inside ±margin.
- Inconclusive: otherwise.

Several comparisons: Bonferroni, alpha' = (1 - confidence) / m, for the p-values and the confidence
sequences alike so that they agree. m counts every comparison the experiment could make, not
only those shown now: every variant other than control, live or not (a weight change does not
restart the experiment, so a variant at weight 0 may join later), times the metrics named, or
all four when none are (a metric whose data arrive mid-test must not raise the others' alpha' after
the fact). Name the metrics to spend alpha on fewer. Bonferroni rather than Benjamini-Hochberg:
it bounds the chance of any false Better/Worse (what a rollout decision needs), holds at every
look with no assumption about how the comparisons depend on each other (they share the control
arm), and keeps each comparison's interval a plain confidence sequence at level 1 - alpha'.

Overall verdict, in this order: Worse if any comparison is Worse (a regression anywhere blocks
a rollout); Better if any is Better; Collecting if any is still Collecting (or there is nothing
to compare yet); Equivalent if all are Equivalent; else Inconclusive.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from kubeserve.api import spec, status
from kubeserve.experiment import sample_ratio, sequential

LOWER_IS_BETTER: frozenset[spec.Metric] = frozenset({"errorRate", "slowRate"})
RATE_METRICS: frozenset[spec.Metric] = frozenset({"errorRate", "slowRate", "outcome"})
SUMMARY_LIMIT = 200
_UNITS: dict[spec.Metric, str] = {
    "errorRate": "requests",
    "slowRate": "requests",
    "outcome": "outcome feedbacks",
    "value": "value feedbacks",
}


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The result of one look at an experiment."""

    comparisons: list[status.Comparison]  # one per (non-control live variant, metric)
    verdict: status.Verdict  # the overall verdict
    summary: str  # one line, e.g. "v2 better on outcome: +1.9pp [0.4, 3.3], p=0.004"
    sample_ratio: status.SampleRatio


@dataclasses.dataclass(frozen=True)
class _Outcome:
    comparison: status.Comparison
    disagreed: bool = False


def family_size(experiment: spec.Experiment, weights: Mapping[str, int]) -> int:
    """Give m, the number of comparisons the Bonferroni correction divides alpha among."""
    variants = sum(1 for name in weights if name != experiment.control)
    metrics = len(experiment.metrics) if experiment.metrics else len(spec.METRICS)
    return max(1, variants) * metrics


def samples(counts: status.VariantCounts, metric: spec.Metric) -> int:
    """Give a variant's sample size for a metric: requests, or feedbacks of that kind."""
    if metric == "outcome":
        return max(0, counts.feedback)
    if metric == "value":
        return max(0, counts.values)
    return max(0, counts.requests)


def events(counts: status.VariantCounts, metric: spec.Metric) -> int:
    """Give a variant's events of a rate metric: errors, slow requests or positive outcomes."""
    if metric == "errorRate":
        return counts.errors
    if metric == "slowRate":
        return counts.slow
    return counts.positives


def moments(counts: status.VariantCounts) -> sequential.Moments:
    """Give a variant's value feedback as the test reads it: count, sum, sum of squares."""
    return sequential.Moments(
        count=max(0, counts.values), total=counts.value_sum, squares=counts.value_squares
    )


def rate(counts: status.VariantCounts, metric: spec.Metric) -> float | None:
    """Give a variant's rate of a metric (its mean, for value), or None with no sample yet."""
    n = samples(counts, metric)
    if n <= 0:
        return None
    if metric == "value":
        return moments(counts).mean()
    return events(counts, metric) / n


def metrics_with_data(
    control: status.VariantCounts, compared: Sequence[status.VariantCounts]
) -> list[spec.Metric]:
    """Give the metrics to compare when none are named.

    errorRate and slowRate always (their data are the requests themselves: with none yet the
    comparisons say Collecting); outcome and value once control and a compared variant have
    feedback of that kind.
    """
    chosen: list[spec.Metric] = []
    for metric in spec.METRICS:
        if metric in ("errorRate", "slowRate") or (
            samples(control, metric) > 0 and any(samples(c, metric) > 0 for c in compared)
        ):
            chosen.append(metric)
    return chosen


def difference(
    metric: spec.Metric, control: status.VariantCounts, variant: status.VariantCounts
) -> sequential.Difference | None:
    """Give (variant - control) on a metric and its variance; None when the test has no data."""
    if metric == "value":
        return sequential.normal_difference(moments(control), moments(variant))
    return sequential.bernoulli_difference(
        control_n=samples(control, metric),
        control_x=events(control, metric),
        variant_n=samples(variant, metric),
        variant_x=events(variant, metric),
    )


def _estimate(
    metric: spec.Metric, control: status.VariantCounts, variant: status.VariantCounts
) -> float | None:
    found = difference(metric, control, variant)
    if found is not None:
        return found.estimate
    if metric == "value":
        # No usable variance (say, every value equal) still leaves a difference of means.
        mean_c, mean_v = moments(control).mean(), moments(variant).mean()
        if mean_c is not None and mean_v is not None and math.isfinite(mean_v - mean_c):
            return mean_v - mean_c
    return None


def margin_of(
    margins: spec.Margins,
    metric: spec.Metric,
    control: status.VariantCounts,
    variant: status.VariantCounts,
) -> float | None:
    """Give the practical margin of a metric; for value with none set, 0.1 pooled SD (or None)."""
    if metric == "errorRate":
        return margins.error_rate
    if metric == "slowRate":
        return margins.slow_rate
    if metric == "outcome":
        return margins.outcome
    if margins.value is not None:
        return margins.value
    return sequential.default_value_margin(moments(control), moments(variant))


def _carried(before: status.Comparison | None) -> sequential.State:
    """Give the state a previous look left, or a fresh one if it had not started the test."""
    if before is None or before.verdict == "Collecting":
        return sequential.State()
    return sequential.resumed(before.p_value, before.low, before.high)


def _verdict(
    state: sequential.State, metric: spec.Metric, margin: float | None, alpha: float
) -> status.Verdict:
    if state.low is None or state.high is None:
        return "Inconclusive"
    direction = sequential.side(state, alpha)
    if direction:
        return "Worse" if (direction > 0) == (metric in LOWER_IS_BETTER) else "Better"
    if margin is not None and -margin <= state.low and state.high <= margin:
        return "Equivalent"
    return "Inconclusive"


def _compare(
    experiment: spec.Experiment,
    *,
    name: str,
    metric: spec.Metric,
    control: status.VariantCounts,
    variant: status.VariantCounts,
    before: status.Comparison | None,
    alpha: float,
) -> _Outcome:
    fewest = min(samples(control, metric), samples(variant, metric))
    estimate = _estimate(metric, control, variant)
    if fewest < experiment.min_samples:
        return _Outcome(
            status.Comparison(variant=name, metric=metric, samples=fewest, estimate=estimate)
        )
    margin = margin_of(experiment.margin, metric, control, variant)
    state = _carried(before)
    if margin is None:
        look = sequential.Look(state=state)
    else:
        look = sequential.step(
            state,
            difference(metric, control, variant),
            tau2=sequential.tau_squared(margin),
            alpha=alpha,
        )
    return _Outcome(
        status.Comparison(
            variant=name,
            metric=metric,
            samples=fewest,
            estimate=estimate,
            low=look.state.low,
            high=look.state.high,
            p_value=look.state.p_value,
            verdict=_verdict(look.state, metric, margin, alpha),
        ),
        disagreed=look.disagreed,
    )


def overall(comparisons: Sequence[status.Comparison]) -> status.Verdict:
    """Roll the comparisons' verdicts into one (see the module docstring for the order)."""
    verdicts = {c.verdict for c in comparisons}
    if not verdicts:
        return "Collecting"
    if "Worse" in verdicts:
        return "Worse"
    if "Better" in verdicts:
        return "Better"
    if "Collecting" in verdicts:
        return "Collecting"
    return "Equivalent" if verdicts == {"Equivalent"} else "Inconclusive"


def _decimals(width: float) -> int:
    if not (width > 0.0 and math.isfinite(width)):
        return 1
    return min(6, max(1, 1 - math.floor(math.log10(width))))


def _p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def describe(comparison: status.Comparison) -> str:
    """Say one comparison in words: `v2 better on outcome: +1.9pp [0.4, 3.3], p=0.004`.

    Rates in percentage points, values in their own units.
    """
    metric = comparison.metric
    scale, unit = (100.0, "pp") if metric in RATE_METRICS else (1.0, "")
    head = f"{comparison.variant} {comparison.verdict.lower()} on {metric}"
    if comparison.estimate is None:
        return head
    estimate = comparison.estimate * scale
    low, high = comparison.low, comparison.high
    if low is None or high is None:
        digits = _decimals(abs(estimate) / 10.0)
        return f"{head}: {estimate:+.{digits}f}{unit}"
    low, high = low * scale, high * scale
    if max(abs(low), abs(high), abs(estimate)) >= 1e6:
        return (
            f"{head}: {estimate:+.3g}{unit} [{low:.3g}, {high:.3g}], {_p_text(comparison.p_value)}"
        )
    digits = _decimals(high - low)
    return (
        f"{head}: {estimate:+.{digits}f}{unit} [{low:.{digits}f}, {high:.{digits}f}], "
        f"{_p_text(comparison.p_value)}"
    )


def _metric(name: str) -> spec.Metric:
    for metric in spec.METRICS:
        if metric == name:
            return metric
    raise ValueError(f"unknown metric {name!r}")


def _names(items: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys(items))


def _collecting_text(
    experiment: spec.Experiment,
    collecting: Sequence[status.Comparison],
    variants: Mapping[str, status.VariantCounts],
) -> str:
    empty = status.VariantCounts()
    least = min(collecting, key=lambda c: c.samples)
    metric = _metric(least.metric)
    control_n = samples(variants.get(experiment.control, empty), metric)
    variant_n = samples(variants.get(least.variant, empty), metric)
    who = least.variant if variant_n <= control_n else f"control {experiment.control}"
    return f"collecting: {who} has {least.samples} of {experiment.min_samples} {_UNITS[metric]}"


def _summary(
    experiment: spec.Experiment,
    outcomes: Sequence[_Outcome],
    verdict: status.Verdict,
    variants: Mapping[str, status.VariantCounts],
    ratio: status.SampleRatio,
) -> str:
    comparisons = [o.comparison for o in outcomes]
    if not comparisons:
        text = f"collecting: no variant besides control {experiment.control} takes live traffic"
    elif verdict in ("Worse", "Better"):
        decided = sorted((c for c in comparisons if c.verdict == verdict), key=lambda c: c.p_value)
        text = describe(decided[0])
        others = sum(1 for c in comparisons if c.verdict in ("Better", "Worse")) - 1
        if others:
            text += f" (+{others} more decided)"
    elif verdict == "Collecting":
        text = _collecting_text(
            experiment, [c for c in comparisons if c.verdict == "Collecting"], variants
        )
    elif verdict == "Equivalent":
        text = (
            f"{_names([c.variant for c in comparisons])} equivalent to {experiment.control} "
            f"on {_names([c.metric for c in comparisons])} (within the margins)"
        )
    else:
        open_ = [c for c in comparisons if c.verdict == "Inconclusive"]
        text = f"no difference yet on {_names([c.metric for c in open_])}"
        if len({c.variant for c in comparisons}) > 1:
            text += f" ({_names([c.variant for c in open_])})"
        same = [c for c in comparisons if c.verdict == "Equivalent"]
        if same:
            text += f"; equivalent on {_names([c.metric for c in same])}"
    if ratio.mismatch:
        text = f"sample ratio mismatch ({_p_text(ratio.p_value)}), the split is off: " + text
    changed = [o.comparison for o in outcomes if o.disagreed]
    if changed:
        text += (
            f"; {changed[0].variant} {changed[0].metric}: interval moved outside the earlier "
            "ones (difference changing over time?)"
        )
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


def evaluate(
    experiment: spec.Experiment,
    variants: Mapping[str, status.VariantCounts],
    weights: Mapping[str, int],
    previous: Sequence[status.Comparison],
) -> Evaluation:
    """Compare every live variant with control on each metric; give verdicts and a summary.

    `variants`: each variant's cumulative counts since the experiment started (a variant
    missing counts as all zeros). `weights`: every variant's live weight now, 0 for those
    that take no live traffic; the variants with weight > 0 other than control are compared,
    and every variant named here other than control counts in the correction (see the module
    docstring). `previous`: last look's comparisons, matched by (variant, metric); one
    absent, or still Collecting then, starts afresh.
    """
    empty = status.VariantCounts()
    control = variants.get(experiment.control, empty)
    compared = [
        name for name, weight in weights.items() if weight > 0 and name != experiment.control
    ]
    metrics = experiment.metrics or metrics_with_data(
        control, [variants.get(name, empty) for name in compared]
    )
    alpha = (1.0 - experiment.confidence) / family_size(experiment, weights)
    before = {(c.variant, c.metric): c for c in previous}
    outcomes = [
        _compare(
            experiment,
            name=name,
            metric=metric,
            control=control,
            variant=variants.get(name, empty),
            before=before.get((name, metric)),
            alpha=alpha,
        )
        for name in compared
        for metric in metrics
    ]
    comparisons = [o.comparison for o in outcomes]
    verdict = overall(comparisons)
    ratio = sample_ratio.check(variants, weights)
    return Evaluation(
        comparisons=comparisons,
        verdict=verdict,
        summary=_summary(experiment, outcomes, verdict, variants, ratio),
        sample_ratio=ratio,
    )
