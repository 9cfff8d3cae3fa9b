"""numeric_json: a large array of numbers (or strings), read into numpy from the text, gives
what orjson's lists give ``tensors.to_array``, the same array or the same error, and
refuses what orjson refuses. Windows are made tiny here, so that every value, bracket and comma falls on a
window's edge somewhere."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeserve.server import chunked_json, errors, numeric_json, tensors
from support import json_edits

DATATYPES = list(tensors.DATATYPES)


@pytest.fixture(autouse=True)
def tiny_windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(numeric_json, "WINDOW", 48)  # longer than any value drawn here
    yield


def _by_orjson(datatype: str, text: bytes) -> np.ndarray | str:
    try:
        return tensors.to_array("x", datatype, orjson.loads(text), literals=True)
    except errors.BadRequest as exc:
        return str(exc)


def _by_span(datatype: str, text: bytes) -> np.ndarray | str:
    try:
        return tensors.to_array("x", datatype, numeric_json.scan(text, 0, len(text)))
    except errors.BadRequest as exc:
        return str(exc)


def _assert_same(text: bytes) -> None:
    for datatype in DATATYPES:
        want, got = _by_orjson(datatype, text), _by_span(datatype, text)
        if isinstance(want, str) or isinstance(got, str):
            assert got == want, (datatype, text)
        else:
            assert (got.dtype, got.shape) == (want.dtype, want.shape), (datatype, text)
            if got.dtype == object:
                assert got.tolist() == want.tolist(), (datatype, text)
            else:
                assert got.tobytes() == want.tobytes(), (datatype, text)  # -0.0 too


numbers = st.one_of(
    st.integers(min_value=-9, max_value=9),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # int64, and uint64 beyond it
    st.integers(min_value=2**53, max_value=2**63),  # FP32 rounds these once or twice
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-7e4, max_value=7e4),  # around FP16's limit
    st.sampled_from([0.0, -0.0, 1e39, -3.5e38, 65520.0, 65519.0, 2.5, 1e308]),
)
# Strings that look like the syntax around them, escapes included.
strings = st.text(alphabet='[],"\\ \n7e-é', max_size=4)
leaves = st.one_of(numbers, st.booleans(), st.none(), strings)


@st.composite
def nested(draw: st.DrawFn) -> Any:
    """Rectangular arrays of one kind of leaf mostly, made ragged or mixed now and then."""
    shape = draw(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=3))
    shape[0] = max(shape[0], 1)
    kind = draw(st.sampled_from(["numbers", "ints", "bools", "strings", "mixed"]))
    leaf = {
        "numbers": numbers,
        "ints": st.integers(min_value=-(2**63), max_value=2**64 - 1),
        "bools": st.booleans(),
        "strings": strings,
        "mixed": leaves,
    }[kind]

    def build(dims: list[int]) -> Any:
        if not dims:
            return draw(leaf)
        return [build(dims[1:]) for _ in range(dims[0])]

    value = build(shape)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        damage(draw, value, leaf)
    return value if value else [1]


def damage(draw: st.DrawFn, value: list[Any], leaf: st.SearchStrategy[Any]) -> None:
    """Damage one list inside ``value``: shorter or longer, a list where a value was, or the
    reverse."""
    node = value
    for i in draw(st.lists(st.integers(min_value=0, max_value=3), max_size=3)):
        if not node or type(node[i % len(node)]) is not list:
            break
        node = node[i % len(node)]
    if node:
        i = draw(st.integers(min_value=0, max_value=len(node) - 1))
        edit = draw(st.sampled_from(["drop", "add", "wrap", "flatten"]))
        if edit == "drop":
            del node[i]
        elif edit == "add":
            node.append(draw(leaf))
        elif edit == "wrap":
            node[i] = [node[i]]
        elif type(node[i]) is list:
            node[i] = draw(leaf)


def _text(value: Any, spacing: int) -> bytes:
    # The stdlib writes integers beyond 64 bits; the spacing varies where blanks fall.
    if spacing == 0:
        return json.dumps(value, separators=(",", ":")).encode()
    if spacing == 1:
        return json.dumps(value).encode()
    return json.dumps(value, indent=spacing - 1).encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nested(), st.integers(min_value=0, max_value=3))
def test_a_span_converts_to_what_orjson_and_numpy_give(value: Any, spacing: int) -> None:
    _assert_same(_text(value, spacing))


@pytest.mark.parametrize(
    "text",
    [
        b"[[1, 2], [3]]",  # ragged
        b"[[1, 2], 3]",
        b"[1, [2]]",
        b"[[[1, 2]], [[3, 4, 5]]]",
        b"[[], [1]]",
        b"[[], []]",  # no values: an empty array of its shape
        b"[[1, 2], [3, 4]]",
        b"[true, 1]",
        b"[null, 1]",
        b"[true, null]",
        b"[1.5, 2]",
        b"[9007199254740993, 1]",  # 2**53 + 1
        b"[1152921573326323713, 1.5]",  # 2**60 + 2**36 + 1: FP32 rounds twice with a float
        b"[1152921573326323713, 1]",  # and once among ints
        b"[9223372036854775808, 1]",  # beyond int64: numpy picks float64
        b"[9223372036854775808, 18446744073709551615]",  # uint64
        b"[18446744073709551616]",  # beyond uint64: a float to orjson
        b"[-9223372036854775809]",
        b"[1e39]",
        b"[70000, 1]",
        b"[-0, -0.0, 0e5]",
        b"[   ]",
        b'["a", "b"]',
        b'["a,]", "\\"[", "\\\\"]',
        b'[["a"], ["b", "c"]]',
        b'[1, "a"]',
        b'[true, "a"]',
        b'[["a", 1]]',
    ],
)
def test_edge_cases_convert_as_orjson_and_numpy_would(text: bytes) -> None:
    _assert_same(text)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nested(), st.integers(min_value=0, max_value=3), st.data())
def test_a_span_refuses_what_orjson_refuses(value: Any, spacing: int, data: st.DataObject) -> None:
    text = bytearray(_text(value, spacing))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        edit = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = data.draw(st.sampled_from(b'[],:0123456789.eE+-tfnulaxN \n\x0b\xff"\\'))
        json_edits.edit(text, at, edit, byte)
    body = bytes(text)
    # Every large array a span, unless a value is longer than a window (an open string).
    everywhere = lambda path: True  # noqa: E731
    try:
        want = orjson.loads(body)
    except orjson.JSONDecodeError:
        with pytest.raises(chunked_json.Malformed):
            chunked_json.loads(body, chunk=16, defer=everywhere)
    else:
        got = chunked_json.loads(body, chunk=16, defer=everywhere)
        if isinstance(got, numeric_json.Span):
            assert len(got) == len(want)
            got = chunked_json.materialize(got)
        assert got == want


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"[01]", "leading zero"),
        (b"[1.]", "no digit after decimal point"),
        (b"[.5]", "byte 1"),
        (b"[+1]", "byte 1"),
        (b"[0x10]", "byte 2"),
        (b"[1e]", "no digit after exponent"),
        (b"[NaN]", "byte 1"),
        (b"[1e400]", "infinity"),
        (b"[1,]", "unexpected ']' at byte 3"),
        (b"[1 2]", "unexpected value at byte 3"),
        (b"[[1][2]]", "unexpected '[' at byte 4"),
        (b"[1]]", "unexpected ']' at byte 3"),
        (b"[[1]", "not closed"),
        (b"[1], [2]", "unexpected ','"),
    ],
)
def test_malformed_numbers_and_nesting_are_refused_saying_where(text: bytes, needle: str) -> None:
    with pytest.raises(numeric_json.Malformed, match=needle.replace("[", r"\[")):
        numeric_json.scan(text, 0, len(text))


def test_arrays_deeper_than_numpy_allows_are_refused() -> None:
    deep = b"[" * 65 + b"1" + b"]" * 65
    with pytest.raises(numeric_json.Malformed, match="nested deeper than 64"):
        numeric_json.scan(deep, 0, len(deep))
    ok = b"[" * 64 + b"1" + b"]" * 64
    assert numeric_json.scan(ok, 0, len(ok)).shape == (1,) * 64


def test_a_value_longer_than_a_window_is_left_to_the_usual_parser() -> None:
    body = b'{"inputs": [{"data": [' + b"1" * 200 + b", 2" * 100 + b"]}]}"
    with pytest.raises(numeric_json.TooLong):
        numeric_json.scan(body, body.index(b"[1"), len(body) - 3)
    parsed = chunked_json.loads(body, chunk=64, defer=lambda path: True)
    assert parsed == orjson.loads(body)


def test_the_parser_defers_only_where_it_is_told_and_only_arrays_without_objects() -> None:
    rows = [[1, 2, 3]] * 40
    body = orjson.dumps(
        {"inputs": [{"data": rows, "shape": list(range(50))}, {"data": [["a"]] * 40}]}
    )
    tensor = lambda path: path[-1:] == ("data",)  # noqa: E731
    parsed = chunked_json.loads(body, chunk=64, defer=tensor)
    span = parsed["inputs"][0]["data"]
    assert isinstance(span, numeric_json.Span) and span.shape == (40, 3) and len(span) == 40
    assert tensors.to_array("x", "INT32", span).tolist() == rows
    assert parsed["inputs"][0]["shape"] == list(range(50))  # not a tensor's place
    assert isinstance(parsed["inputs"][1]["data"], numeric_json.Span)  # strings too
    objects = orjson.dumps({"inputs": [{"data": [{"b64": "AA=="}] * 40}]})
    assert chunked_json.loads(objects, chunk=64, defer=tensor) == orjson.loads(objects)


# -- regular arrays of numbers: read between their commas (numeric_json._scan_regular) -------

# Number texts as clients write them, beyond what json.dumps writes.
number_texts = st.one_of(
    numbers.map(json.dumps),
    st.sampled_from(["-0", "-0.0", "0e5", "1E+2", "1.5e-3", "-9223372036854775809"]),
    st.sampled_from(["18446744073709551615", "18446744073709551616", "255", "256", "-1"]),
)
blanks = st.sampled_from(["", "", " ", "  ", "\n", "\t", "\r\n  "])


@st.composite
def number_arrays(draw: st.DrawFn) -> tuple[bytes, bool]:
    """An array of numbers, flat or nested, blanks anywhere between its values and brackets,
    now and then ragged; and whether it is regular (no list empty, none ragged)."""
    kind = draw(st.sampled_from(["digits", "bytes", "ints", "floats", "mixed"]))
    leaf = {
        "digits": st.integers(min_value=0, max_value=9).map(str),
        "bytes": st.integers(min_value=0, max_value=255).map(str),
        "ints": st.integers(min_value=-(2**65), max_value=2**65).map(str),
        "floats": st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
        "mixed": number_texts,
    }[kind]
    shape = draw(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=4))
    if draw(st.booleans()):
        shape = [draw(st.integers(min_value=0, max_value=30))]  # flat
    regular = len(shape) == 1 or 0 not in shape

    def build(dims: list[int]) -> Any:
        return draw(leaf) if not dims else [build(dims[1:]) for _ in range(dims[0])]

    value = build(shape)
    if len(shape) > 1 and draw(st.integers(min_value=0, max_value=2)) == 0:
        regular = False
        damage(draw, value, leaf)

    def render(node: Any) -> str:
        if type(node) is not list:
            return str(node)
        inside = ",".join(draw(blanks) + render(item) + draw(blanks) for item in node)
        return "[" + (inside or draw(blanks)) + "]"

    return render(value).encode(), regular


def _the_usual_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numeric_json, "_scan_regular", lambda body, start, end: None)


def _read(text: bytes) -> tuple[Any, ...] | str:
    """What ``scan`` says of ``text`` and the values it gives as float64 and, when tensors
    would read them so, as int64; or its error."""
    try:
        span = numeric_json.scan(text, 0, len(text))
    except (numeric_json.Malformed, numeric_json.TooLong) as exc:
        return f"{type(exc).__name__}: {exc}"
    ranged = (span.low, span.high) if span.kinds == {int} else None  # else never read
    dtypes = [np.dtype(np.float64)] if span.kinds <= {int, float} else []
    if ranged is not None and ranged[1] < 2**63:
        dtypes.append(np.dtype(np.int64))
    values = []
    for dtype in dtypes:
        again = numeric_json.scan(text, 0, len(text))  # values are given once
        values.append(b"".join(v.tobytes() for v in again.values(dtype)))
    return span.shape, span.ragged, span.count, span.kinds, ranged, values


def _assert_read_as_the_usual_way(text: bytes, window: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(numeric_json, "WINDOW", window)
        got = _read(text)
        _the_usual_way(patch)
        want = _read(text)
    assert got == want, (text, window)


def _pieces_under(text: bytes, window: int) -> bool:
    """Tell whether the text between each two commas of an array is under ``window``."""
    return all(len(piece) < window for piece in text.strip()[1:-1].split(b","))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(number_arrays(), st.integers(min_value=16, max_value=64))
def test_an_array_of_numbers_reads_as_the_byte_by_byte_way_reads_it(
    array: tuple[bytes, bool], window: int
) -> None:
    text, regular = array
    _assert_read_as_the_usual_way(text, window)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(numeric_json, "WINDOW", window)
        try:
            span = numeric_json.scan(text, 0, len(text))
        except numeric_json.TooLong:
            return  # a number longer than this window: the usual parser's
        if regular and _pieces_under(text, window):
            assert span.regular  # the quick way took it
    _assert_same(text)


def _move_a_bracket(text: bytearray, at: int, by: int) -> None:
    """Move the first bracket from ``at`` on ``by`` bytes: ``[[1,]2]`` from ``[[1,2]]``, whose
    brackets and commas still balance."""
    brackets = [i for i in range(at, len(text)) if text[i] in b"[]"]
    if brackets:
        bracket = text.pop(brackets[0])
        text.insert(min(max(brackets[0] + by, 0), len(text)), bracket)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(number_arrays(), st.integers(min_value=16, max_value=64), st.data())
def test_an_array_of_numbers_refuses_what_orjson_refuses_saying_what_the_usual_way_says(
    array: tuple[bytes, bool], window: int, data: st.DataObject
) -> None:
    edited = bytearray(array[0])
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(edited)))
        edit = data.draw(st.sampled_from(["insert", "delete", "replace", "move"]))
        if edit == "move":
            _move_a_bracket(edited, at, data.draw(st.integers(min_value=-3, max_value=3)))
            continue
        byte = data.draw(st.sampled_from(b'[],:0123456789.eE+-tfnulaxN \t\n\x0b\xff"\\'))
        json_edits.edit(edited, at, edit, byte)
    body = bytes(edited)
    _assert_read_as_the_usual_way(body, window)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(numeric_json, "WINDOW", window)
        document = b'{"data": ' + body + b"}"
        tensor = lambda path: path == ("data",)  # noqa: E731
        try:
            want = orjson.loads(document)
        except orjson.JSONDecodeError:
            with pytest.raises(chunked_json.Malformed):
                chunked_json.loads(document, chunk=16, defer=tensor)
        else:
            got = chunked_json.loads(document, chunk=16, defer=tensor)
            if isinstance(got["data"], numeric_json.Span):
                got["data"] = chunked_json.materialize(got["data"])
            assert got == want


@pytest.mark.parametrize(
    "text",
    [
        b"[]",
        b"[ ]",
        b"[ 1 , 2 ]",
        b"[\n  1,\n  2\n]",
        b"[\t 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]",  # orjson's 2 blanks
        b"[-0, 0, -0]",
        b"[-0.0, 0e5, 1E+2]",
        b"[255, 0, 7]",
        b"[256, -1]",
        b"[9223372036854775807, -9223372036854775808]",
        b"[9223372036854775808, 1]",
        b"[18446744073709551615, 9223372036854775808]",
        b"[18446744073709551616, 1]",
        b"[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0.5]",  # a float in the last window
        b"[0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]",
        b"[0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625]",
        b"[[1]]",
        b"[[1], [2], [3], [4], [5], [6], [7], [8], [9], [10]]",  # lists of one
        b"[[1, 2], [3, 4]]",
        b"[ [ 1 , 2 ] , [ 3 , 4 ] ]",
        b"[[\n  1,\n  2\n], [\t3, 4]\n]",
        b"[[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]",
        b"[[[[0.5, 0.25, 0.125]], [[1.5, 1.25, 1.125]]]]",
        b"[[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]",
    ],
)
def test_edge_cases_of_regular_arrays_read_as_the_usual_way_and_as_orjson_and_numpy(
    text: bytes,
) -> None:
    for window in (16, 17, 23, 48):
        _assert_read_as_the_usual_way(text, window)
    span = numeric_json.scan(text, 0, len(text))
    assert span.regular
    _assert_same(text)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"[1,,2]", "unexpected ',' at byte 3"),
        (b"[,1]", "unexpected ',' at byte 1"),
        (b"[1,]", "unexpected ']' at byte 3"),
        (b"[1 2]", "unexpected value at byte 3"),
        (b"[1, 01]", "leading zero"),
        (b"[1, 1e400]", "infinity"),
        (b"[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, -]", "no digit after sign"),
        (b"[1, 2]]", "unexpected ']' at byte 6"),
        (b"[1, 2, null]", ""),  # a literal: the usual way, which takes it
        (b'[1, 2, "a"]', ""),
        (b"[[1, 2], [3]]", ""),  # ragged
        (b"[[1], [2, 3]]", ""),
        (b"[[[1], [2]], [[3]]]", ""),
        (b"[[[1], [2]], [[3], [4], [5]]]", ""),
        (b"[[1, 2], 3]", ""),
        (b"[1, [2]]", ""),
        (b"[[], []]", ""),  # empty lists: the usual way
        (b"[[]]", ""),
        (b"[[1], []]", ""),
        (b"[[1]2]", "unexpected value at byte 4"),
        (b"[1[2]]", "unexpected '[' at byte 2"),
        (b"[[1][2]]", "unexpected '[' at byte 4"),
        (b"[[1],]", "unexpected ']' at byte 5"),
        (b"[[[1,]2],[[3,4]]]", "unexpected ']' at byte 5"),  # balanced, yet not JSON
        (b"[[[1,2],[3],4]]]", "unexpected ']' at byte 15"),
        (b"[[1]], [[2]]", "unexpected ','"),
        (b"[[1, 2]]]", "unexpected ']' at byte 8"),
        (b"[[[1, 2]]", "not closed"),
    ],
)
def test_an_array_the_quick_way_does_not_take_is_read_the_usual_way(
    text: bytes, needle: str
) -> None:
    _assert_read_as_the_usual_way(text, 16)
    if needle:
        with pytest.raises(numeric_json.Malformed, match=re.escape(needle)):
            numeric_json.scan(text, 0, len(text))
    else:
        assert not numeric_json.scan(text, 0, len(text)).regular


@pytest.mark.parametrize("byte", [b"\x0b", b"\x0c", b"\xa0", b"\x00"])
@pytest.mark.parametrize("window", [16, 17, 18, 19, 20])
def test_a_byte_json_takes_for_no_blank_is_refused_wherever_it_falls(
    byte: bytes, window: int
) -> None:
    text = b"[[[1, 22], [333, 4]], [[5, 66], [777, 8]], [[9, 10], [11, 12]]]"
    for at in range(1, len(text)):
        edited = text[:at] + byte + text[at:]
        _assert_read_as_the_usual_way(edited, window)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(numeric_json, "WINDOW", window)
            with pytest.raises(numeric_json.Malformed):
                numeric_json.scan(edited, 0, len(edited))


def test_regular_arrays_as_deep_as_numpy_allows_and_no_deeper_are_read_the_quick_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(numeric_json, "WINDOW", 256)
    ok = b"[" * 64 + b"1, 2" + b"]" * 64
    span = numeric_json.scan(ok, 0, len(ok))
    assert span.regular and span.shape == (1,) * 63 + (2,)
    deep = b"[" * 65 + b"1, 2" + b"]" * 65
    with pytest.raises(numeric_json.Malformed, match="nested deeper than 64"):
        numeric_json.scan(deep, 0, len(deep))


def test_a_value_of_a_windows_length_in_a_flat_array_is_too_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(numeric_json, "WINDOW", 16)
    for n in (15, 16, 17, 20):
        for text in (
            b"[1, " + b"2" * n + b", 3]",
            b"[" + b"2" * n + b", 3]",
            b"[1, " + b"2" * n + b"]",
            b"[" + b"7" * n + b"]",
            b"[1," + b" " * n + b"2]",
        ):
            _assert_read_as_the_usual_way(text, 16)
    with pytest.raises(numeric_json.TooLong):
        numeric_json.scan(b"[1, " + b"2" * 16 + b", 3]", 0, 24)


class _CountingLoads:
    """orjson, but each text it is given is recorded."""

    JSONDecodeError = orjson.JSONDecodeError

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def loads(self, text: bytes) -> Any:
        self.sizes.append(len(text))
        return orjson.loads(text)


@pytest.mark.parametrize("value", [b"7", b"0.5", b"0.123456789", b"-123456789012"])
def test_a_flat_array_is_parsed_a_window_at_a_time(
    monkeypatch: pytest.MonkeyPatch, value: bytes
) -> None:
    text = b"[" + b", ".join([value] * 2000) + b"]"
    counting = _CountingLoads()
    monkeypatch.setattr(numeric_json, "orjson", counting)
    span = numeric_json.scan(text, 0, len(text))
    assert span.regular and span.count == 2000
    # Converted windows are kept only where they take no more memory than their text.
    assert span.converted is None or sum(a.nbytes for a in span.converted) <= len(text)
    values = np.concatenate(list(span.values(np.dtype(np.float64))))
    assert values.tolist() == [float(value)] * 2000
    assert len(counting.sizes) >= len(text) // 48  # scan parsed every window
    assert max(counting.sizes) <= numeric_json.WINDOW + 2  # its brackets
