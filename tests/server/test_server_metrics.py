"""Prometheus metrics: names, labels, histogram shape, load time."""

from __future__ import annotations

import re

from support.server import request


def test_metrics_count_requests_by_model_version_protocol_and_code(sklearn_port: int) -> None:
    request(sklearn_port, "POST", "/v1/models/digits:predict", {"instances": [[0] * 64]})
    request(sklearn_port, "POST", "/v1/models/digits:predict", {"instances": [[0] * 3]})
    request(
        sklearn_port,
        "POST",
        "/v2/models/digits/versions/v2/infer",
        {"inputs": [{"name": "input", "datatype": "INT64", "shape": [1, 64], "data": [0] * 64}]},
    )
    request(sklearn_port, "GET", "/no/such/path")
    status, headers, text = request(sklearn_port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert re.search(
        r'kubeserve_requests_total\{model="digits",version="v1",protocol="v1",code="200"\} [1-9]',
        text,
    )
    assert re.search(
        r'kubeserve_requests_total\{model="digits",version="v1",protocol="v1",code="400"\} [1-9]',
        text,
    )
    assert re.search(
        r'kubeserve_requests_total\{model="digits",version="v2",protocol="v2",code="200"\} [1-9]',
        text,
    )
    # Unknown paths are counted without inventing model labels.
    assert 'kubeserve_requests_total{model="",version="",protocol="other",code="404"}' in text
    assert "# TYPE kubeserve_request_duration_seconds histogram" in text
    assert re.search(
        r'kubeserve_request_duration_seconds_bucket\{model="digits",version="v1",'
        r'protocol="v1",le="\+Inf"\} [1-9]',
        text,
    )
    assert re.search(r'kubeserve_model_load_seconds\{model="digits",version="v2"\} \d', text)
    assert 'kubeserve_model_ready{model="digits",version="v1"} 1' in text


def test_histogram_buckets_are_cumulative(sklearn_port: int) -> None:
    request(sklearn_port, "GET", "/v2/models/digits")
    text = request(sklearn_port, "GET", "/metrics")[2]
    values = [
        float(v)
        for v in re.findall(
            r'kubeserve_request_duration_seconds_bucket\{model="digits",version="v1",'
            r'protocol="v2",le="[^"]+"\} (\S+)',
            text,
        )
    ]
    assert values and values == sorted(values)
    count = re.search(
        r'kubeserve_request_duration_seconds_count\{model="digits",version="v1",'
        r'protocol="v2"\} (\S+)',
        text,
    )
    assert count and float(count.group(1)) == values[-1]
