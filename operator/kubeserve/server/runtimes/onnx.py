"""ONNX Runtime: CUDA where a GPU is usable, CPU otherwise.

Tiny models (the digits classifier runs in microseconds) are dominated by thread hand-off,
so the default is one intra-op thread per worker; scale with workers and replicas instead.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from kubeserve.server import errors, model
from kubeserve.server.runtimes import RuntimeOptions

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# ONNX element type -> V2 datatype.
_ONNX_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def select_providers(device: str, available: Sequence[str]) -> list[str]:
    """Choose execution providers for ``device`` ('auto', 'cpu' or 'cuda').

    'auto' takes CUDA when the installed onnxruntime offers it (onnxruntime-gpu on a node
    with a GPU) and falls back to CPU; 'cuda' insists and fails loudly when it is missing,
    so a GPU variant scheduled on the wrong image does not quietly run on the CPU.
    """
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise errors.ModelLoadError(
                f"device 'cuda' requested but onnxruntime offers only {list(available)}; "
                "install onnxruntime-gpu and run on a node with an NVIDIA GPU"
            )
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise errors.ModelLoadError(f"unknown device {device!r}; expected auto, cpu or cuda")


def _shape(dims: Sequence[object]) -> tuple[int, ...]:
    # Symbolic dims ("N", None) are free: V2 writes them as -1.
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)


class OnnxModel(model.Model):
    """A model.onnx file run by an onnxruntime InferenceSession."""

    platform = "onnxruntime_onnx"

    def __init__(
        self, *, name: str, version: str, path: pathlib.Path, options: RuntimeOptions
    ) -> None:
        super().__init__(name=name, version=version, path=path)
        self.options = options
        self.providers: list[str] = []

    def _load(self) -> None:
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        self._invalid_argument: type[Exception] = ort_state.InvalidArgument

        opts = ort.SessionOptions()
        if self.options.intra_op_threads > 0:
            opts.intra_op_num_threads = self.options.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = select_providers(self.options.device, ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception classes
            raise errors.ModelLoadError(f"{self.path}: not a loadable ONNX model: {exc}") from exc
        self.providers = self._session.get_providers()
        self.inputs = [
            model.TensorSpec(i.name, self._datatype(i.type), _shape(i.shape))
            for i in self._session.get_inputs()
        ]
        self.outputs = [
            model.TensorSpec(o.name, self._datatype(o.type), _shape(o.shape))
            for o in self._session.get_outputs()
        ]
        self._output_names = [o.name for o in self.outputs]

    def _datatype(self, onnx_type: str) -> str:
        try:
            return _ONNX_TYPES[onnx_type]
        except KeyError:
            raise errors.ModelLoadError(
                f"{self.path}: tensor type {onnx_type} is not servable (maps, sequences)"
            ) from None

    def predict(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the session; string inputs are handed over as numpy object arrays.

        Raises BadRequest when ONNX Runtime calls the input invalid (``InvalidArgument``).
        """
        feeds = {k: (v.astype(object) if v.dtype.kind == "U" else v) for k, v in inputs.items()}
        names = self._output_names if outputs is None else list(outputs)
        try:
            results = self._session.run(names, feeds)
        except self._invalid_argument as exc:
            # Inputs that passed the declared datatypes and shapes but not the graph's own
            # checks (an index out of range, dims that must agree): the client's to fix.
            raise errors.BadRequest(f"the model refused the input: {exc}") from None
        return dict(zip(names, results, strict=True))
