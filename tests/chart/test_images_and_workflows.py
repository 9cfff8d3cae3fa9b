"""What cannot run here, linted and cross-checked: the Dockerfiles (hadolint), the GitHub
workflows (actionlint), kind-config.yaml and the kind scripts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from support.chart import ROOT, require_tool, run

DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def final_stage(path: Path) -> str:
    """The text of a Dockerfile's last stage (from its last FROM)."""
    text = path.read_text()
    return text[text.rfind("\nFROM ") :]


def test_both_images_have_a_dockerfile() -> None:
    assert [p.name for p in DOCKERFILES] == ["operator.Dockerfile", "server.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path: Path) -> None:
    hadolint = require_tool("hadolint")
    run([hadolint, "--failure-threshold", "info", str(path)])


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_is_slim_and_non_root(path: Path) -> None:
    text = path.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage"
    last = final_stage(path)
    assert re.search(r"^USER 65532:65532$", last, re.M), (
        "the uid the chart and the operator's pods use"
    )
    assert "slim" in text.split("PYTHON_IMAGE=", 1)[1].splitlines()[0]
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in last, f"{tool} in the final stage"
    assert "COPY --from=build /opt/venv /opt/venv" in last


def baked_models() -> set[str]:
    """The model folders the server image bakes: train_example_models.py's layout under --out."""
    text = (ROOT / "images" / "server.Dockerfile").read_text()
    command = re.search(r"train_example_models\.py --out (\S+) --formats (\S+)", text)
    assert command, "the server image runs the training script with --out and --formats"
    out, formats = command.group(1), command.group(2).split(",")
    script = (ROOT / "scripts" / "train_example_models.py").read_text()
    # Each format's block writes `out / "<folder>" / version / ...`.
    blocks = re.split(r'\n\s+if "(\w+)" in formats:', script)
    folders = {}
    for fmt, body in zip(blocks[1::2], blocks[2::2], strict=True):
        folder = re.search(r'out / "([\w-]+)"', body)
        assert folder, fmt
        folders[fmt] = folder.group(1)
    versions = re.findall(r'"(v\d+)": make_pipeline', script)
    assert versions and set(formats) <= set(folders), (versions, folders)
    baked = {f"{out}/{folders[fmt]}/{v}" for fmt in formats for v in versions}
    # The image classifier: build_image_model.py writes <out>/mobilenet/<version> per seed.
    image = re.search(r"build_image_model\.py --out (\S+)", text)
    if image:
        builder = (ROOT / "scripts" / "build_image_model.py").read_text()
        seeds = re.search(r"SEEDS = \{([^}]*)\}", builder)
        assert seeds, "build_image_model.py names its versions in SEEDS"
        image_versions = re.findall(r'"(v\d+)"', seeds.group(1))
        baked |= {f"{image.group(1)}/mobilenet/{v}" for v in image_versions}
    return baked


def test_server_image_runs_kubeserve_and_bakes_every_example_model() -> None:
    text = (ROOT / "images" / "server.Dockerfile").read_text()
    assert 'ENTRYPOINT ["kubeserve"]' in final_stage(ROOT / "images" / "server.Dockerfile")
    assert 'pip install ".[server]"' in text
    assert "COPY --from=models /models /models" in text
    baked = baked_models()
    wanted = set()
    for example in EXAMPLES:
        for doc in yaml.safe_load_all(example.read_text()):
            for variant in doc["spec"]["variants"]:
                uri = variant["model"]["storageUri"]
                if uri.startswith("file:///models/"):
                    wanted.add(uri.removeprefix("file://").rstrip("/"))
    assert wanted, "the examples name baked models"
    assert wanted <= baked, f"examples name models the image lacks: {sorted(wanted - baked)}"


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines
    for needed in (
        "pyproject.toml",
        "README.md",
        "operator/",
        "scripts/train_example_models.py",
        "scripts/build_image_model.py",
    ):
        assert f"!{needed}" in lines, needed


def test_workflows_exist_and_pass_actionlint() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "e2e.yml"}
    actionlint = require_tool("actionlint")
    run([actionlint, *map(str, WORKFLOWS)])


def test_workflows_run_the_documented_commands() -> None:
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = ci["jobs"]["test"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert (
        next(s for s in steps if "setup-python" in s.get("uses", ""))["with"]["python-version"]
        == "3.11"
    )
    assert "nginx" in runs and "make test" in runs
    e2e = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yml").read_text())
    runs = "\n".join(s.get("run", "") for s in e2e["jobs"]["kind"]["steps"])
    assert "make kind-up" in runs and "-m e2e" in runs and "make kind-down" in runs


def test_kind_config_has_a_gpu_labelled_worker_for_the_gpu_example() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    roles = [n["role"] for n in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    gpu = [
        n for n in config["nodes"] if n.get("labels", {}).get("nvidia.com/gpu.present") == "true"
    ]
    assert len(gpu) == 1
    example = yaml.safe_load((ROOT / "examples" / "gpu.yaml").read_text())
    products = {v["gpu"]["product"] for v in example["spec"]["variants"] if v.get("gpu")}
    assert products == {gpu[0]["labels"]["nvidia.com/gpu.product"]}


@pytest.mark.parametrize("script", ["kind-up.sh", "kind-down.sh", "install-test-tools.sh"])
def test_scripts_parse(script: str) -> None:
    proc = subprocess.run(
        ["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_kind_up_names_what_is_missing(tmp_path: Path) -> None:
    """With a bare PATH kind-up lists every missing prerequisite (it also looks in .tools/bin)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("bash", "dirname", "printf", "cat", "sed", "head", "grep"):
        found = subprocess.run(["bash", "-c", f"command -v {name}"], capture_output=True, text=True)
        if found.stdout.strip().startswith("/"):
            (bindir / name).symlink_to(found.stdout.strip())
    proc = subprocess.run(
        [str(bindir / "bash"), str(ROOT / "scripts" / "kind-up.sh")],
        capture_output=True,
        text=True,
        env={"PATH": str(bindir), "HOME": str(tmp_path)},
        cwd=tmp_path,
        timeout=30,
    )
    assert proc.returncode == 1
    for name in ("docker", "kind", "kubectl", "helm"):
        if not (ROOT / ".tools" / "bin" / name).exists():
            assert f"  - {name}:" in proc.stderr, proc.stderr
    assert "docker" in proc.stderr and "kind" in proc.stderr


def test_kind_up_preloads_the_charts_router_image() -> None:
    values = yaml.safe_load((ROOT / "charts" / "kubeserve" / "values.yaml").read_text())
    router = f"{values['routerImage']['repository']}:{values['routerImage']['tag']}"
    script = (ROOT / "scripts" / "kind-up.sh").read_text()
    assert f'ROUTER_IMAGE="${{ROUTER_IMAGE:-{router}}}"' in script
