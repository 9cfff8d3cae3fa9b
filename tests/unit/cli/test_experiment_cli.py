"""`kubeserve experiment`: the comparison table, YAML/JSON and the PNG, from a status by hand."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserve import cli, experiment_cli, traffic
from kubeserve.api import status

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def isvc() -> dict[str, Any]:
    """An A/B test where v2 converts better and is as good on errors and latency."""
    return {
        "apiVersion": "serving.kubeserve.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "digits-ab", "namespace": "shop"},
        "spec": {
            "variants": [
                {"name": "v1", "weight": 50, "model": {"format": "onnx", "storageUri": "s3://m/1"}},
                {"name": "v2", "weight": 50, "model": {"format": "onnx", "storageUri": "s3://m/2"}},
            ],
            "experiment": {"control": "v1", "metrics": ["errorRate", "outcome"]},
        },
        "status": {
            "traffic": "v1=50,v2=50",
            "experiment": {
                "startTime": "2025-03-01T10:00:00Z",
                "lastCollected": "2025-03-01T10:12:30Z",
                "control": "v1",
                "slowThresholdSeconds": 0.25,
                "verdict": "Better",
                "summary": "v2 better on outcome: +6.0pp [1.2, 10.8], p=0.004",
                "variants": {
                    "v1": {
                        "weight": 50,
                        "pods": 1,
                        "requests": 2010,
                        "errors": 2,
                        "feedback": 1000,
                        "positives": 100,
                        "errorRate": 0.000995,
                        "slowRate": 0.01,
                        "outcomeRate": 0.1,
                        "latency": {"p50": 0.004, "p95": 0.02, "p99": 1.5},
                    },
                    "v2": {
                        "weight": 50,
                        "pods": 1,
                        "requests": 1990,
                        "errors": 0,
                        "feedback": 1000,
                        "positives": 160,
                        "errorRate": 0.0,
                        "slowRate": 0.0,
                        "outcomeRate": 0.16,
                        "latency": {"p50": 0.005, "p95": 0.025, "p99": 0.05},
                    },
                },
                "comparisons": [
                    {
                        "variant": "v2",
                        "metric": "errorRate",
                        "samples": 1990,
                        "estimate": -0.000995,
                        "low": -0.004,
                        "high": 0.002,
                        "pValue": 0.8,
                        "verdict": "Equivalent",
                    },
                    {
                        "variant": "v2",
                        "metric": "outcome",
                        "samples": 1000,
                        "estimate": 0.06,
                        "low": 0.012,
                        "high": 0.108,
                        "pValue": 0.0004,
                        "verdict": "Better",
                    },
                ],
                "sampleRatio": {"chiSquare": 0.1, "pValue": 0.75, "mismatch": False},
                "history": [
                    {
                        "time": f"2025-03-01T10:{minute:02d}:00Z",
                        "comparisons": [
                            {
                                "variant": "v2",
                                "metric": "outcome",
                                "estimate": 0.06,
                                "low": 0.06 - 0.3 / (minute + 1),
                                "high": 0.06 + 0.3 / (minute + 1),
                            },
                            {"variant": "v2", "metric": "errorRate", "estimate": 0.0},
                        ],
                    }
                    for minute in range(0, 13, 3)
                ],
            },
        },
    }


def test_the_hand_made_status_is_one_the_api_accepts() -> None:
    status.ExperimentStatus.model_validate(isvc()["status"]["experiment"])


def test_the_table_shows_the_verdict_variants_and_comparisons() -> None:
    text = experiment_cli.render_table(isvc())
    lines = text.splitlines()
    assert lines[0] == (
        "inferenceservice/digits-ab: Better: v2 better on outcome: +6.0pp [1.2, 10.8], p=0.004"
    )
    assert lines[1] == (
        "since 2025-03-01T10:00:00Z (12m30s; last collected 2025-03-01T10:12:30Z), "
        "control v1, slow: over 250ms"
    )
    assert "WARNING" not in text
    v1 = next(line for line in lines if line.startswith("v1 (control)")).split()
    assert v1[2:] == [
        "50",
        "2010",
        "0.10%",
        "1.00%",
        "1000",
        "10.00%",
        "-",
        "4.0ms",
        "20ms",
        "1.50s",
    ]
    outcome = next(line for line in lines if " outcome " in line).split()
    assert outcome == [
        "v2",
        "outcome",
        "1000",
        "+6.00pp",
        "[+1.20pp,",
        "+10.80pp]",
        "<0.001",
        "Better",
    ]
    errors = next(line for line in lines if " errorRate " in line).split()
    assert errors[-2:] == ["0.800", "Equivalent"]


def test_table_columns_line_up_under_their_headers() -> None:
    lines = experiment_cli.render_table(isvc()).splitlines()
    header = next(line for line in lines if line.startswith("VARIANT   METRIC"))
    row = next(line for line in lines if " outcome " in line)
    assert row.index("Better") == header.index("VERDICT")
    assert row.index("1000") == header.index("SAMPLES")


def test_a_value_metric_is_shown_in_its_own_units_not_percentage_points() -> None:
    obj = isvc()
    exp = obj["status"]["experiment"]
    exp["variants"]["v1"] |= {"values": 40, "valueSum": 80.0, "valueMean": 2.0}
    exp["comparisons"].append(
        {
            "variant": "v2",
            "metric": "value",
            "samples": 40,
            "estimate": 0.25,
            "low": -0.5,
            "high": 1.0,
            "pValue": 0.5,
            "verdict": "Inconclusive",
        }
    )
    lines = experiment_cli.render_table(obj).splitlines()
    assert next(line for line in lines if " value " in line).split()[3:6] == [
        "+0.25",
        "[-0.5,",
        "+1]",
    ]
    assert next(line for line in lines if line.startswith("v1")).split()[6:8] == ["1040", "10.00%"]


def test_a_sample_ratio_mismatch_warns_that_the_comparison_cannot_be_trusted() -> None:
    obj = isvc()
    obj["status"]["experiment"]["sampleRatio"] = {
        "chiSquare": 48.3,
        "pValue": 1e-9,
        "mismatch": True,
    }
    obj["status"]["experiment"]["unreadable"] = [{"pod": "digits-ab-v2-x", "reason": "timed out"}]
    lines = experiment_cli.render_table(obj).splitlines()
    assert lines[2].startswith("WARNING: sample ratio mismatch (chi-square 48.3, p=<0.001)")
    assert "cannot be trusted" in lines[2]
    assert lines[3] == "note: pod digits-ab-v2-x was not read at the last collection: timed out"


def test_an_experiment_still_collecting_says_so() -> None:
    obj = isvc()
    exp = obj["status"]["experiment"]
    for key in ("comparisons", "summary", "history", "lastCollected"):
        exp.pop(key)
    exp["verdict"] = "Collecting"
    text = experiment_cli.render_table(obj)
    assert text.splitlines()[0] == "inferenceservice/digits-ab: Collecting"
    assert "no comparison yet" in text


def test_no_spec_experiment_is_a_clear_message() -> None:
    obj = isvc()
    del obj["spec"]["experiment"]
    with pytest.raises(experiment_cli.NoExperimentError, match=r"has no spec\.experiment"):
        experiment_cli.render_table(obj)


def test_no_status_yet_says_when_it_comes() -> None:
    obj = isvc()
    del obj["status"]
    obj["spec"]["experiment"]["interval"] = "10s"
    with pytest.raises(experiment_cli.NoExperimentError, match=r"no status yet.*every 10s"):
        experiment_cli.render_table(obj)


def test_a_status_it_cannot_read_is_named_not_a_traceback() -> None:
    obj = isvc()
    obj["status"]["experiment"]["verdict"] = "Maybe"
    with pytest.raises(experiment_cli.NoExperimentError, match="verdict"):
        experiment_cli.render_table(obj)


def status_file(tmp_path: Path, obj: dict[str, Any]) -> Path:
    path = tmp_path / "status.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def test_the_command_reads_a_status_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = status_file(tmp_path, isvc())
    assert cli.main(["experiment", "-f", str(path)]) == 0
    assert capsys.readouterr().out == experiment_cli.render_table(isvc())


def test_the_command_picks_the_named_object_in_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = copy.deepcopy(isvc())
    other["metadata"]["name"] = "other"
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([other, isvc()]))
    assert cli.main(["experiment", "digits-ab", "-f", str(path)]) == 0
    assert capsys.readouterr().out.startswith("inferenceservice/digits-ab:")
    assert cli.main(["experiment", "missing", "-f", str(path)]) == 1
    assert "no InferenceService 'missing' in" in capsys.readouterr().err


@pytest.mark.parametrize("output, load", [("yaml", yaml.safe_load), ("json", json.loads)])
def test_yaml_and_json_give_status_experiment_as_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str, load: Any
) -> None:
    path = status_file(tmp_path, isvc())
    assert cli.main(["experiment", "-f", str(path), "-o", output]) == 0
    assert load(capsys.readouterr().out) == isvc()["status"]["experiment"]


def test_the_command_exits_1_with_the_message_when_there_is_no_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = isvc()
    del obj["spec"]["experiment"]
    path = status_file(tmp_path, obj)
    assert cli.main(["experiment", "-f", str(path), "-o", "json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("kubeserve experiment: inferenceservice/digits-ab has no spec")


class FakeApi:
    default_namespace = "team"

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.reads: list[tuple[str, str]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads.append((namespace, name))
        if name != self.obj["metadata"]["name"]:
            raise traffic.TrafficError(f"not found in namespace {namespace!r}")
        return self.obj

    def patch(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        raise AssertionError("experiment never writes")


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["experiment", *argv])


def test_against_a_cluster_it_reads_the_default_namespace_unless_told(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = FakeApi(isvc())
    assert experiment_cli.run(parse("digits-ab"), api) == 0
    assert experiment_cli.run(parse("digits-ab", "-n", "shop"), api) == 0
    assert api.reads == [("team", "digits-ab"), ("shop", "digits-ab")]
    assert experiment_cli.run(parse("nope"), api) == 1
    assert capsys.readouterr().err == "kubeserve experiment: nope: not found in namespace 'team'\n"


def test_without_a_name_or_a_file_it_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    assert experiment_cli.run(parse(), FakeApi(isvc())) == 1
    assert "name the InferenceService" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib (the `plot` extra) is not installed")
def test_png_draws_the_confidence_sequences(tmp_path: Path) -> None:
    path = status_file(tmp_path, isvc())
    png = tmp_path / "cs.png"
    assert cli.main(["experiment", "-f", str(path), "--png", str(png)]) == 0
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib (the `plot` extra) is not installed")
def test_png_without_history_says_there_is_nothing_to_draw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = isvc()
    del obj["status"]["experiment"]["history"]
    png = tmp_path / "cs.png"
    assert cli.main(["experiment", "-f", str(status_file(tmp_path, obj)), "--png", str(png)]) == 1
    assert "no history to draw yet" in capsys.readouterr().err
    assert not png.exists()


def test_png_without_matplotlib_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    # A None entry makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    path = status_file(tmp_path, isvc())
    assert cli.main(["experiment", "-f", str(path), "--png", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "--png needs matplotlib" in err and "pip install 'kubeserve[plot]'" in err
