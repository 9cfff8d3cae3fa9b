"""The KServe peer for the benchmark: KServe's Python ModelServer with a custom Model.

Runs inside a separate environment that has ``kserve`` installed (not the project's). It
predicts with the joblib scikit-learn model, as KServe's own sklearn server does, and
answers V1 (``instances`` -> ``predictions``) and V2 (``InferRequest`` -> ``InferResponse``).

    python kserve_peer.py --model_name digits --model_path .../model.joblib --http_port 9001
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import joblib
import kserve
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.model_server import parser as kserve_parser


class DigitsModel(Model):
    """A scikit-learn classifier behind KServe's Model interface."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.estimator: Any = None

    def load(self) -> bool:
        """Unpickle the estimator (the benchmark's own file) and mark ready."""
        self.estimator = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload: Any, headers: Any = None, **_: Any) -> Any:
        """Predict labels for V1 dicts and V2 InferRequests."""
        if isinstance(payload, InferRequest):
            rows = payload.inputs[0].as_numpy()
            labels = np.asarray(self.estimator.predict(rows))
            out = InferOutput(
                name="label",
                shape=list(labels.shape),
                datatype="INT64",
                data=labels.astype(np.int64),
            )
            return InferResponse(
                model_name=self.name,
                infer_outputs=[out],
                response_id=payload.id or str(uuid.uuid4()),
            )
        rows = np.asarray(payload["instances"])
        return {"predictions": self.estimator.predict(rows).tolist()}


def main() -> None:
    """Parse KServe's own flags plus the model's, then serve."""
    parser = argparse.ArgumentParser(parents=[kserve_parser], conflict_handler="resolve")
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = DigitsModel(args.model_name, args.model_path)
    model.load()
    ModelServer(http_port=args.http_port, workers=args.workers, enable_grpc=False).start([model])


if __name__ == "__main__":
    print("kserve", kserve.__version__ if hasattr(kserve, "__version__") else "")
    main()
