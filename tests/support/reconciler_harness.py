"""An InferenceService "digits" in an in-memory API, and a Reconciler that reads caches of it.

`FakeCluster` makes the `Cluster` calls the reconciler makes, on objects kept in a dict;
`Harness` puts one InferenceService in one and reconciles it as the operator would.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any, cast

from kubeserve import cluster
from kubeserve.api import validation
from kubeserve.builders.config import BuildConfig
from kubeserve.controller import informer, packed, reconcile, status, work
from kubeserve.controller.work import ChildKey
from kubeserve.testing.emulator import patches
from support import specs

NAMESPACE, NAME = "default", "digits"
OWNER = (NAMESPACE, NAME)
ISVC = cluster.INFERENCE_SERVICE.kind
# Children of "digits" with variants v1 and v2: (kind, name).
V1 = ("Deployment", "digits-v1")
V1_SERVICE = ("Service", "digits-v1")
V2 = ("Deployment", "digits-v2")
V2_SERVICE = ("Service", "digits-v2")
ROUTER = ("Deployment", "digits-router")
ROUTER_CONFIG = ("ConfigMap", "digits-router")
ENDPOINT = ("Service", "digits")
Key = tuple[str, str | None, str]  # kind, namespace, name

merge_patch = patches.merge_patch


class FakeCluster:
    """The `Cluster` calls the reconciler makes, on objects kept in a dict.

    Like the API server: resourceVersions grow with every write, uids are given at creation,
    a create of a taken name is AlreadyExists, reads and writes of a missing object answer
    None, a status patch changes only the status. `failures` are raised by the next calls.
    """

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []  # verb, kind, name
        self.patches: list[tuple[ChildKey, dict[str, Any]]] = []
        self.failures: list[cluster.ApiError] = []
        self.on_create: Callable[[], None] = lambda: None  # runs as a create is sent
        self._revisions = itertools.count(1)
        self._uids = itertools.count(1)

    def _called(self, verb: str, kind: str, name: str) -> None:
        self.calls.append((verb, kind, name))
        if self.failures:
            raise self.failures.pop(0)

    def writes(self) -> list[tuple[str, str, str]]:
        """Every call but the reads, in order."""
        return [call for call in self.calls if call[0] != "get"]

    def _stored(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self._revisions))
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def get(self, kind: cluster.Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        self._called("get", kind.kind, name)
        found = self.objects.get((kind.kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        cluster.kind_of(obj)  # only kinds the real client knows
        metadata = obj["metadata"]
        self._called("create", obj["kind"], metadata["name"])
        self.on_create()
        key = (obj["kind"], metadata.get("namespace"), metadata["name"])
        if key in self.objects:
            raise cluster.AlreadyExists(409, "AlreadyExists", f"{metadata['name']} exists")
        stored = copy.deepcopy(obj)
        stored["metadata"].update(uid=f"uid-{next(self._uids)}", generation=1)
        return self._stored(key, stored)

    def patch(
        self,
        kind: cluster.Kind,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        self._called("patch-status" if subresource == "status" else "patch", kind.kind, name)
        self.patches.append(((kind.kind, name), copy.deepcopy(patch)))
        key = (kind.kind, namespace, name)
        if key not in self.objects:
            return None
        before = self.objects[key]
        if subresource == "status":
            patch = {"status": patch.get("status")}
        after = merge_patch(before, patch)
        if after.get("spec") != before.get("spec"):
            after["metadata"]["generation"] = before["metadata"].get("generation", 1) + 1
        return self._stored(key, after)

    def delete(
        self, kind: cluster.Kind, namespace: str | None, name: str, *, uid: str | None = None
    ) -> bool:
        self._called("delete", kind.kind, name)
        found = self.objects.get((kind.kind, namespace, name))
        if found is None:
            return False
        if uid and found["metadata"]["uid"] != uid:
            raise cluster.ApiError(409, "Conflict", "precondition failed: uid")
        del self.objects[(kind.kind, namespace, name)]
        return True

    # What a person (or another controller) does, behind the reconciler's back.

    def edit(self, key: ChildKey, change: dict[str, Any]) -> None:
        stored = (key[0], NAMESPACE, key[1])
        self._stored(stored, merge_patch(self.objects[stored], change))

    def remove(self, kind: str, name: str) -> None:
        del self.objects[(kind, NAMESPACE, name)]

    def respec(self, kind: str, name: str, spec: dict[str, Any]) -> None:
        """Replace an object's spec, as `kubectl apply` of a new manifest does."""
        stored = copy.deepcopy(self.objects[(kind, NAMESPACE, name)])
        stored["spec"] = copy.deepcopy(spec)
        stored["metadata"]["generation"] += 1
        self._stored((kind, NAMESPACE, name), stored)

    def child(self, key: ChildKey) -> dict[str, Any]:
        return self.objects[(key[0], NAMESPACE, key[1])]


class Harness:
    """One InferenceService in a FakeCluster, and a Reconciler that reads caches of it."""

    def __init__(self, body: dict[str, Any] | None = None) -> None:
        self.api = FakeCluster()
        self.reconciler = reconcile.Reconciler(cast(cluster.Cluster, self.api), BuildConfig())
        self.api.create(body or specs.isvc(name=NAME, namespace=NAMESPACE))
        self.api.calls.clear()

    def body(self) -> dict[str, Any]:
        """The InferenceService as kopf's index holds it."""
        return copy.deepcopy(self.api.objects[(ISVC, NAMESPACE, NAME)])

    def caches(self) -> reconcile.Observed:
        """What up-to-date informers would hold for the InferenceService."""
        found: dict[ChildKey, dict[str, Any]] = {}
        for (kind, _, name), obj in self.api.objects.items():
            if kind != ISVC and informer.owner_of(obj) == OWNER:
                found[(kind, name)] = copy.deepcopy(obj)
        return reconcile.Observed(children=packed.JsonObjects(found))

    def run(
        self,
        todo: work.Work,
        observed: reconcile.Observed | None = None,
        body: dict[str, Any] | None = None,
    ) -> reconcile.Outcome:
        """Do `todo`, by default with caches that have seen every event so far."""
        if observed is None:
            self.catch_up()
        self.api.calls.clear()
        seen = self.caches() if observed is None else observed
        return self.reconciler.reconcile(body or self.body(), lambda: seen, todo)

    def catch_up(self) -> None:
        """Deliver the watch events of every object there is, as the informers would."""
        for (kind, namespace, name), obj in self.api.objects.items():
            self.reconciler.overlay.observe(kind, namespace, name, copy.deepcopy(obj))

    def remove(self, key: ChildKey) -> None:
        """Delete an object behind the reconciler's back; the informers tell the overlay."""
        self.api.remove(*key)
        self.reconciler.overlay.observe(key[0], NAMESPACE, key[1], None)

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.body().get("status") or {}
        return found

    def computed_status(self) -> dict[str, Any]:
        """The status the children say, computed afresh from the stored status."""
        body = self.body()
        return status.compute(
            validation.parse(body),
            dict(self.caches().children),
            {},
            body.get("status") or {},
            now="not-a-time-any-condition-changed",
        )

    def all_ready(self) -> None:
        """Report every Deployment there is as ready."""
        for kind, _, name in list(self.api.objects):
            if kind == "Deployment":
                self.ready((kind, name))

    def ready(self, key: ChildKey) -> None:
        """Do what the Deployment controller does once every replica is ready."""
        deployment = self.api.child(key)
        replicas = deployment["spec"].get("replicas", 1)
        self.api.edit(
            key,
            {
                "status": {
                    "observedGeneration": deployment["metadata"]["generation"],
                    "replicas": replicas,
                    "readyReplicas": replicas,
                    "updatedReplicas": replicas,
                    "conditions": [{"type": "Available", "status": "True"}],
                }
            },
        )
