"""Model runtimes and the choice between them by format or file extension.

Each runtime module is imported only when used, so a server for ONNX never imports
scikit-learn (seconds of start time and hundreds of MB of memory saved).
"""

from __future__ import annotations

import dataclasses
import pathlib

from kubeserve.server import errors, model

# Extension -> format. Pickle-family files map to sklearn; whether they may be loaded is
# decided by the sklearn runtime (only with the explicit opt-in).
EXTENSIONS = {
    ".onnx": "onnx",
    ".skops": "sklearn",
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
}
FORMATS = ("onnx", "sklearn")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeOptions:
    """Knobs the runtimes read; filled from the server configuration."""

    allow_pickle: bool = False
    device: str = "auto"
    intra_op_threads: int = 1
    skops_trusted: tuple[str, ...] = ()


def find_model_file(directory: pathlib.Path, fmt: str | None) -> tuple[pathlib.Path, str]:
    """Return the one model file in ``directory`` and its format (given or detected)."""
    candidates = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in EXTENSIONS and (fmt is None or EXTENSIONS[p.suffix] == fmt)
    )
    if not candidates:
        suffixes = [s for s, f in EXTENSIONS.items() if fmt is None or f == fmt]
        raise errors.ModelLoadError(
            f"{directory}: no {fmt or 'model'} file found (" + ", ".join(suffixes) + ")"
        )
    # Prefer the safe formats when a directory holds several (e.g. model.skops and
    # model.joblib side by side): skops before pickle, then by name for determinism.
    candidates.sort(key=lambda p: (p.suffix not in (".onnx", ".skops"), p.name))
    chosen = candidates[0]
    return chosen, fmt or EXTENSIONS[chosen.suffix]


def create(
    *, fmt: str, name: str, version: str, path: pathlib.Path, options: RuntimeOptions
) -> model.Model:
    """Return an unloaded model of the given format."""
    if fmt == "onnx":
        from kubeserve.server.runtimes import onnx

        return onnx.OnnxModel(name=name, version=version, path=path, options=options)
    if fmt == "sklearn":
        from kubeserve.server.runtimes import sklearn

        return sklearn.SklearnModel(name=name, version=version, path=path, options=options)
    raise errors.ModelLoadError(f"unknown model format {fmt!r}; expected one of {FORMATS}")
