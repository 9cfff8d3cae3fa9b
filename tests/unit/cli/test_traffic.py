"""`kubeserve traffic | promote | rollback`: the pure plans, the JSON Patch, and the commands."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserve import cli, traffic, traffic_cli
from kubeserve.api import validation
from kubeserve.builders import endpoint, nginx_config
from support import specs
from support.traffic_cases import apply_json_patch, three

ROOT = Path(__file__).resolve().parents[3]


def test_the_current_split_is_written_as_status_shows_it() -> None:
    obj = three()
    assert str(traffic.current_split(obj)) == endpoint.traffic_summary(validation.parse(obj))
    assert traffic.summary(obj) == "v1=90,v2=10,v3=mirror20%"


@pytest.mark.parametrize(
    ("text", "says"), [("v1=90,v2=20", "sum to 110"), ("v1=50,v2=mirror0%", "1 to 100")]
)
def test_an_unreadable_split_is_a_traffic_error(text: str, says: str) -> None:
    with pytest.raises(traffic.TrafficError, match=says):
        traffic.set_traffic(three(), text)


def test_an_unreadable_previous_split_says_where_it_was_read() -> None:
    obj = three()
    obj["metadata"]["annotations"] = {traffic.PREVIOUS_ANNOTATION: "v1=90,v2=9"}
    with pytest.raises(traffic.TrafficError, match="annotation is unreadable: weights sum to 99"):
        traffic.rollback(obj)


def test_traffic_sets_named_weights_and_zeroes_the_rest() -> None:
    obj = specs.isvc(specs.variant("v1", 50), specs.variant("v2", 30), specs.variant("v3", 20))
    change = traffic.set_traffic(obj, "v1=60,v2=40")
    assert change.after.weights == {"v1": 60, "v2": 40, "v3": 0}
    new = traffic.apply(obj, change)
    assert [v["weight"] for v in new["spec"]["variants"]] == [60, 40, 0]
    assert new["metadata"]["annotations"][traffic.PREVIOUS_ANNOTATION] == "v1=50,v2=30,v3=20"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("v1=50,v9=50", "no variant named v9"),
        ("v1=50,v3=50", "mirror"),
    ],
)
def test_traffic_refuses_unknown_variants_and_live_traffic_to_the_shadow(
    text: str, says: str
) -> None:
    with pytest.raises(traffic.TrafficError, match=says):
        traffic.set_traffic(three(), text)


def test_promote_gives_one_variant_everything_and_keeps_the_others_at_zero() -> None:
    change = traffic.promote(three(), "v2")
    assert change.after.weights == {"v1": 0, "v2": 100, "v3": 0}
    assert change.after.mirror == ("v3", 20)
    assert endpoint.traffic_summary(validation.parse(traffic.apply(three(), change))) == (
        "v1=0,v2=100,v3=mirror20%"
    )


def test_promoting_the_shadow_removes_the_mirror_and_rollback_restores_it() -> None:
    promoted = traffic.apply(three(), traffic.promote(three(), "v3"))
    assert "routing" not in promoted["spec"]
    assert str(traffic.current_split(promoted)) == "v1=0,v2=0,v3=100"
    back = traffic.apply(promoted, traffic.rollback(promoted))
    assert str(traffic.current_split(back)) == "v1=90,v2=10,v3=mirror20%"
    assert back["spec"] == three()["spec"]


def test_rollback_twice_returns_to_where_it_started() -> None:
    start = three()
    moved = traffic.apply(start, traffic.set_traffic(start, "v1=50,v2=50"))
    back = traffic.apply(moved, traffic.rollback(moved))
    again = traffic.apply(back, traffic.rollback(back))
    assert back["spec"] == start["spec"]
    assert again["spec"] == moved["spec"]


def test_rollback_without_a_previous_split_says_so() -> None:
    with pytest.raises(traffic.TrafficError, match="nothing to roll back to"):
        traffic.rollback(three())


def test_unknown_promote_target_says_so() -> None:
    with pytest.raises(traffic.TrafficError, match="no variant named v9"):
        traffic.promote(three(), "v9")


@pytest.mark.parametrize(
    "make",
    [
        lambda o: traffic.set_traffic(o, "v1=50,v2=50"),
        lambda o: traffic.promote(o, "v3"),
        lambda o: traffic.promote(o, "v1"),
    ],
)
def test_json_patch_gives_the_same_object_as_apply(make: Any) -> None:
    for obj in (
        three(),
        {**three(), "metadata": {**three()["metadata"], "annotations": {"a": "b"}}},
    ):
        change = make(obj)
        patched = apply_json_patch(obj, traffic.json_patch(obj, change))
        assert patched == traffic.apply(obj, change)


def test_json_patch_is_pinned_to_the_version_and_the_variant_order() -> None:
    obj = three()
    ops = traffic.json_patch(obj, traffic.set_traffic(obj, "v1=50,v2=50"))
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
    assert {"op": "test", "path": "/spec/variants/1/name", "value": "v2"} in ops
    reordered = copy.deepcopy(obj)
    reordered["spec"]["variants"].reverse()
    with pytest.raises(ValueError, match="test failed"):
        apply_json_patch({**reordered, "metadata": obj["metadata"]}, ops[1:])


def test_annotation_key_is_escaped_in_the_patch_path() -> None:
    ops = traffic.json_patch(three(), traffic.promote(three(), "v1"))
    assert ops[-1]["path"] == "/metadata/annotations/serving.kubeserve.dev~1previous-traffic"


# --- the commands ---------------------------------------------------------------------------


class FakeApi:
    """An API server holding one InferenceService; `conflicts` patches fail first."""

    default_namespace = "default"

    def __init__(self, obj: dict[str, Any], conflicts: int = 0) -> None:
        self.obj, self.conflicts, self.patches = obj, conflicts, 0

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        assert (namespace, name) == (
            self.obj["metadata"]["namespace"],
            self.obj["metadata"]["name"],
        )
        return copy.deepcopy(self.obj)

    def patch(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        self.patches += 1
        if self.conflicts:
            self.conflicts -= 1
            # Someone else wrote in between: the resourceVersion moved on.
            self.obj["metadata"]["resourceVersion"] = str(
                int(self.obj["metadata"]["resourceVersion"]) + 1
            )
        try:
            new = apply_json_patch(self.obj, ops)
        except ValueError as exc:
            raise traffic_cli.ConflictError(str(exc)) from exc
        new["metadata"]["resourceVersion"] = str(int(new["metadata"]["resourceVersion"]) + 1)
        self.obj = new
        return copy.deepcopy(new)


def args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


def test_commands_change_the_cluster_object_and_roll_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = FakeApi(three())
    assert traffic_cli.run(args("traffic", "digits", "v1=50,v2=50"), api) == 0
    assert "v1=90,v2=10,v3=mirror20% -> v1=50,v2=50,v3=mirror20%" in capsys.readouterr().out
    assert traffic.summary(api.obj) == "v1=50,v2=50,v3=mirror20%"
    assert traffic_cli.run(args("promote", "digits", "v2", "-n", "default"), api) == 0
    assert traffic.summary(api.obj) == "v1=0,v2=100,v3=mirror20%"
    assert traffic_cli.run(args("rollback", "digits"), api) == 0
    assert traffic.summary(api.obj) == "v1=50,v2=50,v3=mirror20%"


def test_a_concurrent_edit_makes_the_command_read_again() -> None:
    api = FakeApi(three(), conflicts=2)
    assert traffic_cli.run(args("promote", "digits", "v2"), api) == 0
    assert api.patches == 3
    assert traffic.summary(api.obj) == "v1=0,v2=100,v3=mirror20%"
    stubborn = FakeApi(three(), conflicts=5)
    assert traffic_cli.run(args("promote", "digits", "v2"), stubborn) == 1
    assert traffic.summary(stubborn.obj) == "v1=90,v2=10,v3=mirror20%"


def test_dry_run_prints_the_patch_and_sends_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(three())
    assert traffic_cli.run(args("traffic", "digits", "v1=0,v2=100", "--dry-run"), api) == 0
    out = capsys.readouterr().out
    ops = json.loads(out[: out.rindex("]") + 1])
    assert {"op": "add", "path": "/spec/variants/1/weight", "value": 100} in ops
    assert api.patches == 0


def test_bad_input_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert traffic_cli.run(args("traffic", "digits", "v1=50,v2=60"), FakeApi(three())) == 1
    assert "kubeserve traffic: digits: weights sum to 110" in capsys.readouterr().err
    assert traffic_cli.run(args("rollback", "digits"), FakeApi(three())) == 1
    assert "nothing to roll back to" in capsys.readouterr().err


def test_file_mode_edits_yaml_for_gitops(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples" / "canary.yaml"
    assert cli.main(["traffic", "-f", str(path), "digits-canary", "v1=50,v2=50"]) == 0
    captured = capsys.readouterr()
    [doc] = yaml.safe_load_all(captured.out)
    assert [v["weight"] for v in doc["spec"]["variants"]] == [50, 50]
    assert doc["metadata"]["annotations"][traffic.PREVIOUS_ANNOTATION] == "v1=90,v2=10"
    assert "v1=90,v2=10 -> v1=50,v2=50" in captured.err
    # The result renders a router with the new split.
    conf = nginx_config.render_config(validation.parse(doc))
    assert "50% v1;\n        * v2;" in conf
    assert cli.main(["promote", "-f", str(path), "nope", "v2"]) == 1


def test_json_patch_brings_back_a_removed_routing() -> None:
    promoted = traffic.apply(three(), traffic.promote(three(), "v3"))
    change = traffic.rollback(promoted)
    ops = traffic.json_patch(promoted, change)
    assert {
        "op": "add",
        "path": "/spec/routing",
        "value": {"mirror": {"variant": "v3", "percent": 20}},
    } in ops
    assert apply_json_patch(promoted, ops) == traffic.apply(promoted, change)
