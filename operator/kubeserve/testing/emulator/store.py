"""The emulated API server's object store: API-server semantics over indexed dicts.

Objects live in buckets per (resource, namespace), so a namespaced list or a fetch costs
the same with ten objects or ten thousand; owner references are indexed by owner uid, and
objects by their own uid, so garbage collection does not scan either.

Garbage collection plays kube-controller-manager's garbage collector with background
propagation (https://kubernetes.io/docs/concepts/architecture/garbage-collection/, and
pkg/controller/garbagecollector/garbagecollector.go attemptToDeleteItem): an object whose
owners are all absent is deleted; one that still has a live owner loses its references to
the absent ones. That holds whether its owners went before it or it was created (or updated)
naming owners that no longer exist, as a reconcile racing its owner's deletion does: that
create succeeds as it does on kube-apiserver, and the collector deletes the object a moment
later, at the store's next operation or when the server calls `collect_garbage`. Deleting
an owner collects its dependents within the delete.

Every write goes the way kube-apiserver's does: the object is defaulted and normalised
(`defaults.py`), the status subresource and the main resource each keep to their part,
`metadata.generation` follows the kind's rule, a stale `metadata.resourceVersion` is a 409,
a write that changes nothing changes nothing (not even the resourceVersion), and
`metadata.managedFields` records who set what (`managed_fields.py`).
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import datetime
import itertools
import random
import string
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from kubeserve.testing.emulator import allocation, defaults, managed_fields, patches, quantity
from kubeserve.testing.emulator.patches import clone

ResourceKey = tuple[str, str, str]  # group, version, plural
ObjectKey = tuple[ResourceKey, str | None, str]  # resource, namespace, name
Event = dict[str, Any]
# Who a write is recorded for when the caller names no one (direct calls on the Store).
DEFAULT_MANAGER = "emulator"
# Who the garbage collector's writes are recorded for (it removes orphans' owner references).
COLLECTOR_MANAGER = "kube-controller-manager"
# Metadata only the API server writes: kept from the stored object on every update.
_SYSTEM_METADATA = (
    "uid",
    "creationTimestamp",
    "namespace",
    "name",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
    "managedFields",
)
# pkg/registry/apps/deployment/strategy.go PrepareForUpdate: annotations are copied to the
# ReplicaSets, so changing them bumps a Deployment's generation as a spec change does.
_ANNOTATIONS_BUMP_GENERATION = {"Deployment"}
# Fields an update may not change (each kind's ValidateUpdate): apps/v1 Deployments keep
# their selector (pkg/registry/apps/deployment/strategy.go ValidateUpdate).
_IMMUTABLE: dict[str, tuple[tuple[str, ...], ...]] = {"Deployment": (("spec", "selector"),)}


class ApiError(Exception):
    """An error the API server answers with a Status object."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclasses.dataclass(frozen=True)
class ResourceType:
    """What the API server knows of a resource: enough for discovery and semantics."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    # Whether the kind has metadata.generation: 1 at create, bumped by spec changes
    # (built-in workloads and CRDs have it; Services, ConfigMaps and Pods before 1.33 do not).
    generation: bool = True
    # A CustomResourceDefinition's kind: every change outside metadata and status bumps the
    # generation, and an update (PUT) must name the resourceVersion it replaces.
    custom: bool = False

    @property
    def key(self) -> ResourceKey:
        return (self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _generation_changes(rtype: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Tell whether an update bumps metadata.generation (each kind's PrepareForUpdate)."""
    if not rtype.generation:
        return False
    if rtype.custom:
        # apiextensions-apiserver customresource strategy: all but metadata and status.
        ignored = {"metadata", "status"}
        return {k: v for k, v in new.items() if k not in ignored} != {
            k: v for k, v in old.items() if k not in ignored
        }
    if rtype.kind in _ANNOTATIONS_BUMP_GENERATION and old["metadata"].get("annotations") != new[
        "metadata"
    ].get("annotations"):
        return True
    return bool(old.get("spec") != new.get("spec"))


def _check_immutable(rtype: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
    for path in _IMMUTABLE.get(rtype.kind, ()):
        before: Any = old
        after: Any = new
        for part in path:
            before = before.get(part) if isinstance(before, dict) else None
            after = after.get(part) if isinstance(after, dict) else None
        if before != after:
            raise ApiError(
                422,
                "Invalid",
                f'{rtype.kind}.{rtype.group or "core"} "{new["metadata"]["name"]}" is invalid: '
                f"{'.'.join(path)}: Invalid value: {after!r}: field is immutable",
            )


def _normalise(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """Default and normalise `obj` in place; a quantity the API server cannot decode is a 400."""
    try:
        defaults.apply(rtype.kind, obj)
    except quantity.QuantityError as exc:
        raise ApiError(400, "BadRequest", str(exc)) from None


def _not_found(rtype: ResourceType, name: str) -> ApiError:
    what = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
    return ApiError(404, "NotFound", f'{what} "{name}" not found')


class Store:
    """Objects by resource and namespace, with the write semantics of kube-apiserver."""

    def __init__(self, types: list[ResourceType], *, event_log_size: int = 20000) -> None:
        self.types = {t.key: t for t in types}
        self._buckets: dict[tuple[ResourceKey, str | None], dict[str, dict[str, Any]]] = (
            collections.defaultdict(dict)
        )
        self._owned: dict[str, set[ObjectKey]] = collections.defaultdict(set)
        self._uids: dict[str, ObjectKey] = {}
        # Stored naming owners that do not exist: the garbage collector's next work.
        self._dangling: set[ObjectKey] = set()
        self._revision = itertools.count(1)
        self.revision = 0
        self._log: dict[ResourceKey, collections.deque[tuple[int, Event]]] = (
            collections.defaultdict(lambda: collections.deque(maxlen=event_log_size))
        )
        self._dropped_until: dict[ResourceKey, int] = collections.defaultdict(int)
        self.listeners: list[Callable[[ResourceKey, Event], None]] = []
        self._random = random.Random(0)
        self._cluster_ips = allocation.ClusterIPs()

    # Reading

    def rtype(self, key: ResourceKey) -> ResourceType:
        try:
            return self.types[key]
        except KeyError:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource {key}"
            ) from None

    def get(self, key: ResourceKey, namespace: str | None, name: str) -> dict[str, Any]:
        self.collect_garbage()
        return self._get(key, namespace, name)

    def _get(self, key: ResourceKey, namespace: str | None, name: str) -> dict[str, Any]:
        rtype = self.rtype(key)
        obj = self._buckets.get((key, namespace), {}).get(name)
        if obj is None:
            raise _not_found(rtype, name)
        return clone(obj)

    def list(
        self,
        key: ResourceKey,
        namespace: str | None,
        *,
        labels: str | None = None,
        fields: str | None = None,
    ) -> list[dict[str, Any]]:
        self.collect_garbage()
        self.rtype(key)
        match_labels, match_fields = patches.label_selector(labels), patches.field_selector(fields)
        return [
            clone(obj)
            for obj in self._objects(key, namespace)
            if match_labels(obj["metadata"].get("labels") or {}) and match_fields(obj)
        ]

    def _objects(self, key: ResourceKey, namespace: str | None) -> Iterator[dict[str, Any]]:
        if namespace is not None:
            yield from self._buckets.get((key, namespace), {}).values()
            return
        for (bucket_key, _), bucket in list(self._buckets.items()):
            if bucket_key == key:
                yield from bucket.values()

    def events_since(self, key: ResourceKey, revision: int) -> builtins.list[Event] | None:
        """Give the events after `revision`, or None when they are no longer kept (410 Gone)."""
        self.collect_garbage()
        if revision < self._dropped_until[key]:
            return None
        return [event for rev, event in self._log[key] if rev > revision]

    # Writing

    def create(
        self,
        key: ResourceKey,
        namespace: str | None,
        body: Any,
        *,
        manager: str = DEFAULT_MANAGER,
    ) -> dict[str, Any]:
        self.collect_garbage()
        rtype = self.rtype(key)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of a create must be an object")
        obj = clone(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if rtype.namespaced:
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the object does not match the namespace of the request",
                )
            if not self._exists(("", "v1", "namespaces"), None, namespace or ""):
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
            meta["namespace"] = namespace
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                )
            suffix = "".join(self._random.choices(string.ascii_lowercase + string.digits, k=5))
            meta["name"] = meta["generateName"] + suffix
        name = meta["name"]
        if self._exists(key, namespace if rtype.namespaced else None, name):
            what = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
            raise ApiError(409, "AlreadyExists", f'{what} "{name}" already exists')
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        if rtype.status_subresource:
            obj.pop("status", None)
        for field in ("deletionTimestamp", "resourceVersion", "generation", "managedFields"):
            meta.pop(field, None)
        _normalise(rtype, obj)
        if rtype.status_subresource and rtype.kind in defaults.INITIAL_STATUS:
            obj["status"] = defaults.INITIAL_STATUS[rtype.kind](obj)
        if rtype.kind == "Service":
            self._cluster_ips.assign(obj)
        now = _now()
        meta |= {"uid": str(uuid.uuid4()), "creationTimestamp": now}
        if rtype.generation:
            meta["generation"] = 1
        meta["managedFields"] = managed_fields.record(
            [],
            None,
            obj,
            manager=manager,
            subresource=None,
            status_apart=rtype.status_subresource,
            api_version=rtype.api_version,
            now=now,
        )
        return self._store(rtype, obj, "ADDED")

    def patch(
        self,
        key: ResourceKey,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        content_type: str,
        subresource: str | None = None,
        manager: str = DEFAULT_MANAGER,
    ) -> dict[str, Any]:
        self.collect_garbage()
        current = self._get(key, namespace, name)
        if content_type.startswith("application/json-patch+json"):
            patched = patches.json_patch(current, body)
        elif content_type.startswith(
            ("application/merge-patch+json", "application/strategic-merge-patch+json")
        ):
            # Strategic merge is served as a merge patch: kubeserve never relies on list merging.
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be an object")
            patched = patches.merge_patch(current, body)
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"the content type {content_type!r} is not supported"
            )
        # A patch that sets metadata.resourceVersion makes it a precondition, in any format.
        wanted_rv = (
            (patched.get("metadata") or {}).get("resourceVersion")
            if isinstance(patched, dict)
            else None
        )
        if wanted_rv is not None and wanted_rv != current["metadata"]["resourceVersion"]:
            raise self._conflict(key, name)
        return self._update(key, current, patched, subresource, manager)

    def replace(
        self,
        key: ResourceKey,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        manager: str = DEFAULT_MANAGER,
    ) -> dict[str, Any]:
        self.collect_garbage()
        rtype = self.rtype(key)
        current = self._get(key, namespace, name)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of a replace must be an object")
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is None and rtype.custom:
            # Custom resources allow no unconditional update (AllowUnconditionalUpdate false).
            raise ApiError(
                422,
                "Invalid",
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            )
        if wanted_rv is not None and wanted_rv != current["metadata"]["resourceVersion"]:
            raise self._conflict(key, name)
        return self._update(key, current, clone(body), subresource, manager)

    def delete(
        self,
        key: ResourceKey,
        namespace: str | None,
        name: str,
        *,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.collect_garbage()
        deleted = self._delete(key, namespace, name, options=options)
        self.collect_garbage()  # the dependents it leaves without an owner
        return deleted

    def collect_garbage(self) -> None:
        """Do the garbage collector's work: objects that name owners that do not exist.

        One whose owners are all absent is deleted (background propagation: its own
        dependents follow in this call); one with a live owner keeps only the live ones.
        """
        while self._dangling:
            found, self._dangling = self._dangling, set()
            for key, namespace, name in sorted(found, key=str):
                obj = self._buckets.get((key, namespace), {}).get(name)
                if obj is None:
                    continue
                refs = obj["metadata"].get("ownerReferences") or []
                live = [r for r in refs if self._exists_uid(r)]
                if not live:
                    self._delete(key, namespace, name)
                elif len(live) < len(refs):
                    self._set_owners(key, obj, live)

    def _delete(
        self,
        key: ResourceKey,
        namespace: str | None,
        name: str,
        *,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        rtype = self.rtype(key)
        current = self._get(key, namespace, name)
        options = options or {}
        uid = (options.get("preconditions") or {}).get("uid")
        if uid and uid != current["metadata"]["uid"]:
            raise self._conflict(key, name)
        if current["metadata"].get("finalizers"):
            if not current["metadata"].get("deletionTimestamp"):
                current["metadata"]["deletionTimestamp"] = _now()
                return self._store(rtype, current, "MODIFIED")
            return current
        self._remove(rtype, current, orphan=options.get("propagationPolicy") == "Orphan")
        return current

    # Internals

    def _conflict(self, key: ResourceKey, name: str) -> ApiError:
        rtype = self.rtype(key)
        what = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
        message = f'Operation cannot be fulfilled on {what} "{name}": the object has been modified'
        return ApiError(
            409,
            "Conflict",
            message + "; please apply your changes to the latest version and try again",
        )

    def _exists(self, key: ResourceKey, namespace: str | None, name: str) -> bool:
        return name in self._buckets.get((key, namespace), {})

    def _update(
        self,
        key: ResourceKey,
        current: dict[str, Any],
        patched: Any,
        subresource: str | None,
        manager: str,
    ) -> dict[str, Any]:
        rtype = self.rtype(key)
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise ApiError(422, "Invalid", "the patched object must keep its metadata")
        if subresource == "status" and rtype.status_subresource:
            new = clone(current)
            if "status" in patched:
                new["status"] = patched["status"]
            else:
                new.pop("status", None)
        elif subresource is not None:
            raise ApiError(404, "NotFound", f"the subresource {subresource!r} is not served")
        else:
            new = patched
            if rtype.status_subresource:
                if "status" in current:
                    new["status"] = current["status"]
                else:
                    new.pop("status", None)
        meta, old_meta = new["metadata"], current["metadata"]
        for field in _SYSTEM_METADATA:
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        # Decoding an update defaults it, as it does a create.
        _normalise(rtype, new)
        if rtype.kind == "Service" and subresource is None:
            try:
                self._cluster_ips.assign(new, current)
            except allocation.InvalidService as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
        if new == current:
            return current  # a no-op write changes nothing, not even the resourceVersion
        _check_immutable(rtype, current, new)
        if _generation_changes(rtype, current, new):
            meta["generation"] = old_meta.get("generation", 1) + 1
        meta["managedFields"] = managed_fields.record(
            old_meta.get("managedFields") or [],
            current,
            new,
            manager=manager,
            subresource=subresource,
            status_apart=rtype.status_subresource,
            api_version=rtype.api_version,
            now=_now(),
        )
        if not meta["managedFields"]:
            del meta["managedFields"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(rtype, new, orphan=False)
            return new
        return self._store(rtype, new, "MODIFIED")

    def _store(self, rtype: ResourceType, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        meta = obj["metadata"]
        self.revision = next(self._revision)
        meta["resourceVersion"] = str(self.revision)
        namespace = meta.get("namespace") if rtype.namespaced else None
        object_key: ObjectKey = (rtype.key, namespace, meta["name"])
        old = self._buckets[(rtype.key, namespace)].get(meta["name"])
        for ref in (old or {}).get("metadata", {}).get("ownerReferences") or []:
            self._owned[ref.get("uid", "")].discard(object_key)
        for ref in meta.get("ownerReferences") or []:
            self._owned[ref.get("uid", "")].add(object_key)
        self._buckets[(rtype.key, namespace)][meta["name"]] = obj
        self._uids[meta["uid"]] = object_key
        if not all(self._exists_uid(r) for r in meta.get("ownerReferences") or []):
            self._dangling.add(object_key)
        self._emit(rtype.key, {"type": kind, "object": clone(obj)})
        return clone(obj)

    def _remove(self, rtype: ResourceType, obj: dict[str, Any], *, orphan: bool) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") if rtype.namespaced else None
        self._buckets[(rtype.key, namespace)].pop(meta["name"], None)
        self._uids.pop(meta["uid"], None)
        for ref in meta.get("ownerReferences") or []:
            self._owned[ref.get("uid", "")].discard((rtype.key, namespace, meta["name"]))
        self.revision = next(self._revision)
        gone = clone(obj)
        gone["metadata"]["resourceVersion"] = str(self.revision)
        self._emit(rtype.key, {"type": "DELETED", "object": gone})
        dependents = self._owned.pop(meta["uid"], set())
        if not orphan:
            self._dangling |= dependents
            return
        # Orphan propagation: the garbage collector's orphanDependents (garbagecollector.go)
        # takes the owner out of its dependents' references before the owner goes, so they
        # stay and name no owner that does not exist.
        for key, namespace, name in sorted(dependents, key=str):
            dependent = self._buckets.get((key, namespace), {}).get(name)
            if dependent is not None:
                refs = dependent["metadata"].get("ownerReferences") or []
                self._set_owners(key, dependent, [r for r in refs if r.get("uid") != meta["uid"]])

    def _set_owners(self, key: ResourceKey, obj: dict[str, Any], refs: builtins.list[Any]) -> None:
        """Write `obj` with these owner references only, as the garbage collector patches it."""
        new = clone(obj)
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        self._update(key, clone(obj), new, None, COLLECTOR_MANAGER)

    def _exists_uid(self, ref: Any) -> bool:
        """Tell whether the owner an owner reference names by uid exists."""
        uid = ref.get("uid") if isinstance(ref, dict) else None
        return isinstance(uid, str) and uid in self._uids

    def _emit(self, key: ResourceKey, event: Event) -> None:
        log = self._log[key]
        if len(log) == log.maxlen:
            self._dropped_until[key] = log[0][0]
        log.append((self.revision, event))
        for listener in list(self.listeners):
            listener(key, event)
