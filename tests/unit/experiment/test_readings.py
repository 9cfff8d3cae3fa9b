"""Reading a pod's experiment counters from its /metrics text."""

from __future__ import annotations

import pytest

from kubeserve.experiment import readings
from kubeserve.server import metrics
from kubeserve.testing.pod_metrics import PodMetrics


def test_the_real_servers_page_gives_inference_requests_errors_and_feedback() -> None:
    server = metrics.Metrics()
    for protocol, code, seconds in [("v2", 200, 0.003), ("v1", 503, 0.3), ("grpc", 200, 0.02)]:
        server.request("digits", "v1", protocol, metrics.INFER, code, seconds)
    server.request("digits", "v1", "v2", metrics.HEALTH, 200, 0.0001)
    server.request("digits", "v1", "v2", metrics.METADATA, 500, 0.0001)
    server.outcome("digits", "v1", True)
    server.outcome("digits", "v1", False)
    server.value("digits", "v1", 2.5)
    server.value("digits", "v1", -1.0)
    text = server.render().decode()

    counters = readings.parse_metrics(text, "v1", 3)

    assert (counters.variant, counters.restarts) == ("v1", 3)
    assert (counters.requests, counters.errors) == (3, 1)
    assert (counters.feedback, counters.positives) == (2, 1)
    assert (counters.values, counters.value_sum, counters.value_squares) == (2, 1.5, 7.25)
    buckets = counters.latency_buckets
    assert buckets is not None and len(buckets) == len(metrics.LATENCY_BUCKETS) + 1
    assert sum(buckets) == 3
    assert buckets[metrics.LATENCY_BUCKETS.index(0.005)] == 1  # 3 ms
    assert buckets[metrics.LATENCY_BUCKETS.index(0.025)] == 1  # 20 ms
    assert buckets[metrics.LATENCY_BUCKETS.index(0.5)] == 1  # 300 ms


def test_every_version_and_protocol_of_the_pod_counts_for_its_variant() -> None:
    one, two = PodMetrics(version="1"), PodMetrics(version="2")
    one.serve(5)
    two.serve(7, code=502)
    text = one.render() + two.render().replace("# HELP", "# X").replace("# TYPE", "# Y")

    counters = readings.parse_metrics(text, "v2", 0)

    assert (counters.requests, counters.errors) == (12, 7)


def test_a_server_that_served_nothing_reads_as_zeros() -> None:
    counters = readings.parse_metrics(PodMetrics().render(), "v1", 0)
    assert counters.requests == 0 and counters.latency_buckets == [0.0] * len(readings.BOUNDS)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<html><body>hello</body></html>", "not Prometheus text"),
        ("# HELP up 1\n# TYPE up gauge\nup 1\n", "no kubeserve_requests_total"),
        ("", "no kubeserve_requests_total"),
        (
            "# TYPE kubeserve_requests_total counter\n"
            'kubeserve_requests_total{operation="infer",code="200"} many\n',
            "not Prometheus text",
        ),
        (
            "# TYPE kubeserve_requests_total counter\n"
            'kubeserve_requests_total{operation="infer",code="200"} -4\n',
            "at least 0",
        ),
        (
            "# TYPE kubeserve_requests_total counter\n"
            'kubeserve_requests_total{operation="infer",code="200"} NaN\n',
            "finite",
        ),
        (
            "# TYPE kubeserve_requests_total counter\n"
            "# TYPE kubeserve_request_duration_seconds histogram\n"
            'kubeserve_request_duration_seconds_bucket{operation="infer",le="1"} 1\n'
            'kubeserve_request_duration_seconds_bucket{operation="infer",le="+Inf"} 1\n',
            "not the server's",
        ),
    ],
)
def test_garbage_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        readings.parse_metrics(text, "v1", 0)


def test_a_body_over_the_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="over"):
        readings.parse_metrics("#" * (readings.MAX_BODY + 1), "v1", 0)


def test_a_histogram_that_is_not_cumulative_is_refused() -> None:
    pod = PodMetrics()
    pod.serve(3, seconds=0.003)
    text = pod.render().replace('le="0.01"} 3', 'le="0.01"} 1')
    with pytest.raises(ValueError, match="not cumulative"):
        readings.parse_metrics(text, "v1", 0)
