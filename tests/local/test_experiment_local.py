"""`kubeserve up` with spec.experiment: real servers and nginx, simulated users, the verdict.

Each simulated user gets one prediction through the router (sticky on x-user-id), then sends
its outcome through the router with the override header naming the variant that served it.
Outcomes are fixed per user (a seeded draw against the served variant's rate), so a run's
counts do not depend on the order the requests happen to take.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserve import cli
from kubeserve.api import status, validation
from kubeserve.local import experiment, up
from support import specs

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx)"
)
NAME = "ab"
MIN_SAMPLES = 100
USERS = 600
CONCLUSIVE = {"Better", "Worse"}


def ab_test(path: Path) -> Path:
    """Write a 50/50 sticky A/B test of one model against itself, on outcome."""
    model = {"format": "onnx", "storageUri": "file:///models/digits-onnx/v1"}
    obj = specs.isvc(
        specs.variant("v1", 50, model=model),
        specs.variant("v2", 50, model=model),
        name=NAME,
        routing={"sticky": {"header": "x-user-id"}, "overrideHeader": "x-kubeserve-variant"},
    )
    obj["spec"]["experiment"] = {
        "control": "v1",
        "metrics": ["outcome"],
        "minSamples": MIN_SAMPLES,
        "margin": {"outcome": 0.02},
    }
    path.write_text(yaml.safe_dump(obj))
    return path


def post(url: str, body: dict[str, Any], headers: Mapping[str, str]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return response.headers


def simulated_user(base: str, user: int, rates: Mapping[str, float]) -> None:
    headers = post(
        f"{base}/v1/models/{NAME}:predict",
        {"instances": [[float(user % 16)] * 64]},
        {"x-user-id": f"user-{user}"},
    )
    variant = headers["x-kubeserve-variant"]
    outcome = int(random.Random(user).random() < rates[variant])
    post(
        f"{base}/v2/models/{NAME}/feedback",
        {"outcome": outcome, "requestId": headers["x-request-id"]},
        {"x-kubeserve-variant": variant},
    )


def counted(path: Path) -> int:
    """Give how many feedbacks the status file has counted so far."""
    try:
        obj = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return 0
    variants = (((obj or {}).get("status") or {}).get("experiment") or {}).get("variants") or {}
    return sum(v.get("feedback", 0) for v in variants.values())


def run_experiment(
    tmp_path: Path, models: Path, rates: Mapping[str, float]
) -> tuple[dict[str, Any], str, Path]:
    """Run an A/B test with USERS simulated users; give the final object, the output, the file."""
    status_file = tmp_path / "status.yaml"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeserve.cli",
            "up",
            "-f",
            str(ab_test(tmp_path / "ab.yaml")),
            "--port",
            "0",
            "--models-root",
            str(models),
            "--status-file",
            str(status_file),
            "--experiment-interval",
            "0.3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    base, said = None, []
    deadline = time.monotonic() + 120
    while base is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        said.append(line)
        if match := re.search(r"is up at (http://\S+)", line):
            base = match.group(1)
    try:
        assert base is not None, f"kubeserve up did not start: {proc.stderr.read()}"  # type: ignore[union-attr]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda u: simulated_user(base, u, rates), range(USERS)))
        deadline = time.monotonic() + 20
        while counted(status_file) < USERS and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return yaml.safe_load(status_file.read_text()), "".join(said) + out, status_file


def comparison(obj: Mapping[str, Any]) -> dict[str, Any]:
    (only,) = obj["status"]["experiment"]["comparisons"]
    assert (only["variant"], only["metric"]) == ("v2", "outcome")
    found: dict[str, Any] = only
    return found


def check_counts_and_status(obj: Mapping[str, Any]) -> None:
    """Every request and feedback counted once, and a status the operator could have written."""
    exp = obj["status"]["experiment"]
    variants = exp["variants"]
    assert sum(v["requests"] for v in variants.values()) == USERS
    assert sum(v["feedback"] for v in variants.values()) == USERS
    for v in variants.values():
        assert v["requests"] == v["feedback"]
    status.InferenceServiceStatus.model_validate(obj["status"])
    status.ExperimentStatus.model_validate(exp)
    validation.parse({k: v for k, v in obj.items() if k != "status"})
    types = [c["type"] for c in obj["status"]["conditions"]]
    assert types[:3] == ["Ready", "VariantsReady", "RoutingReady"]
    assert {"ExperimentConclusive", "SampleRatioMismatch"} <= set(types)
    assert obj["status"]["url"].startswith("http://127.0.0.1:")
    assert obj["status"]["traffic"] == "v1=50,v2=50"


@needs_nginx
def test_an_a_a_run_stays_without_a_better_or_worse_verdict(
    tmp_path: Path, example_models: Path
) -> None:
    obj, said, _ = run_experiment(tmp_path, example_models, {"v1": 0.2, "v2": 0.2})
    check_counts_and_status(obj)
    found = comparison(obj)
    # Past minSamples, so the test did compare; it found no difference.
    assert found["samples"] >= MIN_SAMPLES
    assert found["verdict"] not in CONCLUSIVE | {"Collecting"}
    assert obj["status"]["experiment"]["verdict"] not in CONCLUSIVE
    assert "VerdictBetter" not in said and "VerdictWorse" not in said
    assert obj["status"]["experiment"]["sampleRatio"]["mismatch"] is False


@needs_nginx
def test_an_a_b_run_concludes_better_for_the_better_variant(
    tmp_path: Path, example_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj, said, status_file = run_experiment(tmp_path, example_models, {"v1": 0.1, "v2": 0.4})
    check_counts_and_status(obj)
    found = comparison(obj)
    assert found["verdict"] == "Better" and found["low"] > 0
    exp = obj["status"]["experiment"]
    assert exp["verdict"] == "Better" and exp["summary"].startswith("v2 better on outcome")
    conclusive = next(c for c in obj["status"]["conditions"] if c["type"] == "ExperimentConclusive")
    assert conclusive["status"] == "True"
    # The run says when the verdict changes, once.
    assert len(re.findall(r"experiment: VerdictBetter: verdict \w+ -> Better", said)) == 1
    # The file is what `kubeserve experiment -f` reads.
    assert cli.main(["experiment", "-f", str(status_file)]) == 0
    assert capsys.readouterr().out.startswith("inferenceservice/ab: Better: v2 better on outcome")


class StoppedServer:
    """A port nothing listens on: a variant server that is gone."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]


def test_a_server_that_cannot_be_read_is_listed_with_the_reason(tmp_path: Path) -> None:
    isvc = validation.parse(yaml.safe_load(ab_test(tmp_path / "ab.yaml").read_text()))
    started = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    servers = [
        experiment.Server(name, StoppedServer().port, 1000 + i, started)
        for i, name in enumerate(["v1", "v2"])
    ]
    said: list[str] = []
    local = experiment.LocalStatus(
        isvc,
        servers,
        url="http://127.0.0.1:1",
        status_file=tmp_path / "status.yaml",
        say=said.append,
    )
    now = datetime.datetime(2025, 1, 1, 0, 1, tzinfo=datetime.UTC)
    assert local.due(now)
    local.collect(now)
    unreadable = local.status["experiment"]["unreadable"]
    assert [u["pod"] for u in unreadable] == ["v1 (pid 1000)", "v2 (pid 1001)"]
    assert all(u["reason"].startswith("GET /metrics failed") for u in unreadable)
    written = yaml.safe_load((tmp_path / "status.yaml").read_text())
    assert written == local.object
    # The next collection waits for the interval (spec.experiment's default, 30s).
    assert not local.due(now + datetime.timedelta(seconds=29))
    assert local.due(now + datetime.timedelta(seconds=30))


def test_the_status_file_is_replaced_whole_never_half_written(tmp_path: Path) -> None:
    path = tmp_path / "status.yaml"
    experiment.write_atomically(path, "a: 1\n")
    experiment.write_atomically(path, "b: 2\n")
    assert path.read_text() == "b: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["status.yaml"]


def test_without_an_experiment_nothing_is_collected_and_the_status_has_no_experiment(
    tmp_path: Path,
) -> None:
    isvc = validation.parse(specs.canary())
    local = experiment.LocalStatus(
        isvc, [], url="http://127.0.0.1:8080", status_file=tmp_path / "s.yaml"
    )
    assert not local.due(datetime.datetime.now(datetime.UTC))
    local.save()
    written = yaml.safe_load((tmp_path / "s.yaml").read_text())
    assert "experiment" not in written["status"]
    assert written["status"]["variants"]["v2"] == {
        "replicas": 1,
        "readyReplicas": 1,
        "weight": 10,
        "storageUri": "file:///models/digits/v2",
        "ready": True,
    }


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "nan", "inf"])
def test_the_experiment_interval_must_be_a_positive_number_of_seconds(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        up.build_parser().parse_args(["-f", "x.yaml", "--experiment-interval", bad])
    assert "is not a positive number of seconds" in capsys.readouterr().err


def test_a_status_file_in_a_missing_directory_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "status.yaml"
    with pytest.raises(SystemExit):
        up.build_parser().parse_args(["-f", "x.yaml", "--status-file", str(missing)])
    assert f"{tmp_path / 'nowhere'} is not a directory" in capsys.readouterr().err
