"""The OpenAPI 3.1 document the server publishes at ``GET /openapi.json``.

Written by hand from the protocols (KServe V1, Open Inference Protocol V2) rather than
generated, because the server has no framework to generate it from; a test checks that
every route the transport serves appears here.
"""

from __future__ import annotations

from typing import Any

from kubeserve.server import feedback

_ERROR = {
    "description": "Error; the message names the problem",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_HEADERS = {
    "x-kubeserve-variant": {
        "description": "The variant that served (defaults to the model version)",
        "schema": {"type": "string"},
    },
    "x-kubeserve-model-version": {
        "description": "The model version that served",
        "schema": {"type": "string"},
    },
}


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _HEADERS,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _op(summary: str, ok: dict[str, Any], *codes: int, body: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok}}
    for code in codes:
        op["responses"][str(code)] = _ERROR
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return op


# The binary tensor data extension: a JSON header of this many bytes, then raw tensor bytes.
_BINARY_DESCRIPTION = (
    "Binary tensor data extension: the JSON request (or response) of "
    "Inference-Header-Content-Length bytes, then each binary tensor's bytes in the order of "
    "its inputs (outputs): little-endian, row-major, BOOL as one byte 0/1, BYTES elements each "
    "after a 4-byte little-endian length. A tensor's parameters.binary_data_size gives its "
    "byte count; outputs come as binary with parameters.binary_data (per output) or "
    "parameters.binary_data_output (the request's default)"
)
_HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "description": "Bytes of JSON at the start of a binary body (binary tensor data extension)",
    "schema": {"type": "integer", "minimum": 0},
}
_BINARY_BODY = {
    "description": _BINARY_DESCRIPTION,
    "schema": {"type": "string", "format": "binary"},
}


def _binary(op: dict[str, Any]) -> dict[str, Any]:
    """Add the binary tensor data form to a V2 inference operation."""
    op["parameters"] = [_HEADER_LENGTH]
    op["requestBody"]["content"]["application/octet-stream"] = _BINARY_BODY
    ok = op["responses"]["200"]
    ok["content"] = {**ok["content"], "application/octet-stream": _BINARY_BODY}
    ok["headers"] = {
        **ok["headers"],
        "inference-header-content-length": {
            "description": "Bytes of JSON before the binary outputs (binary replies only)",
            "schema": {"type": "integer", "minimum": 0},
        },
    }
    return op


_MODEL = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}

_DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
_PARAMETERS = {
    "type": "object",
    "description": "Free-form; the server reads only those of the binary tensor data "
    "extension: binary_data_size (an input's), binary_data (an output's), binary_data_output "
    "(the request's)",
}

# What the server requires of a request, as far as a schema can say it: the model decides the
# rest (input names, datatypes it accepts, shapes), and answers 400 naming the field.
_REQUEST_TENSOR = {
    "type": "object",
    "description": "'data' holds the values, unless parameters.binary_data_size says they "
    "follow the JSON as bytes",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": _DATATYPES},
        "shape": {
            "type": "array",
            "description": "The first dim is the batch: at least one row",
            "prefixItems": [{"type": "integer", "minimum": 1}],
            "items": {"type": "integer", "minimum": 0},
        },
        "parameters": _PARAMETERS,
        "data": {
            "type": "array",
            "description": "Row-major contents, flat or nested: numbers for number types, "
            "true/false for BOOL, strings for BYTES",
        },
    },
}
_RESPONSE_TENSOR = {
    "type": "object",
    "description": "'data' holds the values, unless parameters.binary_data_size says they "
    "follow the JSON as bytes",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": _DATATYPES},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "Row-major contents, flat"},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
    "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {"ready": {"type": "boolean"}},
    },
    "ModelReady": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "V1Models": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": {"type": "string"}}},
    },
    "V1PredictRequest": {
        "type": "object",
        "description": "TF Serving's predict request. Row form: 'instances', one item per "
        "instance: the value of the model's only input, or an object keyed by input name "
        "(every instance the same names). Columnar form: 'inputs', the only input's tensor or "
        'an object of input name -> tensor. {"b64": "<base64>"} stands for a binary value '
        "(BYTES inputs). The first dim is the batch. The body may be sent with "
        "Content-Encoding gzip or deflate; the size limit applies to the inflated body, and "
        "another coding is a 415",
        "anyOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
        "not": {"required": ["instances", "inputs"]},
        "properties": {
            "signature_name": {"type": "string", "description": "Accepted and not checked"},
            "instances": {"type": "array", "minItems": 1},
            "inputs": {
                "oneOf": [
                    {"type": "array", "minItems": 1},
                    {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": {"type": "array", "minItems": 1},
                    },
                ]
            },
        },
    },
    "V1PredictResponse": {
        "type": "object",
        "description": "'predictions' answers the row form: one item per instance, the only "
        "output's value or an object keyed by output name. 'outputs' answers the columnar "
        "form: the only output's tensor or an object of output name -> tensor. A classifier "
        "(outputs label and probabilities) answers its labels alone. Outputs named *_bytes "
        'hold {"b64": ...} values',
        "oneOf": [{"required": ["predictions"]}, {"required": ["outputs"]}],
        "properties": {
            "predictions": {"type": "array"},
            "outputs": {"description": "A tensor (nested arrays), or an object of them"},
        },
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "MetadataTensor": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "-1 marks a dimension of any size",
            },
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/MetadataTensor"}},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/MetadataTensor"}},
        },
    },
    "RequestInput": _REQUEST_TENSOR,
    "RequestOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _PARAMETERS,
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/RequestInput"},
            },
            "outputs": {
                "type": "array",
                "minItems": 1,
                "description": "Leave it out for every output",
                "items": {"$ref": "#/components/schemas/RequestOutput"},
            },
        },
    },
    "Feedback": {
        "type": "object",
        "description": "What happened after an answer, reported to the variant that served it "
        "(through the router: the override header naming the x-kubeserve-variant it "
        "answered with). Exactly one of 'outcome' (a conversion: the integer 0 or 1, or "
        "false/true; 1.0 is refused) and 'value' (a reward: a finite number). The body is at "
        f"most {feedback.MAX_BYTES} bytes; the server counts it, and keeps no request ids",
        "oneOf": [{"required": ["outcome"]}, {"required": ["value"]}],
        "additionalProperties": False,
        "properties": {
            "outcome": {"oneOf": [{"type": "integer", "enum": [0, 1]}, {"type": "boolean"}]},
            "value": {
                "type": "number",
                "minimum": -feedback.MAX_VALUE,
                "maximum": feedback.MAX_VALUE,
            },
            "requestId": {
                "type": "string",
                "maxLength": feedback.MAX_REQUEST_ID,
                "description": "The request's x-request-id, for the client's records",
            },
        },
    },
    "FeedbackRecorded": {
        "type": "object",
        "required": ["model", "version", "recorded"],
        "properties": {
            "model": {"type": "string"},
            "version": {"type": "string"},
            "recorded": {"type": "string", "enum": ["outcome", "value"]},
        },
    },
    "ResponseOutput": _RESPONSE_TENSOR,
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/ResponseOutput"}},
        },
    },
}


def document(model_name: str) -> dict[str, Any]:
    """Return the OpenAPI document; ``model_name`` fills the examples."""
    model_ops = {
        "metadata": _op("Model metadata (V2)", _ok("ModelMetadata", "Metadata"), 404, 503),
        "ready": _op("Model readiness (V2)", _ok("ModelReady", "Ready"), 404, 503),
        "infer": _binary(
            _op(
                "Inference (V2)",
                _ok("InferenceResponse", "Outputs"),
                400,
                404,
                413,
                415,
                500,
                503,
                body="InferenceRequest",
            )
        ),
        "predict": _op(
            "Predict (V1)",
            _ok("V1PredictResponse", "Predictions"),
            400,
            404,
            413,
            415,
            500,
            503,
            body="V1PredictRequest",
        ),
        "v1ready": _op("Model readiness (V1)", _ok("ModelReady", "Ready"), 404, 503),
        # Counted whether or not the version is ready: no 503.
        "feedback": {
            **_op(
                "Report an outcome or value for a request this version served",
                _ok("FeedbackRecorded", "Counted"),
                400,
                404,
                413,
                415,
                body="Feedback",
            ),
            "description": "Counted in kubeserve_feedback_total{kind}, "
            "kubeserve_feedback_positive_total, kubeserve_feedback_value_sum and "
            "kubeserve_feedback_value_squares_sum of the version, ready or not. 400 names the "
            f"field at fault; 413 for a body over {feedback.MAX_BYTES} bytes; other methods than POST get 405 "
            "with Allow: POST",
        },
    }
    one, versioned = [_MODEL], [_MODEL, _VERSION]
    paths: dict[str, Any] = {
        "/": {"get": _op("Server alive (V1)", _ok("Status", "Alive"))},
        "/v1/models": {"get": _op("List models (V1)", _ok("V1Models", "Model names"))},
        "/v1/models/{model_name}": {"parameters": one, "get": model_ops["v1ready"]},
        "/v1/models/{model_name}:predict": {"parameters": one, "post": model_ops["predict"]},
        "/v1/models/{model_name}/versions/{model_version}": {
            "parameters": versioned,
            "get": model_ops["v1ready"],
        },
        "/v1/models/{model_name}/versions/{model_version}:predict": {
            "parameters": versioned,
            "post": model_ops["predict"],
        },
        "/v2": {"get": _op("Server metadata (V2)", _ok("ServerMetadata", "Metadata"))},
        "/v2/health/live": {"get": _op("Server liveness (V2)", _ok("Live", "Live"))},
        "/v2/health/ready": {"get": _op("Server readiness (V2)", _ok("Ready", "Ready"), 503)},
        "/v2/models/{model_name}": {"parameters": one, "get": model_ops["metadata"]},
        "/v2/models/{model_name}/ready": {"parameters": one, "get": model_ops["ready"]},
        "/v2/models/{model_name}/infer": {"parameters": one, "post": model_ops["infer"]},
        "/v2/models/{model_name}/versions/{model_version}": {
            "parameters": versioned,
            "get": model_ops["metadata"],
        },
        "/v2/models/{model_name}/versions/{model_version}/ready": {
            "parameters": versioned,
            "get": model_ops["ready"],
        },
        "/v2/models/{model_name}/versions/{model_version}/infer": {
            "parameters": versioned,
            "post": model_ops["infer"],
        },
        "/v2/models/{model_name}/feedback": {"parameters": one, "post": model_ops["feedback"]},
        "/v2/models/{model_name}/versions/{model_version}/feedback": {
            "parameters": versioned,
            "post": model_ops["feedback"],
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "Text exposition format", "content": {"text/plain": {}}}
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kubeserve inference server",
            "version": "1",
            "description": f"Serves model '{model_name}' over KServe V1 and the Open Inference "
            "Protocol V2. Every response carries x-kubeserve-variant and "
            "x-kubeserve-model-version.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
