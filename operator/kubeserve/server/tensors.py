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
from collections.abc import Callable
from typing import Any

import numpy as np

from kubeserve.server import errors, numeric_json

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

# A check of a span's shape or size that may refuse it before its values are converted.
SpanCheck = Callable[[numeric_json.Span], None]
NUMERIC = frozenset(n for n in DATATYPES if n not in ("BOOL", "BYTES"))


def datatype_of(dtype: np.dtype[Any]) -> str:
    """Return the V2 datatype name for a numpy dtype (strings and objects are BYTES)."""
    if dtype.kind in "USO":
        return "BYTES"
    try:
        return _BY_DTYPE[dtype]
    except KeyError:
        raise errors.ServerError(f"model produced unsupported dtype {dtype}") from None


# No JSON request carries more values than this; a shape beyond it (possible only with a
# zero dim, which lets the other dims be anything) would overflow numpy's size arithmetic.
MAX_ELEMENTS = 2**48


def check_datatype(name: str, datatype: Any) -> None:
    """Raise BadRequest unless input ``name``'s ``datatype`` is a V2 datatype name."""
    if type(datatype) is not str or datatype not in DATATYPES:
        raise errors.BadRequest(
            f"input '{name}': unknown datatype {errors.brief(datatype)}; expected one of "
            + ", ".join(DATATYPES)
        )


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """Return a client's ``shape`` of input ``name`` as a tuple, or raise BadRequest saying why."""
    where = f"input '{name}'"
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise errors.BadRequest(
            f"{where}: 'shape' must be a list of non-negative integers, got {errors.brief(shape)}"
        )
    if shape and shape[0] == 0:
        # The first dim is the batch: a model is never run on no rows (scikit-learn
        # refuses them, ONNX graphs may fail on them).
        raise errors.BadRequest(
            f"{where}: shape {errors.brief(shape)} has no rows; send at least one"
        )
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise errors.BadRequest(
            f"{where}: shape {errors.brief(shape)} is larger than any request can carry"
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


def decode(
    name: str,
    datatype: Any,
    shape: Any,
    data: Any,
    *,
    literals: bool = True,
    chunk: int = 0,
    consume: bool = False,
    fits: Callable[[tuple[int, ...]], None] | None = None,
) -> np.ndarray:
    """Build the numpy array a V2 input tensor describes, or raise BadRequest naming why.

    ``literals`` False promises that the request text holds no ``true``/``false`` (see
    ``has_literals``), which lets numbers take the fast path. ``chunk`` > 0 converts at most
    about that many values per step, and ``consume`` empties ``data`` as it goes (see
    ``to_array``). ``fits(shape)`` may refuse the shape for the model: for values still in
    the body it runs before their array is made, else after.
    """
    where = f"input '{name}'"
    check_datatype(name, datatype)
    dims = check_shape(name, shape)
    if not isinstance(data, list | numeric_json.Span):
        raise errors.BadRequest(f"{where}: 'data' must be a JSON array")
    expected = math.prod(dims)

    def sized(count: int) -> None:
        if count != expected:
            raise errors.BadRequest(
                f"{where}: shape {list(dims)} needs {expected} elements, 'data' has {count}"
            )
        if fits is not None:
            fits(dims)

    early = (lambda span: sized(span.count)) if isinstance(data, numeric_json.Span) else None
    array = to_array(
        where, datatype, data, literals=literals, chunk=chunk, consume=consume, before_fill=early
    )
    if early is None:
        sized(array.size)
    return array.reshape(dims)


def to_array(
    where: str,
    datatype: str,
    data: list[Any] | numeric_json.Span,
    *,
    literals: bool = True,
    chunk: int = 0,
    consume: bool = False,
    before_fill: SpanCheck | None = None,
) -> np.ndarray:
    """Convert nested JSON lists to an array of ``datatype`` in the shape they nest in.

    ``where`` names the tensor in messages ("input 'x'", "instances"). Every value is checked
    for its JSON type before numpy sees it: numpy's own discovery makes one long string among
    short ones a fixed-width array of (longest x count) characters, which turned 250 KB of
    JSON into 955 MiB before the type check could refuse it.

    With ``chunk`` > 0 the conversion goes about ``chunk`` values at a time (rows, or parts
    of a row, last ones first) into one array, so a thread converting a large request lets
    go of the GIL between the steps instead of holding it for the whole request. With
    ``consume`` it also deletes the rows it has converted from ``data``: the parsed values
    shrink as the array fills, instead of both being held whole.

    A ``numeric_json.Span`` (a large array the parser left as text) gives the array, or
    the error, that its lists would give, converted a window at a time; ``before_fill``
    may refuse it once its values' types are checked, before the array is made.
    """
    if isinstance(data, numeric_json.Span):
        return _from_span(where, datatype, data, before_fill)
    if chunk > 0:
        return _in_slices(where, datatype, data, literals, chunk, consume)
    return _whole(where, datatype, data, literals, None)


def _probe(data: list[Any]) -> list[int]:
    # The shape the first element at each depth announces; the rest must agree.
    shape = [len(data)]
    probe = data[0] if data else None
    while type(probe) is list:
        shape.append(len(probe))
        probe = probe[0] if probe else None
    return shape


def _whole(
    where: str, datatype: str, data: list[Any], literals: bool, rest: list[int] | None
) -> np.ndarray:
    # ``rest``: the trailing dims a slice of a larger tensor must have.
    if rest is not None and _probe(data)[1:] != rest:
        raise errors.BadRequest(f"{where}: ragged nesting: rows of different shapes")
    if not literals:
        fast = fast_floats(data, DATATYPES[datatype])
        if fast is not None:
            return fast
    shape, leaves = _structure(where, data)
    return _typed(where, datatype, leaves, shape)


def _in_slices(
    where: str, datatype: str, data: list[Any], literals: bool, chunk: int, consume: bool
) -> np.ndarray:
    shape = _probe(data)
    per_row = math.prod(shape[1:])
    if len(data) * per_row <= chunk:
        return _whole(where, datatype, data, literals, None)
    # Rows larger than a step are converted one by one, each in slices of its own.
    step = 1 if per_row > chunk else max(1, chunk // max(per_row, 1))
    out: np.ndarray | None = None
    end = len(data)
    while end > 0:
        start = max(end - step, 0)
        if per_row > chunk:
            row = data[start]
            if type(row) is not list:
                raise errors.BadRequest(f"{where}: ragged nesting: lists and values mix")
            part = _in_slices(where, datatype, row, literals, chunk, consume)[np.newaxis]
        else:
            part = _whole(where, datatype, data[start:end], literals, shape[1:])
        if list(part.shape[1:]) != shape[1:]:
            raise errors.BadRequest(f"{where}: ragged nesting: rows of different shapes")
        if out is None:
            out = np.empty((len(data), *part.shape[1:]), dtype=part.dtype)
        out[start:end] = part
        if consume:
            del data[start:]
        end = start
    assert out is not None  # data held more than ``chunk`` values
    return out


def _structure(where: str, data: list[Any]) -> tuple[tuple[int, ...], list[Any]]:
    """Return the shape that nested lists describe and their values, row-major.

    Only types and lengths are looked at, a level at a time with C-level ``map``: nesting
    that is ragged or mixes lists with values is refused before anything is converted.
    """
    shape = _probe(data)
    level = data
    for depth, width in enumerate(shape[1:], start=1):
        if set(map(type, level)) != {list}:
            raise errors.BadRequest(
                f"{where}: ragged nesting: lists and values mix at depth {depth}"
            )
        lengths = set(map(len, level))
        if lengths != {width}:
            shown = ", ".join(map(str, sorted(lengths)[:4]))
            raise errors.BadRequest(
                f"{where}: ragged nesting: lists at depth {depth} have lengths {shown}"
            )
        level = list(itertools.chain.from_iterable(level))
    return tuple(shape), level


_NUMBERS = frozenset({int, float})


def _typed(where: str, datatype: str, values: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    """Build the array of ``datatype`` from flat JSON ``values``, checking each one's type."""
    target = DATATYPES[datatype]
    if not values:
        return np.empty(shape, dtype=target)
    kinds = set(map(type, values))
    if list in kinds:
        raise errors.BadRequest(
            f"{where}: ragged nesting: lists and values mix at depth {len(shape)}"
        )
    if datatype == "BYTES":
        if kinds != {str}:
            raise errors.BadRequest(f"{where}: BYTES data must be strings")
        # Objects, not numpy's fixed-width unicode: each string keeps its own length.
        strings = np.empty(len(values), dtype=object)
        strings[:] = values
        return strings.reshape(shape)
    if datatype == "BOOL":
        if kinds != {bool}:
            raise errors.BadRequest(f"{where}: BOOL data must be true/false")
        return np.array(values, dtype=np.bool_).reshape(shape)
    if bool in kinds:
        raise errors.BadRequest(f"{where}: {datatype} data must be numbers, not true/false")
    if not kinds <= _NUMBERS:
        raise errors.BadRequest(f"{where}: {datatype} data must be numbers")
    if target.kind in "iu":
        if float in kinds:
            raise errors.BadRequest(f"{where}: {datatype} data must be integers")
        info = np.iinfo(target)
        # Python's own ints compare exactly, beyond int64 too (orjson parses up to 2**64-1).
        if min(values) < info.min or max(values) > info.max:
            raise errors.BadRequest(
                f"{where}: value out of range for {datatype} [{info.min}, {info.max}]"
            )
        return np.array(values, dtype=target).reshape(shape)
    # Floats, or integers (int64; float64 beyond it): the same values np.asarray would give,
    # so that this path and the fast one agree to the bit.
    raw = np.array(values)
    limit = _OVERFLOW.get(target)
    # int64 reaches 9.2e18, beyond float16's range but not float32's: check only what can.
    # (No np.abs: it leaves the int64 minimum negative.)
    if (
        limit is not None
        and (raw.dtype.kind == "f" or limit < 2**63)
        and max(float(raw.max()), -float(raw.min())) >= limit
    ):
        # The cast would turn these into inf without a word (1e6 as FP16, 1e39 as FP32):
        # a client mistake, not a value to compute on. JSON itself cannot carry inf.
        raise errors.BadRequest(f"{where}: value out of range for {datatype}")
    return raw.astype(target, copy=False).reshape(shape)


def _from_span(
    where: str, datatype: str, span: numeric_json.Span, before_fill: SpanCheck | None
) -> np.ndarray:
    """``_structure`` and ``_typed`` for values still in the body: the same checks, in the
    same order, and the same values, through the same intermediate dtype ``np.array``
    would pick for the whole list (int64 ints cast to FP32 round once, floats twice).

    ``before_fill`` runs once every check that needs no value has passed, before the
    array (up to 4x the body's bytes) is made."""
    if span.ragged is not None:
        raise errors.BadRequest(f"{where}: {span.ragged}")
    target = DATATYPES[datatype]
    raw, overflow = _span_plan(where, datatype, span, target)
    if before_fill is not None:
        before_fill(span)
    if not span.count:
        return np.empty(span.shape, dtype=target)
    return _fill(span, raw, target, overflow)


def _span_plan(
    where: str, datatype: str, span: numeric_json.Span, target: np.dtype[Any]
) -> tuple[np.dtype[Any], tuple[str, str, float] | None]:
    """Check a span's values' JSON types and range for ``datatype``; return the dtype to
    read them through and the overflow check the cast needs."""
    kinds = span.kinds
    if not span.count:
        return target, None
    if datatype == "BYTES":
        if kinds != {str}:
            raise errors.BadRequest(f"{where}: BYTES data must be strings")
        return target, None  # objects: each string its own length
    if datatype == "BOOL":
        if kinds != {bool}:
            raise errors.BadRequest(f"{where}: BOOL data must be true/false")
        return target, None
    if bool in kinds:
        raise errors.BadRequest(f"{where}: {datatype} data must be numbers, not true/false")
    if not kinds <= _NUMBERS:
        raise errors.BadRequest(f"{where}: {datatype} data must be numbers")
    if target.kind in "iu":
        if float in kinds:
            raise errors.BadRequest(f"{where}: {datatype} data must be integers")
        info = np.iinfo(target)
        if span.low < info.min or span.high > info.max:
            raise errors.BadRequest(
                f"{where}: value out of range for {datatype} [{info.min}, {info.max}]"
            )
        return target, None
    raw: np.dtype[Any]
    if float in kinds:
        raw = np.dtype(np.float64)
    elif span.high <= _INT64_MAX:
        raw = np.dtype(np.int64)
    else:  # numpy's pick for Python ints beyond int64: uint64 if all are, else float64
        raw = np.dtype(np.uint64 if span.low > _INT64_MAX else np.float64)
    limit = _OVERFLOW.get(target)
    if limit is not None and raw.kind != "f" and limit >= 2**63:
        limit = None  # int64 reaches 9.2e18, beyond float16's range but not float32's
    return raw, None if limit is None else (where, datatype, limit)


_INT64_MAX = 2**63 - 1


def _fill(
    span: numeric_json.Span,
    raw: np.dtype[Any],
    target: np.dtype[Any],
    overflow: tuple[str, str, float] | None,
) -> np.ndarray:
    """Convert ``span``'s values through ``raw`` into a new array of ``target``.

    ``overflow`` (where, datatype, limit) refuses magnitudes that the cast would make inf.
    """
    out = np.empty(span.count, dtype=target)
    at = 0
    for values in span.values(raw):
        # Checked before the cast, which would make them inf; every other check is done.
        if overflow is not None and max(float(values.max()), -float(values.min())) >= overflow[2]:
            raise errors.BadRequest(f"{overflow[0]}: value out of range for {overflow[1]}")
        out[at : at + values.size] = values
        at += values.size
    return out.reshape(span.shape)


def _overflow_limit(dtype: np.dtype[Any]) -> float:
    # The smallest magnitude that rounds to inf: halfway between the largest finite value
    # and the next power of two (the tie goes to the even significand, which is inf).
    info = np.finfo(dtype)
    return float(2.0 ** (info.maxexp) - 2.0 ** (info.maxexp - info.nmant - 2))


# Narrow float targets and the magnitude at which a cast to them overflows.
_OVERFLOW = {dt: _overflow_limit(dt) for dt in (np.dtype(np.float16), np.dtype(np.float32))}


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
