"""`kubeserve up`: the local run starts real servers and Debian's nginx, serves, and stops."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml

from kubeserve.api import validation
from kubeserve.local import router_config, up
from support import specs

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx)"
)


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubeserve.cli", "up", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if match := re.search(r"is up at (http://\S+)", line):
            return proc, match.group(1)
    proc.kill()
    raise AssertionError(f"kubeserve up did not start: {proc.stderr.read() if proc.stderr else ''}")


def call(url: str, headers: dict[str, str] | None = None) -> tuple[str, object]:
    body = json.dumps({"instances": [[0.0] * 64]}).encode()
    request = urllib.request.Request(url, data=body, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["x-kubeserve-variant"], json.load(response)


@needs_nginx
def test_up_serves_the_split_and_stops_cleanly_on_ctrl_c(example_models: Path) -> None:
    proc, base = start(
        "-f", str(REPO / "examples" / "canary.yaml"), "--models-root", str(example_models)
    )
    # --port 0 picked a free port, and the URL says which.
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9][0-9]*", base), base
    try:
        url = f"{base}/v1/models/digits-canary:predict"
        seen = Counter(call(url)[0] for _ in range(60))
        assert set(seen) <= {"v1", "v2"} and seen["v1"] > seen["v2"]
        assert {call(url, {"x-kubeserve-variant": "v2"})[0] for _ in range(5)} == {"v2"}
        _, answer = call(url)
        assert isinstance(answer, dict) and len(answer["predictions"]) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2)


@needs_nginx
def test_up_reports_a_missing_model_with_a_hint(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubeserve.cli",
            "up",
            "-f",
            str(REPO / "examples" / "single.yaml"),
            "--models-root",
            str(tmp_path),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert (
        "variant v1: cannot fetch" in result.stderr and "train_example_models.py" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_busy_port_fails_at_once_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        code = up.main(
            [
                "-f",
                str(REPO / "examples" / "single.yaml"),
                "--models-root",
                str(tmp_path),
                "--port",
                str(port),
            ]
        )
        elapsed = time.monotonic() - started
    assert code == 1
    assert elapsed < 1.0
    assert capsys.readouterr().err.splitlines() == [
        f"kubeserve up: port {port} on 127.0.0.1 is in use: choose another with --port, "
        "or --port 0 for any free one"
    ]


def test_up_refuses_an_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: serving.kubeserve.dev/v1alpha1\nkind: InferenceService\nmetadata: {name: x}\nspec: {}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "kubeserve.cli", "up", "-f", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "spec.variants: required field is missing" in result.stderr


def test_local_uri_maps_image_paths_only() -> None:
    root = Path("/tmp/m")
    assert up.local_uri("file:///models/digits-onnx/v1", root) == "file:///tmp/m/digits-onnx/v1"
    assert up.local_uri("s3://b/k", root) == "s3://b/k"
    assert up.local_uri("file:///elsewhere/v1", root) == "file:///elsewhere/v1"


def test_loopback_config_rewrites_every_cluster_address() -> None:
    workdir = Path("/srv/kubeserve-up")
    isvc = validation.parse(
        specs.isvc(
            specs.variant("v1", 60),
            specs.variant("v2", 40),
            routing={"overrideHeader": "x-v"},
        )
    )
    text = router_config.loopback_config(
        isvc, {"v1": 1111, "v2": 2222}, listen=3333, health=4444, workdir=workdir
    )
    assert "server 127.0.0.1:1111;" in text and "server 127.0.0.1:2222;" in text
    assert "listen 127.0.0.1:3333;" in text and "listen 127.0.0.1:4444;" in text
    assert ".svc." not in text
    assert "pid /tmp/" not in text and "temp_path /tmp/" not in text
    # The pid file and the client_body, proxy, fastcgi, uwsgi and scgi temp paths.
    assert text.count(f" {workdir}/") == 6


def test_a_failed_fetch_shows_no_password_or_signature(tmp_path: Path) -> None:
    obj = specs.isvc(
        specs.variant(
            model={
                "format": "onnx",
                "storageUri": "http://alice:hunter2@127.0.0.1:1/m.onnx?X-Amz-Signature=s3cr3t",
            }
        )
    )
    path = tmp_path / "isvc.yaml"
    path.write_text(yaml.safe_dump(obj))
    result = subprocess.run(
        [sys.executable, "-m", "kubeserve.cli", "up", "-f", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "cannot fetch" in result.stderr
    assert "hunter2" not in result.stderr and "s3cr3t" not in result.stderr
    assert "REDACTED" in result.stderr
