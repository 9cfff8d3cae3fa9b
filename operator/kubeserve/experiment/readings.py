"""Read one pod's experiment counters from the Prometheus text its server exposes. Pure: no I/O.

One pod serves one variant, so every series of the pod counts for that variant, whatever its
model version or protocol; only inference counts (`operation="infer"`), so health probes and
metadata calls never dilute an error or latency rate. The latency histogram is kept per
bucket (not cumulative) in the server's bounds, so that counts from many pods and many looks
add up, and slow requests and percentiles are read from the sums.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from prometheus_client import parser

from kubeserve.api import status
from kubeserve.server import metrics

# The server's latency bounds, and +Inf: a pod's histogram must have exactly these.
BOUNDS: tuple[float, ...] = (*metrics.LATENCY_BUCKETS, math.inf)
# The callers cap a body at this many bytes before parsing it.
MAX_BODY = 1 << 20
REQUESTS = "kubeserve_requests_total"
BUCKET = "kubeserve_request_duration_seconds_bucket"
FEEDBACK = "kubeserve_feedback_total"
POSITIVES = "kubeserve_feedback_positive_total"
VALUE_SUM = "kubeserve_feedback_value_sum"
VALUE_SQUARES = "kubeserve_feedback_value_squares_sum"
# Only lines of these families are parsed: a server page has many more (batch sizes, load
# times), and parsing is the operator's main cost per pod.
_PREFIXES = ("kubeserve_request", "kubeserve_feedback")


@dataclasses.dataclass(frozen=True)
class PodReading:
    """What one look found at one pod: its counters, or why there are none.

    `started` is the pod's status.startTime (RFC 3339), which tells a pod new to the
    experiment from one that was serving before it started.
    """

    uid: str
    name: str
    variant: str
    restarts: int
    started: str | None
    counters: status.PodCounters | None
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class VariantTotals:
    """What each variant served since `since` (the experiment's startTime), summed over its pods.

    From Prometheus (`increase()` over the experiment's window) instead of the pods' own
    counters: cumulative already, so they replace the counts rather than add to them.
    `problem` says why there are none.
    """

    since: str
    counters: Mapping[str, status.PodCounters]
    problem: str | None = None


def _number(value: float, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} is {value}: a counter is a finite number, at least 0")
    return value


def parse_metrics(text: str, variant: str, restarts: int) -> status.PodCounters:
    """Give the pod's counters from its /metrics text, or raise ValueError saying what is wrong.

    The text must come from a kubeserve server: the request counter's family must be there
    (with no sample yet on a server that has served nothing).
    """
    if len(text) > MAX_BODY:
        raise ValueError(f"the metrics are over {MAX_BODY} bytes")
    wanted = "\n".join(
        line
        for line in text.splitlines()
        if line.startswith(_PREFIXES)
        or (line.startswith("#") and any(p in line for p in _PREFIXES))
    )
    requests = errors = feedback = positives = values = value_sum = value_squares = 0.0
    cumulative: dict[tuple[tuple[str, str], ...], dict[float, float]] = {}
    seen_requests = False
    try:
        families = list(parser.text_string_to_metric_families(wanted))
    except Exception as exc:  # the parser raises ValueError, and others on odd input
        raise ValueError(f"not Prometheus text: {str(exc)[:200]}") from None
    for family in families:
        if family.name == REQUESTS.removesuffix("_total"):
            seen_requests = True
        for sample in family.samples:
            labels = sample.labels
            if sample.name == REQUESTS:
                if labels.get("operation") != "infer":
                    continue
                n = _number(sample.value, REQUESTS)
                requests += n
                if labels.get("code", "").startswith("5"):
                    errors += n
            elif sample.name == BUCKET:
                if labels.get("operation") != "infer":
                    continue
                try:
                    bound = float(labels["le"])
                except (KeyError, ValueError):
                    raise ValueError(f"{BUCKET} has a sample without a number in le") from None
                series = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                cumulative.setdefault(series, {})[bound] = _number(sample.value, BUCKET)
            elif sample.name == FEEDBACK:
                n = _number(sample.value, FEEDBACK)
                if labels.get("kind") == "outcome":
                    feedback += n
                elif labels.get("kind") == "value":
                    values += n
            elif sample.name == POSITIVES:
                positives += _number(sample.value, POSITIVES)
            elif sample.name == VALUE_SUM:
                if not math.isfinite(sample.value):
                    raise ValueError(f"{VALUE_SUM} is {sample.value}")
                value_sum += sample.value  # a sum of values goes down with negative ones
            elif sample.name == VALUE_SQUARES:
                value_squares += _number(sample.value, VALUE_SQUARES)
    if not seen_requests:
        raise ValueError(_not_ours(text))
    return status.PodCounters(
        variant=variant,
        restarts=restarts,
        requests=requests,
        errors=errors,
        feedback=feedback,
        positives=positives,
        values=values,
        value_sum=value_sum,
        value_squares=value_squares,
        latency_buckets=_per_bucket(cumulative),
    )


def _not_ours(text: str) -> str:
    """Say why a text without the request counter is not a kubeserve server's metrics."""
    head = text[:4096].rpartition("\n")[0] if len(text) > 4096 else text
    try:
        list(parser.text_string_to_metric_families(head))
    except Exception as exc:
        return f"not Prometheus text: {str(exc)[:200]}"
    return f"no {REQUESTS} in the metrics: not a kubeserve server"


def _per_bucket(cumulative: dict[tuple[tuple[str, str], ...], dict[float, float]]) -> list[float]:
    """Add the series' cumulative buckets into one count per bucket (not cumulative)."""
    total = [0.0] * len(BOUNDS)
    for series in cumulative.values():
        if set(series) != set(BOUNDS):
            raise ValueError(
                f"{BUCKET} has buckets {sorted(series)}, not the server's {list(BOUNDS)}"
            )
        below = 0.0
        for i, bound in enumerate(BOUNDS):
            if series[bound] < below:
                raise ValueError(f"{BUCKET} is not cumulative at le={bound}")
            total[i] += series[bound] - below
            below = series[bound]
    return total
