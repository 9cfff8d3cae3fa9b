"""One level-based reconcile for create, update, resume, resync and child events.

Desired children come from the pure builders; actual children from the operator's watch
caches (see `informer`) overlaid with the answers to our own writes, so a steady state costs no
API calls at all and an unchanged InferenceService is never written to. Every write goes
through `kubeserve.cluster`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import kopf

from kubeserve import cluster
from kubeserve.api import spec, validation
from kubeserve.api.errors import SpecError
from kubeserve.builders import children, meta
from kubeserve.builders.config import BuildConfig
from kubeserve.controller import diff, status

logger = logging.getLogger(__name__)

ChildKey = tuple[str, str]  # kind, name (the namespace is the InferenceService's)
ISVC_KIND = cluster.INFERENCE_SERVICE


class JsonObjects(MutableMapping[ChildKey, dict[str, Any]]):
    """Objects kept packed (see `pack`) and decoded on first access.

    The watch caches and the desired state hold thousands of objects; packed, they take a
    fortieth of the memory of nested dicts, and a reconcile decodes only the few it looks at.
    """

    def __init__(self, items: Mapping[ChildKey, bytes | dict[str, Any]] | None = None) -> None:
        self._items: dict[ChildKey, bytes | dict[str, Any]] = dict(items or {})

    def __getitem__(self, key: ChildKey) -> dict[str, Any]:
        value = self._items[key]
        if isinstance(value, bytes):
            value = self._items[key] = unpack(value)
        return value

    def __setitem__(self, key: ChildKey, value: dict[str, Any]) -> None:
        self._items[key] = value

    def __delitem__(self, key: ChildKey) -> None:
        del self._items[key]

    def __iter__(self) -> Iterator[ChildKey]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def pack(obj: Mapping[str, Any]) -> bytes:
    """Serialise an object compactly for the caches: compressed compact JSON.

    Objects of one kind repeat their keys and labels, so even the fastest zlib level keeps
    about a third of the text (a Deployment: 3.4 kB of JSON, 1.1 kB packed), for tens of
    microseconds per object.
    """
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 1)


def unpack(data: bytes) -> dict[str, Any]:
    """Give back an object that `pack` packed."""
    unpacked: dict[str, Any] = json.loads(zlib.decompress(data))
    return unpacked


@dataclasses.dataclass
class Observed:
    """What the watch caches hold for one InferenceService."""

    children: MutableMapping[ChildKey, dict[str, Any]] = dataclasses.field(
        default_factory=JsonObjects
    )
    pods: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    # Kinds the operator was not set up to manage (HTTPRoute unless --gateway-api): children
    # of these kinds are not applied, and the status says why.
    unmanaged_kinds: frozenset[str] = frozenset()


@dataclasses.dataclass
class Outcome:
    """What a reconcile did, for logs, metrics and tests."""

    created: list[ChildKey] = dataclasses.field(default_factory=list)
    patched: list[ChildKey] = dataclasses.field(default_factory=list)
    deleted: list[ChildKey] = dataclasses.field(default_factory=list)
    conflicts: list[str] = dataclasses.field(default_factory=list)
    invalid: list[str] = dataclasses.field(default_factory=list)
    status_written: bool = False
    status_deferred: bool = False
    ready: bool = False


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _revision(obj: Mapping[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", ""))
    except ValueError:
        return -1


def controlled_by(obj: Mapping[str, Any], uid: str | None) -> bool | None:
    """Tell whether `obj` is controlled by `uid`: True, False (someone else), None (nobody)."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return bool(uid) and ref.get("uid") == uid
    return None


class Reconciler:
    """Holds the write-through overlay and the per-InferenceService locks; thread-safe."""

    def __init__(self, api: cluster.Cluster, config: BuildConfig) -> None:
        self._api = api
        self._config = config
        self._settle = 0.0
        self._defer: Callable[[str | None, str, float], None] | None = None
        self._last_status: dict[tuple[str | None, str], float] = {}
        self._deferred: set[tuple[str | None, str]] = set()
        # (revision, JSON text): a burst of creates would otherwise hold thousands of dicts.
        self._written: dict[tuple[str, str | None, str], tuple[int, bytes]] = {}
        self._locks: dict[tuple[str | None, str], threading.Lock] = {}
        self._guard = threading.Lock()
        # uid -> (generation, parsed spec, packed desired children): one generation each.
        self._desired: dict[str, tuple[int, spec.InferenceService, dict[ChildKey, bytes]]] = {}

    def settle_status(
        self, seconds: float, defer: Callable[[str | None, str, float], None]
    ) -> None:
        """Write status changes that follow one another within `seconds` once.

        Three Deployments becoming available one after the other would otherwise be three
        status writes (and three events for every watcher). `defer(namespace, name, delay)`
        must reconcile that InferenceService's status again, with `settle=False`, after `delay`.
        """
        self._settle, self._defer = seconds, defer

    # The overlay: answers to our own writes, until the watch cache has caught up with them.

    def observe(
        self, kind: str, namespace: str | None, name: str, obj: Mapping[str, Any] | None
    ) -> bool:
        """Tell the overlay what a watch event said; it drops what the event supersedes.

        True when the event shows the object exactly as our own last write left it.
        """
        key = (kind, namespace, name)
        with self._guard:
            written = self._written.get(key)
            if written is not None and (obj is None or _revision(obj) >= written[0]):
                del self._written[key]
                return obj is not None and written[0] >= 0 and _revision(obj) == written[0]
        return False

    def _current(
        self, kind: str, namespace: str | None, name: str, cached: Mapping[str, Any] | None
    ) -> Mapping[str, Any] | None:
        written = self._written.get((kind, namespace, name))
        if written is not None and written[0] > _revision(cached):
            return unpack(written[1])
        return cached

    def _remember(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata", {})
        entry = (_revision(obj), pack(obj))
        with self._guard:
            self._written[(obj["kind"], meta.get("namespace"), meta["name"])] = entry

    def _lock(self, namespace: str | None, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str | None, name: str, uid: str | None) -> None:
        """Drop what is kept for a deleted InferenceService."""
        with self._guard:
            self._locks.pop((namespace, name), None)
            self._last_status.pop((namespace, name), None)
            self._deferred.discard((namespace, name))
            self._desired.pop(uid or "", None)

    # Desired state, built once per generation.

    def desired(self, body: Mapping[str, Any]) -> tuple[spec.InferenceService, JsonObjects]:
        """Parse and build the desired children, by (kind, name) in apply order.

        Built once per generation and kept as text; raises SpecError when the spec is refused.
        """
        meta = body.get("metadata", {})
        uid, generation = meta.get("uid", ""), meta.get("generation") or 0
        cached = self._desired.get(uid) if uid and generation else None
        if cached is not None and cached[0] == generation:
            return cached[1], JsonObjects(cached[2])
        isvc = validation.parse(dict(body))
        objects = children.build_children(isvc, self._config)
        owner = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": dict(meta),
        }
        kopf.append_owner_reference(objects, owner=kopf.Body(owner))  # type: ignore[arg-type]
        texts = {(o["kind"], o["metadata"]["name"]): pack(o) for o in objects}
        with self._guard:
            if uid and generation:
                # One generation per InferenceService: older ones are never asked again.
                self._desired[uid] = (generation, isvc, texts)
        return isvc, JsonObjects({(o["kind"], o["metadata"]["name"]): o for o in objects})

    # The reconcile.

    def reconcile(
        self,
        body: Mapping[str, Any],
        observe: Callable[[], Observed],
        *,
        only: Iterable[ChildKey] | None = None,
        settle: bool = True,
    ) -> Outcome:
        """Bring the children of one InferenceService to their desired state, then its status.

        `observe` reads the watch caches; it is called once the InferenceService's lock is
        held, so the reconcile sees every write of the reconcile that held it before.
        """
        meta = body.get("metadata", {})
        with self._lock(meta.get("namespace"), meta.get("name", "")):
            # Our own last status write may be newer than the cache's copy of the resource.
            latest = self._current(
                ISVC_KIND.kind, meta.get("namespace"), meta.get("name", ""), body
            )
            return self._reconcile(
                latest or body, observe(), None if only is None else set(only), settle=settle
            )

    def _reconcile(
        self,
        body: Mapping[str, Any],
        observed: Observed,
        only: set[ChildKey] | None,
        *,
        settle: bool,
    ) -> Outcome:
        outcome = Outcome()
        meta = body.get("metadata", {})
        namespace, uid = meta.get("namespace"), meta.get("uid")
        if meta.get("deletionTimestamp"):
            # Being deleted: garbage collection removes the children; putting back one it has
            # just removed would only make it do that again.
            return outcome
        previous = dict(body.get("status") or {})
        try:
            isvc, desired = self.desired(body)
        except SpecError as exc:
            outcome.invalid = [str(e) for e in exc.errors]
            new_status = status.invalid(
                outcome.invalid,
                previous,
                generation=meta.get("generation"),
                now=_now(),
                reason="InvalidSpec",
            )
            outcome.status_written = self._write_status(body, previous, new_status)
            return outcome

        if only is not None and self._owner_gone(body, desired, observed, only):
            return outcome
        current: dict[ChildKey, Mapping[str, Any]] = {}
        for key in desired:
            if key[0] in observed.unmanaged_kinds:
                continue
            if only is not None and key not in only:
                # Not this event's child: only what the status reads is looked at.
                if key[0] in status.STATUS_KINDS:
                    actual = self._current(key[0], namespace, key[1], observed.children.get(key))
                    if actual is not None:
                        current[key] = actual
                continue
            actual = self._current(key[0], namespace, key[1], observed.children.get(key))
            result = self._apply(desired[key], actual, uid, outcome)
            if result is not None:
                current[key] = result
        if only is None:
            self._prune(observed, set(desired), namespace, uid, outcome)

        if (
            only
            and not outcome.conflicts
            and all(kind not in status.STATUS_KINDS for kind, _ in only)
        ):
            return outcome  # the status reads nothing of what this event was about
        if outcome.conflicts:
            new_status = status.invalid(
                outcome.conflicts,
                previous,
                generation=meta.get("generation"),
                now=_now(),
                reason="NameConflict",
            )
        else:
            new_status = status.compute(
                isvc,
                current,
                observed.pods,
                previous,
                now=_now(),
                cluster_domain=self._config.cluster_domain,
                unmanaged_kinds=observed.unmanaged_kinds,
            )
        outcome.ready = any(
            c["type"] == status.READY and c["status"] == "True"
            for c in new_status.get("conditions", [])
        )
        if settle and only is not None and self._defer_status(meta, previous, new_status):
            outcome.status_deferred = True
            return outcome
        outcome.status_written = self._write_status(body, previous, new_status)
        return outcome

    def _owner_gone(
        self,
        body: Mapping[str, Any],
        desired: Mapping[ChildKey, Any],
        observed: Observed,
        only: set[ChildKey],
    ) -> bool:
        """Tell, before a child event makes us create a child, whether its owner is gone.

        Deleting an InferenceService deletes its children (garbage collection), and their
        deletion events can come before the InferenceService's own: putting them back would
        leave objects whose owner no longer exists. Asking costs one read, and only when a
        child is missing (a rare repair).
        """
        meta = body.get("metadata", {})
        missing = [
            key
            for key in only
            if key in desired
            and key[0] not in observed.unmanaged_kinds
            and self._current(key[0], meta.get("namespace"), key[1], observed.children.get(key))
            is None
        ]
        if not missing:
            return False
        live = self._api.get(ISVC_KIND, meta.get("namespace"), meta.get("name", ""))
        live_meta = (live or {}).get("metadata", {})
        return (
            live is None
            or live_meta.get("uid") != meta.get("uid")
            or bool(live_meta.get("deletionTimestamp"))
        )

    def _defer_status(
        self, meta: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any]
    ) -> bool:
        """Put off a status write that follows the last one closely; True when put off."""
        if self._defer is None or self._settle <= 0 or status.same_status(previous, new):
            return False
        key = (meta.get("namespace"), meta.get("name", ""))
        since = time.monotonic() - self._last_status.get(key, -self._settle)
        if since >= self._settle:
            return False
        with self._guard:
            first = key not in self._deferred
            self._deferred.add(key)
        if first:
            self._defer(key[0], key[1], self._settle - since)
        return True

    def _apply(
        self,
        desired: dict[str, Any],
        actual: Mapping[str, Any] | None,
        uid: str | None,
        outcome: Outcome,
    ) -> dict[str, Any] | None:
        kind = cluster.kind_of(desired)
        meta = desired["metadata"]
        key = (desired["kind"], meta["name"])
        if actual is None:
            try:
                created = self._api.create(diff.with_applied_annotation(desired))
            except cluster.AlreadyExists:
                # Our cache had not seen it yet (or someone else made it): read, then compare.
                actual = self._api.get(kind, meta.get("namespace"), meta["name"])
                if actual is None:
                    raise
            else:
                self._remember(created)
                outcome.created.append(key)
                return created
        owner = controlled_by(actual, uid)
        if owner is False or (owner is None and not _ours(actual)):
            outcome.conflicts.append(
                f"{desired['kind']} {meta['name']} already exists and is not owned by this InferenceService"
            )
            return None
        patch = diff.patch_for(desired, actual)
        if patch is None:
            return dict(actual)
        patched = self._api.patch(kind, meta.get("namespace"), meta["name"], patch)
        if patched is None:  # deleted between our read and our write: create it again
            patched = self._api.create(diff.with_applied_annotation(desired))
            outcome.created.append(key)
        else:
            outcome.patched.append(key)
        self._remember(patched)
        return patched

    def _prune(
        self,
        observed: Observed,
        wanted: set[ChildKey],
        namespace: str | None,
        uid: str | None,
        outcome: Outcome,
    ) -> None:
        for key in sorted(k for k in observed.children if k not in wanted):
            obj = observed.children[key]
            if not controlled_by(obj, uid):
                continue
            kind = cluster.KINDS[(obj["apiVersion"], obj["kind"])]
            self._api.delete(kind, namespace, key[1], uid=obj["metadata"].get("uid"))
            self.observe(key[0], namespace, key[1], None)
            outcome.deleted.append(key)

    def _write_status(
        self, body: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any]
    ) -> bool:
        if status.same_status(previous, new):
            return False
        meta = body.get("metadata", {})
        # The whole status replaces the old one: nulls remove what the new one no longer has.
        patch = {"status": {**{k: None for k in previous if k not in new}, **new}}
        written = self._api.patch(
            ISVC_KIND, meta.get("namespace"), meta["name"], patch, subresource="status"
        )
        if written is not None:
            self._remember(written)
        key = (meta.get("namespace"), meta["name"])
        with self._guard:
            self._last_status[key] = time.monotonic()
            self._deferred.discard(key)
        return True


def _ours(obj: Mapping[str, Any]) -> bool:
    """Tell whether an unowned object carries our management label (e.g. orphaned by a restore)."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by") == meta.MANAGED_BY


def summarise(outcome: Outcome) -> str:
    """Say in one line what a reconcile changed."""
    parts = [
        f"{what} {', '.join('/'.join(k) for k in keys)}"
        for what, keys in (
            ("created", outcome.created),
            ("patched", outcome.patched),
            ("deleted", outcome.deleted),
        )
        if keys
    ]
    return "; ".join(parts) or "no change"


def pods_by_variant(pods: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group pod snapshots by their variant label."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p in pods:
        variant = (p.get("metadata", {}).get("labels") or {}).get(meta.VARIANT_LABEL)
        if variant:
            out.setdefault(variant, []).append(dict(p))
    return out
