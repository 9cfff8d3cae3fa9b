"""The emulator's garbage collector deletes what names only owners that do not exist.

kube-controller-manager's garbage collector deletes an object whose owners are all absent,
whenever it came to name them: also one created after its owner was deleted (a reconcile
racing the deletion). The create succeeds, as on kube-apiserver; the collector deletes the
object a moment later. With orphan propagation the dependents stay and lose the reference.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.store import ApiError, Store
from support.emulator_kinds import CM, DEP, ISVC, MERGE, store_with_namespace


@pytest.fixture()
def store() -> Store:
    return store_with_namespace()


def ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }


def owned(name: str, *owners: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "ownerReferences": [ref(o) for o in owners]}}


def deleted_owner(store: Store, name: str = "m") -> dict[str, Any]:
    owner = store.create(ISVC, "ns", {"metadata": {"name": name}, "spec": {}})
    store.delete(ISVC, "ns", name)
    return owner


def names(store: Store, key: tuple[str, str, str]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in store.list(key, "ns"))


def test_a_dependent_created_after_its_owner_was_deleted_is_created_then_collected(
    store: Store,
) -> None:
    owner = deleted_owner(store)
    created = store.create(CM, "ns", owned("late", owner))
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as info:
        store.get(CM, "ns", "late")
    assert info.value.status == 404


def test_a_dependent_whose_owner_never_existed_is_collected(store: Store) -> None:
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "g", "uid": "nope"}}
    store.create(CM, "ns", owned("c", ghost))
    assert names(store, CM) == []


def test_an_update_that_leaves_only_absent_owners_gets_the_object_collected(
    store: Store,
) -> None:
    owner = deleted_owner(store)
    store.create(CM, "ns", {"metadata": {"name": "c"}})
    patch = {"metadata": {"ownerReferences": [ref(owner)]}}
    assert store.patch(CM, "ns", "c", patch, content_type=MERGE)["metadata"]["name"] == "c"
    assert names(store, CM) == []


def test_one_live_owner_keeps_a_dependent_which_loses_the_absent_ones(store: Store) -> None:
    gone = deleted_owner(store, "gone")
    live = store.create(ISVC, "ns", {"metadata": {"name": "live"}, "spec": {}})
    store.create(CM, "ns", owned("c", gone, live))
    assert store.get(CM, "ns", "c")["metadata"]["ownerReferences"] == [ref(live)]


def test_deleting_one_of_two_owners_leaves_the_dependent_to_the_other(store: Store) -> None:
    first = store.create(ISVC, "ns", {"metadata": {"name": "first"}, "spec": {}})
    second = store.create(ISVC, "ns", {"metadata": {"name": "second"}, "spec": {}})
    store.create(CM, "ns", owned("c", first, second))
    store.delete(ISVC, "ns", "first")
    assert store.get(CM, "ns", "c")["metadata"]["ownerReferences"] == [ref(second)]
    store.delete(ISVC, "ns", "second")
    assert names(store, CM) == []


def test_objects_without_owners_and_those_with_live_ones_stay(store: Store) -> None:
    owner = store.create(ISVC, "ns", {"metadata": {"name": "m"}, "spec": {}})
    store.create(CM, "ns", {"metadata": {"name": "plain"}})
    store.create(CM, "ns", owned("child", owner))
    assert names(store, CM) == ["child", "plain"]


def test_collecting_a_dangling_object_collects_its_own_dependents(store: Store) -> None:
    owner = store.create(ISVC, "ns", {"metadata": {"name": "m"}, "spec": {}})
    dep = store.create(DEP, "ns", owned("d", owner))
    store.create(CM, "ns", owned("grandchild", dep))
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "g", "uid": "nope"}}
    patch = {"metadata": {"ownerReferences": [ref(ghost)]}}
    store.patch(DEP, "ns", "d", patch, content_type=MERGE)
    assert names(store, DEP) == [] and names(store, CM) == []


def test_a_dangling_object_with_a_finalizer_is_marked_deleted_not_removed(store: Store) -> None:
    owner = deleted_owner(store)
    body = owned("held", owner)
    body["metadata"]["finalizers"] = ["example.com/keep"]
    store.create(CM, "ns", body)
    assert store.get(CM, "ns", "held")["metadata"]["deletionTimestamp"]


def test_orphan_propagation_takes_the_owner_out_of_the_dependents_which_stay(
    store: Store,
) -> None:
    owner = store.create(ISVC, "ns", {"metadata": {"name": "m"}, "spec": {}})
    other = store.create(ISVC, "ns", {"metadata": {"name": "other"}, "spec": {}})
    store.create(CM, "ns", owned("alone", owner))
    store.create(CM, "ns", owned("shared", owner, other))
    store.delete(ISVC, "ns", "m", options={"propagationPolicy": "Orphan"})
    alone, shared = store.get(CM, "ns", "alone"), store.get(CM, "ns", "shared")
    assert "ownerReferences" not in alone["metadata"]
    assert shared["metadata"]["ownerReferences"] == [ref(other)]
    # Updated later, an orphan is no dangling dependent: it stays.
    store.patch(CM, "ns", "alone", {"data": {"k": "v"}}, content_type=MERGE)
    assert names(store, CM) == ["alone", "shared"]


# Through the server


@pytest.fixture()
def em() -> Iterator[EmulatorThread]:
    with EmulatorThread() as running:
        yield running


def test_the_server_takes_the_create_and_collects_without_another_request(
    em: EmulatorThread,
) -> None:
    base = f"{em.url}/api/v1/namespaces/default/configmaps"
    events: list[dict[str, Any]] = []
    watching = threading.Event()

    def watch() -> None:
        with requests.get(
            base, params={"watch": "true", "timeoutSeconds": "5"}, stream=True, timeout=10
        ) as stream:
            watching.set()
            for line in stream.iter_lines():
                if line:
                    events.append(json.loads(line))
                if len(events) == 2:
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert watching.wait(5)
    ghost = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "g", "uid": "nope"}}
    answer = requests.post(base, json=owned("late", ghost), timeout=5)
    assert answer.ok, answer.text
    watcher.join(10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "late"),
        ("DELETED", "late"),
    ]
