"""The small interface every runtime implements: describe tensors, ``load()``, ``predict()``.

A runtime knows its file format and its framework, nothing of protocols or HTTP. The data
plane reads ``inputs``/``outputs`` to validate requests before they reach ``predict``, and
``images`` to decode JPEG/PNG bytes for the inputs that a ``kubeserve.json`` beside the model
file declares image inputs (see ``server/images.py``).
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
import time
from collections.abc import Sequence

import numpy as np

from kubeserve.server import errors, images, tensors


@dataclasses.dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model, as V2 metadata shows it (``-1`` marks a free dim)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    # Datatypes a request may send for this input. ONNX is strict (exactly ``datatype``);
    # scikit-learn casts any number, so its runtime widens this.
    accepts: frozenset[str] = frozenset()

    def accepted(self) -> frozenset[str]:
        """Return the datatypes a request may use for this tensor."""
        return self.accepts or frozenset({self.datatype})

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Tell whether a tensor of ``shape`` can be this input (``-1`` takes any size)."""
        want = self.shape
        return len(shape) == len(want) and all(
            w < 0 or w == g for w, g in zip(want, shape, strict=True)
        )

    def metadata(self) -> dict[str, object]:
        """Return the V2 ``$metadata_tensor`` for this spec."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Model(abc.ABC):
    """One version of one model. ``load()`` makes it ready; ``predict()`` is pure compute."""

    platform = "unknown"

    def __init__(self, *, name: str, version: str, path: pathlib.Path) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.ready = False
        self.load_seconds = 0.0
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        # Input name -> how to turn an image into it; empty unless kubeserve.json says so.
        self.images: dict[str, images.ImageInput] = {}

    def load(self) -> None:
        """Load the model file, fill ``inputs``/``outputs`` and ``images``, set ``ready``."""
        started = time.perf_counter()
        self._load()
        self.images = self._read_image_inputs()
        self.load_seconds = time.perf_counter() - started
        self.ready = True

    def _read_image_inputs(self) -> dict[str, images.ImageInput]:
        """Read the image declaration beside the model file and check it fits the inputs.

        A declaration that does not fit fails the load: serving a model on images it
        cannot take would fail every request instead.
        """
        try:
            declared = images.read(self.path.parent)
        except images.DeclarationError as exc:
            raise errors.ModelLoadError(str(exc)) from None
        specs = {t.name: t for t in self.inputs}
        for name, image in declared.items():
            where = f"{self.path.parent / images.DECLARATION_FILE}: inputs.{name}"
            if name not in specs:
                raise errors.ModelLoadError(
                    f"{where}: the model has no such input; inputs: {', '.join(specs)}"
                )
            misfit = image.fit_error(specs[name].datatype, specs[name].shape)
            if misfit:
                raise errors.ModelLoadError(f"{where}: {misfit}")
        return declared

    @abc.abstractmethod
    def _load(self) -> None:
        """Read ``self.path`` and fill ``self.inputs`` and ``self.outputs``."""

    @abc.abstractmethod
    def predict(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the model on validated arrays and return ``outputs`` (None: all of them).

        Every output's first dim is the batch dim. Runtimes may skip work for outputs
        nobody asked for (V1 only wants the first one).
        """

    def metadata(self) -> dict[str, object]:
        """Return the V2 model metadata response for this version."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.platform,
            "inputs": [t.metadata() for t in self.inputs],
            "outputs": [t.metadata() for t in self.outputs],
        }


def numeric_spec(name: str, datatype: str, shape: tuple[int, ...]) -> TensorSpec:
    """Return a spec that accepts any numeric datatype (the runtime casts)."""
    return TensorSpec(name, datatype, shape, tensors.NUMERIC)
