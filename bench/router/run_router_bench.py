"""Measure the latency the nginx router adds: wrk through nginx vs straight to the same server.

One kubeserve model server (the digits ONNX model, trained by scripts/train_example_models.py)
runs on a loopback port; the router config that the operator would put in the ConfigMap is
rendered for a one-variant InferenceService and run on Debian's nginx, its upstream pointed
at that server. wrk then drives the same V2 request (batch 1) at 8 and 64 connections, direct
and through nginx, alternating, in the same run. `--upstream fixed` uses a fixed-cost stand-in
(kubeserve/testing/upstream.py) instead of the model server.

    .venv/bin/python bench/router/run_router_bench.py --duration 10 --out bench/router/results.json

Prints a Markdown table; writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

import loadgen  # noqa: E402

from kubeserve.api import validation  # noqa: E402
from kubeserve.builders import nginx_config  # noqa: E402
from kubeserve.local import router_config  # noqa: E402
from kubeserve.testing import nginx as dataplane  # noqa: E402

PATH = "/v2/models/digits/infer"


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


@contextlib.contextmanager
def model_server(work: pathlib.Path, workers: int) -> Iterator[int]:
    """Train the digits models (once) and run `kubeserve serve` on a loopback port."""
    models = work / "models"
    if not (models / "digits-onnx").exists():
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "train_example_models.py"),
                "--out",
                str(models),
                "--formats",
                "onnx",
            ],
            check=True,
        )
    port = dataplane.free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeserve.server",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-name",
            "digits",
            "--model-dir",
            str(models / "digits-onnx"),
            "--variant",
            "v1",
            "--workers",
            str(workers),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_pin_server,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/v2/health/ready")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# With --pin, the server gets CPU 0 and everything else (wrk, nginx) CPU 1: the server is
# then the bottleneck and the router's cost shows as latency, not as a fight for CPU.
SERVER_CPUS: set[int] | None = None


def _pin_server() -> None:
    if SERVER_CPUS is not None:
        os.sched_setaffinity(0, SERVER_CPUS)


@contextlib.contextmanager
def fixed_server() -> Iterator[int]:
    ups = dataplane.Upstreams(["v1"])
    if SERVER_CPUS is not None:
        os.sched_setaffinity(ups.proc.pid, SERVER_CPUS)
    try:
        yield ups.ports["v1"]
    finally:
        ups.stop()


def body(work: pathlib.Path) -> pathlib.Path:
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    path = work / "v2-b1.json"
    row = x[:1].astype(int).tolist()
    path.write_text(
        json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row}]}
        )
    )
    return path


def wait_quiet(limit: float = 120) -> bool:
    """Wait until the machine is nearly idle (others may share it); say whether it got there."""
    if loadgen.wait_for_quiet(0.9, limit, sample=0.5) >= 0.9:
        return True
    print("machine not quiet: measuring anyway", file=sys.stderr)
    return False


def tcp_active_opens() -> int:
    """Count the TCP connections this machine has opened so far (all processes)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("ActiveOpens")])


def wrk(
    url: str,
    *,
    connections: int,
    duration: int,
    threads: int,
    lua: pathlib.Path,
    body_path: pathlib.Path,
) -> dict[str, Any]:
    """Run wrk once; give requests/s, p50 and p99 in ms, errors and new TCP connections.

    Through nginx, connections beyond wrk's own are ones nginx opened to the server because
    its keep-alive pool was too small (other processes on the machine add to the count too).
    """
    opens = tcp_active_opens()
    result: dict[str, Any] = loadgen.run_wrk(
        url, body=body_path, lua=lua, connections=connections, seconds=duration, threads=threads
    )
    result["tcp_opens"] = tcp_active_opens() - opens
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", choices=("kubeserve", "fixed"), default="kubeserve")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--rounds", type=int, default=2, help="direct/nginx pairs per connection count"
    )
    parser.add_argument("--connections", default="8,64")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--server-workers", type=int, default=1)
    parser.add_argument(
        "--upstream-keepalive",
        type=int,
        help="render the upstream `keepalive` (idle connections per worker) with this, to compare",
    )
    parser.add_argument(
        "--router-workers",
        type=int,
        help="spec.routing.router.workers (nginx worker processes); default: the spec's default",
    )
    parser.add_argument(
        "--quiet-limit",
        type=float,
        default=120,
        help="seconds to wait for a quiet machine before each run (then it measures anyway)",
    )
    parser.add_argument("--out", type=pathlib.Path, help="write the raw results here as JSON")
    parser.add_argument(
        "--pin", action="store_true", help="server on CPU 0; wrk and nginx on the other CPUs"
    )
    args = parser.parse_args()
    if args.pin:
        global SERVER_CPUS
        cpus = sorted(os.sched_getaffinity(0))
        SERVER_CPUS = {cpus[0]}
        # Children (nginx and its workers, wrk) inherit this.
        os.sched_setaffinity(0, set(cpus[1:]))
    if dataplane.NGINX is None:
        print("nginx is not installed", file=sys.stderr)
        return 2
    from support import specs

    with tempfile.TemporaryDirectory() as d:
        work = pathlib.Path(d)
        lua = work / "post.lua"
        lua.write_text(loadgen.LUA)
        body_path = body(work)
        server = (
            model_server(work, args.server_workers)
            if args.upstream == "kubeserve"
            else fixed_server()
        )
        with server as port:
            routing = {"router": {"workers": args.router_workers}} if args.router_workers else None
            isvc = validation.parse(specs.isvc(specs.variant("v1"), routing=routing))
            listen, health = dataplane.free_port(), dataplane.free_port()
            nginx_dir = work / "nginx"
            nginx_dir.mkdir()
            conf = nginx_config.render_config(
                isvc,
                placement=router_config.loopback_placement(
                    {"v1": port}, listen=listen, health=health, workdir=nginx_dir
                ),
                upstream_keepalive=args.upstream_keepalive or nginx_config.UPSTREAM_KEEPALIVE,
            )
            nginx = dataplane.Nginx(nginx_dir, conf, health=health)
            try:
                results: list[dict[str, Any]] = []
                for c in (int(x) for x in args.connections.split(",")):
                    for path in (port, listen):
                        # Warm up both (keep-alive pools, caches) before measuring.
                        wrk(
                            f"http://127.0.0.1:{path}{PATH}",
                            connections=c,
                            duration=2,
                            threads=args.threads,
                            lua=lua,
                            body_path=body_path,
                        )
                    for r in range(args.rounds):
                        for p, target in ((port, "direct"), (listen, "nginx")):
                            quiet = wait_quiet(args.quiet_limit)
                            res = wrk(
                                f"http://127.0.0.1:{p}{PATH}",
                                connections=c,
                                duration=args.duration,
                                threads=args.threads,
                                lua=lua,
                                body_path=body_path,
                            )
                            results.append(
                                {
                                    "connections": c,
                                    "target": target,
                                    "round": r,
                                    "quiet": quiet,
                                    **res,
                                }
                            )
                            print(f"c={c} {target:6} round {r}: {res}", file=sys.stderr)
            finally:
                nginx.stop()
    summary = summarise(results)
    meta = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "nginx": subprocess.run(
            [dataplane.NGINX, "-v"], capture_output=True, text=True
        ).stderr.strip(),
        "upstream": args.upstream,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "wrk_threads": args.threads,
        "server_workers": args.server_workers,
        "router_workers": int(nginx_config.router_settings(isvc).workers),
        "upstream_keepalive": args.upstream_keepalive or nginx_config.UPSTREAM_KEEPALIVE,
        "pinned": bool(args.pin),
        "runs_on_a_quiet_machine": f"{sum(r['quiet'] for r in results)} of {len(results)}",
    }
    if args.out:
        args.out.write_text(
            json.dumps({"meta": meta, "runs": results, "summary": summary}, indent=2) + "\n"
        )
    print(table(summary, meta))
    return 0


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Take the median over rounds of each figure, per connection count and target."""
    import statistics

    rows = []
    for c in sorted({r["connections"] for r in results}):

        def med(target: str, key: str, c: int = c) -> float:
            return statistics.median(
                r[key] for r in results if r["connections"] == c and r["target"] == target
            )

        row: dict[str, Any] = {"connections": c}
        for key in ("p50_ms", "p99_ms", "rps"):
            row[f"direct_{key}"] = med("direct", key)
            row[f"nginx_{key}"] = med("nginx", key)
        row["added_p50_ms"] = row["nginx_p50_ms"] - row["direct_p50_ms"]
        row["added_p99_ms"] = row["nginx_p99_ms"] - row["direct_p99_ms"]
        row["throughput_ratio"] = row["nginx_rps"] / row["direct_rps"]
        # Each round's direct and nginx runs follow one another, so the difference within a
        # pair cancels part of the machine's drift; the spread of those says how noisy it was.
        pairs = [
            (d, n)
            for d in results
            for n in results
            if d["connections"] == n["connections"] == c
            and d["round"] == n["round"]
            and (d["target"], n["target"]) == ("direct", "nginx")
        ]
        added = [n["p50_ms"] - d["p50_ms"] for d, n in pairs]
        ratios = [n["rps"] / d["rps"] for d, n in pairs]
        row["pair_added_p50_ms"] = {
            "median": statistics.median(added),
            "min": min(added),
            "max": max(added),
        }
        row["pair_ratio"] = {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        }
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"upstream: {meta['upstream']}; {meta['machine']}; {meta['nginx']}; "
        f"nginx {meta['router_workers']} workers, upstream keepalive {meta['upstream_keepalive']}; "
        f"wrk {meta['wrk_threads']} threads, {meta['duration_s']} s x {meta['rounds']} rounds (median)"
        + ("; server pinned to CPU 0, wrk and nginx to the rest" if meta["pinned"] else "")
        + f"; runs on a quiet machine: {meta['runs_on_a_quiet_machine']}",
        "",
        "| connections | p50 direct | p50 nginx | added p50 | p99 direct | p99 nginx | added p99 "
        "| req/s direct | req/s nginx | ratio | added p50 per pair | ratio per pair |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['connections']} | {r['direct_p50_ms']:.3f} ms | {r['nginx_p50_ms']:.3f} ms | "
            f"{r['added_p50_ms']:+.3f} ms | {r['direct_p99_ms']:.3f} ms | {r['nginx_p99_ms']:.3f} ms | "
            f"{r['added_p99_ms']:+.3f} ms | {r['direct_rps']:.0f} | {r['nginx_rps']:.0f} | "
            f"{r['throughput_ratio']:.3f} | "
            f"{r['pair_added_p50_ms']['median']:+.3f} ({r['pair_added_p50_ms']['min']:+.3f} to "
            f"{r['pair_added_p50_ms']['max']:+.3f}) ms | {r['pair_ratio']['median']:.2f} "
            f"({r['pair_ratio']['min']:.2f} to {r['pair_ratio']['max']:.2f}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
