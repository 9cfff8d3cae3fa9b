"""Packed JSON: the caches' compact form gives back what was packed, decoded on first read."""

from __future__ import annotations

from kubeserve.controller import packed


def test_an_object_comes_back_as_it_was_packed_and_smaller() -> None:
    obj = {"metadata": {"name": "digits", "labels": {f"k{i}": "value" for i in range(50)}}}
    data = packed.pack(obj)
    assert packed.unpack(data) == obj
    assert len(data) < len(str(obj)) / 2


def test_json_objects_decode_each_object_once_on_first_read() -> None:
    objects = packed.JsonObjects({"a": packed.pack({"n": 1}), "b": {"n": 2}})
    assert sorted(objects) == ["a", "b"] and len(objects) == 2
    first = objects["a"]
    assert first == {"n": 1} and objects["a"] is first, "decoded once, then kept"
    objects["c"] = {"n": 3}
    del objects["b"]
    assert dict(objects) == {"a": {"n": 1}, "c": {"n": 3}}
