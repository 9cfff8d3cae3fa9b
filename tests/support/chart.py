"""Find the real helm/hadolint/actionlint binaries and render the chart with them.

The binaries come from PATH, the virtualenv's bin/, or .tools/bin (where
scripts/install-test-tools.sh puts them). A test whose tool is missing is skipped with the
reason and the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubeserve"
TOOLS_BIN = ROOT / ".tools" / "bin"
INSTALL = "scripts/install-test-tools.sh"


def find_tool(name: str) -> str | None:
    """Give the path of `name` on PATH, beside the running Python, or in .tools/bin."""
    found = shutil.which(name)
    if found:
        return found
    for folder in (Path(sys.executable).parent, TOOLS_BIN):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_tool(name: str) -> str:
    """Give the path of `name`, or skip the test saying why and how to install it."""
    path = find_tool(name)
    if path is None:
        reason = f"{name} not found on PATH nor in {TOOLS_BIN}: run {INSTALL}"
        print(reason)
        pytest.skip(reason)
    return path


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool, failing with its output when it fails and `check` is set."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=120, cwd=ROOT)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def value_args(values: Mapping[str, Any] | None, tmp_path: Path) -> list[str]:
    """Write `values` to a file and give helm's -f argument for it."""
    if not values:
        return []
    path = tmp_path / f"values-{abs(hash(repr(values)))}.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return ["-f", str(path)]


def render(
    values: Mapping[str, Any] | None,
    tmp_path: Path,
    *,
    release: str = "kubeserve",
    namespace: str = "kubeserve-system",
) -> list[dict[str, Any]]:
    """Give every object `helm template` renders with `values`."""
    helm = require_tool("helm")
    proc = run(
        [
            helm,
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            *value_args(values, tmp_path),
        ]
    )
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def by_kind(objects: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The only object of `kind`."""
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


Grant = tuple[str, str, str]  # apiGroup, resource, verb


def grants(role: dict[str, Any]) -> set[Grant]:
    """The (group, resource, verb) triples a Role or ClusterRole grants; no wildcards allowed."""
    out: set[Grant] = set()
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
        out |= {
            (g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        }
    return out
