"""Merge-patch diffs: applied to the old document, they give the new one, and nothing more."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kubeserve.controller import merge_patch
from kubeserve.testing.emulator import patches
from support import strategies

apply = patches.merge_patch


def without_nulls(value: Any) -> Any:
    """What a stored document says: a null in a map is no key at all."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return value


# Stored objects are JSON: no infinities.
documents = st.dictionaries(st.text(max_size=4), strategies.api_json_values, max_size=5)


@given(documents, documents)
def test_applying_the_diff_to_the_old_document_gives_the_new_one(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    stored = without_nulls(before)
    assert apply(stored, merge_patch.diff(stored, after)) == without_nulls(after)


@given(documents)
def test_a_document_against_itself_needs_no_patch(doc: dict[str, Any]) -> None:
    assert merge_patch.diff(doc, copy.deepcopy(doc)) == {}


def test_a_key_removed_deep_down_is_nulled_where_it_was() -> None:
    before = {"variants": {"v1": {"weight": 90}, "v2": {"weight": 10}}, "url": "http://a"}
    after = {"variants": {"v1": {"weight": 100}}, "url": "http://a"}
    assert merge_patch.diff(before, after) == {"variants": {"v1": {"weight": 100}, "v2": None}}


def test_a_list_is_sent_whole_when_any_item_differs() -> None:
    before = {"conditions": [{"type": "Ready", "status": "False"}, {"type": "X"}]}
    after = {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X"}]}
    assert merge_patch.diff(before, after) == after


def test_a_value_that_changes_type_is_sent_even_when_it_compares_equal() -> None:
    assert merge_patch.diff({"ready": 1}, {"ready": True}) == {"ready": True}
    assert merge_patch.diff({"l": [1, 2.0]}, {"l": [True, 2]}) == {"l": [True, 2]}
    assert merge_patch.diff({"n": {"a": 1}}, {"n": 1}) == {"n": 1}
    assert merge_patch.diff({"n": 1}, {"n": {"a": 1, "b": None}}) == {"n": {"a": 1}}
