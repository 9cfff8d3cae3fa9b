"""Run the real operator (`kubeserve operator`) as a subprocess against the emulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.kube_client import wait_for

# Who the operator is to the API server (User-Agent products, as the emulator's write
# journal and its faults name clients): its reconciles' client, and kopf.
CLIENTS = frozenset({"OpenAPI-Generator", "kopf"})


class OperatorProcess:
    """One operator process; restartable, killable, with its log kept for failing tests."""

    def __init__(
        self, emulator: EmulatorThread, workdir: Path, *args: str, resync_seconds: float = 3.0
    ) -> None:
        self.emulator = emulator
        self.workdir = workdir
        self.args = [
            "--metrics-port",
            "0",
            "--health-port",
            "0",
            "--resync-seconds",
            str(resync_seconds),
            *args,
        ]
        self.kubeconfig = emulator.write_kubeconfig(workdir / "kubeconfig.json")
        self.log_path = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> OperatorProcess:
        """Start the operator and wait until it watches InferenceServices."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the operator is running already: two would fight over it all")
        watches = self.emulator.emulator.counts[("watch", "inferenceservices")]
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubeserve.cli", "operator", *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        self.starts += 1
        wait_for(
            lambda: (
                self.emulator.emulator.counts[("watch", "inferenceservices")] > watches
                or self._died()
            ),
            timeout=60,
            what="the operator to start watching",
        )
        if self._died():
            raise AssertionError(f"the operator exited at start:\n{self.log()}")
        return self

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self, *, kill: bool = False) -> None:
        """Stop it: SIGTERM and wait, or SIGKILL (a crash, mid-whatever it was doing)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        """Give the operator's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
