"""The chart's CRD is the generated one: its copy in files/crds/ and what helm renders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from support.chart import CHART, ROOT, by_kind, one, render

SOURCE = ROOT / "crds" / "serving.kubeserve.dev_inferenceservices.yaml"
COPY = CHART / "files" / "crds" / SOURCE.name


def typed(obj: Any) -> str:
    """JSON text that tells 1 from 1.0 and "1" from 1, for an exact comparison."""
    return json.dumps(obj, sort_keys=True)


def test_chart_copy_of_the_crd_is_identical_to_crds() -> None:
    assert COPY.read_bytes() == SOURCE.read_bytes(), (
        f"{COPY.relative_to(ROOT)} drifted from {SOURCE.relative_to(ROOT)}: "
        f"cp {SOURCE.relative_to(ROOT)} {COPY.relative_to(ROOT)}"
    )


def test_rendered_crd_is_the_generated_one_plus_helm_metadata(tmp_path: Path) -> None:
    source = yaml.safe_load(SOURCE.read_text())
    rendered = one(render({}, tmp_path), "CustomResourceDefinition")
    assert typed(rendered["spec"]) == typed(source["spec"])
    assert rendered["apiVersion"] == source["apiVersion"]
    assert rendered["metadata"]["name"] == source["metadata"]["name"]
    labels = rendered["metadata"]["labels"]
    assert source["metadata"]["labels"].items() <= labels.items()
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
    assert rendered["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert set(rendered) == set(source)


def test_crd_switches(tmp_path: Path) -> None:
    unkept = one(render({"crds": {"keep": False}}, tmp_path), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (unkept["metadata"].get("annotations") or {})
    assert not by_kind(render({"crds": {"install": False}}, tmp_path), "CustomResourceDefinition")
