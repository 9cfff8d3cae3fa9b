"""Find the versions of one model on disk (``<dir>/<version>/model.*``) and load them.

The layout is TF Serving's and Triton's: one sub-directory per version. A directory that
holds a model file directly is a single version too, named after the variant (or ``1``),
so ``kubeserve serve --model-dir ./v1`` works without a wrapper directory.
"""

from __future__ import annotations

import logging
import pathlib
import re

from kubeserve.server import errors, model, runtimes

log = logging.getLogger("kubeserve.server")


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key for versions in natural order: 10 after 9, v10 after v9."""
    # Numbers and words never compare directly: each part is tagged with its kind.
    return tuple(
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", version) if p
    )


class Repository:
    """The versions of one model; ``default`` serves requests that name no version."""

    def __init__(self, *, name: str, versions: dict[str, model.Model], default: str) -> None:
        self.name = name
        self.versions = versions
        self.default = default
        self.errors: dict[str, str] = {}

    def get(self, name: str, version: str | None) -> model.Model:
        """Return the model version a request names, or raise NotFound/NotReady."""
        if name != self.name:
            raise errors.NotFound(f"model '{name}' not found; this server serves '{self.name}'")
        key = self.default if version is None else version
        found = self.versions.get(key)
        if found is None:
            raise errors.NotFound(
                f"model '{name}' has no version '{key}'; versions: "
                + ", ".join(sorted(self.versions, key=version_key))
            )
        return found

    def ready(self) -> bool:
        """Tell whether every version loaded."""
        return all(m.ready for m in self.versions.values())

    def load_all(self) -> None:
        """Load every version; failures are recorded and logged, the server stays up."""
        for version, m in self.versions.items():
            try:
                m.load()
                log.info(
                    "loaded model %s version %s from %s in %.3fs",
                    self.name,
                    version,
                    m.path,
                    m.load_seconds,
                )
            except errors.ModelLoadError as exc:
                self.errors[version] = str(exc)
                log.error("cannot load model %s version %s: %s", self.name, version, exc)
            except Exception as exc:  # a broken file must not kill the process
                self.errors[version] = f"{type(exc).__name__}: {exc}"
                log.exception("cannot load model %s version %s", self.name, version)


def discover(
    *,
    name: str,
    model_dir: pathlib.Path,
    fmt: str | None,
    variant: str | None,
    options: runtimes.RuntimeOptions,
) -> Repository:
    """Scan ``model_dir`` and return an unloaded repository, or raise ModelLoadError."""
    if not model_dir.is_dir():
        raise errors.ModelLoadError(f"model directory {model_dir} does not exist")
    found: dict[str, model.Model] = {}
    has_direct = any(p.is_file() and p.suffix in runtimes.EXTENSIONS for p in model_dir.iterdir())
    if has_direct:
        version = variant or "1"
        path, detected = runtimes.find_model_file(model_dir, fmt)
        found[version] = runtimes.create(
            fmt=detected, name=name, version=version, path=path, options=options
        )
    else:
        for sub in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            if sub.name.startswith("."):
                continue  # fetch's temporary directories, hidden files
            try:
                path, detected = runtimes.find_model_file(sub, fmt)
            except errors.ModelLoadError:
                log.warning("skipping %s: no model file", sub)
                continue
            found[sub.name] = runtimes.create(
                fmt=detected, name=name, version=sub.name, path=path, options=options
            )
    if not found:
        raise errors.ModelLoadError(
            f"{model_dir}: no model versions found (expected {model_dir}/<version>/model.onnx "
            "or model.skops)"
        )
    # The variant's own directory is the default; otherwise the newest version, as in
    # TF Serving.
    default = variant if variant and variant in found else max(found, key=version_key)
    return Repository(name=name, versions=found, default=default)
