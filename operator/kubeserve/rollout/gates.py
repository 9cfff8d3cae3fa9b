"""Judge the candidate against the baseline on each of a rollout's gates, at every look.

Each gate compares the cumulative counts since the rollout started with the experiment's
sequential test (`experiment.sequential`, the mixture SPRT): its confidence sequence for
(candidate - baseline) holds the true difference at every look at once, so checking at every
interval costs no validity. The level is the rollout's confidence split over the gates by
Bonferroni, alpha' = (1 - confidence) / gates: a rollback needs the chance of any false alarm
bounded, whatever the gates' dependence (they share the same requests).

Result of one gate, in this order:
- Collecting: either arm has no sample for the metric yet (no requests; no feedback of the
  kind for outcome and value).
- Harm: the confidence sequence lies entirely beyond `maxIncrease` in the harmful direction:
  above it for errorRate and slowRate (higher is worse), below -maxIncrease for outcome and
  value (lower is worse). The rollout rolls back (or pauses) at once.
- OverMax: the candidate's own rate (or mean) is above the gate's absolute `max`: a failed
  check, counted by the caller.
- Pass: otherwise.

The mixing variance: τ = maxIncrease (the test is most powerful for differences about that
size, the ones that matter here); with maxIncrease 0, the experiment's default margin for the
metric (`spec.Margins`), and for `value` a tenth of the pooled standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from kubeserve.api import spec, status
from kubeserve.experiment import sequential, verdicts

HIGHER_IS_HARM: frozenset[spec.Metric] = verdicts.LOWER_IS_BETTER
Result = Literal["Collecting", "Pass", "Harm", "OverMax"]
DIGITS = 6  # significant digits of the displayed rates and estimate (the test's state is exact)


def mixing_margin(
    gate: spec.Gate, baseline: status.VariantCounts, candidate: status.VariantCounts
) -> float | None:
    """Give the margin τ is set from (see the module docstring); None when value has no spread."""
    if gate.max_increase > 0:
        return gate.max_increase
    return verdicts.margin_of(spec.Margins(), gate.metric, baseline, candidate)


def _carried(before: status.GateResult | None) -> sequential.State:
    if before is None or before.result == "Collecting":
        return sequential.State()
    return sequential.resumed(before.p_value, before.low, before.high)


def is_harm(
    metric: spec.Metric, max_increase: float, low: float | None, high: float | None
) -> bool:
    """Tell whether an interval of (candidate - baseline) lies entirely beyond the tolerance."""
    if low is None or high is None:
        return False
    if metric in HIGHER_IS_HARM:
        return low > max_increase
    return high < -max_increase


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return value
    return float(f"{value:.{DIGITS}g}")


def _judge(
    gate: spec.Gate,
    baseline: status.VariantCounts,
    candidate: status.VariantCounts,
    before: status.GateResult | None,
    alpha: float,
) -> status.GateResult:
    metric = gate.metric
    base_rate, cand_rate = verdicts.rate(baseline, metric), verdicts.rate(candidate, metric)
    over = gate.max is not None and cand_rate is not None and cand_rate > gate.max
    if base_rate is None or cand_rate is None:
        # No comparison without both arms; the absolute limit needs the candidate only.
        return status.GateResult(
            metric=metric,
            baseline=_round(base_rate),
            candidate=_round(cand_rate),
            result="OverMax" if over else "Collecting",
        )
    difference = verdicts.difference(metric, baseline, candidate)
    margin = mixing_margin(gate, baseline, candidate)
    state = _carried(before)
    if margin is not None:
        state = sequential.step(
            state, difference, tau2=sequential.tau_squared(margin), alpha=alpha
        ).state
    outcome: Result = "Pass"
    if is_harm(metric, gate.max_increase, state.low, state.high):
        outcome = "Harm"
    elif over:
        outcome = "OverMax"
    return status.GateResult(
        metric=metric,
        baseline=_round(base_rate),
        candidate=_round(cand_rate),
        estimate=_round(difference.estimate if difference else cand_rate - base_rate),
        low=state.low,
        high=state.high,
        p_value=state.p_value,
        result=outcome,
    )


def evaluate(
    rollout: spec.Rollout,
    baseline: status.VariantCounts,
    candidate: status.VariantCounts,
    previous: Sequence[status.GateResult] | None,
) -> list[status.GateResult]:
    """Judge every gate of `rollout` on the counts since it started; one result per gate.

    `previous`: last look's results, matched by metric (a rollout names each metric once),
    whose running interval and least p-value carry forward; none at the rollout's start.
    """
    gates = rollout.effective_gates()
    alpha = (1.0 - rollout.confidence) / len(gates)
    before = {g.metric: g for g in previous or []}
    return [_judge(g, baseline, candidate, before.get(g.metric), alpha) for g in gates]


def describe(result: status.GateResult) -> str:
    """Say one gate in words: `errorRate +0.03pp [-0.10, +0.20]` (values in their own units)."""
    scale, unit = (100.0, "pp") if result.metric in verdicts.RATE_METRICS else (1.0, "")
    if result.estimate is None:
        return f"{result.metric} collecting"
    estimate = result.estimate * scale
    if result.low is None or result.high is None:
        return f"{result.metric} {estimate:+.2f}{unit}"
    low, high = result.low * scale, result.high * scale
    if max(abs(low), abs(high), abs(estimate)) >= 1e6:
        return f"{result.metric} {estimate:+.3g}{unit} [{low:+.3g}, {high:+.3g}]"
    return f"{result.metric} {estimate:+.2f}{unit} [{low:+.2f}, {high:+.2f}]"
