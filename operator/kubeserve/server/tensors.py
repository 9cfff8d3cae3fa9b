"""Translate Open Inference Protocol V2 tensors to numpy arrays and back.

A V2 tensor on the wire is ``{"name", "datatype", "shape", "data"}`` where ``data`` is the
row-major content, flat or nested. This module owns the datatype table and every check that
turns a hostile ``data`` field into a clear 400 instead of a silently wrong array.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kubeserve.server import errors

# V2 datatype name -> numpy dtype. BYTES travels as JSON strings and lives as numpy unicode.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

_BY_DTYPE: dict[np.dtype[Any], str] = {dt: name for name, dt in DATATYPES.items()}

NUMERIC = frozenset(n for n in DATATYPES if n not in ("BOOL", "BYTES"))


def datatype_of(dtype: np.dtype[Any]) -> str:
    """Return the V2 datatype name for a numpy dtype (strings and objects are BYTES)."""
    if dtype.kind in "USO":
        return "BYTES"
    try:
        return _BY_DTYPE[dtype]
    except KeyError:
        raise errors.ServerError(f"model produced unsupported dtype {dtype}") from None


def _check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise errors.BadRequest(
            f"input '{name}': 'shape' must be a list of non-negative integers, got {shape!r}"
        )
    return tuple(shape)


def decode(name: str, datatype: Any, shape: Any, data: Any) -> np.ndarray:
    """Build the numpy array a V2 input tensor describes, or raise BadRequest naming why."""
    if datatype not in DATATYPES:
        raise errors.BadRequest(
            f"input '{name}': unknown datatype {datatype!r}; expected one of "
            + ", ".join(DATATYPES)
        )
    dims = _check_shape(name, shape)
    if not isinstance(data, list):
        raise errors.BadRequest(f"input '{name}': 'data' must be a JSON array")
    try:
        # Let numpy infer first so that we can tell 1.5 from 1 and "a" from 1: converting
        # straight to the target dtype would truncate or wrap without a word.
        raw = np.asarray(data)
    except ValueError as exc:
        raise errors.BadRequest(f"input '{name}': 'data' is ragged or mixed: {exc}") from None
    expected = math.prod(dims)
    if raw.size != expected:
        raise errors.BadRequest(
            f"input '{name}': shape {list(dims)} needs {expected} elements, 'data' has {raw.size}"
        )
    return _convert(name, datatype, raw, data).reshape(dims)


def _convert(name: str, datatype: str, raw: np.ndarray, data: list[Any]) -> np.ndarray:
    kind = raw.dtype.kind
    if raw.size == 0:
        return np.empty(0, dtype=np.str_ if datatype == "BYTES" else DATATYPES[datatype])
    if datatype == "BYTES":
        if kind != "U":
            raise errors.BadRequest(f"input '{name}': BYTES data must be strings")
        return raw
    if datatype == "BOOL":
        if kind != "b":
            raise errors.BadRequest(f"input '{name}': BOOL data must be true/false")
        return raw
    target = DATATYPES[datatype]
    if target.kind in "iu" and kind in "fO":
        # Either real fractions, or big integers numpy could only mix as float64/object.
        return _exact_integers(name, datatype, data)
    if kind not in "biuf":
        raise errors.BadRequest(f"input '{name}': {datatype} data must be numbers")
    if target.kind in "iu":
        info = np.iinfo(target)
        lo, hi = raw.min(), raw.max()
        if lo < info.min or hi > info.max:
            raise errors.BadRequest(
                f"input '{name}': value out of range for {datatype} [{info.min}, {info.max}]"
            )
    elif target == np.float16 and kind == "f" and np.abs(raw).max() > np.finfo(np.float16).max:
        # float16 overflows to inf quietly; a client sending 1e6 as FP16 has made a mistake.
        raise errors.BadRequest(f"input '{name}': value out of range for FP16")
    return raw.astype(target, copy=False)


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _exact_integers(name: str, datatype: str, data: list[Any]) -> np.ndarray:
    """Convert integers numpy could only hold together as float64 (e.g. 1 and 2**64-1)."""
    info = np.iinfo(DATATYPES[datatype])
    flat = _flatten(data)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        raise errors.BadRequest(f"input '{name}': {datatype} data must be integers")
    if any(v < info.min or v > info.max for v in flat):
        raise errors.BadRequest(
            f"input '{name}': value out of range for {datatype} [{info.min}, {info.max}]"
        )
    return np.array(flat, dtype=DATATYPES[datatype])


def encode(name: str, array: np.ndarray) -> dict[str, Any]:
    """Describe a numpy array as a V2 output tensor; ``data`` is flat and row-major."""
    datatype = datatype_of(array.dtype)
    if datatype == "BYTES":
        data: Any = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in array.ravel().tolist()
        ]
    else:
        # orjson serialises contiguous numpy arrays natively, far faster than tolist().
        data = np.ascontiguousarray(array).ravel()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
