"""The reconciler against an in-memory API: what each kind of work writes, and what it leaves."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from kubeserve import cluster
from kubeserve.api import validation
from kubeserve.builders import children, meta
from kubeserve.builders.config import BuildConfig
from kubeserve.controller import reconcile, status, work
from kubeserve.controller.work import ChildKey
from support import specs
from support.reconciler_harness import (
    ENDPOINT,
    ISVC,
    NAME,
    NAMESPACE,
    OWNER,
    ROUTER,
    ROUTER_CONFIG,
    V1,
    V1_SERVICE,
    V2,
    V2_SERVICE,
    Harness,
)


def desired_keys(body: dict[str, Any]) -> set[ChildKey]:
    return {
        (o["kind"], o["metadata"]["name"])
        for o in children.build_children(validation.parse(body), BuildConfig())
    }


def condition(st: dict[str, Any], type_: str = status.READY) -> dict[str, Any]:
    return next(c for c in st.get("conditions", []) if c["type"] == type_)


# Full reconciles


def test_a_new_inferenceservice_gets_every_desired_child_and_a_status() -> None:
    h = Harness()
    outcome = h.run(work.FullReconcile())
    assert set(outcome.created) == desired_keys(h.body())
    assert {(kind, name) for kind, _, name in h.api.objects if kind != ISVC} == set(outcome.created)
    assert outcome.status_written and h.api.writes()[-1] == ("patch-status", ISVC, NAME)
    assert condition(h.status())["status"] == "False", "nothing is ready yet"
    uid = h.body()["metadata"]["uid"]
    for key in outcome.created:
        assert reconcile.controlled_by(h.api.child(key), uid) is True


def test_a_second_reconcile_over_caches_holding_the_result_writes_nothing() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    again = h.run(work.FullReconcile())
    assert h.api.writes() == []
    assert not again.created and not again.patched and not again.status_written


def test_a_child_edited_by_hand_is_patched_back_in_the_fields_we_own_only() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    image = h.api.child(V1)["spec"]["template"]["spec"]["containers"][0]["image"]
    h.api.edit(
        V1,
        {
            "metadata": {"annotations": {"example.com/note": "kept"}},
            "spec": {"minReadySeconds": 7, "template": {"metadata": {"labels": {"x": "y"}}}},
        },
    )
    h.api.child(V1)["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:1"
    outcome = h.run(work.FullReconcile())
    assert outcome.patched == [V1]
    [(_, sent)] = [p for p in h.api.patches if p[0] == V1]
    assert "example.com/note" not in str(sent), "another's annotation is not ours to send"
    repaired = h.api.child(V1)
    assert repaired["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert repaired["metadata"]["annotations"]["example.com/note"] == "kept"
    assert repaired["spec"]["minReadySeconds"] == 7, "a field we never set is left alone"


def test_the_children_of_a_removed_variant_are_pruned() -> None:
    h = Harness(specs.canary())
    h.run(work.FullReconcile())
    assert (("Deployment", NAMESPACE, "digits-v2")) in h.api.objects
    h.api.patch(
        cluster.INFERENCE_SERVICE,
        NAMESPACE,
        NAME,
        {"spec": {"variants": [specs.variant("v1", 100)]}},
    )
    outcome = h.run(work.FullReconcile())
    assert sorted(outcome.deleted) == sorted([V2, V2_SERVICE])
    assert ("Deployment", NAMESPACE, "digits-v2") not in h.api.objects
    assert ("Deployment", NAMESPACE, "digits-v1") in h.api.objects


def test_a_labelled_child_controlled_by_someone_else_is_not_pruned() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    stray = copy.deepcopy(h.api.child(V1))
    stray["metadata"] = {
        "name": "digits-old",
        "namespace": NAMESPACE,
        "labels": {meta.ISVC_LABEL: NAME},
        "ownerReferences": [{"uid": "another", "controller": True, "kind": "X", "name": "x"}],
    }
    h.api.create(stray)
    outcome = h.run(work.FullReconcile())
    assert outcome.deleted == []
    assert ("Deployment", NAMESPACE, "digits-old") in h.api.objects


def test_a_name_taken_by_an_object_not_ours_is_a_name_conflict_and_left_alone() -> None:
    h = Harness()
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "digits", "namespace": NAMESPACE},
        "spec": {"ports": [{"port": 1234}]},
    }
    h.api.create(foreign)
    outcome = h.run(work.FullReconcile())
    assert outcome.conflicts and "Service digits" in outcome.conflicts[0]
    assert ENDPOINT not in outcome.created and ENDPOINT not in outcome.patched
    assert h.api.child(ENDPOINT)["spec"] == {"ports": [{"port": 1234}]}
    assert condition(h.status())["reason"] == "NameConflict"
    assert V1 in outcome.created, "the children that are free are still made"


def test_an_invalid_spec_writes_invalid_spec_status_and_no_children() -> None:
    h = Harness(specs.isvc(specs.variant("v1", 50), specs.variant("v2", 20)))
    outcome = h.run(work.FullReconcile())
    assert outcome.invalid and "sum to 70" in outcome.invalid[0]
    assert h.api.writes() == [("patch-status", ISVC, NAME)]
    ready = condition(h.status())
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")


def test_an_inferenceservice_being_deleted_is_left_to_garbage_collection() -> None:
    h = Harness()
    body = h.body()
    body["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    outcome = h.run(work.FullReconcile(), body=body)
    assert h.api.calls == [] and outcome == reconcile.Outcome()


def test_an_inferenceservice_deleted_mid_reconcile_gets_no_more_children() -> None:
    h = Harness(specs.canary())
    uid = h.body()["metadata"]["uid"]
    creates: list[int] = []

    def deleted_after_the_second() -> None:
        creates.append(1)
        if len(creates) == 2:  # its DELETED event arrives while the second create is sent
            h.reconciler.forget(NAMESPACE, NAME, uid)

    h.api.on_create = deleted_after_the_second
    outcome = h.run(work.FullReconcile())
    assert len(outcome.created) == 2, "what was created is still told"
    assert [verb for verb, _, _ in h.api.writes()] == ["create", "create"]


def test_a_full_reconcile_after_the_owner_and_its_children_went_creates_nothing() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    body = h.body()  # the index still holds it; the deletion event has not come yet
    for kind, _, name in list(h.api.objects):
        h.remove((kind, name))  # the owner, and its children with it (garbage collection)
    outcome = h.run(work.FullReconcile(), body=body)
    assert outcome.created == [] and h.api.writes() == []
    assert h.api.calls == [("get", ISVC, NAME)], "one read, to learn that the owner is gone"


def test_an_owner_found_gone_is_not_asked_about_again() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    ghost = h.body()  # kopf's index keeps one whose deletion its watch never saw
    for kind, _, name in list(h.api.objects):
        h.remove((kind, name))
    h.run(work.FullReconcile(), body=ghost)
    h.run(work.FullReconcile(), body=ghost)
    assert h.api.calls == [], "every resync after the first finding costs nothing"


def test_one_deleted_before_its_first_status_is_left_alone_once_the_write_finds_it_gone() -> None:
    h = Harness()
    ghost = h.body()
    h.remove((ISVC, NAME))
    h.run(work.FullReconcile(), body=ghost)  # it cannot know: children are made, status 404s
    for kind, _, name in list(h.api.objects):
        h.remove((kind, name))  # what the garbage collector does with them
    h.run(work.FullReconcile(), body=ghost)
    assert h.api.calls == []


def test_the_first_reconcile_of_a_new_inferenceservice_reads_nothing() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    assert not [call for call in h.api.calls if call[0] == "get"]


def test_a_reconcile_from_an_index_that_still_holds_a_deleted_one_does_nothing() -> None:
    h = Harness()
    stale = h.body()
    h.reconciler.forget(NAMESPACE, NAME, stale["metadata"]["uid"])
    outcome = h.run(work.FullReconcile(), body=stale)
    assert h.api.calls == [] and outcome == reconcile.Outcome()


def test_deleted_inferenceservices_are_remembered_up_to_a_bound() -> None:
    h = Harness()
    h.reconciler.forget(NAMESPACE, NAME, h.body()["metadata"]["uid"])
    assert not h.run(work.FullReconcile()).created
    for i in range(reconcile.DELETED_KEPT):
        h.reconciler.forget(NAMESPACE, f"gone{i}", f"uid-gone{i}")
    assert h.run(work.FullReconcile()).created, "the oldest is no longer remembered"


def test_a_retriable_api_error_reaches_the_caller_and_the_next_try_finishes() -> None:
    h = Harness()
    h.api.failures = [cluster.ApiError(503, "Unavailable", "the API is down")]
    with pytest.raises(cluster.ApiError) as refused:
        h.run(work.FullReconcile())
    assert refused.value.retriable
    assert [k for k, _, _ in h.api.objects] == [ISVC]
    outcome = h.run(work.FullReconcile())
    assert set(outcome.created) == desired_keys(h.body())


def test_a_create_that_finds_our_own_child_compares_it_instead() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    h.reconciler = reconcile.Reconciler(cast(cluster.Cluster, h.api), BuildConfig())
    outcome = h.run(work.FullReconcile(), observed=reconcile.Observed())
    assert outcome.created == [] and outcome.patched == []
    assert ("get", "Deployment", "digits-v1") in h.api.calls, "read after AlreadyExists"


# The kinds of work


def test_compare_children_touches_only_those_children() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    for key in (V1_SERVICE, ROUTER_CONFIG):
        h.api.edit(key, {"metadata": {"labels": {meta.VARIANT_LABEL: "changed"}}})
    outcome = h.run(work.compare(V1_SERVICE))
    assert outcome.patched == [V1_SERVICE]
    assert h.api.writes() == [("patch", "Service", "digits-v1")]
    assert not outcome.status_written, "the status reads no Service"


def test_comparing_a_deployment_computes_the_status_again() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    h.ready(V1)
    h.ready(ROUTER)
    outcome = h.run(work.compare(V1))
    assert outcome.patched == [] and outcome.status_written
    assert condition(h.status())["status"] == "True"


def test_a_child_deleted_by_hand_is_created_again_by_its_comparison() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    h.remove(V1_SERVICE)
    outcome = h.run(work.compare(V1_SERVICE))
    assert outcome.created == [V1_SERVICE]
    assert ("get", ISVC, NAME) in h.api.calls, "the owner is checked before a repair"


def test_a_child_event_for_a_deleted_owner_creates_nothing() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    body = h.body()  # the index may still hold it when the children's events come
    h.remove((ISVC, NAME))
    h.remove(V1)
    outcome = h.run(work.compare(V1), body=body)
    assert outcome.created == [] and h.api.writes() == []


def test_a_child_event_for_an_owner_recreated_under_the_same_name_creates_nothing() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    body = h.body()
    h.remove((ISVC, NAME))
    h.api.create(specs.isvc(name=NAME, namespace=NAMESPACE))  # a new uid
    h.remove(V1)
    outcome = h.run(work.compare(V1), body=body)
    assert outcome.created == []


def test_a_status_refresh_writes_no_child() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    h.remove(V1_SERVICE)
    h.api.edit(ROUTER_CONFIG, {"data": {"nginx.conf": "edited"}})
    h.ready(V1)
    outcome = h.run(work.RefreshStatus())
    assert h.api.writes() == [("patch-status", ISVC, NAME)]
    assert outcome.status_written and not outcome.created and not outcome.patched
    assert h.status()["variants"]["v1"]["readyReplicas"] == 1


def test_a_status_refresh_riding_with_a_service_comparison_still_writes_the_status() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    h.ready(V1)
    outcome = h.run(work.CompareChildren(frozenset({V1_SERVICE}), status=work.RefreshStatus()))
    assert outcome.status_written
    assert h.status()["variants"]["v1"]["readyReplicas"] == 1


def test_children_of_kinds_the_operator_does_not_manage_are_left_out() -> None:
    body = specs.isvc(
        name=NAME,
        namespace=NAMESPACE,
        routing={"mode": "gateway-api", "parentRefs": [{"name": "gateway"}]},
    )
    h = Harness(body)
    outcome = h.run(
        work.FullReconcile(), observed=reconcile.Observed(unmanaged_kinds=frozenset({"HTTPRoute"}))
    )
    assert all(kind != "HTTPRoute" for kind, _ in outcome.created)
    assert condition(h.status(), status.ROUTING_READY)["reason"] == "GatewayAPIDisabled"


# The write overlay


def test_the_overlay_hides_a_stale_cache_after_our_own_writes() -> None:
    h = Harness()
    stale_body = h.body()  # the index, before the events of the first reconcile's writes
    h.run(work.FullReconcile())
    outcome = h.run(work.FullReconcile(), observed=reconcile.Observed(), body=stale_body)
    assert h.api.writes() == [], "neither the children nor the status are written twice"
    assert outcome.created == []


def test_our_own_write_coming_back_is_recognised_and_leaves_the_overlay() -> None:
    h = Harness()
    h.run(work.FullReconcile())
    deployment = h.api.child(V1)
    overlay = h.reconciler.overlay
    assert overlay.observe("Deployment", NAMESPACE, "digits-v1", deployment) is True
    h.api.edit(V1, {"metadata": {"labels": {"x": "y"}}})
    assert overlay.observe("Deployment", NAMESPACE, "digits-v1", h.api.child(V1)) is False


# Settling the status


def test_status_changes_in_the_settle_window_are_put_off_once_then_written_settled() -> None:
    h = Harness()
    deferred: list[tuple[tuple[str | None, str], float]] = []
    h.reconciler.settle_status(10.0, lambda owner, delay: deferred.append((owner, delay)))
    h.run(work.FullReconcile())
    written = h.status()
    h.ready(V1)
    first = h.run(work.RefreshStatus())
    h.ready(ROUTER)
    second = h.run(work.compare(ROUTER))
    assert first.status_deferred and second.status_deferred
    assert not first.status_written and not second.status_written
    assert h.status() == written
    assert len(deferred) == 1, "one settled refresh is asked for, not one per change"
    assert deferred[0][0] == OWNER and 0 < deferred[0][1] <= 10.0
    settled = h.run(work.RefreshStatus(settled=True))
    assert settled.status_written
    assert condition(h.status())["status"] == "True"


def test_a_full_reconcile_writes_its_status_at_once_inside_the_settle_window() -> None:
    h = Harness()
    deferred: list[object] = []
    h.reconciler.settle_status(10.0, lambda owner, delay: deferred.append(owner))
    h.run(work.FullReconcile())
    h.ready(V1)
    outcome = h.run(work.FullReconcile())
    assert outcome.status_written and deferred == []


def test_a_comparison_carrying_the_settled_refresh_writes_inside_the_window() -> None:
    h = Harness()
    h.reconciler.settle_status(10.0, lambda owner, delay: None)
    h.run(work.FullReconcile())
    h.ready(V1)
    assert h.run(work.compare(V1)).status_deferred
    settled = work.CompareChildren(frozenset({V1_SERVICE}), status=work.RefreshStatus(settled=True))
    outcome = h.run(settled)
    assert outcome.status_written and not outcome.status_deferred


# The spec shrinks: the status loses what the spec lost, and then stays put

SHRINKS = specs.shrinks()


@pytest.mark.parametrize("steps", SHRINKS.values(), ids=SHRINKS.keys())
def test_after_the_spec_shrinks_one_reconcile_settles_status_and_children(
    steps: list[dict[str, Any]],
) -> None:
    h = Harness(steps[0])
    h.run(work.FullReconcile())
    h.all_ready()
    h.run(work.FullReconcile())
    for step in steps[1:]:
        h.api.respec(ISVC, NAME, step["spec"])
        changed = h.run(work.FullReconcile())
        assert changed.status_written
        again = h.run(work.FullReconcile())
        assert h.api.writes() == [], f"{step['spec']}: a second reconcile wrote"
        assert not again.status_written
        assert h.status() == h.computed_status()
        assert set(h.status()["variants"]) == {v["name"] for v in step["spec"]["variants"]}
        assert {(k, n) for k, _, n in h.api.objects if k != ISVC} == desired_keys(h.body())


def test_a_status_write_sends_only_what_changed_and_nulls_what_went() -> None:
    h = Harness(specs.canary())
    h.run(work.FullReconcile())
    h.all_ready()
    h.run(work.FullReconcile())
    h.api.respec(ISVC, NAME, specs.isvc(specs.variant("v1", 100))["spec"])
    h.api.patches.clear()
    h.run(work.FullReconcile())
    [sent] = [patch for key, patch in h.api.patches if key == (ISVC, NAME)]
    assert sent["status"]["variants"]["v2"] is None
    assert sent["status"]["variants"]["v1"] == {"weight": 100}
    assert "url" not in sent["status"], "an unchanged field is not sent again"
