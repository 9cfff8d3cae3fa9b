"""Translate raw tensor bytes to numpy arrays and back, for binary REST and gRPC alike.

Both the binary tensor data extension of the REST protocol and gRPC's
``raw_input_contents``/``raw_output_contents`` carry a tensor as its row-major elements in
little-endian byte order, without stride or padding: each number in its native width, a
BOOL as one byte that is 0 or 1, and each BYTES element as a 4-byte little-endian unsigned
length followed by that many bytes.

Numbers are not copied where that can be helped: ``np.frombuffer`` views the client's bytes
in place, and only bytes that do not start at a multiple of their element's width (a JSON
header of any length comes before them in a REST body) are copied into an aligned array.
Every size is checked against the shape before a byte is looked at.
"""

from __future__ import annotations

import itertools
import math
import struct
from typing import Any

import numpy as np

from kubeserve.server import errors, tensors

# Little-endian dtypes of the fixed-width datatypes (BYTES has no fixed width).
_WIRE: dict[str, np.dtype[Any]] = {
    name: dtype.newbyteorder("<")
    for name, dtype in tensors.DATATYPES.items()
    if name not in ("BYTES", "BOOL")
}
_WIRE["BOOL"] = np.dtype(np.uint8)  # checked to be 0 or 1, then viewed as bool
_LENGTH = struct.Struct("<I")

Buffer = bytes | bytearray | memoryview


def element_size(datatype: str) -> int:
    """Return the bytes one element of ``datatype`` takes on the wire (0 for BYTES)."""
    wire = _WIRE.get(datatype)
    return 0 if wire is None else wire.itemsize


def decode(where: str, datatype: str, dims: tuple[int, ...], raw: Buffer) -> np.ndarray:
    """Return the array of ``datatype`` and shape ``dims`` that ``raw`` holds, or raise BadRequest.

    ``where`` names the tensor in messages ("input 'x'"). ``dims`` must be a checked shape
    (``tensors.check_shape``). Numbers may come back read-only, as views of ``raw``.
    """
    count = math.prod(dims)
    if datatype == "BYTES":
        return _strings(where, raw, count).reshape(dims)
    wire = _WIRE[datatype]
    size = memoryview(raw).nbytes
    if size != count * wire.itemsize:
        raise errors.BadRequest(
            f"{where}: shape {list(dims)} of {datatype} needs {count * wire.itemsize} bytes "
            f"({count} x {wire.itemsize}), got {size}"
        )
    array = np.frombuffer(raw, dtype=wire)
    if not array.flags.aligned:
        array = array.copy()
    if datatype == "BOOL":
        if count and int(array.max()) > 1:
            raise errors.BadRequest(f"{where}: BOOL bytes must be 0 or 1")
        array = array.view(np.bool_)
    elif not wire.isnative:  # pragma: no cover - big-endian hosts only
        array = array.astype(wire.newbyteorder("="))
    return array.reshape(dims)


def byte_elements(where: str, dims: tuple[int, ...], raw: Buffer) -> list[bytes]:
    """Return the BYTES elements of shape ``dims`` that ``raw`` holds, as bytes, or raise BadRequest.

    For inputs whose elements are binary (encoded images): no UTF-8 is asked of them.
    """
    view = memoryview(raw).cast("B")
    return [bytes(view[start:end]) for start, end in _spans(where, view, math.prod(dims))]


def _strings(where: str, raw: Buffer, count: int) -> np.ndarray:
    """Split length-prefixed BYTES elements into an object array of text."""
    view = memoryview(raw).cast("B")
    out = np.empty(count, dtype=object)
    for i, (start, end) in enumerate(_spans(where, view, count)):
        try:
            # The models take text: a string tensor of ONNX Runtime is UTF-8.
            out[i] = str(view[start:end], "utf-8")
        except UnicodeDecodeError:
            raise errors.BadRequest(f"{where}: BYTES element {i} is not valid UTF-8") from None
    return out


def _spans(where: str, view: memoryview, count: int) -> list[tuple[int, int]]:
    """Return where each of ``count`` length-prefixed elements starts and ends in ``view``.

    Every length is checked against the bytes left before any element is used.
    """
    end = view.nbytes
    spans = []
    at = 0
    for i in range(count):
        if at + 4 > end:
            raise errors.BadRequest(
                f"{where}: BYTES data ends after {i} of {count} elements; each needs a "
                "4-byte length first"
            )
        (length,) = _LENGTH.unpack_from(view, at)
        at += 4
        if length > end - at:
            raise errors.BadRequest(
                f"{where}: BYTES element {i} claims {length} bytes, only {end - at} are left"
            )
        spans.append((at, at + length))
        at += length
    if at != end:
        raise errors.BadRequest(
            f"{where}: {end - at} bytes left over after the {count} BYTES elements of its shape"
        )
    return spans


def encode(array: np.ndarray) -> tuple[str, Buffer]:
    """Return the V2 datatype of ``array`` and its elements as raw little-endian bytes.

    Numbers come back as a view of the array's memory (a contiguous copy only when the
    array is not already one); strings as length-prefixed UTF-8.
    """
    datatype = tensors.datatype_of(array.dtype)
    if datatype == "BYTES":
        return datatype, _pack_strings(array)
    wire = np.dtype(np.bool_) if datatype == "BOOL" else _WIRE[datatype]
    flat = np.ascontiguousarray(array, dtype=wire).reshape(-1)
    return datatype, flat.view(np.uint8).data


def _pack_strings(array: np.ndarray) -> bytes:
    items = [
        v if isinstance(v, bytes) else str(v).encode("utf-8", "replace")
        for v in array.ravel().tolist()
    ]
    return b"".join(itertools.chain.from_iterable((_LENGTH.pack(len(v)), v) for v in items))
