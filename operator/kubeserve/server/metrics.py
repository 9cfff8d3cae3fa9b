"""Prometheus metrics kept in plain dicts and rendered in the text exposition format.

The official client costs several microseconds per labelled observation and needs a
multiprocess mode with mmap files across workers. Here an observation is a dict lookup and
a bisect; with several workers each one writes a snapshot file once a second and the worker
that answers a scrape adds its siblings' snapshots to its own live numbers.

Requests carry an ``operation`` label (``OPERATIONS``) beside their protocol, so that a
reader can take inference alone: the operator's experiments count only
``operation="infer"``, and probes or metadata calls never dilute an error or latency rate.
Feedback (a client's outcome or value for a request served earlier) is counted per model
version: how many, how many outcomes were 1, and the sum and sum of squares of the values,
which is all a comparison of means needs.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import pathlib
from collections.abc import Iterable
from typing import Any

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[str, ...]

# The ``operation`` label's values: what kind of call a request was, whatever its protocol.
INFER = "infer"  # V1 predict, V2 infer, gRPC ModelInfer
METADATA = "metadata"  # server and model metadata, model readiness, the model list
HEALTH = "health"  # liveness and readiness of the server
FEEDBACK = "feedback"
METRICS = "metrics"
OTHER = "other"  # unknown routes, the OpenAPI document, requests refused before routing
OPERATIONS = (INFER, METADATA, HEALTH, FEEDBACK, METRICS, OTHER)

# A feedback row: outcomes, values, outcomes equal to 1, sum of values, sum of squares.
_OUTCOMES, _VALUES, _POSITIVE, _SUM, _SQUARES = range(5)


class Histogram:
    """Per-label-set bucket counts (not cumulative until rendered), sum and count."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        """Add one observation."""
        row = self.series.get(labels)
        if row is None:
            # [bucket_0 .. bucket_n-1, +Inf bucket, sum, count]
            row = self.series[labels] = [0.0] * (len(self.bounds) + 3)
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-2] += value
        row[-1] += 1


class Metrics:
    """Every metric the server exports, labelled by model and version."""

    def __init__(self) -> None:
        self.requests: dict[Labels, float] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.load_seconds: dict[Labels, float] = {}
        self.model_ready: dict[Labels, float] = {}
        self.feedback: dict[Labels, list[float]] = {}  # (model, version) -> a feedback row
        self.inflight = 0
        self.connections = 0  # open client connections, refreshed by the transport's sweep
        self.dropped: dict[str, float] = {}  # connections the server closed, by reason

    def request(
        self, model: str, version: str, protocol: str, operation: str, code: int, seconds: float
    ) -> None:
        """Count one finished request (or gRPC call) and its latency."""
        key = (model, version, protocol, operation, str(code))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency.observe((model, version, protocol, operation), seconds)

    def outcome(self, model: str, version: str, positive: bool) -> None:
        """Count one outcome feedback (a conversion, 0 or 1) for a model version."""
        row = self._feedback_row(model, version)
        row[_OUTCOMES] += 1
        if positive:
            row[_POSITIVE] += 1

    def value(self, model: str, version: str, value: float) -> None:
        """Count one value feedback (a reward) for a model version, with its sum and square."""
        row = self._feedback_row(model, version)
        row[_VALUES] += 1
        row[_SUM] += value
        row[_SQUARES] += value * value

    def _feedback_row(self, model: str, version: str) -> list[float]:
        row = self.feedback.get((model, version))
        if row is None:
            row = self.feedback[(model, version)] = [0.0] * 5
        return row

    def drop(self, reason: str) -> None:
        """Count one connection the server closed on the client's account."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def batch(self, model: str, version: str, rows: int) -> None:
        """Record the number of rows one model call computed."""
        self.batch_size.observe((model, version), rows)

    # -- several workers -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Return this worker's numbers as JSON-able data."""
        return {
            "requests": [[list(k), v] for k, v in self.requests.items()],
            "latency": [[list(k), v] for k, v in self.latency.series.items()],
            "batch": [[list(k), v] for k, v in self.batch_size.series.items()],
            "feedback": [[list(k), v] for k, v in self.feedback.items()],
            "inflight": self.inflight,
            "connections": self.connections,
            "dropped": self.dropped,
        }

    def merged(self, others: Iterable[dict[str, Any]]) -> Metrics:
        """Return a copy of these metrics with other workers' snapshots added."""
        total = Metrics()
        total.requests = dict(self.requests)
        total.latency.series = {k: list(v) for k, v in self.latency.series.items()}
        total.batch_size.series = {k: list(v) for k, v in self.batch_size.series.items()}
        total.load_seconds = dict(self.load_seconds)
        total.model_ready = dict(self.model_ready)
        total.feedback = {k: list(v) for k, v in self.feedback.items()}
        total.inflight = self.inflight
        total.connections = self.connections
        total.dropped = dict(self.dropped)
        for snap in others:
            for k, v in snap.get("requests", []):
                total.requests[tuple(k)] = total.requests.get(tuple(k), 0) + v
            for name, hist in (("latency", total.latency), ("batch", total.batch_size)):
                for k, row in snap.get(name, []):
                    mine = hist.series.setdefault(tuple(k), [0.0] * len(row))
                    for i, v in enumerate(row):
                        mine[i] += v
            for k, row in snap.get("feedback", []):
                mine = total.feedback.setdefault(tuple(k), [0.0] * len(row))
                for i, v in enumerate(row):
                    mine[i] += v
            total.inflight += snap.get("inflight", 0)
            total.connections += snap.get("connections", 0)
            for reason, n in snap.get("dropped", {}).items():
                total.dropped[reason] = total.dropped.get(reason, 0) + n
        return total

    # -- exposition ------------------------------------------------------------------

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every metric."""
        out: list[str] = []
        _family(
            out,
            "kubeserve_requests_total",
            "counter",
            "Requests answered, by model, version, protocol (v1 and v2 over REST, grpc, ...), "
            "operation (infer, metadata, health, feedback, metrics, other) and HTTP status "
            "code (a gRPC call counts the HTTP status of its outcome).",
        )
        for k, v in sorted(self.requests.items()):
            labels = _labels(("model", "version", "protocol", "operation", "code"), k)
            out.append(f"kubeserve_requests_total{labels} {_number(v)}")
        _histogram(
            out,
            "kubeserve_request_duration_seconds",
            "Time from a complete request (or gRPC call) to its response being written.",
            ("model", "version", "protocol", "operation"),
            self.latency,
        )
        _histogram(
            out,
            "kubeserve_batch_size",
            "Rows computed per model call (after dynamic batching).",
            ("model", "version"),
            self.batch_size,
        )
        self._render_feedback(out)
        _family(out, "kubeserve_model_load_seconds", "gauge", "Seconds the model took to load.")
        for k, v in sorted(self.load_seconds.items()):
            out.append(f"kubeserve_model_load_seconds{_labels(('model', 'version'), k)} {v:.6f}")
        _family(out, "kubeserve_model_ready", "gauge", "1 when the model version is ready.")
        for k, v in sorted(self.model_ready.items()):
            out.append(f"kubeserve_model_ready{_labels(('model', 'version'), k)} {v:g}")
        _family(out, "kubeserve_inflight_requests", "gauge", "Requests being processed now.")
        out.append(f"kubeserve_inflight_requests {self.inflight}")
        _family(out, "kubeserve_open_connections", "gauge", "Client connections open now.")
        out.append(f"kubeserve_open_connections {self.connections}")
        _family(
            out,
            "kubeserve_connections_dropped_total",
            "counter",
            "Connections the server closed on the client's account, by reason "
            "(a timeout, max_connections, or drain_timeout).",
        )
        for reason, n in sorted(self.dropped.items()):
            out.append(
                f"kubeserve_connections_dropped_total{_labels(('reason',), (reason,))} {_number(n)}"
            )
        return ("\n".join(out) + "\n").encode()

    def _render_feedback(self, out: list[str]) -> None:
        """Render the feedback families; a version's series appear with its first feedback.

        The two sums are gauges: a sum of values goes down when a value is negative, so a
        reader must not take its decrease for a reset (``kubeserve_feedback_total`` going
        down is the reset). The sum of squares never decreases, but stays a gauge beside its
        pair: a counter named without ``_total`` is renamed by some parsers
        (prometheus_client's reads it as ``..._squares_sum_total``).
        """
        rows = sorted(self.feedback.items())
        _family(
            out,
            "kubeserve_feedback_total",
            "counter",
            "Feedback received for a model version, by kind: outcome (0 or 1) or value.",
        )
        for k, row in rows:
            for kind, n in (("outcome", row[_OUTCOMES]), ("value", row[_VALUES])):
                labels = _labels(("model", "version", "kind"), (*k, kind))
                out.append(f"kubeserve_feedback_total{labels} {_number(n)}")
        names = ("model", "version")
        for name, kind, column, help_text in (
            (
                "kubeserve_feedback_positive_total",
                "counter",
                _POSITIVE,
                "Outcome feedback equal to 1.",
            ),
            (
                "kubeserve_feedback_value_sum",
                "gauge",
                _SUM,
                "Sum of the values of value feedback (goes down with negative values).",
            ),
            (
                "kubeserve_feedback_value_squares_sum",
                "gauge",
                _SQUARES,
                "Sum of the squares of the values of value feedback (never goes down).",
            ),
        ):
            _family(out, name, kind, help_text)
            for k, row in rows:
                out.append(f"{name}{_labels(names, k)} {_number(row[column])}")


def _number(value: float) -> str:
    """Write a sample value exactly: counts as integers, other numbers as their shortest repr.

    ``{:g}`` keeps six digits: 1234567 requests would read as 1.23457e+06, and a reader
    taking differences between scrapes would see none.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: Iterable[str]) -> str:
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _histogram(
    out: list[str], name: str, help_text: str, names: tuple[str, ...], hist: Histogram
) -> None:
    _family(out, name, "histogram", help_text)
    for key, row in sorted(hist.series.items()):
        running = 0.0
        for bound, count in zip((*hist.bounds, float("inf")), row, strict=False):
            running += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            labels = _labels((*names, "le"), (*key, le))
            out.append(f"{name}_bucket{labels} {_number(running)}")
        out.append(f"{name}_sum{_labels(names, key)} {row[-2]:.6f}")
        out.append(f"{name}_count{_labels(names, key)} {_number(row[-1])}")


class SnapshotFiles:
    """Share metrics between workers through one JSON file per worker in ``directory``."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.mine = directory / f"{os.getpid()}.json"

    def write(self, metrics: Metrics) -> None:
        """Replace this worker's snapshot atomically (readers never see half a file)."""
        tmp = self.mine.with_suffix(".tmp")
        tmp.write_text(json.dumps(metrics.snapshot()))
        os.replace(tmp, self.mine)

    def others(self) -> list[dict[str, Any]]:
        """Read the other workers' latest snapshots; a vanished or torn file is skipped."""
        found = []
        for path in self.directory.glob("*.json"):
            if path == self.mine:
                continue
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return found
