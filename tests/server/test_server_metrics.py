"""Prometheus metrics: names, labels (operation among them), histogram shape, load time."""

from __future__ import annotations

import re

import pytest

from kubeserve.server import metrics
from support.server import request

ROW = [0] * 64
V2_ROW = {"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 64], "data": ROW}]}


def _count(text: str, **labels: str) -> float:
    """Give the value of the one kubeserve_requests_total series with exactly these labels."""
    names = ("model", "version", "protocol", "operation", "code")
    shown = ",".join(f'{n}="{labels[n]}"' for n in names)
    found = re.search(r"^kubeserve_requests_total\{" + re.escape(shown) + r"\} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_requests_by_model_version_protocol_operation_and_code(
    sklearn_port: int,
) -> None:
    request(sklearn_port, "POST", "/v1/models/digits:predict", {"instances": [ROW]})
    request(sklearn_port, "POST", "/v1/models/digits:predict", {"instances": [[0] * 3]})
    request(sklearn_port, "POST", "/v2/models/digits/versions/v2/infer", V2_ROW)
    request(sklearn_port, "GET", "/no/such/path")
    status, headers, text = request(sklearn_port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    base = {"model": "digits", "protocol": "v1", "operation": "infer"}
    assert _count(text, **base, version="v1", code="200") >= 1
    assert _count(text, **base, version="v1", code="400") >= 1
    assert _count(text, **{**base, "protocol": "v2"}, version="v2", code="200") >= 1
    # Unknown paths are counted without inventing model labels.
    assert _count(text, model="", version="", protocol="other", operation="other", code="404") >= 1
    assert "# TYPE kubeserve_request_duration_seconds histogram" in text
    assert re.search(
        r'kubeserve_request_duration_seconds_bucket\{model="digits",version="v1",'
        r'protocol="v1",operation="infer",le="\+Inf"\} [1-9]',
        text,
    )
    assert re.search(r'kubeserve_model_load_seconds\{model="digits",version="v2"\} \d', text)
    assert 'kubeserve_model_ready{model="digits",version="v1"} 1' in text


# Every route a client or a probe calls, and the operation it is counted as: only inference
# is "infer", so probes and metadata calls never dilute an experiment's error or slow rate.
OPERATIONS = [
    ("POST", "/v1/models/digits:predict", {"instances": [ROW]}, "v1", "infer", "v1"),
    ("POST", "/v2/models/digits/infer", V2_ROW, "v2", "infer", "v1"),
    ("POST", "/v2/models/digits/versions/v2/infer", V2_ROW, "v2", "infer", "v2"),
    ("GET", "/v1/models/digits", None, "v1", "metadata", "v1"),
    ("GET", "/v2/models/digits", None, "v2", "metadata", "v1"),
    ("GET", "/v2/models/digits/ready", None, "v2", "metadata", "v1"),
    ("GET", "/v2/models/digits/versions/v2/ready", None, "v2", "metadata", "v2"),
    ("POST", "/v2/models/digits/feedback", {"outcome": 1}, "v2", "feedback", "v1"),
]
UNLABELLED = [
    ("GET", "/v1/models", "v1", "metadata"),
    ("GET", "/v2", "v2", "metadata"),
    ("GET", "/v2/health/live", "v2", "health"),
    ("GET", "/v2/health/ready", "v2", "health"),
    ("GET", "/", "v1", "health"),
    ("GET", "/openapi.json", "other", "other"),
    ("GET", "/v3/nothing", "other", "other"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "protocol", "operation", "version"),
    OPERATIONS,
    ids=[f"{m} {p}" for m, p, *_ in OPERATIONS],
)
def test_each_model_route_is_counted_under_its_operation(
    sklearn_port: int,
    method: str,
    path: str,
    body: object,
    protocol: str,
    operation: str,
    version: str,
) -> None:
    labels = {"model": "digits", "version": version, "protocol": protocol, "code": "200"}
    every = ("infer", "metadata", "feedback")
    before = request(sklearn_port, "GET", "/metrics")[2]
    assert request(sklearn_port, method, path, body)[0] == 200
    after = request(sklearn_port, "GET", "/metrics")[2]
    moved = {
        o: _count(after, **labels, operation=o) - _count(before, **labels, operation=o)
        for o in every
    }
    assert moved == {o: 1 if o == operation else 0 for o in every}


@pytest.mark.parametrize(("method", "path", "protocol", "operation"), UNLABELLED)
def test_server_routes_are_counted_under_their_operation(
    sklearn_port: int, method: str, path: str, protocol: str, operation: str
) -> None:
    code = "404" if path.startswith("/v3") else "200"
    labels = {"model": "", "version": "", "protocol": protocol, "code": code}
    before = _count(request(sklearn_port, "GET", "/metrics")[2], **labels, operation=operation)
    request(sklearn_port, method, path)
    after = _count(request(sklearn_port, "GET", "/metrics")[2], **labels, operation=operation)
    assert after == before + 1


def test_a_scrape_is_counted_as_the_metrics_operation(sklearn_port: int) -> None:
    labels = {"model": "", "version": "", "protocol": "metrics", "operation": "metrics"}
    first = _count(request(sklearn_port, "GET", "/metrics")[2], **labels, code="200")
    second = _count(request(sklearn_port, "GET", "/metrics")[2], **labels, code="200")
    assert second == first + 1


def test_histogram_buckets_are_cumulative(sklearn_port: int) -> None:
    request(sklearn_port, "GET", "/v2/models/digits")
    text = request(sklearn_port, "GET", "/metrics")[2]
    values = [
        float(v)
        for v in re.findall(
            r'kubeserve_request_duration_seconds_bucket\{model="digits",version="v1",'
            r'protocol="v2",operation="metadata",le="[^"]+"\} (\S+)',
            text,
        )
    ]
    assert values and values == sorted(values)
    count = re.search(
        r'kubeserve_request_duration_seconds_count\{model="digits",version="v1",'
        r'protocol="v2",operation="metadata"\} (\S+)',
        text,
    )
    assert count and float(count.group(1)) == values[-1]


# -- the registry itself ----------------------------------------------------------------


def test_counts_past_a_million_are_written_in_full() -> None:
    # "{:g}" wrote 1234567 as 1.23457e+06: a reader taking differences saw nothing move.
    stats = metrics.Metrics()
    stats.requests[("m", "v", "v2", "infer", "200")] = 1_234_567
    stats.latency.series[("m", "v", "v2", "infer")] = [0.0] * 16 + [1_234_567.0, 12.5, 1_234_567]
    text = stats.render().decode()
    assert 'operation="infer",code="200"} 1234567\n' in text
    assert 'kubeserve_request_duration_seconds_count{model="m",version="v",protocol="v2",' \
        'operation="infer"} 1234567\n' in text  # fmt: skip
    assert 'le="+Inf"} 1234567\n' in text


def test_feedback_series_appear_with_a_versions_first_feedback() -> None:
    stats = metrics.Metrics()
    empty = stats.render().decode()
    assert "# TYPE kubeserve_feedback_total counter" in empty
    assert "kubeserve_feedback_total{" not in empty
    stats.outcome("m", "v1", True)
    text = stats.render().decode()
    for line in (
        'kubeserve_feedback_total{model="m",version="v1",kind="outcome"} 1',
        'kubeserve_feedback_total{model="m",version="v1",kind="value"} 0',
        'kubeserve_feedback_positive_total{model="m",version="v1"} 1',
        'kubeserve_feedback_value_sum{model="m",version="v1"} 0',
        'kubeserve_feedback_value_squares_sum{model="m",version="v1"} 0',
    ):
        assert line + "\n" in text, line
    assert "# TYPE kubeserve_feedback_value_sum gauge" in text


def test_feedback_sums_are_written_exactly() -> None:
    stats = metrics.Metrics()
    for value in (0.1, 0.2, -3.0):
        stats.value("m", "v1", value)
    text = stats.render().decode()
    total = 0.1 + 0.2 - 3.0
    squares = 0.1 * 0.1 + 0.2 * 0.2 + 9.0
    assert f'kubeserve_feedback_value_sum{{model="m",version="v1"}} {total!r}\n' in text
    assert f'kubeserve_feedback_value_squares_sum{{model="m",version="v1"}} {squares!r}\n' in text


def test_merged_workers_add_their_feedback_and_requests() -> None:
    mine, other = metrics.Metrics(), metrics.Metrics()
    mine.outcome("m", "v1", True)
    mine.value("m", "v1", 2.0)
    other.outcome("m", "v1", False)
    other.outcome("m", "v2", True)
    other.value("m", "v1", -0.5)
    other.request("m", "v1", "v2", "feedback", 200, 0.001)
    mine.request("m", "v1", "v2", "feedback", 200, 0.001)
    total = mine.merged([other.snapshot()])
    assert total.feedback[("m", "v1")] == [2.0, 2.0, 1.0, 1.5, 4.25]
    assert total.feedback[("m", "v2")] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert total.requests[("m", "v1", "v2", "feedback", "200")] == 2
    assert total.latency.series[("m", "v1", "v2", "feedback")][-1] == 2
    # The live numbers are not changed by merging.
    assert mine.feedback[("m", "v1")] == [1.0, 1.0, 1.0, 2.0, 4.0]
