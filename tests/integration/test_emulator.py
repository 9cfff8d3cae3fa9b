"""The API emulator keeps the API server's contract for what kubeserve and kopf use."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.patches import PatchError, json_patch, label_selector, merge_patch
from kubeserve.testing.emulator.server import RESOURCE_TYPES
from kubeserve.testing.emulator.store import ApiError, Store
from kubeserve.testing.kube_client import DEPLOYMENTS, Kube
from support.emulator_kinds import CM, DEP, ISVC, MERGE, store_with_namespace


@pytest.fixture()
def store() -> Store:
    return store_with_namespace()


def test_create_fills_in_identity(store: Store) -> None:
    obj = store.create(
        DEP, "ns", {"metadata": {"name": "d"}, "spec": {"replicas": 1}, "status": {"x": 1}}
    )
    meta = obj["metadata"]
    assert (
        meta["uid"]
        and meta["resourceVersion"]
        and meta["generation"] == 1
        and meta["creationTimestamp"]
    )
    assert obj["apiVersion"] == "apps/v1" and obj["kind"] == "Deployment"
    assert obj["status"] == {}, "a create's status is the kind's zero status, not what was sent"


def test_create_errors(store: Store) -> None:
    store.create(DEP, "ns", {"metadata": {"name": "d"}})
    with pytest.raises(ApiError) as info:
        store.create(DEP, "ns", {"metadata": {"name": "d"}})
    assert info.value.status == 409 and info.value.reason == "AlreadyExists"
    with pytest.raises(ApiError) as info:
        store.create(DEP, "missing", {"metadata": {"name": "d"}})
    assert info.value.status == 404
    with pytest.raises(ApiError) as info:
        store.create(DEP, "ns", {"metadata": {}})
    assert info.value.status == 422


def test_generate_name_gives_unique_names(store: Store) -> None:
    names = {
        store.create(("", "v1", "events"), "ns", {"metadata": {"generateName": "e."}})["metadata"][
            "name"
        ]
        for _ in range(50)
    }
    assert len(names) == 50 and all(n.startswith("e.") for n in names)


def test_generation_bumps_on_spec_changes_only(store: Store) -> None:
    store.create(DEP, "ns", {"metadata": {"name": "d"}, "spec": {"replicas": 1}})
    after_labels = store.patch(
        DEP, "ns", "d", {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE
    )
    assert after_labels["metadata"]["generation"] == 1
    after_spec = store.patch(DEP, "ns", "d", {"spec": {"replicas": 2}}, content_type=MERGE)
    assert after_spec["metadata"]["generation"] == 2
    same = store.patch(DEP, "ns", "d", {"spec": {"replicas": 2}}, content_type=MERGE)
    assert same["metadata"]["resourceVersion"] == after_spec["metadata"]["resourceVersion"], (
        "a no-op write changes nothing"
    )


def test_status_subresource_is_separate_from_the_rest(store: Store) -> None:
    store.create(DEP, "ns", {"metadata": {"name": "d"}, "spec": {"replicas": 1}})
    main = store.patch(
        DEP,
        "ns",
        "d",
        {"spec": {"replicas": 3}, "status": {"readyReplicas": 9}},
        content_type=MERGE,
    )
    assert main["status"] == {} and main["spec"]["replicas"] == 3
    st = store.patch(
        DEP,
        "ns",
        "d",
        {"spec": {"replicas": 5}, "status": {"readyReplicas": 3}},
        content_type=MERGE,
        subresource="status",
    )
    assert st["status"] == {"readyReplicas": 3} and st["spec"]["replicas"] == 3
    assert st["metadata"]["generation"] == main["metadata"]["generation"]


def test_optimistic_concurrency(store: Store) -> None:
    obj = store.create(DEP, "ns", {"metadata": {"name": "d"}, "spec": {}})
    rv = obj["metadata"]["resourceVersion"]
    store.patch(DEP, "ns", "d", {"spec": {"replicas": 3}}, content_type=MERGE)
    with pytest.raises(ApiError) as info:
        store.patch(
            DEP,
            "ns",
            "d",
            {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 2}},
            content_type=MERGE,
        )
    assert info.value.status == 409
    with pytest.raises(PatchError) as perr:
        store.patch(
            DEP,
            "ns",
            "d",
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
            ],
            content_type="application/json-patch+json",
        )
    assert perr.value.status == 422


def test_finalizers_delay_deletion(store: Store) -> None:
    store.create(DEP, "ns", {"metadata": {"name": "d", "finalizers": ["x/y"]}})
    marked = store.delete(DEP, "ns", "d")
    assert marked["metadata"]["deletionTimestamp"]
    assert store.get(DEP, "ns", "d")
    store.patch(DEP, "ns", "d", {"metadata": {"finalizers": None}}, content_type=MERGE)
    with pytest.raises(ApiError):
        store.get(DEP, "ns", "d")


def owned(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


def test_garbage_collection_cascades(store: Store) -> None:
    isvc = store.create(ISVC, "ns", {"metadata": {"name": "m"}, "spec": {}})
    dep = store.create(DEP, "ns", owned("d", isvc))
    store.create(CM, "ns", owned("c", isvc))
    store.create(("apps", "v1", "deployments"), "ns", owned("grandchild", dep))
    store.create(CM, "ns", {"metadata": {"name": "unrelated"}})
    store.delete(ISVC, "ns", "m")
    assert [o["metadata"]["name"] for o in store.list(CM, "ns")] == ["unrelated"]
    assert store.list(DEP, "ns") == []


def test_orphan_propagation_keeps_dependents(store: Store) -> None:
    isvc = store.create(ISVC, "ns", {"metadata": {"name": "m"}, "spec": {}})
    store.create(CM, "ns", owned("c", isvc))
    store.delete(ISVC, "ns", "m", options={"propagationPolicy": "Orphan"})
    assert len(store.list(CM, "ns")) == 1


def test_selectors(store: Store) -> None:
    for name, labels in [("a", {"env": "prod", "tier": "web"}), ("b", {"env": "dev"}), ("c", {})]:
        store.create(CM, "ns", {"metadata": {"name": name, "labels": labels}})
    names = lambda sel: sorted(o["metadata"]["name"] for o in store.list(CM, "ns", labels=sel))  # noqa: E731
    assert names("env=prod") == ["a"]
    assert names("env!=prod") == ["b", "c"]
    assert names("env in (prod, dev)") == ["a", "b"]
    assert names("env notin (prod)") == ["b", "c"]
    assert names("tier") == ["a"]
    assert names("!env") == ["c"]
    assert names("env=prod,tier=web") == ["a"]
    assert [o["metadata"]["name"] for o in store.list(CM, "ns", fields="metadata.name=b")] == ["b"]
    assert label_selector("")({"x": "y"})


def test_patch_formats() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}) == {
        "a": {"c": 2, "d": 3},
        "l": [2],
    }
    doc = {"a": [1, 2], "b": {"c": 1}}
    assert json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "remove", "path": "/b/c"},
            {"op": "replace", "path": "/b", "value": {"x": "~/"}},
            {"op": "copy", "from": "/a/0", "path": "/z"},
        ],
    ) == {"a": [1, 2, 3], "b": {"x": "~/"}, "z": 1}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])


def test_watch_resumes_from_a_resource_version_and_expires() -> None:
    store = Store(RESOURCE_TYPES, event_log_size=5)
    store.create(("", "v1", "namespaces"), None, {"metadata": {"name": "ns"}})
    first = store.create(CM, "ns", {"metadata": {"name": "c0"}})
    for i in range(1, 4):
        store.create(CM, "ns", {"metadata": {"name": f"c{i}"}})
    later = store.events_since(CM, int(first["metadata"]["resourceVersion"]))
    assert [e["object"]["metadata"]["name"] for e in later or []] == ["c1", "c2", "c3"]
    for i in range(4, 12):
        store.create(CM, "ns", {"metadata": {"name": f"c{i}"}})
    assert store.events_since(CM, int(first["metadata"]["resourceVersion"])) is None, "410 Gone"


def test_http_paths_kopf_uses(tmp_path: Any) -> None:
    with EmulatorThread() as em:
        kube = Kube(em.url)
        kube.create_namespace("web")
        names = [n["metadata"]["name"] for n in kube.list(("v1", "namespaces"), None)]
        assert {"default", "kube-system", "web"} <= set(names)
        assert (
            requests.get(f"{em.url}/api/v1/namespaces/web", timeout=5).json()["metadata"]["name"]
            == "web"
        )
        assert requests.get(f"{em.url}/api/v1", timeout=5).json()["groupVersion"] == "v1"
        resources = requests.get(f"{em.url}/apis/serving.kubeserve.dev/v1alpha1", timeout=5).json()[
            "resources"
        ]
        assert {"inferenceservices", "inferenceservices/status"} <= {r["name"] for r in resources}
        created = kube.create(DEPLOYMENTS, "web", {"metadata": {"name": "d"}, "spec": {}})
        stream = requests.get(
            f"{em.url}/apis/apps/v1/namespaces/web/deployments",
            params={
                "watch": "true",
                "resourceVersion": created["metadata"]["resourceVersion"],
                "timeoutSeconds": "2",
            },
            stream=True,
            timeout=10,
        )
        kube.patch(DEPLOYMENTS, "web", "d", {"spec": {"replicas": 2}})
        events = [json.loads(line) for line in stream.iter_lines() if line]
        assert [e["type"] for e in events] == ["MODIFIED"]
        missing = requests.get(f"{em.url}/apis/apps/v1/namespaces/web/deployments/nope", timeout=5)
        assert missing.status_code == 404 and missing.json()["kind"] == "Status"
        assert em.emulator.counts[("watch", "deployments")] == 1


def test_a_create_is_answered_201_created_and_the_other_calls_200() -> None:
    with EmulatorThread() as em:
        url = f"{em.url}/api/v1/namespaces/default/configmaps"
        created = requests.post(url, json={"metadata": {"name": "c"}}, timeout=5)
        assert created.status_code == 201 and created.json()["metadata"]["name"] == "c"
        assert requests.post(url, json={"metadata": {"name": "c"}}, timeout=5).status_code == 409
        patched = requests.patch(
            f"{url}/c",
            json={"data": {"k": "v"}},
            headers={"Content-Type": MERGE},
            timeout=5,
        )
        calls = [
            requests.get(url, timeout=5),
            requests.get(f"{url}/c", timeout=5),
            patched,
            requests.put(f"{url}/c", json=patched.json(), timeout=5),
            requests.delete(f"{url}/c", timeout=5),
        ]
        assert [c.status_code for c in calls] == [200] * 5


def test_faults_are_injected_on_matching_requests() -> None:
    from kubeserve.testing.emulator.server import Fault

    with EmulatorThread() as em:
        kube = Kube(em.url)
        em.emulator.faults.append(Fault(share=1.0, status=500, plurals=frozenset({"configmaps"})))
        with pytest.raises(requests.HTTPError) as info:
            kube.create(("v1", "configmaps"), "default", {"metadata": {"name": "c"}})
        assert info.value.response.status_code == 500
        assert kube.list(("v1", "configmaps"), "default") == [], "reads are not faulted by default"
        kube.create(DEPLOYMENTS, "default", {"metadata": {"name": "d"}, "spec": {}})
        em.emulator.faults[:] = [Fault(share=0.5, status=409)]
        codes = [
            kube.session.post(
                f"{em.url}/api/v1/namespaces/default/configmaps",
                json={"metadata": {"name": f"x{i}"}},
                timeout=5,
            ).status_code
            for i in range(40)
        ]
        assert 8 < codes.count(409) < 32 and 8 < codes.count(201) < 32


def test_lists_come_in_pages_from_one_snapshot() -> None:
    with EmulatorThread() as em:
        kube = Kube(em.url)
        kube.create_namespace("paged")
        for i in range(5):
            kube.create(("v1", "configmaps"), "paged", {"metadata": {"name": f"c{i}"}})
        url = f"{em.url}/api/v1/namespaces/paged/configmaps"
        first = requests.get(url, params={"limit": "2"}, timeout=5).json()
        assert [o["metadata"]["name"] for o in first["items"]] == ["c0", "c1"]
        assert first["metadata"]["remainingItemCount"] == 3
        # Changes after the first page do not show in the later ones: one snapshot.
        kube.patch(("v1", "configmaps"), "paged", "c3", {"data": {"late": "yes"}})
        kube.create(("v1", "configmaps"), "paged", {"metadata": {"name": "c9"}})
        pages, token = [first], first["metadata"]["continue"]
        while token:
            page = requests.get(url, params={"limit": "2", "continue": token}, timeout=5).json()
            pages.append(page)
            token = page["metadata"].get("continue")
        names = [o["metadata"]["name"] for p in pages for o in p["items"]]
        assert names == ["c0", "c1", "c2", "c3", "c4"]
        assert {p["metadata"]["resourceVersion"] for p in pages} == {
            first["metadata"]["resourceVersion"]
        }
        assert all("data" not in o for p in pages for o in p["items"])
        again = requests.get(
            url, params={"limit": "2", "continue": first["metadata"]["continue"]}, timeout=5
        )
        assert again.json()["items"] == pages[1]["items"], "a token can be used again"
        unknown = requests.get(url, params={"continue": "not-a-token"}, timeout=5)
        assert unknown.status_code == 410 and unknown.json()["reason"] == "Expired"
        bad = requests.get(url, params={"limit": "many"}, timeout=5)
        assert bad.status_code == 400 and "limit" in bad.json()["message"]
        everything = requests.get(url, timeout=5).json()
        assert len(everything["items"]) == 6 and "continue" not in everything["metadata"]
