"""One look at an experiment: pod readings in, the new status.experiment out. Pure: no I/O.

The operator (and `kubeserve up`) read every live variant's pods at each interval and call
`look` with the previous status; it adds the readings to the counts (see `accumulate`),
asks the sequential test for the verdicts (`verdicts.evaluate`), and gives the new
status.experiment, its two conditions and the Events to post. Everything the next look
needs is in the status it gives, so a restarted operator continues where it was.

A look that counted nothing new gives the previous status.experiment unchanged, to the
byte and with its lastCollected: an idle experiment costs no status writes.

The experiment starts again (a new startTime, counts from zero, every pod's counters a
baseline) when `config` changes: a fingerprint of spec.experiment and of the variants'
names and models. Weights are not in it: changing the split does not restart a test.

A look may have read nothing (`looked` None: the operator looks at once when the experiment
starts again, without reading the pods). The counts and every pod's last counters then stay
as they were; when it starts the experiment again, the last counters read stay the
baselines if they are at most one interval old (`_baselines`): the new experiment then takes
in what the pods served since they were read, rather than lose what they serve until the
next reading.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from kubeserve.api import spec, status
from kubeserve.experiment import accumulate, readings, verdicts

CONCLUSIVE, SAMPLE_RATIO = "ExperimentConclusive", "SampleRatioMismatch"
CONDITIONS = frozenset({CONCLUSIVE, SAMPLE_RATIO})
CONCLUSIVE_VERDICTS = frozenset({"Better", "Worse", "Equivalent"})
# Event reasons: a verdict change is "Verdict<verdict>"; these are Warnings, the rest Normal.
RESTARTED = "ExperimentRestarted"
WARNING_REASONS = frozenset({"VerdictWorse", SAMPLE_RATIO})
MAX_HISTORY_POINTS = 100
MAX_HISTORY_ESTIMATES = 2000
DIGITS = 6  # significant digits of rates, latencies and history: small, stable statuses


@dataclasses.dataclass(frozen=True)
class Look:
    """The outcome of one look: the new status.experiment (wire form), its conditions, Events."""

    experiment: dict[str, Any]
    conditions: list[dict[str, Any]]
    events: list[tuple[str, str]]  # (reason, message)

    def apply(self, status_: Mapping[str, Any]) -> dict[str, Any]:
        """Give `status_` with this look's experiment and conditions in place of the old ones."""
        out = dict(status_)
        out["experiment"] = self.experiment
        mine = {c["type"]: c for c in self.conditions}
        conditions = [mine.pop(c.get("type"), c) for c in status_.get("conditions") or []]
        out["conditions"] = conditions + list(mine.values())
        return out


def without_experiment(status_: Mapping[str, Any]) -> dict[str, Any]:
    """Give `status_` without status.experiment and its conditions (spec.experiment removed)."""
    out = {k: v for k, v in status_.items() if k != "experiment"}
    if "conditions" in status_:
        out["conditions"] = [
            c for c in status_.get("conditions") or [] if c.get("type") not in CONDITIONS
        ]
    return out


def fingerprint(isvc: spec.InferenceService) -> str:
    """Give what restarts the experiment when it changes: spec.experiment, variants, models."""
    assert isvc.spec.experiment is not None
    what = {
        "experiment": isvc.spec.experiment.to_wire(),
        "variants": sorted((v.name, v.model.storage_uri) for v in isvc.spec.variants),
    }
    text = json.dumps(what, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def starts_again(isvc: spec.InferenceService, previous: Mapping[str, Any] | None) -> bool:
    """Tell whether the next look starts the experiment (again): none yet, or a new config."""
    before = _previous(previous)
    return isvc.spec.experiment is not None and (
        before is None or before.start_time is None or before.config != fingerprint(isvc)
    )


def slow_bucket(threshold_seconds: float) -> int:
    """Give the index of the smallest latency bound at or above the threshold."""
    for i, bound in enumerate(readings.BOUNDS[:-1]):
        if bound >= threshold_seconds - 1e-12:
            return i
    return len(readings.BOUNDS) - 2  # above the largest finite bound: validation refuses it


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return value
    return float(f"{value:.{DIGITS}g}")


def quantile(buckets: Sequence[float], q: float) -> float | None:
    """Interpolate a quantile in per-bucket counts, as Prometheus' histogram_quantile does."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    below = 0.0
    for i, count in enumerate(buckets):
        if count > 0 and below + count >= rank:
            upper = readings.BOUNDS[i]
            lower = readings.BOUNDS[i - 1] if i else 0.0
            if math.isinf(upper):
                return lower  # above the largest bound: that bound is all that is known
            return lower + (upper - lower) * (rank - below) / count
        below += count
    return readings.BOUNDS[-2]


def with_rates(counts: status.VariantCounts) -> status.VariantCounts:
    """Fill in what the counts say: the rates, the value mean and the latency quantiles."""

    def ratio(x: float, n: int) -> float | None:
        return _round(x / n) if n else None

    buckets = counts.latency_buckets or []
    latency = None
    if sum(buckets) > 0:
        latency = status.Latency(
            p50=_round(quantile(buckets, 0.5)),
            p95=_round(quantile(buckets, 0.95)),
            p99=_round(quantile(buckets, 0.99)),
        )
    return counts.model_copy(
        update={
            "error_rate": ratio(counts.errors, counts.requests),
            "slow_rate": ratio(counts.slow, counts.requests),
            "outcome_rate": ratio(counts.positives, counts.feedback),
            "value_mean": ratio(counts.value_sum, counts.values),
            "latency": latency,
        }
    )


def _baselines(
    before: status.ExperimentStatus | None, now: datetime.datetime, interval: float
) -> dict[str, status.PodCounters]:
    """Give the last counters read, when at most one interval old: a restart's baselines."""
    if before is None or not before.pods or before.last_collected is None:
        return {}
    age = (now - accumulate.parse_time(before.last_collected)).total_seconds()
    return dict(before.pods) if 0.0 <= age <= interval else {}


def _previous(previous: Mapping[str, Any] | None) -> status.ExperimentStatus | None:
    raw = (previous or {}).get("experiment")
    if not raw:
        return None
    try:
        return status.ExperimentStatus.model_validate(raw)
    except pydantic.ValidationError:
        return None  # unreadable (an older shape): the experiment starts again


def _history_point(now: str, comparisons: Sequence[status.Comparison]) -> status.HistoryPoint:
    return status.HistoryPoint(
        time=now,
        comparisons=[
            status.HistoryEstimate(
                variant=c.variant,
                metric=c.metric,
                estimate=_round(c.estimate),
                low=_round(c.low),
                high=_round(c.high),
            )
            for c in comparisons
        ],
    )


def thin(points: Sequence[status.HistoryPoint]) -> list[status.HistoryPoint]:
    """Keep the history bounded: drop every other point but the first and last until it fits.

    At most MAX_HISTORY_POINTS points and about MAX_HISTORY_ESTIMATES estimates in all; old
    looks end up evenly sparse, the latest look is always there.
    """
    per_point = max((len(p.comparisons) for p in points), default=0)
    limit = min(MAX_HISTORY_POINTS, max(2, MAX_HISTORY_ESTIMATES // max(1, per_point)))
    out = list(points)
    while len(out) > limit:
        out = [out[0], *out[1:-1:2], out[-1]]
    return out


def _condition(
    type_: str,
    cond_status: str,
    reason: str,
    message: str,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    old = next(
        (c for c in (previous or {}).get("conditions") or [] if c.get("type") == type_), None
    )
    kept = old is not None and old.get("status") == cond_status and old.get("lastTransitionTime")
    return {
        "type": type_,
        "status": cond_status,
        "reason": reason,
        "message": message[:4096],
        "lastTransitionTime": old["lastTransitionTime"] if kept and old else now,
    }


def _conditions(
    result: status.ExperimentStatus, previous: Mapping[str, Any] | None, now: str
) -> list[dict[str, Any]]:
    verdict = result.verdict
    conclusive = _condition(
        CONCLUSIVE,
        "True" if verdict in CONCLUSIVE_VERDICTS else "False",
        verdict,
        result.summary or verdict,
        previous,
        now,
    )
    ratio = result.sample_ratio or status.SampleRatio()
    if ratio.mismatch:
        srm = ("True", SAMPLE_RATIO, "the variants' requests do not follow the live weights")
    else:
        srm = ("False", "SampleRatioOK", "the variants' requests follow the live weights")
    detail = f" (chi-square {_round(ratio.chi_square)}, p={_round(ratio.p_value)})"
    return [conclusive, _condition(SAMPLE_RATIO, srm[0], srm[1], srm[2] + detail, previous, now)]


def look(
    isvc: spec.InferenceService,
    previous: Mapping[str, Any] | None,
    looked: Sequence[readings.PodReading] | None,
    now: datetime.datetime,
    *,
    totals: readings.VariantTotals | None = None,
) -> Look:
    """Add one look's readings to the experiment of `isvc`.

    `previous` is the whole previous status of the InferenceService (None or {} at first);
    `looked` has a reading per pod of the variants (the unreadable ones with their problem),
    or is None when this look read nothing (an empty list: the pods were listed, none found).
    `totals`, instead of `looked`: the counts per variant since the start, from Prometheus;
    ignored when they are not since this experiment's startTime (it started again since).
    """
    experiment = isvc.spec.experiment
    if experiment is None:
        raise ValueError(f"{isvc.metadata.name} has no spec.experiment")
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    config = fingerprint(isvc)
    before = _previous(previous)
    restart = before is None or before.config != config or before.start_time is None
    if restart or before is None:
        start, counts, compared, history = stamp, {}, [], []
        kept = looked is None and totals is None
        pods = _baselines(before, now, experiment.interval_seconds()) if kept else {}
    else:
        start = before.start_time or stamp
        counts = dict(before.variants or {})
        pods = dict(before.pods or {})
        compared = list(before.comparisons or [])
        history = list(before.history or [])
    weights = isvc.spec.live_weights()
    threshold = slow_bucket(experiment.slow_threshold_seconds())
    if totals is None:
        added = accumulate.accumulate(
            counts,
            pods,
            looked,
            weights,
            start_time=accumulate.parse_time(start),
            slow_after=threshold,
        )
    elif totals.since != start or restart or totals.problem:
        added = accumulate.from_totals(counts, {}, weights, slow_after=threshold)
        if totals.problem and not restart:
            reason = totals.problem[: accumulate.MAX_REASON]
            added = dataclasses.replace(
                added, unreadable=[status.UnreadablePod(pod="prometheus", reason=reason)]
            )
    else:
        added = accumulate.from_totals(counts, totals.counters, weights, slow_after=threshold)
    variants = {name: with_rates(c) for name, c in added.variants.items()}
    collected: str | None = stamp
    if looked is None and totals is None:
        # Nothing read: the counters kept were read when the last look was.
        collected = before.last_collected if before is not None and added.pods else None
    evaluation = verdicts.evaluate(experiment, variants, weights, compared)
    result = status.ExperimentStatus(
        start_time=start,
        last_collected=collected,
        config=config,
        control=experiment.control,
        slow_threshold_seconds=readings.BOUNDS[threshold],
        verdict=evaluation.verdict,
        summary=(evaluation.summary or None) and evaluation.summary[:1024],
        variants=variants,
        comparisons=list(evaluation.comparisons) or None,
        sample_ratio=evaluation.sample_ratio,
        unreadable=added.unreadable or None,
        pods=added.pods or None,
        history=None,
    )
    wire = result.to_wire()
    old_wire = (previous or {}).get("experiment")
    if not restart and old_wire is not None and _same(wire, old_wire):
        wire = dict(old_wire)  # nothing new: not even lastCollected changes
    else:
        if history and history[-1].time == stamp:
            history.pop()  # two looks in one second: the later one stands for both
        points = thin([*history, _history_point(stamp, evaluation.comparisons)])
        wire["history"] = [p.to_wire() for p in points]
    return Look(
        experiment=wire,
        conditions=_conditions(result, previous, stamp),
        events=_events(before, result, restart, stamp),
    )


def _same(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Tell whether a look changed nothing but the time of collection and the history."""
    ignored = {"lastCollected", "history"}
    return {k: v for k, v in new.items() if k not in ignored} == {
        k: v for k, v in old.items() if k not in ignored
    }


def _events(
    before: status.ExperimentStatus | None,
    result: status.ExperimentStatus,
    restart: bool,
    stamp: str,
) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    if restart and before is not None:
        events.append(
            (
                RESTARTED,
                f"spec.experiment or the variants changed: the experiment starts again, "
                f"counting from {stamp}",
            )
        )
    old_verdict = before.verdict if before is not None and not restart else "Collecting"
    if result.verdict != old_verdict:
        events.append(
            (
                f"Verdict{result.verdict}",
                f"verdict {old_verdict} -> {result.verdict}"
                + (f": {result.summary}" if result.summary else ""),
            )
        )
    was_flagged = (
        before is not None
        and not restart
        and before.sample_ratio is not None
        and before.sample_ratio.mismatch
    )
    if result.sample_ratio is not None and result.sample_ratio.mismatch and not was_flagged:
        ratio = result.sample_ratio
        events.append(
            (
                SAMPLE_RATIO,
                "the variants' requests do not follow the live weights (chi-square "
                f"{_round(ratio.chi_square)}, p={_round(ratio.p_value)}): the comparison "
                "is not valid until the cause is found (a variant failing requests, a "
                "router or weight change, sticky users)",
            )
        )
    return events
