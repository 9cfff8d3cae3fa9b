"""Time how a large JSON body's tensor values are read: ``numeric_json.scan`` then
``Span.values``, against ``orjson.loads`` of the whole body and ``np.array`` of its list
(what a server that parses the body in one call, MLServer's way, pays).

In process, no HTTP; each figure is the best of ``--repeat`` runs, in milliseconds.
``--source`` reads another tree's server, to compare with a git revision::

    .venv/bin/python bench/server/json_parse.py                 # every case
    .venv/bin/python bench/server/json_parse.py --case image --profile
    mkdir /tmp/base && git archive REV operator | tar -x -C /tmp/base
    .venv/bin/python bench/server/json_parse.py --source /tmp/base/operator

Cases: ``image`` is a V2 request of a 1x224x224x3 FP32 image with flat ``data``
(``pixels.ravel().tolist()``, as tritonclient sends it: 2.9 MB), ``image-nested`` the same
values as ``x.tolist()`` of the 4-D array, ``digits`` 16 MiB of one-digit ints (flat, and
in rows of 64 as ``digit-rows``) and ``floats`` 16 MiB of float64 values, flat.
"""

from __future__ import annotations

import argparse
import cProfile
import pathlib
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

MIB = 1 << 20
HERE_SOURCE = pathlib.Path(__file__).resolve().parents[2] / "operator"


def _v2(data: Any, shape: list[int]) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": shape, "data": data}
    return orjson.dumps({"inputs": [tensor]})


def bodies() -> dict[str, bytes]:
    """Return case name -> JSON body."""
    rng = np.random.default_rng(0)
    pixels = rng.random((1, 224, 224, 3)).astype(np.float32)
    digits = rng.integers(0, 10, size=8 * MIB)  # "d," each: 16 MiB
    floats = rng.random(16 * MIB // 20).tolist()  # about 19 bytes and a comma each
    return {
        "image": _v2(pixels.ravel().tolist(), [1, 224, 224, 3]),
        "image-nested": _v2(pixels.tolist(), [1, 224, 224, 3]),
        "digits": _v2(digits.tolist(), [digits.size]),
        "digit-rows": _v2(digits.reshape(-1, 64).tolist(), [digits.size // 64, 64]),
        "floats": _v2(floats, [len(floats)]),
    }


def data_at(body: bytes) -> tuple[int, int]:
    """Return where the (only) tensor's ``data`` array starts and ends."""
    start = body.index(b"[", body.index(b'"data"'))
    end = body.rindex(b"]}]}") + 1  # "data" is the tensor's last member
    return start, end


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def measure(body: bytes, repeat: int) -> dict[str, float]:
    """Time scan, values (float64, into one array) and orjson + np.array for ``body``."""
    from kubeserve.server import numeric_json

    start, end = data_at(body)
    f64 = np.dtype(np.float64)

    def values() -> np.ndarray:
        span = numeric_json.scan(body, start, end)
        out = np.empty(span.count, dtype=f64)
        at = 0
        for window in span.values(f64):
            out[at : at + window.size] = window
            at += window.size
        return out

    def by_orjson() -> np.ndarray:
        return np.array(orjson.loads(body)["inputs"][0]["data"], dtype=f64)

    scan = best_ms(lambda: numeric_json.scan(body, start, end), repeat)
    both = best_ms(values, repeat)
    assert values().tobytes() == by_orjson().ravel().tobytes()
    return {"scan": scan, "scan+values": both, "orjson+np.array": best_ms(by_orjson, repeat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", help="a case to run (default: all)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (best kept)")
    parser.add_argument("--profile", action="store_true", help="profile scan instead")
    parser.add_argument("--source", default=str(HERE_SOURCE), help="where kubeserve is")
    args = parser.parse_args()
    sys.path.insert(0, args.source)
    from kubeserve.server import numeric_json

    print(f"kubeserve from {numeric_json.__file__}")
    cases = bodies()
    for name in args.case or list(cases):
        body = cases[name]
        if args.profile:
            start, end = data_at(body)
            profile = cProfile.Profile()
            profile.runcall(numeric_json.scan, body, start, end)
            print(f"== {name}")
            pstats.Stats(profile).sort_stats("tottime").print_stats(10)
            continue
        figures = measure(body, args.repeat)
        shown = "  ".join(f"{k} {v:7.1f} ms" for k, v in figures.items())
        print(f"{name:13s} {len(body) / MIB:5.1f} MiB  {shown}")


if __name__ == "__main__":
    main()
