"""Prometheus metrics of the operator: reconciles, their errors and duration, and writes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import prometheus_client

from kubeserve.controller import reconcile


class OperatorMetrics:
    """The operator's metrics, in a registry of their own (tests run several operators)."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.reconciles = prometheus_client.Counter(
            "kubeserve_operator_reconciles_total",
            "Reconciles of InferenceServices, by trigger and result.",
            ["trigger", "result"],
            registry=self.registry,
        )
        self.errors = prometheus_client.Counter(
            "kubeserve_operator_reconcile_errors_total",
            "Reconciles that failed, by cause.",
            ["cause"],
            registry=self.registry,
        )
        self.duration = prometheus_client.Histogram(
            "kubeserve_operator_reconcile_duration_seconds",
            "Time spent in one reconcile, by trigger.",
            ["trigger"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.writes = prometheus_client.Counter(
            "kubeserve_operator_child_writes_total",
            "Writes to children, by verb and kind.",
            ["verb", "kind"],
            registry=self.registry,
        )
        self.status_writes = prometheus_client.Counter(
            "kubeserve_operator_status_writes_total",
            "Status updates of InferenceServices.",
            registry=self.registry,
        )

    def serve(self, port: int) -> None:
        """Expose /metrics on a port (in a daemon thread)."""
        prometheus_client.start_http_server(port, registry=self.registry)

    @contextlib.contextmanager
    def timed(self, trigger: str) -> Iterator[None]:
        """Time a reconcile and count it as ok or error."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.reconciles.labels(trigger, "error").inc()
            self.errors.labels(type(exc).__name__).inc()
            raise
        else:
            self.reconciles.labels(trigger, "ok").inc()
        finally:
            self.duration.labels(trigger).observe(time.perf_counter() - started)

    def record(self, outcome: reconcile.Outcome) -> None:
        """Count what a reconcile wrote."""
        for verb, keys in (
            ("create", outcome.created),
            ("patch", outcome.patched),
            ("delete", outcome.deleted),
        ):
            for kind, _ in keys:
                self.writes.labels(verb, kind).inc()
        if outcome.status_written:
            self.status_writes.inc()
