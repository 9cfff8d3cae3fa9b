"""The command line: crd, validate and render, as a user runs them, bad input included."""

from __future__ import annotations

import difflib
import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserve import cli, rollout_cli
from kubeserve.rollout import decide
from support import gateway_schema, k8s_schema

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("kubeserve", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "kubeserve.cli"]
    return subprocess.run(
        [*command, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_entry_point_renders_an_example() -> None:
    result = run("render", "-f", str(ROOT / "examples" / "canary.yaml"))
    assert result.returncode == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Deployment",
        "Service",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]


def test_entry_point_reports_field_errors_without_a_traceback() -> None:
    bad = """\
apiVersion: serving.kubeserve.dev/v1alpha1
kind: InferenceService
metadata: {name: x}
spec:
  variants:
  - {name: v1, weight: 80, model: {format: onnx, storageUri: 'ftp://h/m'}}
  - {name: v2, weight: 10, model: {format: onnx, storageUri: 'file:///m'}}
"""
    result = run("render", "-f", "-", stdin=bad)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert (
        "-: inferenceservice/x: spec.variants[1].weight: weights of live variants sum to 90, must be 100"
        in result.stderr
    )
    assert "spec.variants[0].model.storageUri: unsupported storage URI 'ftp'" in result.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates_and_renders_schema_valid_objects(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["validate", "-f", str(path)]) == 0
    assert "valid" in capsys.readouterr().out
    assert cli.main(["render", "-f", str(path)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs
    for doc in docs:
        # Gateway API routes are CRDs the official schemas lack: their own CRDs check them.
        if doc["kind"] in gateway_schema.FILES:
            gateway_schema.assert_valid(doc)
        else:
            k8s_schema.assert_valid(doc)


def test_crd_command_matches_committed_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["crd"]) == 0
    out = capsys.readouterr().out
    assert out == (ROOT / "crds" / "serving.kubeserve.dev_inferenceservices.yaml").read_text()
    assert cli.main(["crd", "-o", str(tmp_path / "crd.yaml")]) == 0
    assert (tmp_path / "crd.yaml").read_text() == out


def test_render_namespace_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-n", "ml", "-f", str(ROOT / "examples" / "single.yaml")]) == 0
    assert {d["metadata"]["namespace"] for d in yaml.safe_load_all(capsys.readouterr().out)} == {
        "ml"
    }


def test_render_server_image_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(
            [
                "render",
                "--server-image",
                "kind.local/server:dev",
                "-f",
                str(ROOT / "examples" / "single.yaml"),
            ]
        )
        == 0
    )
    assert "image: kind.local/server:dev" in capsys.readouterr().out


def test_multiple_documents_and_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(
        (ROOT / "examples" / "single.yaml").read_text()
        + "\n---\n"
        + (ROOT / "examples" / "shadow.yaml").read_text()
    )
    assert cli.main(["validate", "-f", str(both), "-f", str(ROOT / "examples" / "gpu.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "inferenceservice/digits: valid",
        "inferenceservice/digits-shadow: valid",
        "inferenceservice/digits-gpu: valid",
    ]


@pytest.mark.parametrize(
    ("content", "expected", "code"),
    [
        ("a: [unclosed", "not valid YAML at line", 2),
        ("a: 1\na: 2\n", "duplicate key 'a': first defined at line 1, again at line 2", 2),
        ("", "in.yaml: no InferenceService found", 1),
        ("- just\n- a list\n", "document 1: (document): must be a mapping, not a list", 1),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n",
            "pod/p: kind: must be 'InferenceService'",
            1,
        ),
        ("\x00\x01", "not valid YAML", 2),
    ],
)
def test_bad_files_give_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str, code: int
) -> None:
    path = tmp_path / "in.yaml"
    path.write_text(content)
    assert cli.main(["validate", "-f", str(path)]) == code
    err = capsys.readouterr().err
    assert expected in err, err


def test_missing_file_and_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-f", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["validate", "-f", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_binary_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(bytes(range(256)) * 4)
    assert cli.main(["validate", "-f", str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["render"])
    assert info.value.code == 2


# --- traffic -f: GitOps edits ----------------------------------------------------------------


def changed_lines(before: str, after: str) -> list[str]:
    diff = difflib.ndiff(before.splitlines(), after.splitlines())
    return [line for line in diff if line.startswith(("+ ", "- "))]


def test_traffic_on_a_file_changes_only_the_weights_and_the_annotation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = ROOT / "examples" / "canary.yaml"
    assert cli.main(["traffic", "-f", str(path), "digits-canary", "v1=50,v2=50"]) == 0
    assert changed_lines(path.read_text(), capsys.readouterr().out) == [
        "+   annotations:",
        "+     serving.kubeserve.dev/previous-traffic: v1=90,v2=10",
        "-       weight: 90",
        "+       weight: 50",
        "-       weight: 10",
        "+       weight: 50",
    ]


def test_traffic_on_a_file_changes_only_the_named_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = (ROOT / "examples" / "canary.yaml").read_text()
    second = """\
# Kept as written: flow style, quotes, comments, list indentation.
apiVersion: serving.kubeserve.dev/v1alpha1
kind: InferenceService
metadata: {name: other, annotations: {team: "ml"}}
spec:
  variants:
  - {name: v1, weight: 90, model: {format: onnx, storageUri: 'file:///models/v1'}}  # stable
  - {name: v2, weight: 10, model: {format: onnx, storageUri: "file:///models/v2"}}
"""
    path = tmp_path / "both.yaml"
    path.write_text(f"---\n{first}---\n{second}")
    assert cli.main(["promote", "-f", str(path), "other", "v2"]) == 0
    assert changed_lines(path.read_text(), capsys.readouterr().out) == [
        '- metadata: {name: other, annotations: {team: "ml"}}',
        '+ metadata: {name: other, annotations: {team: "ml", '
        "serving.kubeserve.dev/previous-traffic: 'v1=90,v2=10'}}",
        "-   - {name: v1, weight: 90, model: {format: onnx, storageUri: 'file:///models/v1'}}  # stable",
        # The comment keeps its column.
        "+   - {name: v1, weight: 0, model: {format: onnx, storageUri: 'file:///models/v1'}}   # stable",
        '-   - {name: v2, weight: 10, model: {format: onnx, storageUri: "file:///models/v2"}}',
        '+   - {name: v2, weight: 100, model: {format: onnx, storageUri: "file:///models/v2"}}',
    ]


def test_traffic_on_a_file_with_duplicate_keys_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text((ROOT / "examples" / "canary.yaml").read_text() + "kind: Again\n")
    assert cli.main(["traffic", "-f", str(path), "digits-canary", "v1=50,v2=50"]) == 2
    assert "duplicate key 'kind'" in capsys.readouterr().err


# --- what a new user reads -------------------------------------------------------------------


def test_the_readme_example_is_what_validate_prints() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The command line") : readme.index("## Writing")]
    command, rest = section.split("kubeserve validate -f - <<'EOF'\n", 1)[1].split("\nEOF\n", 1)
    printed = rest.split("prints\n\n```\n", 1)[1].split("```", 1)[0]
    result = run("validate", "-f", "-", stdin=command + "\n")
    assert result.returncode == 1
    assert result.stderr == printed


def test_duplicate_keys_name_the_lines_of_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("metadata:\n  name: a\n  labels: {}\n  name: b\n")
    assert cli.main(["validate", "-f", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"kubeserve validate: {path}: not valid YAML at line 4, column 3: "
        "duplicate key 'name': first defined at line 2, again at line 4\n"
    )


def test_an_empty_file_is_named_among_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n---\n")
    single = str(ROOT / "examples" / "single.yaml")
    assert cli.main(["validate", "-f", single, "-f", str(empty)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "inferenceservice/digits: valid\n"
    assert captured.err == f"{empty}: no InferenceService found\n"


@pytest.mark.parametrize(
    "command", ["crd", "validate", "render", "traffic", "promote", "rollback", "rollout"]
)
def test_every_command_describes_itself_in_its_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    usage, description, *_ = capsys.readouterr().out.split("\n\n")
    assert usage.startswith(f"usage: kubeserve {command}")
    assert not description.startswith(("positional arguments", "options")), description
    assert len(description.split()) > 10


def test_fetch_arguments_have_help() -> None:
    result = run("fetch", "--help")
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("positional arguments:\n", 1)[1].split("\n\n", 1)[0]
    for argument in ("storage_uri", "dest"):
        line = next(line for line in listed.splitlines() if line.split()[0] == argument)
        assert len(line.split()) > 3, line


def test_a_misspelt_field_names_the_nearest_one(capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "examples" / "canary.yaml").read_text().replace("weight: 10", "wieght: 10")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(text))
        assert cli.main(["validate", "-f", "-"]) == 1
    assert (
        "-: inferenceservice/digits-canary: spec.variants[1].wieght: unknown field "
        "(did you mean 'weight'?)" in capsys.readouterr().err.splitlines()
    )


def test_a_file_with_many_problems_reports_every_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "many.yaml"
    path.write_text("""\
apiVersion: serving.kubeserve.dev/v1alpha1
kind: InferenceService
metadata: {name: digits}
spec:
  variants:
    - name: v1
      weight: "fifty"
      model: {format: onnx, storageUri: ftp://host/m}
      replicas: 2
      autoscaling: {maxReplicas: 3}
      env: [{name: KUBESERVE_PORT, value: "1"}]
    - name: v2
      weight: 50
      model: {format: pytorch, storageUri: file:///m}
    - name: v3
      weight: 50
      model: {format: onnx, storageUri: s3:///no-bucket}
      resources: {requests: {cpu: 2}, limits: {cpu: 1}}
  routing:
    parentRefs: [{name: gw}]
    sticky: {header: x-user, cookie: uid}
""")
    assert cli.main(["validate", "-f", str(path)]) == 1
    where = f"{path}: inferenceservice/digits: "
    assert [line.removeprefix(where) for line in capsys.readouterr().err.splitlines()] == [
        "spec.routing.parentRefs: only used with routing mode gateway-api",
        "spec.routing.sticky: set exactly one of header and cookie",
        "spec.variants[0].autoscaling: set replicas or autoscaling, not both",
        "spec.variants[0].env[0].name: 'KUBESERVE_PORT' is set by kubeserve "
        "(reserved: KUBESERVE_*, HOME)",
        "spec.variants[0].model.storageUri: unsupported storage URI 'ftp': "
        "use one of file://, pvc://, http://, https://, s3://, gs://",
        "spec.variants[0].weight: must be an integer",
        "spec.variants[1].model.format: must be 'onnx' or 'sklearn'",
        "spec.variants[2].model.storageUri: s3 URIs need a bucket, e.g. s3://bucket/models/v1",
        "spec.variants[2].resources.requests.cpu: request 2 is more than the limit 1",
    ]


class _OneRollout:
    """An API server with one InferenceService that has spec.rollout; it keeps the patches."""

    default_namespace = "default"

    def __init__(self) -> None:
        self.patches: list[dict[str, str]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"rollout": {"candidate": "v2"}}}

    def annotate(self, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        self.patches.append(annotations)
        return {}


def test_kubeserve_rollout_is_a_command_of_the_main_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = _OneRollout()
    monkeypatch.setattr(
        rollout_cli.ClusterApi, "connect", classmethod(lambda cls, context=None: api)
    )
    assert cli.main(["rollout", "digits", "pause"]) == 0
    (patch,) = api.patches
    assert patch[decide.MANUAL_ANNOTATION].startswith("pause/")
    assert capsys.readouterr().out.startswith("inferenceservice/digits: pause requested")
