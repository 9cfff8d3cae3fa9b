"""Feedback: a client reports an outcome (0/1) or a value for a request a version served.

`POST /v2/models/{m}[/versions/{v}]/feedback` on real server processes: every accepted form,
every bad input answered 400 with the field named, the limits (413), routes (404, 405), and
the counts the metrics give afterwards, exact to the last feedback and the last bit of the
sums, under a flood and across workers.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import pathlib
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.server import Server, raw_exchange, request, running

FEEDBACK = "/v2/models/digits/feedback"


def _args(models: pathlib.Path, *extra: str) -> list[str]:
    return ["--model-name", "digits", "--model-dir", str(models), *extra]


@pytest.fixture(scope="module")
def server(example_models: pathlib.Path) -> Iterator[Server]:
    """A digits server of its own (versions v1, v2; v2 the default), 64 KiB body limit."""
    args = _args(example_models / "digits-onnx", "--max-body-bytes", "65536")
    with running(args) as started:
        yield started


def _post(port: int, body: bytes | str, path: str = FEEDBACK) -> tuple[int, dict[str, str], Any]:
    return request(port, "POST", path, body, {"content-type": "application/json"})


def feedback_series(port: int) -> dict[str, float]:
    """Give every kubeserve_feedback_* sample as {'name{labels}': value}."""
    text = request(port, "GET", "/metrics")[2]
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^(kubeserve_feedback_\w+\{[^}]*\}) (\S+)$", text, re.M)
    }


def _series(version: str) -> dict[str, str]:
    labels = f'model="digits",version="{version}"'
    return {
        "outcomes": f'kubeserve_feedback_total{{{labels},kind="outcome"}}',
        "values": f'kubeserve_feedback_total{{{labels},kind="value"}}',
        "positive": f"kubeserve_feedback_positive_total{{{labels}}}",
        "sum": f"kubeserve_feedback_value_sum{{{labels}}}",
        "squares": f"kubeserve_feedback_value_squares_sum{{{labels}}}",
    }


def counts(port: int, version: str) -> dict[str, float]:
    """Give one version's feedback counts by short name (0 for series not there yet)."""
    found = feedback_series(port)
    return {short: found.get(name, 0.0) for short, name in _series(version).items()}


# -- accepted forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "positive"),
    [('{"outcome": 1}', 1), ('{"outcome": 0}', 0), ('{"outcome": true}', 1), ('{"outcome": false}', 0)],
)  # fmt: skip
def test_an_outcome_is_counted_as_0_or_1_from_an_integer_or_a_boolean(
    server: Server, body: str, positive: int
) -> None:
    before = counts(server.port, "v2")
    status, headers, reply = _post(server.port, body)
    assert status == 200, reply
    assert reply == {"model": "digits", "version": "v2", "recorded": "outcome"}
    assert headers["x-kubeserve-variant"] == "v2"
    assert headers["x-kubeserve-model-version"] == "v2"
    after = counts(server.port, "v2")
    assert after["outcomes"] == before["outcomes"] + 1
    assert after["positive"] == before["positive"] + positive
    assert after["values"] == before["values"]


@pytest.mark.parametrize(
    "value",
    [0, 1, -1, 2.5, -0.0, 1e-300, 1e100, -1e100, 2**63, 12345678901234567890123],
    ids=str,
)
def test_a_value_is_any_finite_number_within_1e100(server: Server, value: float) -> None:
    before = counts(server.port, "v2")
    status, _, reply = _post(server.port, json.dumps({"value": value}))
    assert status == 200, reply
    assert reply["recorded"] == "value"
    assert counts(server.port, "v2")["values"] == before["values"] + 1


@pytest.mark.parametrize("request_id", ["", "8f1c0a", "x" * 256, "ü" * 256])
def test_a_request_id_of_up_to_256_characters_is_accepted(server: Server, request_id: str) -> None:
    status, _, reply = _post(server.port, json.dumps({"outcome": 1, "requestId": request_id}))
    assert status == 200, reply


def test_the_versions_path_counts_for_that_version(server: Server) -> None:
    before = {v: counts(server.port, v) for v in ("v1", "v2")}
    status, headers, reply = _post(
        server.port, '{"value": 3}', "/v2/models/digits/versions/v1/feedback"
    )
    assert status == 200
    assert reply == {"model": "digits", "version": "v1", "recorded": "value"}
    assert headers["x-kubeserve-model-version"] == "v1"
    after = {v: counts(server.port, v) for v in ("v1", "v2")}
    assert after["v1"]["values"] == before["v1"]["values"] + 1
    assert after["v1"]["sum"] == before["v1"]["sum"] + 3
    assert after["v2"] == before["v2"]


def test_a_gzip_body_is_read_like_any_other(server: Server) -> None:
    import gzip

    status, _, reply = request(
        server.port,
        "POST",
        FEEDBACK,
        gzip.compress(b'{"outcome": 1}'),
        {"content-encoding": "gzip"},
    )
    assert status == 200, reply


# -- refused -------------------------------------------------------------------------------

BAD = [
    # (raw body, words the error must hold)
    ('{"outcome": 2}', ["'outcome'", "0 or 1", "got 2"]),
    ('{"outcome": -1}', ["'outcome'", "got -1"]),
    ('{"outcome": 1.0}', ["'outcome'", "got 1.0"]),
    ('{"outcome": 0.5}', ["'outcome'", "got 0.5"]),
    ('{"outcome": "1"}', ["'outcome'", "got '1'"]),
    ('{"outcome": null}', ["'outcome'", "got null"]),
    ('{"outcome": [1]}', ["'outcome'", "got [1]"]),
    ('{"outcome": {"v": 1}}', ["'outcome'", "got {'v': 1}"]),
    ('{"outcome": NaN}', ["'outcome'", "got NaN"]),
    ('{"value": true}', ["'value'", "finite number", "got true"]),
    ('{"value": false}', ["'value'", "got false"]),
    ('{"value": "2.5"}', ["'value'", "got '2.5'"]),
    ('{"value": null}', ["'value'", "got null"]),
    ('{"value": [2.5]}', ["'value'", "got [2.5]"]),
    ('{"value": {"x": 1}}', ["'value'", "got {'x': 1}"]),
    ('{"value": NaN}', ["'value'", "finite number", "got NaN"]),
    ('{"value": Infinity}', ["'value'", "got Infinity"]),
    ('{"value": -Infinity}', ["'value'", "got -Infinity"]),
    ('{"value": 1e400}', ["'value'", "got 1e400"]),
    ('{"value": -1e400}', ["'value'", "got -1e400"]),
    ('{"value": 1e101}', ["'value'", "between -1e+100 and 1e+100"]),
    ('{"value": ' + "9" * 400 + "}", ["'value'", "an integer of 400 digits"]),
    ('{"outcome": 1, "value": 2}', ["'outcome' or 'value', not both"]),
    ("{}", ["needs 'outcome'", "or 'value'"]),
    ('{"requestId": "a"}', ["needs 'outcome'"]),
    ('{"outcome": 1, "requestId": 7}', ["'requestId'", "string", "got 7"]),
    ('{"outcome": 1, "requestId": null}', ["'requestId'", "got null"]),
    ('{"outcome": 1, "requestId": ["a"]}', ["'requestId'", "got ['a']"]),
    ('{"outcome": 1, "requestId": "' + "x" * 257 + '"}', ["'requestId'", "256", "got 257"]),
    ('{"outcome": 1, "request_id": "a"}', ["unknown field 'request_id'", "'requestId'"]),
    ('{"outcome": 1, "Value": 1}', ["unknown field 'Value'"]),
    ('{"outcome": 1, "a": 1, "b": 2}', ["unknown fields 'a', 'b'"]),
    ('{"outcome": 1, "x": NaN}', ["unknown field 'x'"]),
    ("[1]", ["JSON object", "got [1]"]),
    ('[{"outcome": 1}]', ["JSON object"]),
    ("1", ["JSON object", "got 1"]),
    ('"outcome"', ["JSON object"]),
    ("null", ["JSON object", "got None"]),
    ("NaN", ["JSON object", "got NaN"]),
    ("", ["empty"]),
    ("   ", ["empty"]),
    ('{"outcome": 1', ["malformed JSON"]),
    ('{"outcome": 1}}', ["malformed JSON"]),
    ("{'outcome': 1}", ["malformed JSON"]),
    ("[" * 5000 + "]" * 5000, ["malformed JSON"]),
    ('{"outcome": 1, "requestId": "\\ud800"}', ["malformed JSON"]),
]


@pytest.mark.parametrize(("body", "words"), BAD, ids=[b[:40] for b, _ in BAD])
def test_bad_feedback_is_a_400_that_names_the_field(
    server: Server, body: str, words: list[str]
) -> None:
    before = counts(server.port, "v2")
    status, headers, reply = _post(server.port, body)
    assert status == 400, reply
    assert headers["content-type"] == "application/json"
    assert set(reply) == {"error"}
    for word in words:
        assert word in reply["error"], (word, reply["error"])
    assert counts(server.port, "v2") == before


def test_invalid_utf8_is_a_400(server: Server) -> None:
    status, _, reply = _post(server.port, b'{"outcome": 1, "requestId": "\xff"}')
    assert status == 400 and "malformed JSON" in reply["error"]


def test_a_body_over_16_kib_is_a_413_without_being_parsed(server: Server) -> None:
    body = '{"outcome": 1' + " " * 16_400 + "}"  # valid JSON, too large for a feedback
    status, _, reply = _post(server.port, body)
    assert status == 413
    assert "at most 16384 bytes" in reply["error"]


def test_a_body_over_the_servers_limit_is_refused_while_reading(server: Server) -> None:
    body = b'{"value": 1' + b" " * 100_000 + b"}"
    head = (
        b"POST /v2/models/digits/feedback HTTP/1.1\r\nHost: t\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    answer = raw_exchange(server.port, head + body)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"exceeds the limit of 65536 bytes" in answer


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/v2/models/nope/feedback", "model 'nope' not found"),
        ("/v2/models/digits/versions/v9/feedback", "has no version 'v9'"),
        ("/v2/models/nope/versions/v1/feedback", "model 'nope' not found"),
    ],
)
def test_an_unknown_model_or_version_is_a_404_as_for_inference(
    server: Server, path: str, words: str
) -> None:
    # The model is checked before the body, as inference does: even a bad body gets the 404.
    for body in ('{"outcome": 1}', '{"outcome": 7}'):
        status, _, reply = _post(server.port, body, path)
        assert status == 404, reply
        assert words in reply["error"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
def test_other_methods_get_405_with_allow_post(server: Server, method: str) -> None:
    for path in (FEEDBACK, "/v2/models/digits/versions/v1/feedback"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 405
        assert response.getheader("allow") == "POST"


def test_feedback_is_counted_as_its_own_operation_never_as_inference(server: Server) -> None:
    def requests_of(operation: str) -> float:
        text = request(server.port, "GET", "/metrics")[2]
        found = re.search(
            r'^kubeserve_requests_total\{model="digits",version="v2",protocol="v2",'
            rf'operation="{operation}",code="200"\}} (\S+)$',
            text,
            re.M,
        )
        return float(found.group(1)) if found else 0.0

    before = requests_of("feedback"), requests_of("infer")
    for _ in range(3):
        assert _post(server.port, '{"outcome": 1}')[0] == 200
    assert (requests_of("feedback"), requests_of("infer")) == (before[0] + 3, before[1])


# -- counting ------------------------------------------------------------------------------


def _values(n: int) -> list[float]:
    # Multiples of 1/8 below 2**20: every sum and sum of squares here is exact in a double,
    # whatever order the server adds them in.
    return [((i * 37) % 41 - 20) / 8 for i in range(n)]


def test_a_flood_of_feedback_is_counted_exactly(example_models: pathlib.Path) -> None:
    outcomes = [1 if i % 3 == 0 else 0 for i in range(1200)]
    values = _values(1200)
    bodies = [json.dumps({"outcome": o, "requestId": f"o{i}"}) for i, o in enumerate(outcomes)]
    bodies += [json.dumps({"value": v}) for v in values]
    bodies += ['{"outcome": 5}'] * 100  # refused ones count for nothing

    def send(share: list[str]) -> list[int]:
        conn = http.client.HTTPConnection("127.0.0.1", started.port, timeout=30)
        answers = []
        for body in share:  # one keep-alive connection per sender
            conn.request("POST", FEEDBACK, body=body)
            response = conn.getresponse()
            response.read()
            answers.append(response.status)
        conn.close()
        return answers

    with running(_args(example_models / "digits-onnx")) as started:
        senders = 8
        with concurrent.futures.ThreadPoolExecutor(senders) as pool:
            statuses = [
                s for part in pool.map(send, [bodies[i::senders] for i in range(senders)]) for s in part
            ]  # fmt: skip
        found = counts(started.port, "v2")
        untouched = counts(started.port, "v1")
    assert statuses.count(200) == 2400 and statuses.count(400) == 100
    assert found == {
        "outcomes": 1200,
        "values": 1200,
        "positive": sum(outcomes),
        "sum": sum(values),
        "squares": sum(v * v for v in values),
    }
    assert untouched == dict.fromkeys(untouched, 0.0)


def test_the_metrics_give_exact_counts_sums_and_sums_of_squares(
    example_models: pathlib.Path,
) -> None:
    # Values whose sums are not exact in binary: the text must carry the double the server
    # holds, to the last bit, not six digits of it.
    values = [0.1, 0.2, 0.3, -1.7, 1234567.891, 3.0]
    with running(_args(example_models / "digits-onnx")) as started:
        for v in values:
            assert _post(started.port, json.dumps({"value": v}))[0] == 200
        for o in (1, 1, 0, 1, 0):
            assert _post(started.port, json.dumps({"outcome": o}))[0] == 200
        text = request(started.port, "GET", "/metrics")[2]
    total = squares = 0.0
    for v in values:
        total += v
        squares += v * v
    names = _series("v2")
    assert f"{names['outcomes']} 5\n" in text
    assert f"{names['values']} 6\n" in text
    assert f"{names['positive']} 3\n" in text
    assert f"{names['sum']} {total!r}\n" in text
    assert f"{names['squares']} {squares!r}\n" in text
    assert "# TYPE kubeserve_feedback_total counter" in text
    assert "# TYPE kubeserve_feedback_positive_total counter" in text


def test_feedback_counts_while_the_version_is_not_ready(tmp_path: pathlib.Path) -> None:
    # A version that failed to load is still this server's: feedback about what it served
    # before (a reload, a restart) must not be lost.
    broken = tmp_path / "models" / "v1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    args = _args(tmp_path / "models", "--format", "onnx")
    with running(args, wait_for="/v2/health/live") as started:
        assert request(started.port, "GET", "/v2/health/ready")[0] == 503
        status, _, reply = _post(started.port, '{"outcome": 1}')
        assert status == 200, reply
        assert counts(started.port, "v1")["positive"] == 1


def test_two_workers_count_every_feedback_once(example_models: pathlib.Path) -> None:
    args = _args(example_models / "digits-onnx", "--workers", "2")
    with running(args) as started:
        # As in the lifecycle test: wait until new connections meet ready workers for a while.
        deadline, streak = time.monotonic() + 30, 0
        while streak < 30 and time.monotonic() < deadline:
            ok = request(started.port, "GET", "/v2/health/ready")[0] == 200
            streak = streak + 1 if ok else 0
            if not ok:
                time.sleep(0.1)
        values = _values(60)
        for v in values:  # a fresh connection each: the kernel spreads them over the workers
            assert _post(started.port, json.dumps({"value": v}))[0] == 200
        for _ in range(40):
            assert _post(started.port, '{"outcome": 1}')[0] == 200
        expected = {
            "outcomes": 40,
            "values": 60,
            "positive": 40,
            "sum": sum(values),
            "squares": sum(v * v for v in values),
        }
        # Workers publish their numbers once a second; a busy machine may take longer.
        deadline = time.monotonic() + 20
        found = counts(started.port, "v2")
        while found != expected and time.monotonic() < deadline:
            time.sleep(0.2)
            found = counts(started.port, "v2")
        assert found == expected
