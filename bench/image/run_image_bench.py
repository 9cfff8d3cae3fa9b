"""Benchmark an image model: kubeserve against KServe 0.21 and MLServer 1.7.1, and the floor.

The model is the example MobileNetV2-shaped classifier (``scripts/build_image_model.py``:
width 0.35, random weights, input ``[N, 224, 224, 3]`` FP32). Every server runs it with
ONNX Runtime on one intra-op thread. All servers start together and are checked to answer
what ONNX Runtime answers in process; then, scenario by scenario (batch 1 and 8, 8 and 64
connections), each server and protocol in turn is driven while the others sit idle:

- REST JSON: V2 ``inputs`` with the pixels as JSON numbers (what a client without the
  binary extension sends: 3.1 MB per image);
- REST binary: the V2 binary tensor extension (a JSON header, then the raw FP32 bytes;
  ``Inference-Header-Content-Length``), JSON outputs (1000 numbers per image);
- gRPC: ``ModelInfer`` with ``raw_input_contents``;
- V1 b64 (kubeserve only): ``{"instances": [{"b64": <JPEG>}]}``, decoded by the server
  because the model declares its input an image (``kubeserve.json``).

REST load comes from wrk (one thread, keep-alive, a 30 s timeout since a JSON batch of 8
takes seconds on the peers); gRPC load from ``grpc_load.py`` in a process of its own (ghz
is not in this project's registries); ``--ceiling`` measures that generator against a
server that does nothing. The floor is ONNX Runtime in process, same session options, per
batch. Each measurement also records the CPU the server (all its processes) and the load
generator spent per answered request: on two shared cores their sum bounds req/s. A
protocol a server lacks is skipped with the reason printed, and so is one that kubeserve
does not answer yet (binary REST, gRPC and b64 land separately).

    flock /tmp/kubeserve-bench.lock python bench/image/run_image_bench.py \\
        --kserve-python /work/venv-kserve/bin/python \\
        --mlserver /work/venv-mlserver/bin/mlserver --ceiling
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import math
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "server"))
sys.path.insert(0, str(HERE))

import cpu_time  # noqa: E402
import loadgen  # noqa: E402
import run_benchmark as server_bench  # noqa: E402  (its server start-up and machine record)
import v2_wire  # noqa: E402

from kubeserve.server import images  # noqa: E402

MODEL = "mobilenet"
V2_PATH = f"/v2/models/{MODEL}/infer"
V1_PATH = f"/v1/models/{MODEL}:predict"
PROTOCOLS = ("rest-json", "rest-binary", "grpc", "v1-b64")
MAX_MESSAGE = 64 * 1024 * 1024  # a JSON batch of 8 images is about 25 MB
# wrk sends the body in BENCH_BODY with BENCH_CONTENT_TYPE, and, for binary bodies, the
# binary extension's header with the JSON part's length.
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local json_length = os.getenv("BENCH_HEADER_LENGTH")
if json_length ~= nil and json_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = json_length
end
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclasses.dataclass
class Server:
    """One server under test: how to start it and which protocols it offers where."""

    target: server_bench.Target
    grpc_port: int | None
    protocols: dict[str, str]  # protocol -> "" when offered, else why not
    pid: int = 0  # once started: its process group, workers included


@dataclasses.dataclass(frozen=True)
class Bodies:
    """One batch's requests in every protocol, and the answer ONNX Runtime gives in process."""

    batch: int
    rest_json: pathlib.Path
    rest_binary: pathlib.Path
    binary_header_length: int
    grpc: pathlib.Path
    v1_b64: pathlib.Path
    expected: np.ndarray


def build_model(work: pathlib.Path) -> pathlib.Path:
    """Build the example image model with the project's own script; return its version dir."""
    out = work / "models"
    version = out / MODEL / "v1"
    if not (version / "model.onnx").exists():
        script = REPO / "scripts" / "build_image_model.py"
        subprocess.run([sys.executable, str(script), "--out", str(out)], check=True)
    return version


def photo(seed: int) -> bytes:
    """Return a 640x480 JPEG with smooth shapes and noise, as a camera frame might look."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640].astype(np.float32)
    base = np.stack(
        [
            128 + 100 * np.sin(x / (40 + 10 * seed)),
            128 + 100 * np.cos(y / 50),
            255 * (x + y) / (640 + 480),
        ],
        axis=-1,
    )
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def session(model: pathlib.Path) -> Any:
    """Open ONNX Runtime as kubeserve's runtime does (one intra-op thread, sequential)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def write_bodies(work: pathlib.Path, version: pathlib.Path, batch: int) -> Bodies:
    """Write one batch's request bodies; the pixels are what the server's decoder makes."""
    jpegs = [photo(i) for i in range(batch)]
    spec = images.read(version)["input"]
    pixels = images.decode_batch(jpegs, spec)
    (expected,) = session(version / "model.onnx").run(["probabilities"], {"input": pixels})
    shape = list(pixels.shape)
    tensor = {"name": "input", "datatype": "FP32", "shape": shape}
    rest_json = work / f"rest-json-b{batch}.json"
    rest_json.write_text(json.dumps({"inputs": [{**tensor, "data": pixels.ravel().tolist()}]}))
    raw = pixels.astype("<f4").tobytes()
    header = json.dumps(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()
    rest_binary = work / f"rest-binary-b{batch}.bin"
    rest_binary.write_bytes(header + raw)
    grpc_body = work / f"grpc-b{batch}.bin"
    grpc_body.write_bytes(v2_wire.infer_request(MODEL, "input", pixels))
    v1_b64 = work / f"v1-b64-b{batch}.json"
    instances = [{"b64": base64.b64encode(j).decode()} for j in jpegs]
    v1_b64.write_text(json.dumps({"instances": instances}))
    return Bodies(batch, rest_json, rest_binary, len(header), grpc_body, v1_b64, expected)


def floor(model: pathlib.Path, batch: int, rounds: int, args: Any) -> dict[str, float]:
    """Time ONNX Runtime alone on one batch, in this process: the floor of any server.

    Measured on a quiet machine (as every scenario is): a busy one inflates it, and every
    row's "x ORT floor" with it.

    Also timed: two sessions running at once on two threads (ONNX Runtime lets go of the
    GIL), each batch's median there (``two_at_once_ms``): the model's own rate with both
    cores on it, 2,000 / that in batches per second, which no server on this machine passes.
    """
    idle = loadgen.wait_for_quiet(args.quiet, args.patience)
    run = session(model)
    pixels = np.random.default_rng(0).random((batch, 224, 224, 3), dtype=np.float32)

    def timed(one: Any) -> list[float]:
        for _ in range(3):
            one.run(["probabilities"], {"input": pixels})
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            one.run(["probabilities"], {"input": pixels})
            times.append((time.perf_counter() - started) * 1e3)
        return times

    times = timed(run)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        both = list(pool.map(timed, (run, session(model))))
    return {
        "batch": batch,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "two_at_once_ms": statistics.median(both[0] + both[1]),
        "rounds": rounds,
        "idle_before": round(idle, 3),
    }


def kubeserve_protocols(grpc_flag: str) -> tuple[list[str], dict[str, str]]:
    """Return the gRPC flags kubeserve takes, and why protocols are missing (probed later)."""
    usage = subprocess.run(
        [sys.executable, "-m", "kubeserve.server", "serve", "--help"],
        capture_output=True,
        text=True,
    ).stdout
    if grpc_flag in usage:
        return [grpc_flag], {}
    return [], {"grpc": f"kubeserve serve has no {grpc_flag} flag (gRPC not in this tree yet)"}


def servers(args: argparse.Namespace, version: pathlib.Path, work: pathlib.Path) -> list[Server]:
    """Describe kubeserve, KServe and MLServer serving the same model file."""
    found = []
    quiet = {"KUBESERVE_LOG_LEVEL": "WARNING"}
    if "kubeserve" in args.servers:
        grpc_flags, missing = kubeserve_protocols(args.kubeserve_grpc_flag)
        grpc_port = 9202 if grpc_flags else None
        command = [
            sys.executable,
            "-m",
            "kubeserve.server",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "9201",
            "--model-name",
            MODEL,
            "--model-dir",
            str(version),
            "--variant",
            "v1",
            "--max-body-bytes",
            str(MAX_MESSAGE),
            *([args.kubeserve_grpc_flag, str(grpc_port)] if grpc_port else []),
            *args.kubeserve_args.split(),
        ]
        target = server_bench.Target("kubeserve", command, 9201, V1_PATH, V2_PATH, env=quiet)
        found.append(Server(target, grpc_port, {p: missing.get(p, "") for p in PROTOCOLS}))
    if "kserve" in args.servers and args.kserve_python:
        command = [
            args.kserve_python,
            str(HERE / "kserve_image_peer.py"),
            "--model_name",
            MODEL,
            "--model_path",
            str(version / "model.onnx"),
            "--http_port",
            "9211",
            "--grpc_port",
            "9212",
            "--grpc_max_receive_message_length",
            str(MAX_MESSAGE),
            "--grpc_max_send_message_length",
            str(MAX_MESSAGE),
        ]
        protocols = {p: "" for p in PROTOCOLS} | {
            "v1-b64": "image decoding from kubeserve.json is kubeserve's own"
        }
        target = server_bench.Target("KServe 0.21", command, 9211, None, V2_PATH)
        found.append(Server(target, 9212, protocols))
    if "mlserver" in args.servers and args.mlserver:
        repo = work / "mlserver"
        model_dir = repo / MODEL
        model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(version / "model.onnx", model_dir)
        shutil.copy(HERE / "mlserver_image_runtime.py", model_dir)
        (model_dir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": MODEL,
                    "implementation": "mlserver_image_runtime.OnnxImageModel",
                    "parameters": {"uri": "./model.onnx"},
                }
            )
        )
        (repo / "settings.json").write_text(
            json.dumps(
                {
                    "http_port": 9221,
                    "grpc_port": 9222,
                    "metrics_port": 9223,
                    "grpc_max_message_length": MAX_MESSAGE,
                }
            )
        )
        protocols = {p: "" for p in PROTOCOLS} | {
            "rest-binary": "MLServer has no binary tensor extension over REST",
            "v1-b64": "MLServer speaks V2 only",
        }
        target = server_bench.Target(
            "MLServer 1.7.1", [args.mlserver, "start", str(repo)], 9221, None, V2_PATH, cwd=repo
        )
        found.append(Server(target, 9222, protocols))
    return found


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST a body; return the status and the decoded JSON (or the text of an error)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]


def answer(server: Server, protocol: str, bodies: Bodies) -> np.ndarray:
    """Send one request; return the probabilities, or raise RuntimeError saying why not."""
    port = server.target.port
    if protocol == "grpc":
        import grpc

        assert server.grpc_port is not None
        channel = grpc.insecure_channel(
            f"127.0.0.1:{server.grpc_port}",
            options=[("grpc.max_send_message_length", MAX_MESSAGE)],
        )
        with channel:
            try:
                reply = channel.unary_unary(v2_wire.METHOD)(bodies.grpc.read_bytes(), timeout=60)
            except grpc.RpcError as exc:
                raise RuntimeError(f"gRPC {exc.code()}: {exc.details()}") from None
        return v2_wire.first_output(reply)
    path, headers = request_of(protocol, bodies)
    status, got = post(
        port, V1_PATH if protocol == "v1-b64" else V2_PATH, path.read_bytes(), headers
    )
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {got}")
    if protocol == "v1-b64":
        return np.asarray(got["predictions"], dtype=np.float32)
    out = got["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def request_of(protocol: str, bodies: Bodies) -> tuple[pathlib.Path, dict[str, str]]:
    """Return the body file and headers of a REST protocol."""
    if protocol == "rest-binary":
        return bodies.rest_binary, {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(bodies.binary_header_length),
        }
    if protocol == "v1-b64":
        return bodies.v1_b64, {"Content-Type": "application/json"}
    return bodies.rest_json, {"Content-Type": "application/json"}


def check(server: Server, all_bodies: Sequence[Bodies]) -> None:
    """Take a protocol off a server that does not answer what ONNX Runtime answers."""
    for protocol, missing in server.protocols.items():
        if missing:
            continue
        for bodies in all_bodies:
            try:
                got = answer(server, protocol, bodies)
            except RuntimeError as exc:
                server.protocols[protocol] = f"batch {bodies.batch}: {exc}"
                break
            if got.shape != bodies.expected.shape or not np.allclose(
                got, bodies.expected, atol=1e-4
            ):
                server.protocols[protocol] = f"batch {bodies.batch}: wrong answer {got.shape}"
                break


def run_wrk(
    url: str, body: pathlib.Path, headers: dict[str, str], lua: pathlib.Path, *, c: int, s: int
) -> dict[str, float]:
    """Run wrk once: req/s, p50, p99 (ms) and errors (non-2xx and socket errors; -1: failed)."""
    env = {
        **os.environ,
        "BENCH_BODY": str(body),
        "BENCH_CONTENT_TYPE": headers["Content-Type"],
        "BENCH_HEADER_LENGTH": headers.get("Inference-Header-Content-Length", ""),
    }
    done = subprocess.run(
        ["wrk", "-t1", f"-c{c}", f"-d{s}s", "--timeout", "30s", "--latency", "-s", str(lua), url],
        env=env,
        capture_output=True,
        text=True,
    )
    out = done.stdout
    if done.returncode != 0:
        print(f"wrk failed: {done.stderr.strip() or out.strip()}", file=sys.stderr)
        return {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": -1}

    def pct(p: int) -> float:
        found = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "errors": (int(non2xx.group(1)) if non2xx else 0)
        + (sum(int(g) for g in sock.groups()) if sock else 0),
    }


def run_grpc(
    port: int, body: pathlib.Path, *, c: int, s: int, warmup: int, cpu_of: int = 0
) -> dict[str, float]:
    """Run the gRPC load generator in a process of its own; return its JSON.

    ``cpu_of``: the server's process group, whose CPU per call it then reports.
    """
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "grpc_load.py"),
            "--target",
            f"127.0.0.1:{port}",
            "--body",
            str(body),
            "--connections",
            str(c),
            "--duration",
            str(s),
            "--warmup",
            str(warmup),
            "--cpu-of",
            str(cpu_of),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(f"grpc_load failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
        return {"rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": -1}
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure(
    server: Server, protocol: str, bodies: Bodies, lua: pathlib.Path, *, c: int, args: Any
) -> dict[str, float]:
    """Warm up and measure one server, protocol, batch and connection count.

    Besides req/s and latency: the CPU the server (all its processes) and the load generator
    spent per answered request in the measured window, in ms. On this 2-core machine they
    share the cores, so their sum bounds req/s: 2,000 / (server + client) at best. The
    server's is read inside the window (the calls still running when the load stops are
    finished after it, and are not counted as answered), the generator's over its run
    (grpc_load reads its own over the window: its start-up costs 0.3 s of CPU).
    """
    if protocol == "grpc":
        assert server.grpc_port is not None
        return run_grpc(
            server.grpc_port,
            bodies.grpc,
            c=c,
            s=args.duration,
            warmup=args.warmup,
            cpu_of=server.pid,
        )
    path, headers = request_of(protocol, bodies)
    url = f"http://127.0.0.1:{server.target.port}{V1_PATH if protocol == 'v1-b64' else V2_PATH}"
    if args.warmup:
        run_wrk(url, path, headers, lua, c=c, s=args.warmup)
    edge = min(1.0, args.duration / 4)
    server_cpu: list[float] = []
    timers = [
        threading.Timer(at, lambda: server_cpu.append(cpu_time.group_cpu(server.pid)))
        for at in (edge, args.duration - edge)
    ]
    client_before = cpu_time.children_cpu()
    for timer in timers:
        timer.start()
    result = run_wrk(url, path, headers, lua, c=c, s=args.duration)
    for timer in timers:
        timer.join()
    rps = result["rps"]
    if rps and len(server_cpu) == 2:
        result["server_cpu_ms"] = (
            (server_cpu[1] - server_cpu[0]) * 1e3 / (rps * (args.duration - 2 * edge))
        )
        result["client_cpu_ms"] = (
            (cpu_time.children_cpu() - client_before) * 1e3 / (rps * args.duration)
        )
    return result


def ceiling(all_bodies: Sequence[Bodies], conns: Sequence[int], args: Any) -> list[dict[str, Any]]:
    """Measure the gRPC load generator against a server that does nothing."""
    null = subprocess.Popen(
        [sys.executable, str(HERE / "grpc_load.py"), "--serve-null", "9231"],
        start_new_session=True,
    )
    rows = []
    try:
        time.sleep(2)
        for bodies in all_bodies:
            for c in conns:
                # The null server's CPU per call is grpcio's own cost of taking in one
                # message and answering: no server built on grpcio does it for less.
                r = run_grpc(
                    9231, bodies.grpc, c=c, s=args.duration, warmup=args.warmup, cpu_of=null.pid
                )
                rows.append({"batch": bodies.batch, "connections": c, **r})
                print(
                    f"grpc_load ceiling b{bodies.batch} c{c}: {r['rps']:,.0f} req/s, CPU per "
                    f"request: null server {r.get('server_cpu_ms', math.nan):.2f} ms, "
                    f"grpc_load {r.get('client_cpu_ms', math.nan):.2f} ms",
                    file=sys.stderr,
                )
    finally:
        null.terminate()
        null.wait(10)
    return rows


def table(report: dict[str, Any]) -> str:
    """Render the results as Markdown: per scenario, each row against the floor and the peers."""
    floors = {f["batch"]: f["median_ms"] for f in report["floor"]}
    quiet = report.get("quiet", 0.0)
    disturbed = False
    lines = [
        "| batch | conns | server | protocol | req/s | p50 ms | p99 ms | errors | ms/req "
        "| x ORT floor | vs faster peer's best | server CPU ms/req | client CPU ms/req |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    results = report["results"]
    for key in sorted({(r["batch"], r["connections"]) for r in results}):
        rows = [r for r in results if (r["batch"], r["connections"]) == key]
        peers = [r["rps"] for r in rows if r["server"] != "kubeserve"]
        best = max(peers) if peers else 0.0
        for r in rows:
            per_request = 1e3 / r["rps"] if r["rps"] else float("nan")
            vs = f"{r['rps'] / best:.1f}x" if best and r["server"] == "kubeserve" else ""
            # A peer left busy by a point it could not keep up with (wrk gives up after 30 s,
            # the server goes on computing its backlog) takes CPU from the next point.
            busy = "*" if r.get("idle_before", 1.0) < quiet else ""
            disturbed = disturbed or bool(busy)
            lines.append(
                f"| {key[0]} | {key[1]} | {r['server']} | {r['protocol']} | {r['rps']:,.1f}{busy} "
                f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {per_request:.1f} "
                f"| {per_request / floors[key[0]]:.2f} | {vs} "
                f"| {r.get('server_cpu_ms', math.nan):.2f} | {r.get('client_cpu_ms', math.nan):.2f} |"
            )
    lines.append("")
    lines.append(
        "ONNX Runtime in process (1 thread), median per batch: "
        + ", ".join(f"batch {b}: {ms:.2f} ms" for b, ms in sorted(floors.items()))
    )
    both = {f["batch"]: f["two_at_once_ms"] for f in report["floor"] if "two_at_once_ms" in f}
    if both:
        lines.append(
            "Two sessions at once (both cores), median per batch: "
            + ", ".join(
                f"batch {b}: {ms:.2f} ms (at most {2e3 / ms:,.0f} batches/s)"
                for b, ms in sorted(both.items())
            )
        )
    if disturbed:
        lines.append("")
        lines.append(
            f"\\* measured on a busy machine (idle under {quiet:.0%} before it, after "
            "`--patience`): another server was still working; measure that point again."
        )
    if report.get("skipped"):
        lines.append("")
        lines.extend(f"- skipped {s}" for s in report["skipped"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=pathlib.Path, default=pathlib.Path("/tmp/kubeserve-image-bench")
    )
    parser.add_argument("--kserve-python", help="python of a venv with kserve==0.21.0")
    parser.add_argument("--mlserver", help="mlserver executable of a venv with mlserver==1.7.1")
    parser.add_argument("--servers", default="kubeserve,kserve,mlserver")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--connections", default="8,64")
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run")
    parser.add_argument("--floor-rounds", type=int, default=50)
    parser.add_argument("--ceiling", action="store_true", help="also measure grpc_load alone")
    parser.add_argument("--kubeserve-grpc-flag", default="--grpc-port")
    parser.add_argument("--kubeserve-args", default="", help="extra flags for kubeserve serve")
    parser.add_argument("--quiet", type=float, default=0.9, help="idle share to wait for")
    parser.add_argument("--patience", type=float, default=60.0, help="most seconds to wait")
    parser.add_argument("--json", type=pathlib.Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk not found: apt-get install wrk")
    args.work.mkdir(parents=True, exist_ok=True)
    lua = args.work / "post.lua"
    lua.write_text(LUA)
    version = build_model(args.work)
    batches = [int(b) for b in args.batches.split(",")]
    conns = [int(c) for c in args.connections.split(",")]
    protocols = [p for p in args.protocols.split(",") if p]
    all_bodies = [write_bodies(args.work, version, b) for b in batches]
    report: dict[str, Any] = {
        "machine": server_bench.machine(),
        "duration_s": args.duration,
        "quiet": args.quiet,
        "model": "MobileNetV2-shaped, width 0.35, [N, 224, 224, 3] FP32 (build_image_model.py)",
        "floor": [floor(version / "model.onnx", b, args.floor_rounds, args) for b in batches],
        "results": [],
        "skipped": [],
    }
    for f in report["floor"]:
        print(
            f"ONNX Runtime in process, batch {f['batch']}: {f['median_ms']:.2f} ms", file=sys.stderr
        )
    if args.ceiling:
        report["grpc_load_ceiling"] = ceiling(all_bodies, conns, args)
    under_test = servers(args, version, args.work)
    with contextlib.ExitStack() as stack:
        for server in under_test:
            log = args.work / f"{server.target.name.split()[0].lower()}.log"
            server.pid = stack.enter_context(server_bench.started(server.target, log)).pid
            check(server, all_bodies)
            skipped = [
                f"{server.target.name} {p}: {why}"
                for p, why in server.protocols.items()
                if why and p in protocols
            ]
            for line in skipped:
                print(f"skipping {line}", file=sys.stderr)
            report["skipped"].extend(skipped)
        for bodies in all_bodies:
            for c in conns:
                for protocol in protocols:
                    for server in under_test:
                        if server.protocols.get(protocol, "unknown protocol"):
                            continue
                        idle = loadgen.wait_for_quiet(args.quiet, args.patience)
                        r = measure(server, protocol, bodies, lua, c=c, args=args)
                        report["results"].append(
                            {
                                "server": server.target.name,
                                "protocol": protocol,
                                "batch": bodies.batch,
                                "connections": c,
                                "idle_before": round(idle, 3),
                                **r,
                            }
                        )
                        print(
                            f"{server.target.name:15} {protocol:11} b{bodies.batch} c{c}: "
                            f"{r['rps']:,.1f} req/s p50 {r['p50_ms']:.1f} ms "
                            f"p99 {r['p99_ms']:.1f} ms errors {r['errors']} (idle {idle:.0%})",
                            file=sys.stderr,
                        )
                        # Written after every measurement: a crash keeps what was measured.
                        args.json.write_text(json.dumps(report, indent=1))
    args.json.write_text(json.dumps(report, indent=1))
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
