"""Ask Prometheus for an experiment's counts, instead of reading the pods (`--prometheus-url`).

The same counters the pods expose, as Prometheus scraped them, summed per variant over the
experiment's window, `[<seconds since startTime>s]`, with increase() (which handles counter
resets per series as the pod reads do). Each series is chosen by the InferenceService's
namespace (the label Prometheus keeps it in, `namespace` by default), its `model` label (the
InferenceService's name) and `operation="infer"`; the variant is the series' `version` label
(the server's model version: right when versions are named after the variants), or the
label `--prometheus-variant-label` names (a pod label kept by Prometheus' relabelling, e.g.
the PodMonitor's podTargetLabels of serving.kubeserve.dev/variant).

Where the two ways differ: Prometheus extrapolates increase() to the window's edges, so
counts are rounded and may be a little off at a look; a pod's requests before its first
scrape are not in increase(); and the value sum, which goes down with negative values, is
taken with delta(), which a server restart in the window spoils.
"""

from __future__ import annotations

import datetime
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection, Mapping
from typing import Any

from kubeserve.api import status
from kubeserve.experiment import accumulate, readings

TIMEOUT = 5.0


def queries(
    namespace: str,
    name: str,
    window: int,
    *,
    namespace_label: str = "namespace",
    variant_label: str = "version",
) -> dict[str, str]:
    """Give the PromQL of each count, by what it counts."""
    where = f'{namespace_label}="{namespace}",model="{name}"'
    infer = f'{where},operation="infer"'
    w = f"[{window}s]"
    return {
        "requests": f"sum by ({variant_label}) (increase(kubeserve_requests_total{{{infer}}}{w}))",
        "errors": (
            f"sum by ({variant_label}) "
            f'(increase(kubeserve_requests_total{{{infer},code=~"5.."}}{w}))'
        ),
        "buckets": (
            f"sum by ({variant_label}, le) "
            f"(increase(kubeserve_request_duration_seconds_bucket{{{infer}}}{w}))"
        ),
        "feedback": f"sum by ({variant_label}, kind) (increase(kubeserve_feedback_total{{{where}}}{w}))",
        "positives": (
            f"sum by ({variant_label}) (increase(kubeserve_feedback_positive_total{{{where}}}{w}))"
        ),
        "value_sum": f"sum by ({variant_label}) (delta(kubeserve_feedback_value_sum{{{where}}}{w}))",
        "value_squares": (
            f"sum by ({variant_label}) (increase(kubeserve_feedback_value_squares_sum{{{where}}}{w}))"
        ),
    }


def _query(url: str, promql: str, at: float, timeout: float) -> list[dict[str, Any]]:
    target = f"{url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode(
        {"query": promql, "time": f"{at:.3f}"}
    )
    with urllib.request.urlopen(target, timeout=timeout) as response:
        body = response.read(readings.MAX_BODY + 1)
    if len(body) > readings.MAX_BODY:
        raise ValueError(f"the answer is over {readings.MAX_BODY} bytes")
    answer = json.loads(body)
    if answer.get("status") != "success":
        raise ValueError(f"{answer.get('errorType')}: {answer.get('error')}")
    result = answer.get("data", {}).get("result")
    if not isinstance(result, list):
        raise ValueError("the answer has no result vector")
    return result


def _value(sample: Mapping[str, Any]) -> float:
    value = float(sample["value"][1])
    return value if math.isfinite(value) else 0.0


def totals(
    url: str,
    *,
    namespace: str,
    name: str,
    variants: Collection[str],
    since: str,
    now: datetime.datetime,
    namespace_label: str = "namespace",
    variant_label: str = "version",
    timeout: float = TIMEOUT,
) -> readings.VariantTotals:
    """Give each variant's counts since `since`, or the problem that kept Prometheus from it."""
    at = now.timestamp()
    window = max(1, math.ceil(at - accumulate.parse_time(since).timestamp()))
    found: dict[str, dict[str, Any]] = {
        v: {"requests": 0.0, "errors": 0.0, "feedback": 0.0, "positives": 0.0, "values": 0.0,
            "value_sum": 0.0, "value_squares": 0.0, "le": {}}
        for v in variants
    }  # fmt: skip
    try:
        for what, promql in queries(
            namespace, name, window, namespace_label=namespace_label, variant_label=variant_label
        ).items():
            for sample in _query(url, promql, at, timeout):
                labels = sample.get("metric") or {}
                counts = found.get(labels.get(variant_label, ""))
                if counts is None:
                    continue
                value = _value(sample)
                if what == "buckets":
                    counts["le"][float(labels.get("le", "nan"))] = value
                elif what == "feedback":
                    kind = labels.get("kind")
                    counts["feedback" if kind == "outcome" else "values"] += (
                        value if kind in ("outcome", "value") else 0.0
                    )
                else:
                    counts[what] += value
    except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError) as exc:
        return readings.VariantTotals(since, {}, f"Prometheus at {url}: {exc}"[:500])
    return readings.VariantTotals(since, {v: _counters(v, counts) for v, counts in found.items()})


def _counters(variant: str, counts: Mapping[str, Any]) -> status.PodCounters:
    cumulative: Mapping[float, float] = counts["le"]
    buckets, below = [], 0.0
    for bound in readings.BOUNDS:
        at = max(below, cumulative.get(bound, below))  # extrapolation may dip: never below
        buckets.append(at - below)
        below = at
    return status.PodCounters(
        variant=variant,
        requests=counts["requests"],
        errors=counts["errors"],
        feedback=counts["feedback"],
        positives=counts["positives"],
        values=counts["values"],
        value_sum=counts["value_sum"],
        value_squares=counts["value_squares"],
        latency_buckets=buckets,
    )
