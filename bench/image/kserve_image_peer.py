"""The KServe peer of the image benchmark: KServe 0.21's ModelServer running the ONNX model.

Runs inside a separate environment with ``kserve`` and ``onnxruntime`` installed (not the
project's). KServe's own runtimes for ONNX are Triton or its Python server with a custom
``kserve.Model``, as here: V2 over REST (JSON, and the binary tensor extension, which
KServe decodes itself) and over gRPC (``raw_input_contents`` too). ONNX Runtime gets the
same session options as kubeserve's runtime (one intra-op thread, sequential), so the model
costs the same in both.

    python kserve_image_peer.py --model_name mobilenet --model_path .../model.onnx \\
        --http_port 9211 --grpc_port 9212 --grpc_max_receive_message_length 67108864
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.model_server import parser as kserve_parser


class OnnxImageModel(Model):
    """An ONNX image classifier behind KServe's Model interface."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: Any = None

    def load(self) -> bool:
        """Open the ONNX Runtime session and mark ready."""
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: Any = None, **_: Any) -> Any:
        """Run the model on a V2 InferRequest (REST JSON, REST binary or gRPC alike)."""
        request: InferRequest = payload
        images = request.inputs[0].as_numpy().astype(np.float32, copy=False)
        (probabilities,) = self.session.run(["probabilities"], {"input": images})
        out = InferOutput(
            name="probabilities",
            shape=list(probabilities.shape),
            datatype="FP32",
            data=probabilities,
        )
        return InferResponse(
            model_name=self.name,
            infer_outputs=[out],
            response_id=request.id or str(uuid.uuid4()),
        )


def main() -> None:
    """Parse KServe's own flags plus the model's, then serve REST and gRPC."""
    parser = argparse.ArgumentParser(parents=[kserve_parser], conflict_handler="resolve")
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = OnnxImageModel(args.model_name, args.model_path)
    model.load()
    ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers, enable_grpc=True
    ).start([model])


if __name__ == "__main__":
    print("kserve", getattr(kserve, "__version__", ""))
    main()
