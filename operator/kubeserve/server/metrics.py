"""Prometheus metrics kept in plain dicts and rendered in the text exposition format.

The official client costs several microseconds per labelled observation and needs a
multiprocess mode with mmap files across workers. Here an observation is a dict lookup and
a bisect; with several workers each one writes a snapshot file once a second and the worker
that answers a scrape adds its siblings' snapshots to its own live numbers.
"""

from __future__ import annotations

import bisect
import json
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
        self.inflight = 0
        self.connections = 0  # open client connections, refreshed by the transport's sweep
        self.dropped: dict[str, float] = {}  # connections the server closed, by reason

    def request(self, model: str, version: str, protocol: str, code: int, seconds: float) -> None:
        """Count one finished inference or metadata request and its latency."""
        key = (model, version, protocol, str(code))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency.observe((model, version, protocol), seconds)

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
            "Requests answered, by model, version, protocol (v1 and v2 over REST, grpc, ...) "
            "and HTTP status code (a gRPC call counts the HTTP status of its outcome).",
        )
        for k, v in sorted(self.requests.items()):
            labels = _labels(("model", "version", "protocol", "code"), k)
            out.append(f"kubeserve_requests_total{labels} {v:g}")
        _histogram(
            out,
            "kubeserve_request_duration_seconds",
            "Time from a complete request (or gRPC call) to its response being written.",
            ("model", "version", "protocol"),
            self.latency,
        )
        _histogram(
            out,
            "kubeserve_batch_size",
            "Rows computed per model call (after dynamic batching).",
            ("model", "version"),
            self.batch_size,
        )
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
                f"kubeserve_connections_dropped_total{_labels(('reason',), (reason,))} {n:g}"
            )
        return ("\n".join(out) + "\n").encode()


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
            out.append(f"{name}_bucket{labels} {running:g}")
        out.append(f"{name}_sum{_labels(names, key)} {row[-2]:.6f}")
        out.append(f"{name}_count{_labels(names, key)} {row[-1]:g}")


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
