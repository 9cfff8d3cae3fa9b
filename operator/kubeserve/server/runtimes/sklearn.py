"""scikit-learn: safe ``.skops`` files, and pickle/joblib only when explicitly allowed.

Unpickling runs arbitrary code from the file, so a model file from an untrusted bucket is
a remote code execution. skops loads a restricted, inspectable format: it refuses types
outside its trusted set unless the operator of the server names them (``skops_trusted``).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from kubeserve.server import errors, model, tensors
from kubeserve.server.runtimes import RuntimeOptions

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


class SklearnModel(model.Model):
    """An estimator with ``predict`` (and ``predict_proba`` when it is a classifier)."""

    platform = "sklearn"

    def __init__(
        self, *, name: str, version: str, path: pathlib.Path, options: RuntimeOptions
    ) -> None:
        super().__init__(name=name, version=version, path=path)
        self.options = options

    def _load(self) -> None:
        if self.options.intra_op_threads > 0:
            # The same knob as ONNX Runtime's: BLAS pools that spin between tiny calls
            # steal the CPU the event loop and the clients need (seen as p99 tails).
            import threadpoolctl

            threadpoolctl.threadpool_limits(limits=self.options.intra_op_threads)
        estimator = self._read()
        if not hasattr(estimator, "predict"):
            raise errors.ModelLoadError(f"{self.path}: {type(estimator).__name__} has no predict()")
        self._estimator = estimator
        features = getattr(estimator, "n_features_in_", None)
        shape = (-1, int(features)) if features is not None else (-1, -1)
        # sklearn casts whatever numbers it gets, so accept any numeric datatype.
        self.inputs = [model.numeric_spec("input", "FP64", shape)]
        self.outputs = [model.TensorSpec("label", self._label_datatype(), (-1,))]
        self._proba = hasattr(estimator, "predict_proba")
        if self._proba:
            classes = getattr(estimator, "classes_", None)
            width = len(classes) if classes is not None else -1
            self.outputs.append(model.TensorSpec("probabilities", "FP64", (-1, width)))

    def _label_datatype(self) -> str:
        classes = getattr(self._estimator, "classes_", None)
        if classes is None:
            return "FP64"  # a regressor
        return tensors.datatype_of(np.asarray(classes).dtype)

    def _read(self) -> Any:
        suffix = self.path.suffix
        if suffix == ".skops":
            return self._read_skops()
        if suffix in PICKLE_SUFFIXES:
            if not self.options.allow_pickle:
                raise errors.ModelLoadError(
                    f"{self.path}: refusing to unpickle: loading pickle/joblib runs code from "
                    "the file. Export the model with skops (model.skops), or pass "
                    "--allow-pickle (KUBESERVE_ALLOW_PICKLE=true) if you trust its source"
                )
            import joblib

            try:
                return joblib.load(self.path)
            except Exception as exc:  # any unpickling failure
                raise errors.ModelLoadError(f"{self.path}: cannot unpickle: {exc}") from exc
        raise errors.ModelLoadError(f"{self.path}: not a scikit-learn model file")

    def _read_skops(self) -> Any:
        import skops.io

        try:
            untrusted = skops.io.get_untrusted_types(file=self.path)
        except Exception as exc:
            raise errors.ModelLoadError(f"{self.path}: not a skops file: {exc}") from exc
        refused = sorted(set(untrusted) - set(self.options.skops_trusted))
        if refused:
            raise errors.ModelLoadError(
                f"{self.path}: skops file holds types outside the trusted set: "
                + ", ".join(refused)
                + "; review them and pass --skops-trust TYPE (KUBESERVE_SKOPS_TRUSTED) to allow"
            )
        return skops.io.load(self.path, trusted=list(untrusted))

    def predict(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Return ``label`` and, for classifiers, ``probabilities`` (each only if asked).

        Raises BadRequest when scikit-learn refuses the values (its ``ValueError``).
        """
        x = inputs["input"]
        out = {}
        try:
            # Each sklearn call costs ~0.2 ms of validation overhead: skip unwanted outputs.
            if outputs is None or "label" in outputs:
                out["label"] = np.asarray(self._estimator.predict(x))
            if self._proba and (outputs is None or "probabilities" in outputs):
                out["probabilities"] = np.asarray(self._estimator.predict_proba(x))
        except ValueError as exc:
            # scikit-learn's input validation: values that are finite as sent but overflow
            # on the way (1e308 through a StandardScaler), a wrong feature count.
            raise errors.BadRequest(f"input 'input': the model refused its values: {exc}") from None
        return out
