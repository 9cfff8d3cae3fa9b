"""The struct fast path for JSON numbers agrees with numpy's and declines what it cannot check.

In-process tests of ``tensors.fast_floats`` and of the data plane's conversions (every
hostile input must get the same 400 whether or not the fast path ran), plus a few of the
same inputs over HTTP against the real server.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeserve.server import errors, model, tensors, v1_forms
from support.server import request

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)

ROW_INTS = list(range(64))
ROW_FLOATS = [v / 7 for v in range(64)]


def _exact(data: list[Any], dtype: np.dtype[Any]) -> np.ndarray:
    return np.asarray(data).astype(dtype)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(
    "data",
    [
        [ROW_INTS] * 32,
        [ROW_FLOATS] * 32,
        ROW_INTS * 2,
        ROW_FLOATS,
        [[0, 0.5, 1, 2**40], [3, -4.25, 2**62, 1e-50]],  # ints first, then floats
        [[0.5, 1, 2, 3]],  # floats first, then ints
        [2**63 + 1, 1.0],  # beyond int64: packed as a float
        [2**63 + 1, -1],  # numpy too goes through float64 here
        [1e38, -3.4028234e38, 5e-324, -0.0],
    ],
)
def test_fast_path_is_bit_identical_to_numpy(data: list[Any], dtype: np.dtype[Any]) -> None:
    data = orjson.loads(orjson.dumps(data))  # the values a request would really carry
    fast = tensors.fast_floats(data, dtype)
    assert fast is not None
    exact = _exact(data, dtype)
    assert fast.dtype == dtype and fast.shape == exact.shape
    assert fast.tobytes() == exact.tobytes()
    assert fast.flags.writeable


@pytest.mark.parametrize(
    "data",
    [
        [[1, 2], [3]],  # ragged
        [[1, 2], [3, 4, 5]],  # ragged with a matching total would still be refused
        [[1, 2], "ab"],  # a string row of the right length
        [[1, 2], {"a": 1, "b": 2}],  # an object row
        [[1, 2], 3],  # a number among rows
        [[1, [2]]],  # deeper nesting
        [[[1, 2]], [[3, 4]]],  # three dims: the exact path handles them
        [1, "2"],
        [1, None],
        [1.5, "nan"],
        [1e39],  # overflows float32
        [2**63 + 2**39 + 1],  # numpy rounds uint64 once; via a double it would round twice
        [[2**63 + 1, 1]],
        [[]],
        [],
    ],
)
def test_fast_path_declines_what_it_cannot_check(data: list[Any]) -> None:
    assert tensors.fast_floats(data, F32) is None


def test_fast_path_only_for_float_targets() -> None:
    assert tensors.fast_floats([1, 2], np.dtype(np.int64)) is None
    assert tensors.fast_floats([1, 2], np.dtype(np.float16)) is None


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (b'{"data": [1, 2]}', False),
        (b'{"data": [true, 2]}', True),
        (b'{"data": [1, false]}', True),
        (b'{"id": "true", "data": [1]}', True),  # inside a string: only the slow path pays
    ],
)
def test_has_literals(text: bytes, found: bool) -> None:
    assert tensors.has_literals(text) is found


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.integers(min_value=-(2**63), max_value=2**64 - 1),
                st.integers(
                    min_value=2**62, max_value=2**64 - 1
                ),  # float32 halfway cases live here
                st.floats(allow_nan=False, allow_infinity=False),
            ),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_fast_path_agrees_with_numpy_on_any_numbers(rows: list[list[float]]) -> None:
    rows = orjson.loads(orjson.dumps(rows))
    for dtype in (F32, F64):
        fast = tensors.fast_floats(rows, dtype)
        with np.errstate(over="ignore"):
            exact = _exact(rows, dtype)
        if fast is None:
            # Declined only for an overflow to float32 (the exact path then refuses it)
            # or for integers alone with some beyond int64 (numpy rounds those once).
            leaves = [v for row in rows for v in row]
            beyond = all(type(v) is int for v in leaves) and max(leaves) >= 2**63
            assert beyond or (dtype == F32 and not np.isfinite(exact).all())
        else:
            assert fast.tobytes() == exact.tobytes()


# -- the same hostile input, with and without the fast path ------------------------------

SPEC = model.TensorSpec("input", "FP32", (-1, 4))

HOSTILE: list[tuple[str, str]] = [
    ("[[1, 2, 3, true]]", "not true/false"),
    ("[[true, false, true, false]]", "not true/false"),
    ("[[1.5, 2, 3, false]]", "not true/false"),
    ('[[1, 2, 3, "4"]]', "must be numbers"),
    ("[[1, 2, 3, null]]", "must be numbers"),
    ("[[1, 2, 3, 1e39]]", "out of range for FP32"),
    ("[[1, 2, 3, -1e39]]", "out of range for FP32"),
    ("[[1, 2, 3, 4], [1, 2, 3]]", "ragged"),
    ("[[1, 2, 3, [4]]]", "ragged"),
    ("[[1, 2, 3], [4, 5, 6, 7, 8]]", "ragged"),
    ("[[1, 2, 3, 4, 5]]", "does not match"),
    ("[1, 2, 3, 4]", "does not match"),
]


@pytest.mark.parametrize(("text", "needle"), HOSTILE)
@pytest.mark.parametrize("exact", [False, True])
def test_v1_hostile_instances(text: str, needle: str, exact: bool) -> None:
    # exact=True forces the numpy path, as a "true" elsewhere in the request would.
    rows = orjson.loads(text)
    literals = exact or tensors.has_literals(text.encode())
    with pytest.raises(errors.BadRequest, match=needle):
        v1_forms.input_array("instances", SPEC, rows, literals=literals)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[1, 2, 3, true]", "not true/false"),
        ("[1.5, false, 1, 2]", "not true/false"),
        ('[[1, 2], [3, "x"]]', "must be numbers"),
        ("[1, 2, 3, 1e39]", "out of range for FP32"),
        ("[[1, 2], [3]]", "ragged"),
        ("[[1, 2], [3, 4, 5]]", "ragged"),
    ],
)
def test_v2_hostile_data(text: str, needle: str) -> None:
    data = orjson.loads(text)
    literals = tensors.has_literals(text.encode())
    with pytest.raises(errors.BadRequest, match=needle):
        tensors.decode("x", "FP32", [2, 2], data, literals=literals)


def test_v2_fast_path_still_counts_elements() -> None:
    with pytest.raises(errors.BadRequest, match="needs 6 elements, 'data' has 4"):
        tensors.decode("x", "FP32", [2, 3], [[1, 2], [3, 4]], literals=False)
    got = tensors.decode("x", "FP32", [4, 1], [[1, 2], [3, 4]], literals=False)
    assert got.shape == (4, 1) and got.dtype == F32


@pytest.mark.parametrize(
    ("datatype", "data", "needle"),
    [
        ("BYTES", ["a", 1], "strings"),
        ("BYTES", ["a", True], "strings"),
        ("INT32", [1, True], "not true/false"),
        ("FP16", [70000], "out of range for FP16"),
        ("FP16", [-(2**63), 1], "out of range for FP16"),
        ("FP64", [True, 2.5], "not true/false"),
    ],
)
def test_mixes_numpy_would_have_let_through(datatype: str, data: list[Any], needle: str) -> None:
    with pytest.raises(errors.BadRequest, match=needle):
        tensors.decode("x", datatype, [len(data)], data)


# -- over HTTP -----------------------------------------------------------------------------


def _raw(port: int, path: str, body: bytes) -> tuple[int, Any]:
    status, _, payload = request(port, "POST", path, body)
    return status, payload


@pytest.mark.parametrize(
    ("cell", "needle"),
    [
        (b"NaN", "malformed JSON"),
        (b"Infinity", "malformed JSON"),
        (b"-Infinity", "malformed JSON"),
        (b"1e400", "malformed JSON"),
        (b"1e39", "out of range for FP32"),
        (b"true", "not true/false"),
        (b'"3"', "numbers"),
        (b"null", "numbers"),
        (b"{}", "numbers"),
    ],
)
def test_hostile_cells_over_http(onnx_port: int, cell: bytes, needle: str) -> None:
    row = b"[" + b",".join([b"1"] * 63 + [cell]) + b"]"
    rows = b"[" + b",".join([row] * 32) + b"]"
    v1 = b'{"instances": ' + rows + b"}"
    v2 = (
        b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [32, 64], "data": '
        + rows
        + b"}]}"
    )
    for path, body in (("/v1/models/digits:predict", v1), ("/v2/models/digits/infer", v2)):
        status, payload = _raw(onnx_port, path, body)
        assert status == 400, (path, payload)
        assert needle in payload["error"], (path, payload)


def test_batch_32_answers_match_on_both_paths(onnx_port: int, digits_rows) -> None:
    # The same rows as floats, as ints, and with a boolean elsewhere in the text (which
    # sends them down the exact path) must give the same labels.
    x, y = digits_rows
    rows = x[:32].tolist()
    answers = []
    for data in (rows, [[float(v) for v in r] for r in rows]):
        for extra in ({}, {"parameters": {"flag": True}}):
            status, _, body = request(
                onnx_port,
                "POST",
                "/v2/models/digits/infer",
                {
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP32",
                            "shape": [32, 64],
                            "data": data,
                            **extra,
                        }
                    ]
                },
            )
            assert status == 200, body
            answers.append(body["outputs"])
    assert all(a == answers[0] for a in answers)
    labels = answers[0][0]["data"]
    assert sum(a == b for a, b in zip(labels, y[:32], strict=True)) >= 29  # the model's accuracy


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | st.text(alphabet='truefals r[]0,1"', max_size=40).map(str.encode))
def test_has_literals_agrees_with_substring_search(text: bytes) -> None:
    assert tensors.has_literals(text) is (b"true" in text or b"false" in text)


@pytest.mark.parametrize("datatype", ["FP16", "FP32"])
@pytest.mark.parametrize("literals", [False, True])
def test_overflow_boundary_is_where_the_cast_gives_inf(datatype: str, literals: bool) -> None:
    dtype = tensors.DATATYPES[datatype]
    limit = tensors._OVERFLOW[dtype]
    below = float(np.nextafter(limit, 0))
    got = tensors.decode("x", datatype, [2], [below, -below], literals=literals)
    assert np.isfinite(got).all() and got[0] == np.finfo(dtype).max
    for value in (limit, -limit, limit * 2):
        with pytest.raises(errors.BadRequest, match=f"out of range for {datatype}"):
            tensors.decode("x", datatype, [2], [1.0, value], literals=literals)
