"""A gRPC load generator for the image benchmark: wrk's model, over the Open Inference Protocol.

ghz (the usual tool) is a Go binary that none of this project's package registries carries,
so this is Python: one process, ``--connections`` separate HTTP/2 connections (a local
subchannel pool each, or gRPC would share one), each with one call in flight that is sent
again as soon as it returns, all with the same pre-serialised ``ModelInferRequest``
(``v2_wire.infer_request``), so no request is built or serialised in the loop. It warms up,
then counts the calls that finish in the measured window and their latencies, and prints
one JSON object: ``rps``, ``p50_ms``, ``p99_ms``, ``errors``, ``requests``. With
``--cpu-of PGID`` it also gives the CPU per call, in ms, that the processes of group PGID
(the server) and this process spent between the window's edges (``server_cpu_ms``,
``client_cpu_ms``): its own start-up and the calls still running at the end stay out.

It runs in a process of its own (the benchmark starts it), so its CPU is not the driver's.
Its own ceiling, against a server that answers at once without reading the tensor, is
what ``--serve-null PORT`` is for: ``run_image_bench.py --ceiling`` measures it per body
and connection count and prints it beside the results.

    python grpc_load.py --target 127.0.0.1:9202 --body request.bin --connections 8 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import cpu_time
import v2_wire

Call = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
# Large enough for a batch of 8 images as FP32 (4.8 MB) and any answer.
MAX_MESSAGE = 64 * 1024 * 1024
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    # One TCP connection per channel, as wrk opens one per connection.
    ("grpc.use_local_subchannel_pool", 1),
]


def percentile(values: Sequence[float], pct: float) -> float:
    """Return the nearest-rank percentile of ``values`` (NaN for none)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]


async def drive(
    target: str,
    body: bytes,
    *,
    connections: int,
    duration: float,
    warmup: float,
    timeout: float,
    cpu_of: int = 0,
) -> dict[str, float]:
    """Keep one call in flight per connection; measure the calls of the last ``duration`` s.

    ``cpu_of``: a process group whose CPU per call in the window to report (0: none).
    """
    channels = [grpc.aio.insecure_channel(target, options=OPTIONS) for _ in range(connections)]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), timeout=10)
        # No serialisers: bytes go out and come back as they are.
        calls: list[Call] = [c.unary_unary(v2_wire.METHOD) for c in channels]
        start = time.perf_counter()
        measure_from = start + warmup
        stop = measure_from + duration
        latencies: list[float] = []
        errors = 0
        finished = 0
        edges: list[tuple[int, float, float]] = []  # (calls finished, server CPU, own CPU)

        async def sample(at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            edges.append((finished, cpu_time.group_cpu(cpu_of), time.process_time()))

        async def worker(call: Call) -> None:
            nonlocal errors, finished
            while (now := time.perf_counter()) < stop:
                try:
                    await call(body, timeout=timeout)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                finished += 1
                done = time.perf_counter()
                if now >= measure_from and done <= stop:
                    latencies.append(done - now)

        samplers = [sample(measure_from), sample(stop)] if cpu_of else []
        await asyncio.gather(*(worker(c) for c in calls), *samplers)
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    result = {
        "rps": len(latencies) / duration,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "errors": errors,
        "requests": len(latencies),
    }
    if len(edges) == 2 and edges[1][0] > edges[0][0]:
        calls_between = edges[1][0] - edges[0][0]
        result["server_cpu_ms"] = (edges[1][1] - edges[0][1]) * 1e3 / calls_between
        result["client_cpu_ms"] = (edges[1][2] - edges[0][2]) * 1e3 / calls_between
    return result


async def serve_null(port: int) -> None:
    """Answer every ModelInfer at once with an empty response: the generator's ceiling."""

    async def infer(_request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return b""

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)},
    )
    server = grpc.aio.server(options=OPTIONS[:2])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> int:
    """Drive a server (or, with --serve-null, be the null server) and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="host:port of the gRPC server")
    parser.add_argument("--body", type=pathlib.Path, help="a serialised ModelInferRequest")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    parser.add_argument("--serve-null", type=int, metavar="PORT")
    parser.add_argument(
        "--cpu-of", type=int, default=0, metavar="PGID", help="report this group's CPU per call"
    )
    args = parser.parse_args(argv)
    if args.serve_null:
        asyncio.run(serve_null(args.serve_null))
        return 0
    if not args.target or not args.body:
        parser.error("--target and --body are needed")
    result = asyncio.run(
        drive(
            args.target,
            args.body.read_bytes(),
            connections=args.connections,
            duration=args.duration,
            warmup=args.warmup,
            timeout=args.timeout,
            cpu_of=args.cpu_of,
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
