"""Translate Open Inference Protocol V2 tensors to numpy arrays and back.

A V2 tensor on the wire is ``{"name", "datatype", "shape", "data"}`` where ``data`` is the
row-major content, flat or nested. This module owns the datatype table and every check that
turns a hostile ``data`` field into a clear 400 instead of a silently wrong array.
"""

from __future__ import annotations

import functools
import itertools
import math
import struct
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


def has_literals(text: bytes) -> bool:
    """Tell whether JSON ``text`` may hold a ``true`` or ``false`` value.

    JSON spells booleans only as these literals, so their absence from the text proves that
    no parsed value is a bool. A match inside a string only costs the slower, exact path.
    """
    return _has_word(text, b"true", b"r") or _has_word(text, b"false", b"f")


def _has_word(text: bytes, word: bytes, letter: bytes) -> bool:
    # ``word in text`` steps byte by byte over digits (their bits collide with "true"'s in
    # the search's skip filter): 8 us for a batch-32 body. A letter numbers never hold is
    # found with memchr, and then only its few occurrences are checked.
    at = word.index(letter)
    i = text.find(letter)
    while i >= 0:
        if i >= at and text.startswith(word, i - at):
            return True
        i = text.find(letter, i + 1)
    return False


# Float targets the fast path fills directly, by their struct code.
_FAST_FLOATS = {np.dtype(np.float32): "f", np.dtype(np.float64): "d"}
_EMPTY = bytearray()


@functools.lru_cache(maxsize=256)
def _packer(code: str, count: int) -> struct.Struct:
    return struct.Struct(f"={count}{code}")


def fast_floats(data: list[Any], dtype: np.dtype[Any]) -> np.ndarray | None:
    """Convert JSON numbers to a float array in one C pass, or return None to decline.

    ``np.asarray`` on nested lists first walks every element to discover the shape and the
    dtype, then walks them again to convert: about 25 ns an element, most of a batch-32
    request. ``struct`` packs the numbers straight into a buffer. It declines (None), and
    the caller takes the exact path with its error messages, whenever the input is not a
    flat list or a list of equally long flat rows of plain numbers: struct refuses strings,
    nulls, lists and objects, rows of another length, ``float32`` overflow
    (``OverflowError``, where numpy's cast would give inf) and integers beyond 64 bits.
    struct does take ``True`` as 1: call this only where ``has_literals`` proved there are
    no booleans. The result is bit-identical to ``np.asarray(data).astype(dtype)``:
    integers go through int64 and floats through the same IEEE rounding.
    """
    code = _FAST_FLOATS.get(dtype)
    if code is None or not data:
        return None
    first = data[0]
    nested = type(first) is list
    if nested:
        if not first:
            return None
        width, first = len(first), first[0]
    else:
        width = len(data)
    shape = (len(data), width) if nested else (width,)
    if type(first) is int:
        # Packing ints as doubles converts each through a temporary float object; as int64
        # it is about twice as fast, and numpy's int64 -> float cast rounds the same way.
        ints = _pack(_packer("q", width), data, nested)
        if ints is not None:
            return np.frombuffer(ints, np.int64).astype(dtype).reshape(shape)
        if _pack(_packer("Q", width), data, nested) is not None:
            # Only integers, some beyond int64: numpy casts those from uint64, rounding
            # once, where a double in between could round twice. Leave them to numpy.
            return None
    packed = _pack(_packer(code, width), data, nested)
    return None if packed is None else np.frombuffer(packed, dtype).reshape(shape)


def _pack(packer: struct.Struct, data: list[Any], nested: bool) -> bytearray | None:
    try:
        # One row struct per row also refuses ragged rows (a wrong count is an error).
        # A bytearray, not bytes: runtimes may write to their inputs.
        if nested:
            return _EMPTY.join(itertools.starmap(packer.pack, data))
        return bytearray(packer.pack(*data))
    except (struct.error, OverflowError, TypeError):
        return None


def decode(name: str, datatype: Any, shape: Any, data: Any, *, literals: bool = True) -> np.ndarray:
    """Build the numpy array a V2 input tensor describes, or raise BadRequest naming why.

    ``literals`` False promises that the request text holds no ``true``/``false`` (see
    ``has_literals``), which lets numbers take the fast path.
    """
    if datatype not in DATATYPES:
        raise errors.BadRequest(
            f"input '{name}': unknown datatype {datatype!r}; expected one of "
            + ", ".join(DATATYPES)
        )
    dims = _check_shape(name, shape)
    if not isinstance(data, list):
        raise errors.BadRequest(f"input '{name}': 'data' must be a JSON array")
    expected = math.prod(dims)
    if not literals:
        fast = fast_floats(data, DATATYPES[datatype])
        if fast is not None:
            if fast.size != expected:
                raise errors.BadRequest(
                    f"input '{name}': shape {list(dims)} needs {expected} elements, "
                    f"'data' has {fast.size}"
                )
            return fast.reshape(dims)
    try:
        # Let numpy infer first so that we can tell 1.5 from 1 and "a" from 1: converting
        # straight to the target dtype would truncate or wrap without a word.
        raw = np.asarray(data)
    except ValueError as exc:
        raise errors.BadRequest(f"input '{name}': 'data' is ragged or mixed: {exc}") from None
    if raw.size != expected:
        raise errors.BadRequest(
            f"input '{name}': shape {list(dims)} needs {expected} elements, 'data' has {raw.size}"
        )
    return convert(f"input '{name}'", datatype, raw, data, literals=literals).reshape(dims)


def _overflow_limit(dtype: np.dtype[Any]) -> float:
    # The smallest magnitude that rounds to inf: halfway between the largest finite value
    # and the next power of two (the tie goes to the even significand, which is inf).
    info = np.finfo(dtype)
    return float(2.0 ** (info.maxexp) - 2.0 ** (info.maxexp - info.nmant - 2))


# Narrow float targets and the magnitude at which a cast to them overflows.
_OVERFLOW = {dt: _overflow_limit(dt) for dt in (np.dtype(np.float16), np.dtype(np.float32))}


def convert(
    where: str, datatype: str, raw: np.ndarray, data: list[Any], *, literals: bool = True
) -> np.ndarray:
    """Check what ``np.asarray(data)`` inferred against ``datatype`` and cast it, or raise.

    ``where`` names the tensor in messages ("input 'x'", "instances"). numpy's inference
    alone lets hostile mixes through: ``[1, "a"]`` becomes strings, ``[true, 2.5]`` floats;
    those are caught here from the original ``data``.
    """
    kind = raw.dtype.kind
    if raw.size == 0:
        return np.empty(raw.shape, dtype=np.str_ if datatype == "BYTES" else DATATYPES[datatype])
    if datatype == "BYTES":
        if kind != "U" or not all(type(v) is str for v in _flatten(data)):
            raise errors.BadRequest(f"{where}: BYTES data must be strings")
        return raw
    if datatype == "BOOL":
        if kind != "b":  # numpy infers bool only when every value is one
            raise errors.BadRequest(f"{where}: BOOL data must be true/false")
        return raw
    if kind == "b" or (literals and any(type(v) is bool for v in _flatten(data))):
        raise errors.BadRequest(f"{where}: {datatype} data must be numbers, not true/false")
    target = DATATYPES[datatype]
    if target.kind in "iu" and kind in "fO":
        # Either real fractions, or big integers numpy could only mix as float64/object.
        return _exact_integers(where, datatype, data).reshape(raw.shape)
    if kind not in "iuf":
        raise errors.BadRequest(f"{where}: {datatype} data must be numbers")
    if target.kind in "iu":
        info = np.iinfo(target)
        lo, hi = raw.min(), raw.max()
        if lo < info.min or hi > info.max:
            raise errors.BadRequest(
                f"{where}: value out of range for {datatype} [{info.min}, {info.max}]"
            )
        return raw.astype(target, copy=False)
    limit = _OVERFLOW.get(target)
    # int64 reaches 9.2e18, beyond float16's range but not float32's: check only what can.
    # (No np.abs: it leaves the int64 minimum negative.)
    if (
        limit is not None
        and (kind == "f" or limit < 2**63)
        and max(float(raw.max()), -float(raw.min())) >= limit
    ):
        # The cast would turn these into inf without a word (1e6 as FP16, 1e39 as FP32):
        # a client mistake, not a value to compute on. JSON itself cannot carry inf.
        raise errors.BadRequest(f"{where}: value out of range for {datatype}")
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


def _exact_integers(where: str, datatype: str, data: list[Any]) -> np.ndarray:
    """Convert integers numpy could only hold together as float64 (e.g. 1 and 2**64-1)."""
    info = np.iinfo(DATATYPES[datatype])
    flat = _flatten(data)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        raise errors.BadRequest(f"{where}: {datatype} data must be integers")
    if any(v < info.min or v > info.max for v in flat):
        raise errors.BadRequest(
            f"{where}: value out of range for {datatype} [{info.min}, {info.max}]"
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
