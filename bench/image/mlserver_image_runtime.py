"""The MLServer peer of the image benchmark: a custom MLServer 1.7.1 runtime for ONNX.

MLServer ships no ONNX runtime (its runtimes are scikit-learn, XGBoost, LightGBM, MLflow,
Hugging Face, ...); a custom ``MLModel`` is how its documentation serves anything else. The
benchmark copies this file beside ``model-settings.json`` (MLServer imports it from the
model's folder) and names ``mlserver_image_runtime.OnnxImageModel`` as the implementation.
ONNX Runtime gets kubeserve's session options (one intra-op thread, sequential).

MLServer speaks V2 over REST (JSON only: no binary tensor extension) and gRPC
(``raw_input_contents`` included).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxImageModel(MLModel):
    """An ONNX image classifier behind MLServer's MLModel interface."""

    async def load(self) -> bool:
        """Open the ONNX Runtime session on the model-settings' ``uri``."""
        path = await get_model_uri(self._settings)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Decode the first input with MLServer's numpy codec, run, encode the output."""
        images = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        (probabilities,) = self._session.run(["probabilities"], {"input": images})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("probabilities", probabilities)],
        )
