"""KServe V1 / TF Serving request forms against a real server (issue 12, item 4).

TF Serving's REST API: the row form (``instances``, values or objects keyed by input name)
answers ``predictions``, one item per instance; the columnar form (``inputs``, a tensor or
an object of tensors) answers ``outputs``; ``{"b64": ...}`` stands for a binary value; a
model with several outputs answers objects keyed by output name. Errors are 400s that name
the field.
"""

from __future__ import annotations

import base64
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from kubeserve.server import chunked_json, dataplane, errors, model, numeric_json, v1_forms
from support.server import Server, request, running

ROW = [0] * 64


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def _write_forms_models(root: pathlib.Path) -> None:
    """Versions of one model 'forms', each a small ONNX graph with a shape to test.

    two: inputs a, b (FP32 [N, 2]) -> outputs sum, product; pooled: x -> y (per row) and
    total (a scalar, not per row); text: x (BYTES) -> x_bytes, binary by TF Serving's naming.
    """
    import onnx
    from onnx import TensorProto, helper

    def tensor(name: str, elem: int, shape: list[Any]) -> Any:
        return helper.make_tensor_value_info(name, elem, shape)

    fp32 = TensorProto.FLOAT
    graphs = {
        "two": helper.make_graph(
            [
                helper.make_node("Add", ["a", "b"], ["sum"]),
                helper.make_node("Mul", ["a", "b"], ["product"]),
            ],
            "two",
            [tensor("a", fp32, ["N", 2]), tensor("b", fp32, ["N", 2])],
            [tensor("sum", fp32, ["N", 2]), tensor("product", fp32, ["N", 2])],
        ),
        "pooled": helper.make_graph(
            [
                helper.make_node("Identity", ["x"], ["y"]),
                helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            ],
            "pooled",
            [tensor("x", fp32, ["N", 2])],
            [tensor("y", fp32, ["N", 2]), tensor("total", fp32, [])],
        ),
        "text": helper.make_graph(
            [helper.make_node("Identity", ["x"], ["x_bytes"])],
            "text",
            [tensor("x", TensorProto.STRING, ["N"])],
            [tensor("x_bytes", TensorProto.STRING, ["N"])],
        ),
    }
    for version, graph in graphs.items():
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        path = root / version / "model.onnx"
        path.parent.mkdir(parents=True)
        onnx.save(m, str(path))


@pytest.fixture(scope="module")
def forms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of the 'forms' model (default limits: large bodies go to the worker)."""
    root = tmp_path_factory.mktemp("forms-models")
    _write_forms_models(root)
    with running(["--model-name", "forms", "--model-dir", str(root)]) as server:
        yield server


def _predict(port: int, path: str, body: Any) -> tuple[int, Any]:
    status, _, reply = request(port, "POST", path, body)
    return status, reply


TWO = "/v1/models/forms/versions/two:predict"
POOLED = "/v1/models/forms/versions/pooled:predict"
TEXT = "/v1/models/forms/versions/text:predict"
ECHO_FP32 = "/v1/models/echo/versions/fp32:predict"
ECHO_BYTES = "/v1/models/echo/versions/bytes:predict"

# -- the row form ---------------------------------------------------------------------------


def test_row_form_of_values_answers_one_prediction_per_instance(echo_port: int) -> None:
    status, reply = _predict(echo_port, ECHO_FP32, {"instances": [[1, 2], [3, 4.5]]})
    assert (status, reply) == (200, {"predictions": [[1, 2], [3, 4.5]]})


def test_row_form_may_name_the_only_input_in_every_instance(echo_port: int) -> None:
    body = {"instances": [{"x": [1, 2]}, {"x": [3, 4]}]}
    assert _predict(echo_port, ECHO_FP32, body) == (200, {"predictions": [[1, 2], [3, 4]]})


def test_named_instances_feed_several_inputs_and_answer_objects_keyed_by_output(
    forms: Server,
) -> None:
    body = {"instances": [{"a": [1, 2], "b": [3, 4]}, {"b": [1, 1], "a": [5, 6]}]}
    status, reply = _predict(forms.port, TWO, body)
    assert status == 200, reply
    assert reply == {
        "predictions": [
            {"sum": [4, 6], "product": [3, 8]},
            {"sum": [6, 7], "product": [5, 6]},
        ]
    }


def test_row_form_of_bytes_keeps_each_instances_shape(echo_port: int) -> None:
    body = {"instances": [["a", "bc"], ["", "é"]]}
    assert _predict(echo_port, ECHO_BYTES, body) == (200, {"predictions": [["a", "bc"], ["", "é"]]})


def test_a_classifier_answers_its_labels_alone(onnx_port: int) -> None:
    # The digits models have outputs label and probabilities: V1 answers the labels, as
    # KServe's scikit-learn server does, in both forms.
    rows = [ROW, ROW]
    status, rows_reply = _predict(onnx_port, "/v1/models/digits:predict", {"instances": rows})
    assert status == 200 and len(rows_reply["predictions"]) == 2
    assert all(type(label) is int for label in rows_reply["predictions"])
    status, columns = _predict(onnx_port, "/v1/models/digits:predict", {"inputs": rows})
    assert (status, columns) == (200, {"outputs": rows_reply["predictions"]})


def test_outputs_not_per_instance_are_refused_in_the_row_form_only(forms: Server) -> None:
    status, reply = _predict(forms.port, POOLED, {"instances": [[1, 2], [3, 4]]})
    assert status == 400
    assert "output 'total'" in reply["error"] and "columnar" in reply["error"]
    status, reply = _predict(forms.port, POOLED, {"inputs": [[1, 2], [3, 4]]})
    assert (status, reply) == (200, {"outputs": {"y": [[1, 2], [3, 4]], "total": 10}})


def test_signature_name_is_accepted(onnx_port: int) -> None:
    body = {"signature_name": "serving_default", "instances": [ROW]}
    assert _predict(onnx_port, "/v1/models/digits:predict", body)[0] == 200


# -- the columnar form ----------------------------------------------------------------------


def test_columnar_tensor_answers_outputs(echo_port: int) -> None:
    assert _predict(echo_port, ECHO_FP32, {"inputs": [[1, 2], [3, 4]]}) == (
        200,
        {"outputs": [[1, 2], [3, 4]]},
    )


def test_columnar_object_feeds_named_inputs_and_answers_an_object_of_outputs(
    forms: Server,
) -> None:
    body = {"inputs": {"a": [[1, 2], [5, 6]], "b": [[3, 4], [1, 1]]}}
    status, reply = _predict(forms.port, TWO, body)
    assert (status, reply) == (
        200,
        {"outputs": {"sum": [[4, 6], [6, 7]], "product": [[3, 8], [5, 6]]}},
    )


def test_columnar_object_may_name_the_only_input(echo_port: int) -> None:
    assert _predict(echo_port, ECHO_FP32, {"inputs": {"x": [[7, 8]]}}) == (
        200,
        {"outputs": [[7, 8]]},
    )


# -- binary values --------------------------------------------------------------------------


def test_b64_values_reach_a_bytes_input_as_text(echo_port: int) -> None:
    body = {"instances": [[_b64("héllo".encode()), "plain"]]}
    assert _predict(echo_port, ECHO_BYTES, body) == (200, {"predictions": [["héllo", "plain"]]})
    named = {"instances": [{"x": [_b64(b"one"), _b64(b"")]}]}
    assert _predict(echo_port, ECHO_BYTES, named) == (200, {"predictions": [["one", ""]]})
    columnar = {"inputs": {"x": [[_b64(b"two")]]}}
    assert _predict(echo_port, ECHO_BYTES, columnar) == (200, {"outputs": [["two"]]})


def test_outputs_named_bytes_are_answered_as_b64(forms: Server) -> None:
    status, reply = _predict(forms.port, TEXT, {"instances": [_b64(b"\x01\x02"), "abc"]})
    assert status == 200, reply
    assert reply == {"predictions": [_b64(b"\x01\x02"), _b64(b"abc")]}


def test_a_b64_key_written_with_escapes_is_still_a_binary_value(echo_port: int) -> None:
    body = b'{"instances": [[{"\\u0062\\u0036\\u0034": "aGk="}]]}'
    assert _predict(echo_port, ECHO_BYTES, body) == (200, {"predictions": [["hi"]]})


def test_may_hold_binary_sees_every_spelling_and_spares_plain_requests() -> None:
    assert not v1_forms.may_hold_binary(b'{"instances": [[0, 1.5, 2e3], [3, -4, 5]]}')
    assert not v1_forms.may_hold_binary(b'{"instances": [["bb", "b6"]]}')
    assert v1_forms.may_hold_binary(b'{"instances": [[{"b64": "aGk="}]]}')
    assert v1_forms.may_hold_binary(b'{"instances": [[{"\\u0062\\u0036\\u0034": "aGk="}]]}')


# -- large bodies take the worker thread, with the same answers ----------------------------


def test_large_requests_in_every_form_get_the_answers_small_ones_get(forms: Server) -> None:
    n = chunked_json.MOST_OBJECTS  # the most rows a large body may write as objects
    a = [[i % 7, 1.5] for i in range(n)]
    b = [[2, i % 5] for i in range(n)]
    named = {"instances": [{"a": x, "b": y} for x, y in zip(a, b, strict=True)]}
    columnar = {"inputs": {"a": a * 6, "b": b * 6}}
    texts = [f"text {i}" for i in range(n)]
    binary = {"instances": [_b64(t.encode()) for t in texts]}
    # Indented, so that the bodies are large: parsed in steps, their tensors left as text.
    named_body, columnar_body, binary_body = (
        json.dumps(body, indent=24).encode() for body in (named, columnar, binary)
    )
    for text in (named_body, columnar_body, binary_body):
        assert len(text) > max(dataplane.OFFLOAD_BYTES, chunked_json.CHUNK)
    status, rows = _predict(forms.port, TWO, named_body)
    assert status == 200, rows
    status, columns = _predict(forms.port, TWO, columnar_body)
    assert status == 200, columns
    assert [r["sum"] for r in rows["predictions"]] == columns["outputs"]["sum"][:n]
    assert columns["outputs"]["product"][:3] == [[0, 0], [2, 1.5], [4, 3]]
    status, echoed = _predict(forms.port, TEXT, binary_body)
    assert status == 200, echoed
    assert echoed["predictions"] == [_b64(t.encode()) for t in texts]


def test_a_large_body_of_more_named_rows_than_most_objects_is_a_400_naming_the_limit(
    forms: Server,
) -> None:
    rows = [{"a": [1, 1.5], "b": [2, 3]}] * (chunked_json.MOST_OBJECTS + 1)
    body = json.dumps({"instances": rows}, indent=24).encode()
    assert len(body) > chunked_json.CHUNK
    status, reply = _predict(forms.port, TWO, body)
    assert status == 400
    assert f"more than {chunked_json.MOST_OBJECTS} elements" in reply["error"]


# -- errors name the field ------------------------------------------------------------------

ERRORS = [
    pytest.param(
        TWO,
        {"instances": [{"a": [1, 2], "b": [3, 4]}, [1, 2]]},
        "instances[1] is not an object keyed by input name and instances[0] is",
        id="named-then-unnamed",
    ),
    pytest.param(
        ECHO_FP32,
        {"instances": [[1, 2], {"x": [1, 2]}]},
        "instances[1] is an object keyed by input name and instances[0] is not",
        id="unnamed-then-named",
    ),
    pytest.param(
        TWO,
        {"instances": [{"a": [1, 2], "b": [3, 4]}, {"a": [1, 2], "c": [3, 4]}]},
        "instances[1] names inputs ('a', 'c') other than instances[0]'s ('a', 'b')",
        id="instances-of-different-keys",
    ),
    pytest.param(
        TWO,
        {"instances": [{"a": [1, 2], "b": [3, 4], "zz": 1}]},
        "instances[0] names unknown input 'zz'; the model's inputs are a, b",
        id="unknown-input-in-an-instance",
    ),
    pytest.param(
        TWO, {"instances": [{"a": [1, 2]}]}, "instances[0] lacks input 'b'", id="missing-input"
    ),
    pytest.param(
        TWO,
        {"instances": [[1, 2]]},
        "this model has several inputs (a, b): each instance must be an object",
        id="values-for-several-inputs",
    ),
    pytest.param(
        TWO,
        {"instances": [{"a": [1, 2], "b": [3]}]},
        "instances[*]['b']: shape [1, 1] does not match the model's [-1, 2]",
        id="named-input-of-the-wrong-shape",
    ),
    pytest.param(
        TWO,
        {"instances": [{"a": [1, 2], "b": [3, 4]}], "inputs": {"a": [[1, 2]], "b": [[3, 4]]}},
        "send 'instances' (the row form) or 'inputs' (the columnar form), not both",
        id="instances-and-inputs",
    ),
    pytest.param(
        TWO,
        {"inputs": [[1, 2]]},
        "this model has several inputs (a, b): 'inputs' must be an object keyed by input name",
        id="columnar-tensor-for-several-inputs",
    ),
    pytest.param(
        TWO,
        {"inputs": {"a": [[1, 2]], "b": 3}},
        "inputs['b'] must be a non-empty JSON array, got 3",
        id="columnar-input-not-an-array",
    ),
    pytest.param(
        TWO,
        {"inputs": {"a": [[1, 2]]}},
        "'inputs' lacks input 'b'",
        id="columnar-missing-input",
    ),
    pytest.param(
        TWO,
        {"inputs": {"a": [[1, 2]], "b": [[1, 2]], "c": [[0]]}},
        "'inputs' names unknown input 'c'",
        id="columnar-unknown-input",
    ),
    pytest.param(
        TWO,
        {"inputs": {"a": [[1, 2]], "b": [[1, 2], [3, 4]]}},
        "'inputs' disagree on the batch size: [1, 2]",
        id="columnar-batch-sizes-disagree",
    ),
    pytest.param(
        ECHO_FP32,
        {"inputs": "x"},
        "'inputs' must be a JSON array (the tensor of a model's only input) or an object",
        id="columnar-string",
    ),
    pytest.param(ECHO_FP32, {"inputs": []}, "'inputs' must be a non-empty", id="columnar-empty"),
    pytest.param(
        ECHO_BYTES,
        {"instances": [[{"b64": "not base64!"}]]},
        "instances: b64 value 'not base64!' is not base64",
        id="b64-not-base64",
    ),
    pytest.param(
        ECHO_BYTES,
        {"instances": [[{"b64": 12}]]},
        "instances: a b64 value must be a base64 string, got 12",
        id="b64-not-a-string",
    ),
    pytest.param(
        ECHO_BYTES,
        {"instances": [[_b64(b"\xff\xfe")]]},
        "instances: a b64 value is not UTF-8 text",
        id="b64-not-utf8",
    ),
    pytest.param(
        ECHO_FP32,
        {"instances": [[_b64(b"\x00\x00\x80?")]]},
        "instances: {\"b64\": ...} values need a BYTES input; input 'x' is FP32",
        id="b64-for-a-number-input",
    ),
    pytest.param(
        ECHO_FP32,
        {"signature_name": 3, "instances": [[1]]},
        "'signature_name' must be a string, got 3",
        id="signature-name-not-a-string",
    ),
]


@pytest.mark.parametrize(("path", "body", "needle"), ERRORS)
def test_malformed_forms_are_400s_naming_the_field(
    forms: Server, echo_port: int, path: str, body: Any, needle: str
) -> None:
    port = forms.port if "/forms/" in path else echo_port
    status, reply = _predict(port, path, body)
    assert status == 400, reply
    assert needle in reply["error"]


# -- named rows and b64 values in a large body ------------------------------------------------


class _TwoInputs(model.Model):
    """Inputs 'a' (FP32 rows of 3) and 'b' (BYTES): enough to parse named rows against."""

    def __init__(self) -> None:
        super().__init__(name="two", version="1", path=pathlib.Path("."))
        self.inputs = [
            model.TensorSpec("a", "FP32", (-1, 3)),
            model.TensorSpec("b", "BYTES", (-1,)),
        ]

    def _load(self) -> None:
        pass

    def predict(self, inputs: Any, outputs: Any = None) -> Any:
        raise NotImplementedError


def _parsed(body: bytes, *, spans: bool) -> Any:
    """``v1_forms.parse``'s arrays or its BadRequest message for a large body, whose named
    rows' values are spans, or (``spans`` False) lists, as the parser gave them before."""
    payload = chunked_json.loads(body, chunk=64, layout=dataplane._v1_layout)
    if not spans:
        for row in payload["instances"]:
            for key, value in row.items():
                if isinstance(value, numeric_json.Span):
                    row[key] = chunked_json.materialize(value)
    try:
        inputs, _ = v1_forms.parse(_TwoInputs(), payload, literals=True, binary=True, chunk=4)
    except errors.BadRequest as exc:
        return str(exc)
    return {k: v.tolist() for k, v in inputs.items()}


NAMED_ROWS = [
    [{"a": [1, 2.5, 3], "b": "x"}, {"a": [4, 5, 6e3], "b": {"b64": "eQ=="}}] * 20,
    [{"a": [1, 2, 3], "b": "x"}, {"a": [4, 5], "b": "y"}] * 20,  # ragged
    [{"a": [1, 2, 3], "b": "x"}, {"a": [4, "5", 6], "b": "y"}] * 20,  # a string among numbers
    [{"a": [[1, 2, 3]], "b": "x"}, {"a": [4, 5, 6], "b": "y"}] * 20,  # nesting differs
    [{"a": [1, 2, 3], "b": "x"}, {"a": 7, "b": "y"}] * 20,  # a scalar among arrays
    [{"a": [1, 2, 3], "b": "x"}, {"a": [True, 2, 3], "b": "y"}] * 20,
    [{"a": [], "b": "x"}] * 40,
]


@pytest.mark.parametrize("rows", NAMED_ROWS)
def test_named_rows_as_spans_give_the_arrays_and_errors_that_lists_gave(
    rows: list[Any],
) -> None:
    body = orjson.dumps({"instances": rows})
    assert len(body) > 64
    assert _parsed(body, spans=True) == _parsed(body, spans=False)


def test_named_rows_values_in_a_large_body_are_spans_not_lists() -> None:
    body = orjson.dumps({"instances": [{"a": [1, 2, 3], "b": "x"}] * 30})
    rows = chunked_json.loads(body, chunk=64, layout=dataplane._v1_layout)["instances"]
    assert all(isinstance(r["a"], numeric_json.Span) for r in rows)


def test_a_large_bodys_array_of_objects_is_refused_past_most_objects() -> None:
    most = chunked_json.MOST_OBJECTS
    fits = orjson.dumps({"instances": [{"b64": ""}] * most})
    assert len(chunked_json.loads(fits, chunk=64, layout=dataplane._v1_layout)["instances"]) == most
    over = orjson.dumps({"instances": [{"b64": ""}] * (most + 1)})
    with pytest.raises(chunked_json.Refused, match=f"instances holds objects.*than {most}"):
        chunked_json.loads(over, chunk=64, layout=dataplane._v1_layout)


def test_a_large_bodys_strings_with_braces_are_not_objects_and_not_capped() -> None:
    strings = ["{not an object}"] * (chunked_json.MOST_OBJECTS + 10)
    body = orjson.dumps({"instances": strings})
    assert chunked_json.loads(body, chunk=64, layout=dataplane._v1_layout) == {"instances": strings}
