"""The image benchmark's CPU accounting, against real processes.

`docs/benchmarks.md` (runs 3 and 4) bounds req/s by the CPU a server and its load generator
spend per request; these check that what is read is the group's CPU, and that grpc_load
reads it inside its window.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

from kubeserve.local.router_config import free_port

IMAGE_BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "image"
sys.path.insert(0, str(IMAGE_BENCH))

import cpu_time  # noqa: E402
import v2_wire  # noqa: E402

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {}: pass\n"


def test_group_cpu_counts_every_process_of_the_group() -> None:
    # A leader and a child of its own, both burning: the group's CPU is theirs together.
    script = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {BURN.format(0.4)!r}])\n"
        + BURN.format(0.4)
        + "child.wait()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        spent = 0.0
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            spent = max(spent, cpu_time.group_cpu(proc.pid))
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    # Read while both lived: more than one process's 0.4 s (each burns its own 0.4 s).
    assert spent > 0.5
    assert cpu_time.group_cpu(proc.pid) == 0.0  # none left


@pytest.fixture
def null_server() -> Iterator[tuple[int, int]]:
    """grpc_load's null server in a session of its own: (port, process group)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(IMAGE_BENCH / "grpc_load.py"), "--serve-null", str(port)],
        start_new_session=True,
    )
    try:
        yield port, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_grpc_load_reports_cpu_per_call_of_server_and_itself(
    null_server: tuple[int, int], tmp_path: pathlib.Path
) -> None:
    port, pgid = null_server
    body = tmp_path / "request.bin"
    body.write_bytes(v2_wire.infer_request("m", "input", np.zeros((1, 4096), np.float32)))
    command = [sys.executable, str(IMAGE_BENCH / "grpc_load.py"), "--target"]
    command += [f"127.0.0.1:{port}", "--body", str(body), "--connections", "2"]
    command += ["--duration", "0.5", "--warmup", "1", "--cpu-of", str(pgid)]
    deadline = time.monotonic() + 20
    while True:  # the null server takes a moment to listen
        before = cpu_time.children_cpu()
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    whole_run = cpu_time.children_cpu() - before
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["errors"] == 0 and result["requests"] > 10
    assert 0 < result["server_cpu_ms"] < 10 and 0 < result["client_cpu_ms"] < 10
    # Per call between the window's edges, not the whole run over the window's calls: the
    # generator's start-up (importing grpc and numpy, about 0.3 s of CPU) and its warm-up,
    # twice the window, stay out of what it reports.
    in_window = result["client_cpu_ms"] * result["requests"] / 1e3
    assert in_window < whole_run / 2
