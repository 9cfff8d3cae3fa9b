"""The Open Inference Protocol's gRPC messages as bytes, written and read by hand.

The load generator sends one pre-serialised ``ModelInferRequest`` over and over, as wrk
sends one body, so it needs no generated stubs and pays no serialisation per request; the
correctness check reads the ``ModelInferResponse`` it gets back. Only the fields used here
are handled (the field numbers are those of KServe's ``grpc_predict_v2.proto``, which
MLServer's ``dataplane.proto`` shares).

    ModelInferRequest:  1 model_name, 5 inputs (InferInputTensor), 7 raw_input_contents
    InferInputTensor:   1 name, 2 datatype, 3 shape (packed int64)
    ModelInferResponse: 5 outputs (InferOutputTensor), 6 raw_output_contents
    InferOutputTensor:  1 name, 2 datatype, 3 shape, 5 contents (InferTensorContents)
    InferTensorContents: 6 fp32_contents (packed float)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

import numpy as np

METHOD = "/inference.GRPCInferenceService/ModelInfer"
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """Return a length-delimited field."""
    return _varint(number << 3 | _BYTES) + _varint(len(payload)) + payload


def infer_request(model: str, name: str, array: np.ndarray) -> bytes:
    """Return a ModelInferRequest carrying ``array`` (FP32) in ``raw_input_contents``."""
    shape = b"".join(_varint(d) for d in array.shape)
    tensor = _field(1, name.encode()) + _field(2, b"FP32") + _field(3, shape)
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return _field(1, model.encode()) + _field(5, tensor) + _field(7, raw)


def _read_varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """Yield (field number, value): ints for varints, views for everything else."""
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            value, at = _read_varint(data, at)
            yield number, value
        elif kind == _BYTES:
            size, at = _read_varint(data, at)
            yield number, data[at : at + size]
            at += size
        elif kind in (_FIXED64, _FIXED32):
            width = 8 if kind == _FIXED64 else 4
            yield number, data[at : at + width]
            at += width
        else:
            raise ValueError(f"protobuf wire type {kind} not handled")


def first_output(response: bytes) -> np.ndarray:
    """Return the first output tensor of a ModelInferResponse as FP32, raw or typed."""
    outputs: list[memoryview] = []
    raws: list[memoryview] = []
    for number, value in _fields(memoryview(response)):
        if number == 5 and isinstance(value, memoryview):
            outputs.append(value)
        elif number == 6 and isinstance(value, memoryview):
            raws.append(value)
    if not outputs:
        raise ValueError("the response has no outputs")
    shape: list[int] = []
    typed: list[float] = []
    for number, value in _fields(outputs[0]):
        if number == 3:
            shape.extend(_packed_ints(value))
        elif number == 5 and isinstance(value, memoryview):
            typed.extend(_fp32_contents(value))
    if raws:
        return np.frombuffer(raws[0], dtype="<f4").reshape(shape)
    return np.asarray(typed, dtype=np.float32).reshape(shape)


def _packed_ints(value: int | memoryview) -> Sequence[int]:
    if isinstance(value, int):  # one unpacked element
        return [value]
    found, at = [], 0
    while at < len(value):
        item, at = _read_varint(value, at)
        found.append(item)
    return found


def _fp32_contents(contents: memoryview) -> list[float]:
    values: list[float] = []
    for number, value in _fields(contents):
        if number == 6 and isinstance(value, memoryview):
            # Packed (a run of floats) or one unpacked float: both are 4-byte multiples.
            values.extend(v for (v,) in struct.iter_unpack("<f", value))
    return values
