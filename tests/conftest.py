"""Fixtures shared by every suite."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def example_models(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Train the example digits models once per session, with the project's own script."""
    out = tmp_path_factory.mktemp("example-models")
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "train_example_models.py"),
            "--out",
            str(out),
            "--formats",
            "onnx,skops",
        ],
        check=True,
        capture_output=True,
    )
    return out
