"""Classify digits rows with the KServe Python SDK's clients, each with its defaults.

    python examples/clients/kserve_sdk_client.py --rest http://127.0.0.1:8080 \
        --grpc 127.0.0.1:8081 < rows.json

``rows.json`` is a JSON array of rows of 64 numbers. Prints one JSON object: ``v1`` (the
REST V1 ``predictions``), ``v2`` and ``grpc`` (each output name -> its values, from the
Open Inference Protocol over REST, binary tensor data by default, and over gRPC).

The ``kserve`` package brings its own dependency set (kubernetes, fastapi, pandas pins);
install it in a virtual environment of its own: ``python -m venv /tmp/kserve && /tmp/kserve/bin/pip install kserve``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import numpy as np


def v2_request(model: str, rows: np.ndarray) -> Any:
    from kserve import InferInput, InferRequest

    tensor = InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return InferRequest(model_name=model, infer_inputs=[tensor])


def outputs(response: Any) -> dict[str, Any]:
    return {o.name: o.as_numpy().tolist() for o in response.outputs}


async def classify(rest: str, grpc: str | None, model: str, rows: np.ndarray) -> dict[str, Any]:
    from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig

    found: dict[str, Any] = {}
    v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
    answer = await v1.infer(rest, {"instances": rows.tolist()}, model_name=model)
    found["v1"] = answer["predictions"]
    v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
    found["v2"] = outputs(await v2.infer(rest, v2_request(model, rows), model_name=model))
    if grpc:
        client = InferenceGRPCClient(grpc)
        found["grpc"] = outputs(await client.infer(v2_request(model, rows)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rest", required=True, help="http://host:port of the server")
    parser.add_argument("--grpc", help="host:port of its gRPC listener")
    parser.add_argument("--model", default="digits")
    args = parser.parse_args()
    # Importing kserve parses sys.argv for its model server's flags (and exits on ours).
    sys.argv[1:] = []
    rows = np.asarray(json.load(sys.stdin), dtype=np.float32)
    print(json.dumps(asyncio.run(classify(args.rest, args.grpc, args.model, rows))))


if __name__ == "__main__":
    main()
