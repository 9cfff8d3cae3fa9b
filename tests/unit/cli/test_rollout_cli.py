"""`kubeserve rollout NAME promote|abort|pause|resume` sets the annotation the operator honours."""

from __future__ import annotations

import argparse
import copy
import datetime
from typing import Any

import pytest

from kubeserve import cluster, rollout_cli
from kubeserve.api import spec
from kubeserve.rollout import decide

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)


def digits(*, with_rollout: bool = True) -> dict[str, Any]:
    model = {"format": "onnx", "storageUri": "file:///models/digits"}
    obj: dict[str, Any] = {
        "apiVersion": "serving.kubeserve.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "digits", "namespace": "default", "generation": 2},
        "spec": {
            "variants": [
                {"name": "v1", "weight": 0, "model": model},
                {"name": "v2", "weight": 100, "model": model},
            ]
        },
        "status": {"rollout": {"phase": "Progressing", "progress": "Progressing 2/5"}},
    }
    if with_rollout:
        obj["spec"]["rollout"] = {"candidate": "v2", "interval": "10s"}
    return obj


class FakeApi:
    """An API server holding one InferenceService; annotations merge as a merge patch does."""

    default_namespace = "default"

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.patches: list[dict[str, str]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) != (self.obj["metadata"]["namespace"], self.obj["metadata"]["name"]):
            raise rollout_cli.traffic.TrafficError(f"not found in namespace {namespace!r}")
        return copy.deepcopy(self.obj)

    def annotate(self, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        self.patches.append(annotations)
        self.obj["metadata"].setdefault("annotations", {}).update(annotations)
        return copy.deepcopy(self.obj)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubeserve")
    sub = parser.add_subparsers(dest="command", required=True)
    rollout_cli.add_parser(sub)
    return parser.parse_args(list(argv))


def test_each_command_sets_the_annotation_with_a_nonce(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(digits())
    assert rollout_cli.run(parse("rollout", "digits", "promote"), api, lambda: NOW) == 0
    value = api.obj["metadata"]["annotations"][decide.MANUAL_ANNOTATION]
    assert value == "promote/2024-05-01T12:00:00.123456Z"
    out = capsys.readouterr().out
    assert "inferenceservice/digits: promote requested" in out
    assert "rollout Progressing 2/5" in out and "every 10s" in out
    for action in ("abort", "pause", "resume"):
        assert rollout_cli.run(parse("rollout", "digits", action, "-n", "default"), api) == 0
        value = api.obj["metadata"]["annotations"][decide.MANUAL_ANNOTATION]
        assert decide.parse_command(value) == action


def test_the_operator_reads_the_command_the_cli_wrote() -> None:
    api = FakeApi(digits())
    rollout_cli.run(parse("rollout", "digits", "abort"), api, lambda: NOW)
    isvc = spec.InferenceService.model_validate({**api.obj, "status": None})
    assert decide.parse_command(decide.manual_value(isvc)) == "abort"


def test_the_same_command_twice_is_two_commands() -> None:
    api = FakeApi(digits())
    later = NOW + datetime.timedelta(microseconds=1)
    rollout_cli.run(parse("rollout", "digits", "pause"), api, lambda: NOW)
    rollout_cli.run(parse("rollout", "digits", "pause"), api, lambda: later)
    assert api.patches[0] != api.patches[1]


def test_without_spec_rollout_nothing_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(digits(with_rollout=False))
    assert rollout_cli.run(parse("rollout", "digits", "promote"), api) == 1
    assert "kubeserve rollout: digits: has no spec.rollout" in capsys.readouterr().err
    assert api.patches == []


def test_a_missing_resource_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert rollout_cli.run(parse("rollout", "nope", "abort"), FakeApi(digits())) == 1
    assert "not found" in capsys.readouterr().err


def test_an_unknown_action_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse("rollout", "digits", "launch")


class FakeCluster:
    """`cluster.Cluster`'s patch, recorded."""

    default_namespace = "team"

    def __init__(self, answer: dict[str, Any] | None) -> None:
        self.answer = answer
        self.calls: list[tuple[Any, ...]] = []

    def patch(
        self, kind: cluster.Kind, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.calls.append((kind, namespace, name, body))
        return self.answer


def test_the_cluster_api_sends_a_merge_patch_of_the_annotations() -> None:
    fake = FakeCluster(digits())
    api = rollout_cli.ClusterApi(fake)  # type: ignore[arg-type]
    assert api.default_namespace == "team"
    api.annotate("team", "digits", {decide.MANUAL_ANNOTATION: "pause/1"})
    assert fake.calls == [
        (
            cluster.INFERENCE_SERVICE,
            "team",
            "digits",
            {"metadata": {"annotations": {decide.MANUAL_ANNOTATION: "pause/1"}}},
        )
    ]
    gone = rollout_cli.ClusterApi(FakeCluster(None))  # type: ignore[arg-type]
    with pytest.raises(rollout_cli.traffic.TrafficError, match="not found"):
        gone.annotate("team", "digits", {})


class RefusingCluster(FakeCluster):
    def patch(
        self, kind: cluster.Kind, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        raise cluster.ApiError(403, "Forbidden", "no patch for you")


def test_a_refused_patch_says_why() -> None:
    api = rollout_cli.ClusterApi(RefusingCluster(None))  # type: ignore[arg-type]
    with pytest.raises(rollout_cli.traffic_cli.ApiUnavailableError, match="403"):
        api.annotate("team", "digits", {})
