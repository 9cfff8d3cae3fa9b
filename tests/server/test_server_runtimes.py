"""Runtimes in-process: provider choice, safe loading, file discovery, the Model contract."""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import pytest

from kubeserve.server import errors, repository, runtimes
from kubeserve.server.runtimes import onnx as onnx_runtime

CPU, CUDA = onnx_runtime.CPU, onnx_runtime.CUDA


@pytest.mark.parametrize(
    ("device", "available", "chosen"),
    [
        ("auto", [CPU], [CPU]),
        ("auto", ["TensorrtExecutionProvider", CUDA, CPU], [CUDA, CPU]),
        ("cpu", [CUDA, CPU], [CPU]),
        ("cuda", [CUDA, CPU], [CUDA, CPU]),
    ],
)
def test_provider_selection(device: str, available: list[str], chosen: list[str]) -> None:
    assert onnx_runtime.select_providers(device, available) == chosen


def test_cuda_requested_without_cuda_fails_loudly() -> None:
    with pytest.raises(errors.ModelLoadError, match="onnxruntime-gpu"):
        onnx_runtime.select_providers("cuda", [CPU])
    with pytest.raises(errors.ModelLoadError, match="unknown device"):
        onnx_runtime.select_providers("tpu", [CPU])


def test_onnx_model_loads_and_predicts(example_models: pathlib.Path, digits_rows) -> None:
    x, y = digits_rows
    m = runtimes.create(
        fmt="onnx",
        name="d",
        version="1",
        path=example_models / "digits-onnx" / "v1" / "model.onnx",
        options=runtimes.RuntimeOptions(),
    )
    assert not m.ready
    m.load()
    assert m.ready and m.load_seconds > 0
    assert m.providers == [CPU]  # no GPU on this machine: auto fell back to the CPU
    out = m.predict({"input": x[:8].astype(np.float32)})
    assert (out["label"] == y[:8]).sum() >= 7  # ~96% accurate
    assert out["probabilities"].shape == (8, 10)


def test_skops_refuses_untrusted_types_until_trusted(tmp_path: pathlib.Path, digits_rows) -> None:
    import skops.io
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = digits_rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3).fit(x, y)  # keeps Adam state
    path = tmp_path / "model.skops"
    skops.io.dump(mlp, path)
    untrusted = skops.io.get_untrusted_types(file=path)
    assert untrusted
    m = runtimes.create(
        fmt="sklearn", name="m", version="1", path=path, options=runtimes.RuntimeOptions()
    )
    with pytest.raises(errors.ModelLoadError, match="outside the trusted set"):
        m.load()
    trusted = runtimes.create(
        fmt="sklearn",
        name="m",
        version="1",
        path=path,
        options=runtimes.RuntimeOptions(skops_trusted=tuple(untrusted)),
    )
    trusted.load()
    assert trusted.predict({"input": x[:2]})["label"].shape == (2,)


def test_pickle_only_with_opt_in(example_models: pathlib.Path) -> None:
    path = example_models / "digits-joblib" / "v1" / "model.joblib"
    refused = runtimes.create(
        fmt="sklearn", name="m", version="1", path=path, options=runtimes.RuntimeOptions()
    )
    with pytest.raises(errors.ModelLoadError, match="--allow-pickle"):
        refused.load()
    allowed = runtimes.create(
        fmt="sklearn",
        name="m",
        version="1",
        path=path,
        options=runtimes.RuntimeOptions(allow_pickle=True),
    )
    allowed.load()
    assert allowed.ready


def test_safe_formats_win_when_a_directory_has_several(tmp_path: pathlib.Path) -> None:
    for name in ("model.joblib", "model.skops"):
        (tmp_path / name).write_bytes(b"")
    assert runtimes.find_model_file(tmp_path, None) == (tmp_path / "model.skops", "sklearn")
    with pytest.raises(errors.ModelLoadError, match=r"no onnx file found \(\.onnx\)"):
        runtimes.find_model_file(tmp_path, "onnx")


def test_repository_layouts(tmp_path: pathlib.Path) -> None:
    for version in ("1", "2", "10"):
        (tmp_path / "many" / version).mkdir(parents=True)
        (tmp_path / "many" / version / "model.onnx").write_bytes(b"")
    (tmp_path / "many" / ".v3.fetch-x").mkdir()  # fetch's staging dir is never a version
    options = runtimes.RuntimeOptions()
    repo = repository.discover(
        name="m", model_dir=tmp_path / "many", fmt=None, variant=None, options=options
    )
    assert sorted(repo.versions) == ["1", "10", "2"] and repo.default == "10"
    repo = repository.discover(
        name="m", model_dir=tmp_path / "many", fmt=None, variant="2", options=options
    )
    assert repo.default == "2"
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "model.skops").write_bytes(b"")
    repo = repository.discover(
        name="m", model_dir=tmp_path / "flat", fmt=None, variant="canary", options=options
    )
    assert list(repo.versions) == ["canary"]
    with pytest.raises(errors.NotFound, match="versions: 1, 2, 10"):
        repository.discover(
            name="m", model_dir=tmp_path / "many", fmt=None, variant=None, options=options
        ).get("m", "7")
    with pytest.raises(errors.ModelLoadError, match="no model versions"):
        repository.discover(
            name="m", model_dir=tmp_path / "many", fmt="sklearn", variant=None, options=options
        )
