"""Three-way patches: only what differs, only our fields, nothing for an unchanged child."""

from __future__ import annotations

import copy
from typing import Any

from kubeserve.controller import diff


def desired() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "ns", "labels": {"app": "a"}},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "c", "image": "i:1", "resources": {"limits": {"cpu": 1}}}
                    ]
                }
            },
        },
    }


def applied(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server stores after a create: our object plus its own fields and defaults."""
    out = copy.deepcopy(diff.with_applied_annotation(obj))
    out["metadata"] |= {"uid": "u", "resourceVersion": "7", "generation": 1}
    out["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    container = out["spec"]["template"]["spec"]["containers"][0]
    container["terminationMessagePath"] = "/dev/termination-log"
    container["resources"]["limits"]["cpu"] = "1"  # normalised by the API server
    out["spec"]["strategy"] = {"type": "RollingUpdate"}
    out["status"] = {"replicas": 2}
    return out


def test_unchanged_child_gives_no_patch() -> None:
    assert diff.patch_for(desired(), applied(desired())) is None


def test_changed_scalar_gives_just_that_field() -> None:
    actual = applied(desired())
    actual["spec"]["replicas"] = 5
    assert diff.patch_for(desired(), actual) == {"spec": {"replicas": 2}}


def test_changed_list_item_replaces_the_list() -> None:
    actual = applied(desired())
    actual["spec"]["template"]["spec"]["containers"][0]["image"] = "evil"
    patch = diff.patch_for(desired(), actual)
    assert patch == {
        "spec": {
            "template": {
                "spec": {"containers": desired()["spec"]["template"]["spec"]["containers"]}
            }
        }
    }


def test_foreign_fields_are_left_alone() -> None:
    actual = applied(desired())
    actual["metadata"]["labels"]["team"] = "ml"
    actual["spec"]["paused"] = True
    assert diff.patch_for(desired(), actual) is None


def test_field_we_stopped_setting_is_removed() -> None:
    old = desired()
    old["spec"]["minReadySeconds"] = 10
    old["metadata"]["labels"]["old"] = "x"
    actual = applied(old)
    patch = diff.patch_for(desired(), actual)
    assert patch is not None
    assert patch["spec"] == {"minReadySeconds": None}
    assert patch["metadata"]["labels"] == {"old": None}
    assert diff.APPLIED_ANNOTATION in patch["metadata"]["annotations"]


def test_replicas_are_left_to_the_autoscaler_when_we_stop_setting_them() -> None:
    actual = applied(desired())
    actual["spec"]["replicas"] = 4  # the HPA scaled it
    autoscaled = desired()
    del autoscaled["spec"]["replicas"]
    patch = diff.patch_for(autoscaled, actual)
    assert patch is not None and "replicas" not in patch.get("spec", {})


def test_removed_label_is_restored() -> None:
    actual = applied(desired())
    del actual["metadata"]["labels"]["app"]
    assert diff.patch_for(desired(), actual) == {"metadata": {"labels": {"app": "a"}}}


def test_quantities_compare_by_value() -> None:
    assert diff.same("1Gi", "1073741824")
    assert diff.same(1, "1")
    assert diff.same("500m", "0.5")
    assert not diff.same("1Gi", "1G")
    assert not diff.same(True, 1)
    assert not diff.same("abc", "abd")


def test_applied_state_is_stable() -> None:
    a = desired()
    b = copy.deepcopy(a)
    b["metadata"]["labels"] = dict(reversed(list(b["metadata"]["labels"].items())))
    assert diff.applied_state(a) == diff.applied_state(b)
