"""KServe V1 / TF Serving predict bodies: the row and columnar forms, and their answers.

TF Serving's REST API (``tensorflow_serving/g3doc/api_rest.md``), which KServe V1 follows,
has two request forms:

- row: ``{"instances": [...]}``, one item per instance: the value of the only input, or an
  object keyed by input name (``[{"a": [1, 2], "b": "x"}, ...]``); answered
  ``{"predictions": [...]}``, one item per instance: the only output's value, or an object
  keyed by output name;
- columnar: ``{"inputs": ...}``, the only input's tensor, or an object of input name to
  tensor; answered ``{"outputs": ...}``, the only output's tensor or an object of output
  name to tensor.

A binary value is written ``{"b64": "<base64>"}`` wherever a value may stand. Every value
then goes through ``tensors.to_array``'s type checks, as V2 data does: the memory a request
takes follows its size. The plain ``{"instances": [[numbers]]}`` request of a one-input
model takes the same steps it took before these forms existed (measured with
``bench/server/micro.py``).
"""

from __future__ import annotations

import base64
import binascii
import enum
from typing import Any

import numpy as np

from kubeserve.server import chunked_json, errors, images, model, numeric_json, tensors


class Form(enum.Enum):
    """The request's form, which decides the answer's: TF Serving's row or columnar."""

    ROW = "predictions"
    COLUMNAR = "outputs"


# A classifier's outputs: label -> probabilities. Its V1 answer is the labels alone, as KServe's
# scikit-learn server answers ``predict()``: the digits models' clients read
# ``predictions`` as labels. The first pair is what the scikit-learn runtime declares and
# the example models are exported with; the second is skl2onnx's default naming.
_CLASSIFIER_OUTPUTS = {"label": "probabilities", "output_label": "output_probability"}


def parse(
    m: model.Model, payload: dict[str, Any], *, literals: bool, binary: bool, chunk: int
) -> tuple[dict[str, np.ndarray], Form]:
    """Return the model's input arrays from a V1 body, and the body's form.

    ``literals`` and ``chunk`` are ``tensors.to_array``'s (with ``chunk`` > 0 the parsed
    values are consumed as they are converted, and so is ``payload``). ``binary`` True has
    ``{"b64": ...}`` values looked for before conversion; False promises that there are
    none (``may_hold_binary``) where ``chunk`` > 0, and otherwise has them looked for only
    if a conversion fails (a plain request is spared even the scan of its text).
    """
    signature = payload.get("signature_name")
    if signature is not None and type(signature) is not str:
        # One signature per model: the name is accepted and not checked, as KServe does.
        raise errors.BadRequest(f"'signature_name' must be a string, got {errors.brief(signature)}")
    rows = payload.get("instances")
    columns = payload.get("inputs")
    if rows is not None:
        if columns is not None:
            raise errors.BadRequest(
                "send 'instances' (the row form) or 'inputs' (the columnar form), not both"
            )
        return _rows(m, rows, literals, binary, chunk), Form.ROW
    if columns is not None:
        return _columns(m, columns, literals, binary, chunk), Form.COLUMNAR
    raise errors.BadRequest("expected 'instances' (or 'inputs') in the request body")


def may_hold_binary(text: bytes) -> bool:
    """Tell whether JSON ``text`` may hold a ``{"b64": ...}`` value.

    The key is spelled ``"b64"`` or with escapes (``"\\u0062..."``). ``b"b64" in text``
    steps byte by byte over digits (like ``tensors.has_literals``' words), so this looks
    for letters that numbers never hold, with memchr: a plain request has neither.
    """
    if text.find(b"\\") >= 0:
        return True
    i = text.find(b"b")
    while i >= 0:
        if text.startswith(b'"b64"', i - 1):
            return True
        i = text.find(b"b", i + 1)
    return False


def binary_value(where: str, spec: model.TensorSpec, raw: bytes) -> Any:
    """Turn one decoded ``{"b64": ...}`` value into what ``spec``'s array holds.

    The one place binary values meet a model's inputs, value by value (an input that takes
    images is decoded a column at a time instead, in ``input_array``). ``BYTES``
    values are text in this server (ONNX Runtime's Python API passes strings, and writes a
    ``bytes`` object as its ``repr``), so the bytes must be UTF-8.
    """
    if spec.datatype == "BYTES":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.BadRequest(
                f"{where}: a b64 value is not UTF-8 text, which BYTES values are here"
            ) from None
    raise errors.BadRequest(
        f"{where}: {{\"b64\": ...}} values need a BYTES input; input '{spec.name}' is "
        f"{spec.datatype}"
    )


def input_array(
    where: str,
    spec: model.TensorSpec,
    data: list[Any] | numeric_json.Span,
    *,
    literals: bool,
    binary: bool = False,
    chunk: int = 0,
    image: images.ImageInput | None = None,
) -> np.ndarray:
    """Build input ``spec``'s array from its JSON values, checked, or raise BadRequest.

    Every form comes through here. ``where`` names the values in messages ("instances",
    "inputs['a']"); ``literals``, ``binary`` and ``chunk`` are as ``parse`` takes them.
    ``image``, when the model declares ``spec`` an image input, has a column of
    ``{"b64": ...}`` values decoded as image files, one per row; numbers are still taken.
    """
    if (
        image is not None
        and type(data) is list
        and data
        and type(data[0]) is dict
        and _is_binary(data[0])
    ):
        try:
            array = images.decode_batch(_image_files(where, data), image)
        except images.ImageError as exc:
            raise images.ImageError(f"{where}: input '{spec.name}': {exc}") from None
        _check_shape(where, spec, array.shape)
        return array
    if binary:
        _unwrap_binary(where, spec, data)
    try:
        array = tensors.to_array(
            where,
            spec.datatype,
            data,
            literals=literals,
            chunk=chunk,
            consume=chunk > 0,  # a large request's document is freed after this anyway
            # Values still in the body: a shape the model cannot take is refused before
            # their array is made.
            before_fill=lambda span: _check_shape(where, spec, span.shape),
        )
    except errors.BadRequest:
        # No conversion takes a {"b64": ...} object: unwrap them and convert again, unless
        # they were looked for already or the values were consumed.
        if binary or chunk > 0 or not _unwrap_binary(where, spec, data):
            raise
        array = tensors.to_array(where, spec.datatype, data, literals=literals)
    _check_shape(where, spec, array.shape)
    return array


def _check_shape(where: str, spec: model.TensorSpec, shape: tuple[int, ...]) -> None:
    if not spec.fits(shape):
        raise errors.BadRequest(
            f"{where}: shape {list(shape)} does not match the model's {list(spec.shape)} "
            f"for input '{spec.name}' (-1 is any size)"
        )


def _image_files(where: str, data: list[Any]) -> list[bytes]:
    """Return the file bytes of a column of ``{"b64": ...}`` values, one image per row."""
    files = []
    for i, value in enumerate(data):
        if type(value) is not dict or not _is_binary(value):
            raise errors.BadRequest(
                f'{where}[{i}]: an image input takes one {{"b64": ...}} image file per '
                f"row, or numbers in every row; got {errors.brief(value)}"
            )
        files.append(_b64decode(where, value["b64"]))
    return files


def answer_outputs(m: model.Model) -> list[str]:
    """Return the outputs a V1 answer carries: all of them, or a classifier's labels."""
    outputs = m.outputs
    if len(outputs) == 1 or (
        len(outputs) == 2 and _CLASSIFIER_OUTPUTS.get(outputs[0].name) == outputs[1].name
    ):
        return [outputs[0].name]
    return [o.name for o in outputs]


def answer(
    outputs: dict[str, np.ndarray], names: list[str], form: Form, instances: int
) -> dict[str, Any]:
    """Build the answer's JSON: ``{"predictions": ...}`` or ``{"outputs": ...}``.

    ``instances`` is the request's batch size: in the row form each output must have one
    row per instance to be split into the per-instance objects.
    """
    key = form.value
    if len(names) == 1:
        return {key: _values(names[0], outputs[names[0]])}
    if form is Form.COLUMNAR:
        return {key: {n: _values(n, outputs[n]) for n in names}}
    columns = []
    for name in names:
        array = outputs[name]
        if array.ndim == 0 or array.shape[0] != instances:
            # TF Serving refuses it too (INVALID_ARGUMENT): the client can ask otherwise.
            raise errors.BadRequest(
                f"output '{name}' has shape {list(array.shape)}, not one row per instance "
                f"({instances}): ask in the columnar form ('inputs') for it"
            )
        values = _values(name, array)
        # Numbers stay numpy scalars and rows (orjson writes them as the whole array would).
        columns.append(values if type(values) is list else list(values))
    return {key: [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]}


# -- the row form ---------------------------------------------------------------------------


def _rows(
    m: model.Model, rows: Any, literals: bool, binary: bool, chunk: int
) -> dict[str, np.ndarray]:
    if not _array(rows) or not rows:
        raise errors.BadRequest("'instances' must be a non-empty JSON array")
    if type(rows) is list and _named(rows[0]):
        return _named_rows(m, rows, literals, binary, chunk)
    if len(m.inputs) > 1:
        raise errors.BadRequest(
            f"this model has several inputs ({_names(m)}): each instance must be an object "
            "keyed by input name"
        )
    spec = m.inputs[0]
    try:
        return {
            spec.name: input_array(
                "instances",
                spec,
                rows,
                literals=literals,
                binary=binary,
                chunk=chunk,
                image=m.images.get(spec.name),
            )
        }
    except errors.BadRequest:
        # A named instance among values: say so, rather than what the values' check saw.
        named = (
            next((i for i, r in enumerate(rows) if _named(r)), None) if type(rows) is list else None
        )
        if named is None:
            raise
        raise errors.BadRequest(
            f"instances[{named}] is an object keyed by input name and instances[0] is not: "
            "name the inputs in every instance or in none"
        ) from None


def _named_rows(
    m: model.Model, rows: list[Any], literals: bool, binary: bool, chunk: int
) -> dict[str, np.ndarray]:
    first = rows[0]
    _check_names(m, first, "instances[0]")
    keys = first.keys()
    for i, row in enumerate(rows):
        if not _named(row):
            raise errors.BadRequest(
                f"instances[{i}] is not an object keyed by input name and instances[0] is: "
                "name the inputs in every instance or in none"
            )
        if row.keys() != keys:
            raise errors.BadRequest(
                f"instances[{i}] names inputs ({_keys(row)}) other than instances[0]'s "
                f"({_keys(first)}): every instance names the same inputs"
            )
    out = {}
    for spec in m.inputs:
        where = f"instances[*]['{spec.name}']"
        # Popped: the values now live in the column, and the document is not read again.
        column = _joined([row.pop(spec.name) for row in rows])
        out[spec.name] = input_array(
            where,
            spec,
            column,
            literals=literals,
            binary=binary,
            chunk=chunk,
            image=m.images.get(spec.name),
        )
    return out


def _joined(column: list[Any]) -> list[Any] | numeric_json.Span:
    """Return a column of named rows' values as one array, a span where they all are.

    A large body's named rows hold their values as spans (``chunked_json``): their texts,
    joined, are the column's JSON, whose span gives the values, shape and errors that the
    column's lists would, in about the memory of its text. A column that mixes spans with
    other values has its spans parsed into lists.
    """
    if not column or not all(type(v) is numeric_json.Span for v in column):
        return [chunked_json.materialize(v) if type(v) is numeric_json.Span else v for v in column]
    parts: list[bytes | memoryview] = [b"["]
    for v in column:
        parts += (memoryview(v.body)[v.start : v.end], b",")
    parts[-1] = b"]"  # one join, no copy of the values' text on the way
    text = b"".join(parts)
    try:
        joined = numeric_json.scan(text, 0, len(text))
    except (numeric_json.Malformed, numeric_json.TooLong):
        # Each part passed alone: only the join's one more level can be too deep.
        joined = None
    if joined is None or joined.ragged is not None:
        # Lists, for the error the column's lists have always had (the span's is worded
        # otherwise); a refused request's rows are at most chunked_json.MOST_OBJECTS.
        return [chunked_json.materialize(v) for v in column]
    return joined


# -- the columnar form ----------------------------------------------------------------------


def _columns(
    m: model.Model, columns: Any, literals: bool, binary: bool, chunk: int
) -> dict[str, np.ndarray]:
    if _array(columns):
        if not columns:
            raise errors.BadRequest("'inputs' must be a non-empty JSON array")
        if len(m.inputs) > 1:
            raise errors.BadRequest(
                f"this model has several inputs ({_names(m)}): 'inputs' must be an object "
                "keyed by input name"
            )
        return {
            m.inputs[0].name: input_array(
                "inputs",
                m.inputs[0],
                columns,
                literals=literals,
                binary=binary,
                chunk=chunk,
                image=m.images.get(m.inputs[0].name),
            )
        }
    if not _named(columns):
        raise errors.BadRequest(
            "'inputs' must be a JSON array (the tensor of a model's only input) or an object "
            f"keyed by input name, got {errors.brief(columns)}"
        )
    _check_names(m, columns, "'inputs'")
    out = {}
    for spec in m.inputs:
        where = f"inputs['{spec.name}']"
        tensor = columns.pop(spec.name)
        if not _array(tensor) or not tensor:
            raise errors.BadRequest(
                f"{where} must be a non-empty JSON array, got {errors.brief(tensor)}"
            )
        out[spec.name] = input_array(
            where,
            spec,
            tensor,
            literals=literals,
            binary=binary,
            chunk=chunk,
            image=m.images.get(spec.name),
        )
    batches = {a.shape[0] for a in out.values()}
    if len(batches) > 1:
        # TF Serving lets them differ; here the first dim is the batch, as in V2.
        raise errors.BadRequest(f"'inputs' disagree on the batch size: {sorted(batches)}")
    return out


# -- shared ---------------------------------------------------------------------------------


def _array(value: Any) -> bool:
    """Tell a JSON array: a list, or one the parser left as text (``numeric_json.Span``)."""
    return type(value) is list or isinstance(value, numeric_json.Span)


def _named(value: Any) -> bool:
    """Tell an object of named inputs from a value (which a ``{"b64": ...}`` object is)."""
    return type(value) is dict and not _is_binary(value)


def _is_binary(value: dict[str, Any]) -> bool:
    return len(value) == 1 and "b64" in value


def _check_names(m: model.Model, given: dict[str, Any], where: str) -> None:
    specs = {s.name for s in m.inputs}
    for key in given:
        if key not in specs:
            raise errors.BadRequest(
                f"{where} names unknown input {errors.brief(key)}; the model's inputs are "
                f"{_names(m)}"
            )
    for spec in m.inputs:
        if spec.name not in given:
            raise errors.BadRequest(f"{where} lacks input '{spec.name}'")


def _names(m: model.Model) -> str:
    return ", ".join(s.name for s in m.inputs)


def _keys(row: dict[str, Any]) -> str:
    return ", ".join(errors.brief(k) for k in list(row)[:4])


def _unwrap_binary(where: str, spec: model.TensorSpec, data: list[Any] | numeric_json.Span) -> bool:
    """Replace every ``{"b64": ...}`` object in nested ``data`` by ``binary_value``'s.

    Return whether there was one.
    """
    found = False
    if type(data) is not list:
        return found  # a numeric_json.Span: numbers and lists only
    # A stack, not recursion: JSON may nest deeper than Python's recursion limit.
    stack = [data]
    while stack:
        level = stack.pop()
        for i, value in enumerate(level):
            kind = type(value)
            if kind is list:
                stack.append(value)
            elif kind is dict and _is_binary(value):
                level[i] = binary_value(where, spec, _b64decode(where, value["b64"]))
                found = True
    return found


def _b64decode(where: str, text: Any) -> bytes:
    if type(text) is not str:
        raise errors.BadRequest(
            f"{where}: a b64 value must be a base64 string, got {errors.brief(text)}"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII character
        raise errors.BadRequest(f"{where}: b64 value {errors.brief(text)} is not base64") from None


def _values(name: str, array: np.ndarray) -> Any:
    """Return an output as JSON takes it: numbers as the array, strings as nested lists."""
    if array.dtype.kind not in "OSU":
        # orjson writes numeric arrays natively, far faster than tolist(); not 0-d ones, but
        # their numpy scalar.
        return array if array.ndim else array[()]
    if name.endswith("_bytes"):
        # TF Serving's rule: an output named *_bytes holds binary values, sent as b64.
        flat: list[Any] = [
            {"b64": base64.b64encode(_as_bytes(v)).decode("ascii")} for v in array.ravel()
        ]
    else:
        flat = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in array.ravel().tolist()
        ]
    nested = np.empty(len(flat), dtype=object)
    nested[:] = flat
    return nested.reshape(array.shape).tolist()


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")
