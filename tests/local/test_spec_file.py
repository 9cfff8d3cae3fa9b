"""An edit of the local run's file is a new generation, new metadata, a restart, or refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from kubeserve.api import spec, validation
from kubeserve.local import spec_file
from support import specs


def shift(v1: int = 100, v2: int = 0, **rollout: Any) -> dict[str, Any]:
    obj = specs.isvc(specs.variant("v1", v1), specs.variant("v2", v2), name="shift")
    obj["spec"]["rollout"] = {"candidate": "v2", **rollout}
    return obj


def serving(obj: dict[str, Any], generation: int = 3) -> spec.InferenceService:
    return spec_file.with_generation(validation.parse(obj), generation)


def classify(current: dict[str, Any], new: dict[str, Any] | str) -> spec_file.Edit:
    text = new if isinstance(new, str) else yaml.safe_dump(new)
    return spec_file.classify(serving(current), text, source="shift.yaml")


def test_new_weights_are_the_next_generation() -> None:
    edit = classify(shift(), shift(0, 100))
    assert isinstance(edit, spec_file.NewGeneration)
    assert edit.isvc.metadata.generation == 4
    assert edit.isvc.spec.live_weights() == {"v1": 0, "v2": 100}


def test_a_changed_rollout_or_routing_is_a_new_generation_too() -> None:
    assert isinstance(classify(shift(), shift(steps=[10, 100])), spec_file.NewGeneration)
    routed = shift()
    routed["spec"]["routing"] = {"sticky": {"header": "x-user-id"}}
    assert isinstance(classify(shift(), routed), spec_file.NewGeneration)


def test_every_problem_of_an_invalid_file_is_given_with_its_field_path() -> None:
    bad = shift(60, 60, steps=[5, 1], candidate="v9")
    edit = classify(shift(), bad)
    assert isinstance(edit, spec_file.Invalid)
    text = "\n".join(edit.problems)
    for path in ("spec.variants", "spec.rollout.candidate", "spec.rollout.steps[1]"):
        assert path in text, text
    assert len(edit.problems) >= 3


def test_a_file_that_is_not_yaml_or_empty_is_invalid() -> None:
    edit = classify(shift(), "spec: [unclosed\n")
    assert isinstance(edit, spec_file.Invalid) and "not valid YAML" in edit.problems[0]
    edit = classify(shift(), "# nothing\n")
    assert isinstance(edit, spec_file.Invalid) and "no InferenceService" in edit.problems[0]


def test_added_or_removed_variants_and_changed_models_need_a_restart() -> None:
    added = shift()
    added["spec"]["variants"].append(specs.variant("v3", 0))
    edit = classify(shift(), added)
    assert edit == spec_file.NeedsRestart(("variants added: v3",))
    removed = specs.isvc(specs.variant("v1", 100), name="shift")
    edit = classify(shift(), removed)
    assert isinstance(edit, spec_file.NeedsRestart) and "variants removed: v2" in edit.reasons
    remodelled = shift()
    remodelled["spec"]["variants"][1]["model"]["storageUri"] = "file:///models/other"
    assert classify(shift(), remodelled) == spec_file.NeedsRestart(("variant v2's model changed",))
    resized = shift()
    resized["spec"]["variants"][0]["replicas"] = 3
    assert classify(shift(), resized) == spec_file.NeedsRestart(
        ("variant v1's server settings changed",)
    )
    renamed = shift()
    renamed["metadata"]["name"] = "other"
    edit = classify(shift(), renamed)
    assert isinstance(edit, spec_file.NeedsRestart) and "renamed" in edit.reasons[0]


def test_new_annotations_keep_the_generation() -> None:
    annotated = shift()
    annotated["metadata"]["annotations"] = {"serving.kubeserve.dev/rollout": "abort/1"}
    edit = classify(shift(), annotated)
    assert isinstance(edit, spec_file.Relabelled)
    assert edit.isvc.metadata.generation == 3
    assert edit.isvc.metadata.annotations == {"serving.kubeserve.dev/rollout": "abort/1"}


def test_a_comment_or_a_status_block_changes_nothing() -> None:
    same = yaml.safe_dump(shift())
    assert classify(shift(), "# a comment\n" + same) == spec_file.Unchanged()
    with_status = shift() | {"status": {"traffic": "v1=1"}}
    assert classify(shift(), with_status) == spec_file.Unchanged()


def test_the_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "shift.yaml"
    path.write_text(yaml.safe_dump(shift()))
    watched = spec_file.Watched(path)
    current = serving(shift())
    assert watched.poll(current) is None
    replacement = tmp_path / "next.yaml"
    replacement.write_text(yaml.safe_dump(shift(0, 100)))
    os.replace(replacement, path)  # as an editor or `git checkout` replaces it
    assert isinstance(watched.poll(current), spec_file.NewGeneration)
    assert watched.poll(current) is None
    path.unlink()
    assert watched.poll(current) is None  # gone for a moment: wait for it to come back
