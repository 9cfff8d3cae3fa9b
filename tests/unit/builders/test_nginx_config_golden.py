"""The nginx.conf the cluster's router runs, byte for byte, for every example and a few more.

The golden files were rendered before the config's renderer was split from the router's
objects and given its addresses as parameters; they keep any later change to the template or
the renderer visible in review. To accept a deliberate change, rerun with
`KUBESERVE_UPDATE_GOLDEN=1` and read the diff.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from kubeserve import manifests
from kubeserve.api import validation
from kubeserve.builders import nginx_config
from kubeserve.builders.config import BuildConfig
from support import specs

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).with_name("golden")


def _in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["metadata"].setdefault("namespace", namespace)
    return doc


def cases() -> dict[str, tuple[dict[str, Any], BuildConfig]]:
    """Name each rendering kept as a golden file: its InferenceService and build config."""
    found: dict[str, tuple[dict[str, Any], BuildConfig]] = {}
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in manifests.load_documents(str(path)):
            # As the operator sees it: read from the API, so always in a namespace.
            found[f"{path.stem}-{doc['metadata']['name']}"] = (
                _in_namespace(doc, "serving"),
                BuildConfig(),
            )
    found["header-sticky-override-mirror"] = (
        specs.sticky_ab(),
        BuildConfig(),
    )
    found["cookie-sticky-full-mirror-no-namespace"] = (
        specs.isvc(
            specs.variant("a", 70),
            specs.variant("b", 30),
            specs.variant("dark", 0),
            name="sticky-cookies",
            namespace=None,
            routing={
                "sticky": {"cookie": "session_id"},
                "mirror": {"variant": "dark", "percent": 100},
                "router": {"workers": 4},
            },
        ),
        BuildConfig(),
    )
    found["other-cluster-domain"] = (
        specs.isvc(specs.variant("v1", 90), specs.variant("v2", 10), namespace="ml"),
        BuildConfig(cluster_domain="k8s.example"),
    )
    return found


CASES = cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_cluster_config_is_unchanged(name: str) -> None:
    doc, config = CASES[name]
    text = nginx_config.render_config(validation.parse(doc), config)
    golden = GOLDEN / f"{name}.conf"
    if os.environ.get("KUBESERVE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_every_golden_file_has_a_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.conf")) == sorted(CASES)
