"""Prometheus mode gives the counts the pod reads give, on the same samples.

A stand-in Prometheus (kubeserve.testing.fake_prometheus: increase() and delta() over the
samples in the window, without Prometheus' extrapolation) scrapes the stand-in pods at the
moments the operator reads them. A real Prometheus was not available here.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest

from kubeserve.api import validation
from kubeserve.controller import prometheus
from kubeserve.experiment import look, readings
from kubeserve.testing.fake_prometheus import FakePrometheus
from kubeserve.testing.pod_metrics import PodMetrics

T0 = datetime.datetime(2025, 3, 1, 9, 0, tzinfo=datetime.UTC)
ISVC = validation.parse(
    {
        "apiVersion": "serving.kubeserve.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "digits", "namespace": "ns"},
        "spec": {
            "variants": [
                {
                    "name": "v1",
                    "weight": 50,
                    "model": {"format": "onnx", "storageUri": "file:///1"},
                },
                {
                    "name": "v2",
                    "weight": 50,
                    "model": {"format": "onnx", "storageUri": "file:///2"},
                },
            ],
            "experiment": {"control": "v1", "minSamples": 100},
        },
    }
)
COMPARED = ("requests", "errors", "slow", "feedback", "positives", "values", "valueSquares")


@pytest.fixture()
def fake() -> Iterator[FakePrometheus]:
    server = FakePrometheus().start()
    yield server
    server.stop()


class Pod:
    def __init__(self, uid: str, variant: str, started: str) -> None:
        self.uid, self.variant, self.started = uid, variant, started
        self.metrics = PodMetrics(version=variant)
        self.restarts = 0
        self.fresh()

    def fresh(self) -> None:
        """Show the series at 0 before any request: increase() cannot count a first sample."""
        for code in (200, 503):
            self.metrics.serve(0, code=code)

    def restart(self) -> None:
        self.metrics.restart()
        self.restarts += 1
        self.fresh()

    def reading(self) -> readings.PodReading:
        text = self.metrics.render()
        return readings.PodReading(
            self.uid,
            f"digits-{self.uid}",
            self.variant,
            self.restarts,
            self.started,
            readings.parse_metrics(text, self.variant, self.restarts),
        )


def test_prometheus_gives_the_counts_the_pod_reads_give(fake: FakePrometheus) -> None:
    a = Pod("a", "v1", "2025-03-01T08:00:00Z")
    b = Pod("b", "v2", "2025-03-01T08:00:00Z")
    a.metrics.serve(500)  # before the experiment: in neither count
    b.metrics.serve(300)
    pods = [a, b]
    scraped: dict[str, Any] = {}
    asked: dict[str, Any] = {}

    def look_at(minute: int) -> None:
        nonlocal scraped, asked
        now = T0 + datetime.timedelta(minutes=minute)
        for pod in pods:
            target = {"namespace": "ns", "pod": f"digits-{pod.uid}"}
            fake.scrape(pod.metrics.render(), target, now.timestamp())
        by_pods = look.look(ISVC, scraped, [p.reading() for p in pods], now)
        scraped = by_pods.apply(scraped)
        since = (asked.get("experiment") or {}).get("startTime")
        totals = None
        if since:
            totals = prometheus.totals(
                fake.url, namespace="ns", name="digits", variants=["v1", "v2"], since=since, now=now
            )
            assert totals.problem is None
        by_prometheus = look.look(ISVC, asked, [], now, totals=totals)
        asked = by_prometheus.apply(asked)

    look_at(0)
    for minute, change in enumerate(
        [
            lambda: (a.metrics.serve(120), b.metrics.serve(80, code=503)),
            lambda: (b.metrics.outcome(40, 9), a.metrics.value(1.5, -2.5, 5.0)),
            lambda: (b.restart(), b.metrics.serve(30, seconds=0.6)),
            lambda: pods.append(Pod("c", "v2", "2025-03-01T09:03:30Z")),  # new, nothing served yet
            lambda: (pods[2].metrics.serve(11), a.metrics.serve(7, seconds=2.0)),
            lambda: None,
        ],
        start=1,
    ):
        change()
        look_at(minute)
    by_pods = scraped["experiment"]["variants"]
    by_prometheus = asked["experiment"]["variants"]
    for variant in ("v1", "v2"):
        assert {k: by_pods[variant].get(k) for k in COMPARED} == {
            k: by_prometheus[variant].get(k) for k in COMPARED
        }, variant
        assert by_pods[variant]["expected"] == pytest.approx(by_prometheus[variant]["expected"])
    assert by_pods["v1"]["requests"] == 127 and by_pods["v2"]["requests"] == 80 + 30 + 11
    # The value sum goes down with negative values: Prometheus takes it with delta(), which a
    # restart in the window would spoil; here the pod with values never restarts.
    assert by_pods["v1"]["valueSum"] == by_prometheus["v1"]["valueSum"] == 4.0
    assert asked["experiment"]["startTime"] == scraped["experiment"]["startTime"]
    assert all('namespace="ns",model="digits"' in q for q in fake.queries)


def test_a_prometheus_that_fails_is_listed_and_the_counts_stay(fake: FakePrometheus) -> None:
    first = look.look(ISVC, {}, [], T0)
    status = first.apply({})
    since = status["experiment"]["startTime"]
    totals = prometheus.totals(
        "http://127.0.0.1:1", namespace="ns", name="digits", variants=["v1"], since=since, now=T0
    )
    assert totals.problem is not None and "Prometheus at http://127.0.0.1:1" in totals.problem
    later = look.look(ISVC, status, [], T0 + datetime.timedelta(minutes=1), totals=totals)
    assert later.experiment["unreadable"][0]["pod"] == "prometheus"
    assert later.experiment["variants"]["v1"]["requests"] == 0


def test_totals_from_before_a_restart_are_not_counted() -> None:
    first = look.look(ISVC, {}, [], T0)
    status = first.apply({})
    stale = readings.VariantTotals(
        "2025-01-01T00:00:00Z",
        {"v1": readings.parse_metrics(_served(50), "v1", 0)},
    )
    later = look.look(ISVC, status, [], T0 + datetime.timedelta(minutes=1), totals=stale)
    assert later.experiment["variants"]["v1"]["requests"] == 0


def _served(n: int) -> str:
    pod = PodMetrics()
    pod.serve(n)
    return pod.render()


def test_the_variant_label_can_be_a_pod_label_kept_by_prometheus(fake: FakePrometheus) -> None:
    since = T0.strftime("%Y-%m-%dT%H:%M:%SZ")
    for minute, served in ((0, 0), (1, 9)):
        pod = PodMetrics(version="1")  # the model version: not the variant's name
        pod.serve(served)
        target = {"namespace": "ns", "pod": "p", "serving_kubeserve_dev_variant": "v2"}
        fake.scrape(pod.render(), target, (T0 + datetime.timedelta(minutes=minute)).timestamp())
    totals = prometheus.totals(
        fake.url,
        namespace="ns",
        name="digits",
        variants=["v1", "v2"],
        since=since,
        now=T0 + datetime.timedelta(minutes=1),
        variant_label="serving_kubeserve_dev_variant",
    )
    assert totals.counters["v2"].requests == 9 and totals.counters["v1"].requests == 0
