"""Time one request through kubeserve's server in-process, without sockets or a load generator.

Each case feeds a complete HTTP request to ``http.HttpProtocol`` over a fake transport and
times it up to the response bytes (routing, JSON, validation, ONNX Runtime, encoding,
metrics, headers): the server's own CPU per request, free of wrk and the kernel.

With ``--baseline REV`` the server package of git revision REV is exported to a temporary
directory and both trees are measured in alternating child processes in the same run, so
the before/after ratios see the same machine state; each figure is the best round::

    python bench/server/micro.py --baseline HEAD~3
    python bench/server/micro.py --breakdown      # where a batch-32 request's time goes

A tree that serves feedback (``/v2/models/{m}/feedback``) is sent one outcome and one value
before the inference cases, so that its feedback counters exist while inference is timed,
and its feedback request is timed too (``-`` for a tree without it).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable, Sequence
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _bodies() -> dict[str, tuple[bytes, bytes]]:
    """Return case name -> (path, JSON body): the benchmark's rows and variants of them."""
    import orjson
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    ints = x[:32].astype(int).tolist()
    floats = (x[:32] / 16.0).tolist()  # what a client that scales its features sends

    def v2(rows: Any, shape: list[int]) -> bytes:
        return orjson.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": rows}]}
        )

    v1p, v2p = b"/v1/models/digits:predict", b"/v2/models/digits/infer"
    return {
        "V1 b1 ints": (v1p, orjson.dumps({"instances": ints[:1]})),
        "V1 b32 ints": (v1p, orjson.dumps({"instances": ints})),
        "V1 b32 floats": (v1p, orjson.dumps({"instances": floats})),
        "V2 b1 ints": (v2p, v2(ints[:1], [1, 64])),
        "V2 b32 nested ints": (v2p, v2(ints, [32, 64])),
        "V2 b32 flat ints": (v2p, v2([v for r in ints for v in r], [32, 64])),
        "V2 b32 nested floats": (v2p, v2(floats, [32, 64])),
        "V2 b32 flat floats": (v2p, v2([v for r in floats for v in r], [32, 64])),
    }


class _Transport:
    """Collects what the server writes; enough of asyncio.Transport for one protocol."""

    def __init__(self) -> None:
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


def _best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _models() -> pathlib.Path:
    found = REPO / "models" / "digits-onnx" / "v1"
    if (found / "model.onnx").exists():
        return found
    sys.path.insert(0, str(HERE))
    import run_benchmark

    return run_benchmark.train(pathlib.Path("/tmp/kubeserve-bench")) / "digits-onnx" / "v1"


def child(number: int, repeat: int) -> dict[str, float]:
    """Time every case with the kubeserve found first on sys.path."""
    from kubeserve.server import dataplane, http, metrics, repository, runtimes

    repo = repository.discover(
        name="digits",
        model_dir=_models(),
        fmt="onnx",
        variant="v1",
        options=runtimes.RuntimeOptions(),
    )
    repo.load_all()
    app = http.App(dataplane.DataPlane(repo), metrics.Metrics(), variant="v1", max_body=1 << 24)
    transport = _Transport()
    conn = http.HttpProtocol(app)
    conn.connection_made(transport)  # type: ignore[arg-type]
    feedback = _post(b"/v2/models/digits/feedback", b'{"outcome": 1, "requestId": "bench-1"}')
    conn.data_received(feedback)
    has_feedback = transport.last.startswith(b"HTTP/1.1 200")
    if has_feedback:
        conn.data_received(_post(b"/v2/models/digits/feedback", b'{"value": 2.5}'))
    out = {}
    for name, (path, body) in _bodies().items():
        request = _post(path, body)
        conn.data_received(request)
        if not transport.last.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{name}: {transport.last[:300]!r}")
        out[name] = _best_us(functools.partial(conn.data_received, request), number, repeat)
    if has_feedback:
        send = functools.partial(conn.data_received, feedback)
        out["feedback (outcome)"] = _best_us(send, number, repeat)
    return out


def _post(path: bytes, body: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path, len(body), body)
    )


def breakdown(number: int, repeat: int) -> list[tuple[str, float]]:
    """Time the pieces of a V2 batch-32 request (nested ints) one by one."""
    import numpy as np
    import orjson

    from kubeserve.server import dataplane, repository, runtimes, tensors

    repo = repository.discover(
        name="digits",
        model_dir=_models(),
        fmt="onnx",
        variant="v1",
        options=runtimes.RuntimeOptions(),
    )
    repo.load_all()
    plane = dataplane.DataPlane(repo)
    m = repo.versions["v1"]
    body = _bodies()["V2 b32 nested ints"][1]
    data = orjson.loads(body)["inputs"][0]["data"]
    f32 = np.dtype(np.float32)
    array = np.asarray(data).astype(f32)
    outputs = m.predict({"input": array})
    names = [o.name for o in m.outputs]
    fbody = _bodies()["V2 b32 nested floats"][1]
    fdata = orjson.loads(fbody)["inputs"][0]["data"]
    steps: list[tuple[str, Callable[[], object]]] = [
        ("orjson.loads (ints)", lambda: orjson.loads(body)),
        ("orjson.loads (floats)", lambda: orjson.loads(fbody)),
        ("has_literals (text scan for true/false)", lambda: tensors.has_literals(body)),
        ("np.asarray + astype (ints), the old path", lambda: np.asarray(data).astype(f32)),
        ("np.asarray + astype (floats), the old path", lambda: np.asarray(fdata).astype(f32)),
        ("fast_floats (ints)", lambda: tensors.fast_floats(data, f32)),
        ("fast_floats (floats)", lambda: tensors.fast_floats(fdata, f32)),
        ("ONNX Runtime predict, both outputs", lambda: m.predict({"input": array})),
        (
            "V2 reply: encode + orjson.dumps",
            lambda: plane._v2_reply(m, outputs, dataplane.Request({"input": array}, names)),
        ),
        ("data plane v2_infer, whole", lambda: plane.v2_infer("digits", None, body)),
    ]
    return [(label, _best_us(fn, number, repeat)) for label, fn in steps]


def _export(rev: str, into: pathlib.Path) -> pathlib.Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "operator/kubeserve"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "operator"


def _run_child(source: pathlib.Path, number: int, repeat: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", "--number", str(number), "--repeat", str(repeat)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print a Markdown table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git revision to compare with, e.g. HEAD~3")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per tree")
    parser.add_argument("--number", type=int, default=500, help="requests per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings per round (best kept)")
    parser.add_argument("--breakdown", action="store_true", help="time the pieces instead")
    parser.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.number, args.repeat)))
        return 0
    if args.breakdown:
        sys.path.insert(0, str(REPO / "operator"))
        rows = breakdown(args.number, args.repeat)
        print("| step | us |\n|---|---:|")
        for label, us in rows:
            print(f"| {label} | {us:.1f} |")
        if args.json:
            args.json.write_text(json.dumps(dict(rows), indent=1))
        return 0
    current = REPO / "operator"
    best: dict[str, dict[str, float]] = {"after": {}, "before": {}}
    with tempfile.TemporaryDirectory(prefix="kubeserve-micro-") as tmp:
        trees = {"after": current}
        if args.baseline:
            trees["before"] = _export(args.baseline, pathlib.Path(tmp))
        for _ in range(args.rounds):
            for label, source in trees.items():
                for case, us in _run_child(source, args.number, args.repeat).items():
                    best[label][case] = min(us, best[label].get(case, float("inf")))
    if args.baseline:
        print(f"| case | before ({args.baseline}) us | after us | speed-up |")
        print("|---|---:|---:|---:|")
        for case in {**best["before"], **best["after"]}:
            before, after = best["before"].get(case), best["after"].get(case)
            if before is None or after is None:  # a case one tree does not serve
                shown = [f"{us:.1f}" if us is not None else "-" for us in (before, after)]
                print(f"| {case} | {shown[0]} | {shown[1]} | - |")
                continue
            print(f"| {case} | {before:.1f} | {after:.1f} | {before / after:.2f}x |")
    else:
        print("| case | us |\n|---|---:|")
        for case, after in best["after"].items():
            print(f"| {case} | {after:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"baseline": args.baseline, **best}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
