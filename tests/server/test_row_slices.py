"""A large batch runs a slice of rows at a time and answers as one call would."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np
import pytest

from kubeserve.server import model, row_slices


class _Recording(model.Model):
    """Scores each row (a sum and a label per row) and records the rows of every call."""

    def _load(self) -> None:
        self.calls: list[int] = []
        self.inputs = [
            model.TensorSpec("x", "FP64", (-1, 4)),
            model.TensorSpec("w", "INT32", (-1,)),
        ]
        self.outputs = [
            model.TensorSpec("score", "FP64", (-1, 2)),
            model.TensorSpec("label", "BYTES", (-1,)),
        ]

    def predict(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        self.calls.append(len(inputs["x"]))
        x, w = inputs["x"], inputs["w"]
        score = np.stack([x.sum(axis=1), x.max(axis=1) * w], axis=1)
        label = np.array([f"row-{int(v)}" for v in x[:, 0]], dtype=object)
        every = {"score": score, "label": label}
        return {k: every[k] for k in (outputs or every)}


class _Pooled(_Recording):
    """Breaks the contract: one output holds a single value for the whole batch."""

    def predict(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        self.calls.append(len(inputs["x"]))
        return {"score": np.array([inputs["x"].sum()])}


def _loaded(cls: type[_Recording]) -> _Recording:
    m = cls(name="m", version="1", path=pathlib.Path("."))
    m.load()
    return m


def _inputs(rows: int) -> dict[str, np.ndarray]:
    x = np.arange(rows * 4, dtype=np.float64).reshape(rows, 4)
    return {"x": x, "w": np.arange(rows, dtype=np.int32) % 7}


@pytest.mark.parametrize("rows", [2, 9, 10, 11, 1000])
def test_slices_answer_exactly_what_one_call_answers(rows: int) -> None:
    whole, sliced = _loaded(_Recording), _loaded(_Recording)
    inputs = _inputs(rows)
    expected = whole.predict(inputs)
    got = row_slices.predict(sliced, inputs, size=10 * 36)  # 36 bytes a row: 10 rows a call
    assert got.keys() == expected.keys()
    for name, array in expected.items():
        assert got[name].dtype == array.dtype
        np.testing.assert_array_equal(got[name], array)
    assert sum(sliced.calls) == rows
    assert max(sliced.calls) <= 10
    assert len(sliced.calls) == -(-rows // 10)


def test_a_batch_within_the_slice_size_is_one_call() -> None:
    m = _loaded(_Recording)
    row_slices.predict(m, _inputs(1000))  # 36 KB: far below SLICE_BYTES
    assert m.calls == [1000]


def test_only_the_outputs_asked_for_are_computed_and_returned() -> None:
    m = _loaded(_Recording)
    got = row_slices.predict(m, _inputs(50), ["label"], size=360)
    assert list(got) == ["label"]
    assert got["label"][49] == "row-196"


def test_a_model_without_a_row_per_input_row_is_called_once_on_everything() -> None:
    m = _loaded(_Pooled)
    inputs = _inputs(30)
    got = row_slices.predict(m, inputs, size=360)
    assert m.calls == [10, 30]  # the first slice showed the outputs are not per row
    assert got["score"].tolist() == [inputs["x"].sum()]


def test_inputs_that_disagree_on_rows_are_not_sliced() -> None:
    m = _loaded(_Recording)
    inputs = {"x": np.zeros((20, 4)), "w": np.zeros(3, dtype=np.int32)}
    with pytest.raises(ValueError):  # the model's own complaint, as without slicing
        row_slices.predict(m, inputs, size=40)
    assert m.calls == [20]


def test_a_model_error_in_a_later_slice_reaches_the_caller() -> None:
    m = _loaded(_Recording)
    inputs = _inputs(30)
    inputs["x"][25] = np.nan  # a model that refuses NaN would raise here
    calls: list[int] = []

    def refuse_nan(
        feed: dict[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        calls.append(len(feed["x"]))
        if np.isnan(feed["x"]).any():
            raise ValueError("NaN in input")
        return _Recording.predict(m, feed, outputs)

    m.predict = refuse_nan  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="NaN"):
        row_slices.predict(m, inputs, size=360)
    assert calls == [10, 10, 10]
