"""The operator's own watch caches of children: paged listing, watch events, relists."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from kubeserve import cluster
from kubeserve.builders import meta
from kubeserve.controller import informer, packed
from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.kube_client import Kube, wait_for

CM = ("v1", "configmaps")
KIND = cluster.KINDS[("v1", "ConfigMap")]
OWNER = meta.ISVC_LABEL
MANAGED = "app.kubernetes.io/managed-by=kubeserve"


def labels(owner: str | None) -> dict[str, str]:
    found = {"app.kubernetes.io/managed-by": "kubeserve"}
    return {**found, OWNER: owner} if owner else found


def config_map(name: str, owner: str | None, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels(owner)}, "data": data}


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, event: str, obj: dict[str, Any]) -> None:
        with self.lock:
            self.seen.append((event, obj["metadata"]["name"]))


def test_lists_in_pages_then_follows_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer, "PAGE", 2)
    monkeypatch.setattr(informer, "WATCH_SECONDS", 1)  # the emulator waits for open streams
    with EmulatorThread() as em:
        kube = Kube(em.url)
        kube.create_namespace("ns")
        for i in range(5):
            kube.create(CM, "ns", config_map(f"a{i}", "a"))
        kube.create(CM, "ns", {"metadata": {"name": "foreign"}})
        configuration = kubernetes.client.Configuration()
        configuration.host = em.url
        api = cluster.Cluster(kubernetes.client.ApiClient(configuration))
        changes = Changes()
        watch = informer.Informer(api, KIND, "ns", labels=MANAGED, on_change=changes)
        watch.start()
        try:
            assert watch.synced.wait(10)
            assert sorted(n for n, _ in watch.children(("ns", "a"))) == [f"a{i}" for i in range(5)]
            assert em.emulator.counts[("list", "configmaps")] == 3, "5 objects in pages of 2"
            assert changes.seen == [], "the first listing is not news"
            kube.create(CM, "ns", config_map("b0", "b"))
            kube.patch(CM, "ns", "a1", {"data": {"x": "1"}})
            kube.delete(CM, "ns", "a2")
            wait_for(lambda: len(changes.seen) == 3, what="three watch events")
            assert changes.seen == [("ADDED", "b0"), ("MODIFIED", "a1"), ("DELETED", "a2")]
            assert [n for n, _ in watch.children(("ns", "b"))] == ["b0"]
            cached = dict(watch.children(("ns", "a")))
            assert "a2" not in cached and packed.unpack(cached["a1"])["data"] == {"x": "1"}
        finally:
            watch.stop()


class FakeApi:
    """Answers lists from a list of pages that the test changes between relists."""

    def __init__(self) -> None:
        self.objects: list[dict[str, Any]] = []

    def list_page(
        self, kind: cluster.Kind, namespace: str | None, **_: Any
    ) -> tuple[list[dict[str, Any]], str, str | None]:
        return [dict(o) for o in self.objects], "10", None

    def watch(self, *_: Any, **__: Any) -> Iterator[dict[str, Any]]:
        raise cluster.ApiError(410, "Expired", "too old")


def obj(name: str, rv: str, owner: str = "a") -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "resourceVersion": rv, "labels": labels(owner)}
    return {"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta}


def test_a_relist_tells_what_changed_and_what_is_gone() -> None:
    api = FakeApi()
    changes = Changes()
    watch = informer.Informer(
        api,  # type: ignore[arg-type]
        KIND,
        "ns",
        labels=MANAGED,
        on_change=changes,
    )
    api.objects = [obj("keep", "1"), obj("edit", "1"), obj("gone", "1")]
    watch._relist()
    watch.synced.set()
    assert changes.seen == []
    api.objects = [obj("keep", "1"), obj("edit", "2"), obj("new", "3", owner="b")]
    watch._relist()
    assert sorted(changes.seen) == [("ADDED", "new"), ("DELETED", "gone"), ("MODIFIED", "edit")]
    assert sorted(n for n, _ in watch.children(("ns", "a"))) == ["edit", "keep"]
    assert [n for n, _ in watch.children(("ns", "b"))] == ["new"]


class MissingKindApi(FakeApi):
    def list_page(self, *_: Any, **__: Any) -> tuple[list[dict[str, Any]], str, str | None]:
        raise cluster.ApiError(404, "NotFound", "the server could not find the requested resource")


def test_a_kind_the_cluster_does_not_serve_counts_as_empty_and_is_tried_again() -> None:
    watch = informer.Informer(
        MissingKindApi(),  # type: ignore[arg-type]
        cluster.KINDS[("gateway.networking.k8s.io/v1", "HTTPRoute")],
        None,
        labels=MANAGED,
        on_change=Changes(),
    )
    watch.start()
    try:
        assert watch.synced.wait(5), "no HTTPRoute CRD: nothing to wait for"
        assert watch.children(("ns", "a")) == []
    finally:
        watch.stop()


class ScriptedApi(FakeApi):
    """Lists `objects`; each watch plays the next script: events, then an error or an end."""

    def __init__(self, scripts: list[tuple[list[dict[str, Any]], Exception | None]]) -> None:
        super().__init__()
        self.scripts = scripts
        self.watched_from: list[str] = []

    def watch(self, *_: Any, resource_version: str, **__: Any) -> Iterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        events, error = self.scripts.pop(0) if self.scripts else ([], None)
        yield from events
        if error is not None:
            raise error


def informer_on(api: FakeApi, changes: Changes) -> informer.Informer:
    return informer.Informer(
        api,  # type: ignore[arg-type]
        KIND,
        "ns",
        labels=MANAGED,
        on_change=changes,
    )


def test_a_broken_watch_resumes_from_the_last_event_it_delivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(informer, "BACKOFF", (0.01,))
    broken = cluster.ApiError(503, "Unavailable", "connection reset")
    api = ScriptedApi(
        [
            (
                [
                    {"type": "ADDED", "object": obj("x", "11")},
                    {"type": "ADDED", "object": obj("y", "12")},
                ],
                broken,
            ),
            ([{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}}], broken),
        ]
    )
    changes = Changes()
    watch = informer_on(api, changes)
    watch.start()
    try:
        wait_for(lambda: len(api.watched_from) >= 3, what="three watches")
    finally:
        watch.stop()
    assert api.watched_from[:3] == ["10", "12", "20"], "never back to what was already seen"
    assert changes.seen == [("ADDED", "x"), ("ADDED", "y")]


def test_watches_that_end_at_once_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer, "BACKOFF", (0.2,))
    api = ScriptedApi([])
    watch = informer_on(api, Changes())
    watch.start()
    try:
        assert watch.synced.wait(5)
        time.sleep(0.5)
    finally:
        watch.stop()
    assert len(api.watched_from) <= 4, f"{len(api.watched_from)} watches in 0.5 s"


class SlowlyBreakingApi(ScriptedApi):
    """Every watch works a while, then its connection is cut; resumes may be refused 410."""

    def __init__(self, *, works: float, gone: bool) -> None:
        super().__init__([])
        self.works, self.gone = works, gone

    def watch(self, *_: Any, resource_version: str, **__: Any) -> Iterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        if self.gone and resource_version != "10":
            raise cluster.ApiError(410, "Expired", "too old")
        time.sleep(self.works)
        yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}}
        raise cluster.ApiError(503, "Unavailable", "Response ended prematurely")


@pytest.mark.parametrize("gone", [False, True], ids=["resumed", "gone-then-listed"])
def test_watches_that_worked_before_they_broke_come_back_soon_however_often(
    monkeypatch: pytest.MonkeyPatch, gone: bool
) -> None:
    monkeypatch.setattr(informer, "SHORTEST_WATCH", 0.05)
    monkeypatch.setattr(informer, "BACKOFF", (0.01, 5.0))
    api = SlowlyBreakingApi(works=0.06, gone=gone)
    watch = informer_on(api, Changes())
    watch.start()
    try:
        wait_for(lambda: len(api.watched_from) >= 6, timeout=2, what="six cut watches")
    finally:
        watch.stop()
    if gone:
        assert api.watched_from[:4] == ["10", "20", "10", "20"], "each 410 lists again at once"
    else:
        assert api.watched_from[:4] == ["10", "20", "20", "20"]


def test_a_child_relabelled_away_is_gone_for_its_old_owner() -> None:
    api = ScriptedApi([])
    changes = Changes()
    watch = informer_on(api, changes)
    api.objects = [obj("c", "1", owner="a")]
    watch._relist()
    watch.synced.set()
    seen: list[tuple[str, str | None]] = []
    watch._on_change = lambda event, o: seen.append((event, o["metadata"]["labels"].get(OWNER)))
    watch._put(obj("c", "2", owner="b"))
    assert seen == [("DELETED", "a")]
    assert watch.children(("ns", "a")) == [] and [n for n, _ in watch.children(("ns", "b"))] == [
        "c"
    ]


def test_a_kind_that_stops_being_served_empties_its_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer, "BACKOFF", (0.05,))
    gone = cluster.ApiError(404, "NotFound", "the server could not find the requested resource")
    api = ScriptedApi([([], gone)])
    api.objects = [obj("c", "1")]
    changes = Changes()
    watch = informer_on(api, changes)
    watch.start()
    try:
        wait_for(lambda: ("DELETED", "c") in changes.seen, what="the cached object reported gone")
    finally:
        watch.stop()
