"""What the wrk-driven benchmarks share: the request script, running wrk, a quiet machine.

The benchmarks put `bench/` on `sys.path` and import this module.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import time

# wrk sends the same body on every request: the file named by BENCH_BODY.
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "r")
wrk.body = f:read("*a")
f:close()
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


class WrkFailed(Exception):
    """wrk exited with an error (it could not connect, say)."""


def _percentile(out: str, pct: int) -> float:
    # The "Latency Distribution" lines; anchored, as the thread stats also print percents.
    # No line at all means no request completed: NaN rather than a crash.
    found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")


def run_wrk(
    url: str,
    *,
    body: pathlib.Path,
    lua: pathlib.Path,
    connections: int,
    seconds: int,
    threads: int = 1,
) -> dict[str, float]:
    """Run wrk once: requests/s, p50 and p99 in ms, non-2xx answers and socket errors."""
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(lua),
            url,
        ],
        env={**os.environ, "BENCH_BODY": str(body)},
        capture_output=True,
        text=True,
    )
    out = done.stdout
    if done.returncode != 0:
        raise WrkFailed(done.stderr.strip() or out.strip())
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": _percentile(out, 50),
        "p99_ms": _percentile(out, 99),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in sock.groups()) if sock else 0,
    }


def cpu_idle(seconds: float = 1.0) -> float:
    """Give the share of CPU time idle over `seconds` (all cores together)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(threshold: float, patience: float, *, sample: float = 1.0) -> float:
    """Wait until other work leaves the machine mostly idle; give the idle share found.

    The benchmarks share a 2-core machine with whatever else runs; a measurement taken
    while another process burns a core says little about what is measured.
    """
    deadline = time.monotonic() + patience
    idle = cpu_idle(sample)
    while idle < threshold and time.monotonic() < deadline:
        idle = cpu_idle(sample)
    return idle
