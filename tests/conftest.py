"""Fixtures shared by every suite."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Train the example digits models once per session, with the project's own script.

    Every format it writes (ONNX, skops, joblib): the server, router and local suites all
    read this one directory, so a run trains once.
    """
    out = tmp_path_factory.mktemp("example-models")
    script = REPO / "scripts" / "train_example_models.py"
    result = subprocess.run(
        [sys.executable, str(script), "--out", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return out
