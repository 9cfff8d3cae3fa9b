"""Dynamic batching: concurrent callers share model calls and each gets its own rows."""

from __future__ import annotations

import concurrent.futures
import re

import numpy as np

from support.server import Server, request


def test_each_caller_gets_its_own_rows(servers: dict[str, Server], digits_rows) -> None:
    batched, plain = servers["batched"].port, servers["onnx"].port
    x, _ = digits_rows
    # Requests of 1..4 rows each, all different, sent at once.
    jobs = [x[i * 4 : i * 4 + 1 + i % 4].tolist() for i in range(48)]

    def v1(port: int, rows: list[list[int]]) -> list[int]:
        status, _, body = request(port, "POST", "/v1/models/digits:predict", {"instances": rows})
        assert status == 200, body
        return body["predictions"]

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        got = list(pool.map(lambda rows: v1(batched, rows), jobs))
    want = [v1(plain, rows) for rows in jobs]
    assert got == want

    # V2 too, with the probabilities split per caller.
    def v2(rows: list[list[int]]) -> np.ndarray:
        body = {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [len(rows), 64], "data": rows}
            ],
            "outputs": [{"name": "probabilities"}],
        }
        status, _, reply = request(batched, "POST", "/v2/models/digits/infer", body)
        assert status == 200
        out = reply["outputs"][0]
        assert out["shape"] == [len(rows), 10]
        return np.array(out["data"]).reshape(out["shape"])

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        probas = list(pool.map(v2, jobs))
    for rows, proba, labels in zip(jobs, probas, want, strict=True):
        assert len(proba) == len(rows)
        assert proba.argmax(axis=1).tolist() == labels


def test_batches_really_form(servers: dict[str, Server]) -> None:
    text = request(servers["batched"].port, "GET", "/metrics")[2]
    counts = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'kubeserve_batch_size_(count|sum)\{model="digits",version="v2"\} (\S+)', text
        )
    }
    assert counts, text
    # More rows than model calls: some calls carried several requests.
    assert counts["sum"] / counts["count"] > 1.5


def test_adaptive_batching_without_a_wait_window(example_models, digits_rows) -> None:
    # --batch-max-wait-ms 0: no waiting when the model is idle; batches form while it runs.
    from support.server import running

    x, _ = digits_rows
    args = [
        "--model-name",
        "digits",
        "--model-dir",
        str(example_models / "digits-onnx"),
        "--batch-max-size",
        "64",
        "--batch-max-wait-ms",
        "0",
    ]
    jobs = [x[i : i + 1 + i % 3].tolist() for i in range(120)]
    with running(args) as server:

        def v1(rows: list[list[int]]) -> list[int]:
            status, _, body = request(
                server.port, "POST", "/v1/models/digits:predict", {"instances": rows}
            )
            assert status == 200, body
            return body["predictions"]

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            got = list(pool.map(v1, jobs))
        # Each caller got its own rows: compare with one-by-one answers from the same server.
        assert got == [v1(rows) for rows in jobs]
        text = request(server.port, "GET", "/metrics")[2]
    count = re.search(r'kubeserve_batch_size_count\{model="digits",version="v2"\} (\S+)', text)
    total = re.search(r'kubeserve_batch_size_sum\{model="digits",version="v2"\} (\S+)', text)
    assert count and total
    assert float(total.group(1)) == 2 * sum(len(rows) for rows in jobs)
    assert float(count.group(1)) < 2 * len(jobs)  # fewer model calls than requests
