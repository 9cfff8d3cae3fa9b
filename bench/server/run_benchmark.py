"""Benchmark kubeserve against KServe 0.21 and MLServer 1.7.1 on the digits model, in one run.

All servers start together and are checked for correct answers; then, scenario by scenario
(V1 and V2, batch 1 and 32, 1, 8 and 64 connections), each server in turn is driven by
``wrk`` while the others sit idle. Results: a JSON file, a Markdown table on stdout and a
PNG plot.

The peers live in their own virtual environments (see docs/benchmarks.md)::

    python bench/server/run_benchmark.py \\
        --kserve-python /work/venv-kserve/bin/python \\
        --mlserver /work/venv-mlserver/bin/mlserver
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

import loadgen  # noqa: E402


@dataclasses.dataclass
class Target:
    """One server under test and how to reach it."""

    name: str
    command: list[str]
    port: int
    v1_path: str | None
    v2_path: str
    cwd: pathlib.Path | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)


def train(work: pathlib.Path) -> pathlib.Path:
    """Write the digits models with the project's own script; return the output dir."""
    out = work / "models"
    if not (out / "digits-onnx" / "v1" / "model.onnx").exists():
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "train_example_models.py"), "--out", str(out)],
            check=True,
        )
    return out


def bodies(work: pathlib.Path) -> tuple[dict[tuple[str, int], pathlib.Path], list[int]]:
    """Write the request bodies (V1/V2 x batch 1/32) and return them with true labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rows = x[:32].astype(int).tolist()
    paths = {}
    for batch in (1, 32):
        v1 = {"instances": rows[:batch]}
        v2 = {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [batch, 64], "data": rows[:batch]}
            ]
        }
        for proto, body in (("v1", v1), ("v2", v2)):
            path = work / f"{proto}-b{batch}.json"
            path.write_text(json.dumps(body))
            paths[(proto, batch)] = path
    return paths, y[:32].tolist()


def targets(args: argparse.Namespace, models: pathlib.Path, work: pathlib.Path) -> list[Target]:
    """Describe the servers: kubeserve (ONNX and sklearn runtimes), KServe, MLServer."""
    found = []
    kubeserve = [
        sys.executable,
        "-m",
        "kubeserve.server",
        "serve",
        "--host",
        "127.0.0.1",
        "--model-name",
        "digits",
        "--variant",
        "v1",
        *args.kubeserve_args.split(),
    ]
    tag = f" {args.kubeserve_args}" if args.kubeserve_args else ""
    quiet = {"KUBESERVE_LOG_LEVEL": "WARNING"}
    v1, v2 = "/v1/models/digits:predict", "/v2/models/digits/infer"
    for i, workers in enumerate(int(w) for w in args.workers.split(",")):
        suffix = "" if workers == 1 else f", {workers} workers"
        base = 9110 + 10 * i  # every server gets its own port: they all run at once
        if "kubeserve" in args.servers:
            found.append(
                Target(
                    f"kubeserve (onnx{suffix}){tag}",
                    [
                        *kubeserve,
                        "--port",
                        str(base + 1),
                        "--workers",
                        str(workers),
                        "--model-dir",
                        str(models / "digits-onnx" / "v1"),
                    ],
                    base + 1,
                    v1,
                    v2,
                    env=quiet,
                )
            )
        if args.baseline and workers == 1:
            # The same server from an older revision, for before/after figures in one run.
            source = export_revision(args.baseline, work / "baseline")
            found.append(
                Target(
                    f"kubeserve (onnx) @{args.baseline}",
                    [
                        *kubeserve,
                        "--port",
                        str(base + 4),
                        "--workers",
                        str(workers),
                        "--model-dir",
                        str(models / "digits-onnx" / "v1"),
                    ],
                    base + 4,
                    v1,
                    v2,
                    env={**quiet, "PYTHONPATH": str(source)},
                )
            )
        if "kubeserve-sklearn" in args.servers and workers == 1:  # a reference row, once
            found.append(
                Target(
                    f"kubeserve (sklearn{suffix})",
                    [
                        *kubeserve,
                        "--port",
                        str(base + 2),
                        "--workers",
                        str(workers),
                        "--model-dir",
                        str(models / "digits-sklearn" / "v1"),
                    ],
                    base + 2,
                    v1,
                    v2,
                    env=quiet,
                )
            )
        if "kserve" in args.servers and args.kserve_python:
            found.append(
                Target(
                    f"KServe 0.21{' (' + str(workers) + ' workers)' if workers > 1 else ''}",
                    [
                        args.kserve_python,
                        str(HERE / "kserve_peer.py"),
                        "--model_name",
                        "digits",
                        "--model_path",
                        str(models / "digits-joblib" / "v1" / "model.joblib"),
                        "--http_port",
                        str(base + 3),
                        "--workers",
                        str(workers),
                    ],
                    base + 3,
                    v1,
                    v2,
                )
            )
    if "mlserver" in args.servers and args.mlserver:
        repo = work / "mlserver"
        (repo / "digits").mkdir(parents=True, exist_ok=True)
        shutil.copy(models / "digits-joblib" / "v1" / "model.joblib", repo / "digits")
        (repo / "digits" / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": "digits",
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./model.joblib"},
                }
            )
        )
        (repo / "settings.json").write_text(
            json.dumps({"http_port": 9104, "grpc_port": 9105, "metrics_port": 9106})
        )
        # MLServer speaks only V2; it runs its default of one inference worker process.
        found.append(
            Target(
                "MLServer 1.7.1",
                [args.mlserver, "start", str(repo)],
                9104,
                None,
                "/v2/models/digits/infer",
                cwd=repo,
            )
        )
    return found


def export_revision(rev: str, into: pathlib.Path) -> pathlib.Path:
    """Write the ``kubeserve`` package of git revision ``rev`` under ``into``; return its root.

    Put first on PYTHONPATH, it shadows the installed (editable) package.
    """
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "operator/kubeserve"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "operator"


def post(port: int, path: str, body: bytes) -> tuple[int, Any]:
    """POST JSON; return status and decoded body."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@contextlib.contextmanager
def started(target: Target, log: pathlib.Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server and wait until its V2 readiness answers 200."""
    proc = subprocess.Popen(
        target.command,
        cwd=target.cwd,
        env={**os.environ, **target.env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{target.name} exited; see {log}")
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{target.port}/v2/health/ready"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target.name} not ready in 120s; see {log}")
            time.sleep(0.25)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def check(target: Target, paths: dict[tuple[str, int], pathlib.Path], labels: list[int]) -> None:
    """Refuse to benchmark a server that answers wrongly."""
    for (proto, batch), path in paths.items():
        route = target.v1_path if proto == "v1" else target.v2_path
        if route is None:
            continue
        status, body = post(target.port, route, path.read_bytes())
        if status != 200:
            raise RuntimeError(f"{target.name} {proto} batch {batch}: HTTP {status}: {body}")
        if proto == "v1":
            got = body["predictions"]
        else:
            out = body["outputs"][0]
            got = [int(v) for v in out["data"]]
        agree = sum(int(a) == b for a, b in zip(got, labels[:batch], strict=True))
        if agree < 0.9 * batch:
            raise RuntimeError(f"{target.name} {proto} batch {batch}: wrong predictions {got}")


def wrk(
    url: str, body: pathlib.Path, lua: pathlib.Path, *, connections: int, seconds: int
) -> dict[str, float]:
    """Run wrk; a failed run (e.g. cannot connect) is recorded instead of losing the others."""
    try:
        r = loadgen.run_wrk(url, body=body, lua=lua, connections=connections, seconds=seconds)
    except loadgen.WrkFailed as exc:
        print(f"wrk failed: {exc}", file=sys.stderr)
        return {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": -1}
    return {
        "rps": r["rps"],
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "errors": r["non_2xx"] + r["socket_errors"],
    }


def machine() -> dict[str, str]:
    """Describe where the numbers came from."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
    }


def table(results: list[dict[str, Any]]) -> str:
    """Render the results as a Markdown table with ratios to the faster peer."""
    lines = [
        "| protocol | batch | conns | server | req/s | p50 ms | p99 ms | errors | vs faster peer |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({(r["protocol"], r["batch"], r["connections"]) for r in results})
    for key in keys:
        rows = [r for r in results if (r["protocol"], r["batch"], r["connections"]) == key]
        peers = [r["rps"] for r in rows if not r["server"].startswith("kubeserve")]
        best = max(peers) if peers else None
        for r in rows:
            mine = best and r["server"].startswith("kubeserve")
            ratio = f"{r['rps'] / best:.1f}x" if mine else ""
            lines.append(
                f"| {key[0].upper()} | {key[1]} | {key[2]} | {r['server']} | "
                f"{r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['errors']} | {ratio} |"
            )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: pathlib.Path) -> None:
    """Draw req/s per scenario and server (log scale: the gap spans an order of magnitude)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = list(dict.fromkeys(r["server"] for r in results))
    scenarios = sorted({(r["protocol"], r["batch"], r["connections"]) for r in results})
    fig, ax = plt.subplots(figsize=(13, 5))
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        values = []
        for s in scenarios:
            found = [
                r["rps"]
                for r in results
                if r["server"] == server and (r["protocol"], r["batch"], r["connections"]) == s
            ]
            values.append(found[0] if found else 0)
        ax.bar([x + i * width for x in range(len(scenarios))], values, width, label=server)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(scenarios))])
    ax.set_xticklabels([f"{p.upper()} b{b}\n{c} conn" for p, b, c in scenarios], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (log scale)")
    # Every scenario's bars come from one run; report.py --override may take different
    # scenarios from different runs.
    ax.set_title(
        "digits classifier: kubeserve vs KServe 0.21 vs MLServer 1.7.1 (same machine, "
        "wrk; each scenario's servers measured in the same run)",
        fontsize=10,
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/kubeserve-bench"))
    parser.add_argument("--kserve-python", help="python of a venv with kserve==0.21.0")
    parser.add_argument("--mlserver", help="mlserver executable of a venv with mlserver==1.7.1")
    parser.add_argument("--servers", default="kubeserve,kubeserve-sklearn,kserve,mlserver")
    parser.add_argument("--connections", default="1,8,64")
    parser.add_argument("--protocols", default="v1,v2", help="e.g. v2 for V2 scenarios only")
    parser.add_argument("--batches", default="1,32", help="e.g. 32 for batch-32 scenarios only")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per scenario")
    parser.add_argument(
        "--workers", default="1", help="worker counts to run kubeserve and KServe with, e.g. 1,2"
    )
    parser.add_argument(
        "--kubeserve-args", default="", help="extra flags for kubeserve, e.g. '--batch-max-size 32'"
    )
    parser.add_argument("--baseline", help="also serve kubeserve from this git revision")
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.9,
        help="idle CPU share to wait for before each measurement",
    )
    parser.add_argument(
        "--patience", type=float, default=60.0, help="most seconds to wait for that"
    )
    parser.add_argument("--json", type=pathlib.Path, default=HERE / "results.json")
    parser.add_argument("--png", type=pathlib.Path, default=REPO / "docs" / "benchmarks-server.png")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk not found: apt-get install wrk")
    args.work.mkdir(parents=True, exist_ok=True)
    lua = args.work / "post.lua"
    lua.write_text(loadgen.LUA)
    models = train(args.work)
    paths, labels = bodies(args.work)
    conns = [int(c) for c in args.connections.split(",")]
    wanted = {(p, int(b)) for p in args.protocols.split(",") for b in args.batches.split(",")}
    results: list[dict[str, Any]] = []
    servers = targets(args, models, args.work)
    with contextlib.ExitStack() as stack:
        # All servers run at once, idle but for the one being measured; the scenarios are
        # the outer loop, so every server meets a scenario within the same minute or two.
        # On a machine shared with other work that keeps the comparison fair.
        for target in servers:
            log = args.work / f"{target.name.split()[0].lower()}-{target.port}.log"
            stack.enter_context(started(target, log))
            check(target, paths, labels)
        for (proto, batch), body in sorted(paths.items()):
            if (proto, batch) not in wanted:
                continue
            for c in conns:
                for target in servers:
                    route = target.v1_path if proto == "v1" else target.v2_path
                    if route is None:
                        continue
                    url = f"http://127.0.0.1:{target.port}{route}"
                    idle = loadgen.wait_for_quiet(args.quiet, args.patience)
                    if args.warmup:
                        wrk(url, body, lua, connections=c, seconds=args.warmup)
                    r = wrk(url, body, lua, connections=c, seconds=args.duration)
                    row = {
                        "server": target.name,
                        "protocol": proto,
                        "batch": batch,
                        "connections": c,
                        "idle_before": round(idle, 3),
                        **r,
                    }
                    results.append(row)
                    print(
                        f"{target.name:28} {proto} b{batch} c{c}: {r['rps']:,.0f} req/s "
                        f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
                        f"errors {r['errors']} (idle before {idle:.0%})",
                        file=sys.stderr,
                    )
                    # Written after every measurement: a crash later keeps what was measured.
                    report = {"machine": machine(), "duration_s": args.duration, "results": results}
                    args.json.write_text(json.dumps(report, indent=1))
    print(table(results))
    if args.png and str(args.png) not in ("", "."):  # --png "" skips the plot
        plot(results, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
