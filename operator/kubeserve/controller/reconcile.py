"""One level-based reconcile for create, update, resume, resync and child events.

Desired children come from the pure builders; actual children from the operator's watch
caches (see `informer`) overlaid with the answers to our own writes (see `overlay`), so a
steady state costs no API calls at all and an unchanged InferenceService is never written to.
What to do comes as a `work.Work`; status changes close together are written once (see
`settle`). Every write goes through `kubeserve.cluster`.

With spec.rollout the children and the status are built from the live split, not the spec's
weights (see `rollouts`); a look that moves the rollout writes status.rollout before the
children follow it, so an operator killed between the two carries the router on to the split
status says instead of undoing it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import threading
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import kopf

from kubeserve import cluster
from kubeserve.api import spec, validation
from kubeserve.api.errors import SpecError
from kubeserve.builders import children, endpoint, meta
from kubeserve.builders.config import BuildConfig
from kubeserve.controller import diff, merge_patch, overlay, packed, rollouts, settle, status, work
from kubeserve.controller.work import ChildKey
from kubeserve.experiment import look
from kubeserve.rollout import decide, steps
from kubeserve.rollout import look as rollout_look

ISVC_KIND = cluster.INFERENCE_SERVICE
# How many deleted InferenceServices are remembered, to create no child for them (see
# `Reconciler._deleted_uid`); one forgotten costs a read per resync if kopf's index kept it.
DELETED_KEPT = 4096
# The Events posted as Warnings (the rest are Normal): the experiment's and the rollout's.
WARNING_REASONS = look.WARNING_REASONS | decide.WARNING_REASONS


@dataclasses.dataclass
class Observed:
    """What the watch caches hold for one InferenceService."""

    children: MutableMapping[ChildKey, dict[str, Any]] = dataclasses.field(
        default_factory=packed.JsonObjects
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
    # The experiment: how often to collect it (None: no experiment to collect), the variants
    # whose pods are read; the same for the rollout (None: no rollout counting now); and the
    # Events the status change asks for (reason, message).
    collect_every: float | None = None
    collect_variants: tuple[str, ...] = ()
    rollout_every: float | None = None
    rollout_variants: tuple[str, ...] = ()
    events: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def experiment_status(
    isvc: spec.InferenceService,
    previous: Mapping[str, Any],
    new_status: dict[str, Any],
    collected: work.Readings | None,
    outcome: Outcome,
) -> dict[str, Any]:
    """Give the status with the experiment's part: a look at what was collected, or none.

    An experiment that starts (or starts again: its spec or the variants changed) gets its
    first look at once, reading nothing, so that its startTime is the change's time.
    """
    experiment = isvc.spec.experiment
    if experiment is None:
        return look.without_experiment(new_status) if "experiment" in new_status else new_status
    if collected is None and not look.starts_again(isvc, previous):
        return new_status
    result = look.look(
        isvc,
        previous,
        collected.pods if collected is not None else None,
        datetime.datetime.now(tz=datetime.UTC),
        totals=collected.totals if collected is not None else None,
    )
    outcome.events += result.events
    return result.apply(new_status)


def controlled_by(obj: Mapping[str, Any], uid: str | None) -> bool | None:
    """Tell whether `obj` is controlled by `uid`: True, False (someone else), None (nobody)."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return bool(uid) and ref.get("uid") == uid
    return None


class Reconciler:
    """Reconciles InferenceServices from any thread; thread-safe.

    Composed of the write overlay (`overlay`), the status settling (`settle`) and the desired
    state, built once per generation; a lock per InferenceService keeps two threads from
    reconciling the same one at once.
    """

    def __init__(self, api: cluster.Cluster, config: BuildConfig) -> None:
        self._api = api
        self._config = config
        self.overlay = overlay.WriteOverlay()
        self._settling = settle.StatusSettling()
        self._locks: dict[tuple[str | None, str], threading.Lock] = {}
        self._guard = threading.Lock()
        # uid -> the parsed spec and its packed desired children: one generation (and one
        # live split) each.
        self._desired: dict[str, _Built] = {}
        # (namespace, name) -> the `seq` of the last collection whose rollout look was taken:
        # work tried again after a failure must not look again (a failed check counts per look).
        self._looked: dict[tuple[str | None, str], int] = {}
        # The uids of the latest InferenceServices known deleted, oldest first.
        self._deleted: collections.OrderedDict[str, None] = collections.OrderedDict()

    def settle_status(self, seconds: float, defer: settle.Defer) -> None:
        """Write status changes that follow one another within `seconds` once (see `settle`).

        `defer(owner, delay)` must do `work.RefreshStatus(settled=True)` for that
        InferenceService after `delay`.
        """
        self._settling = settle.StatusSettling(seconds, defer)

    def _lock(self, namespace: str | None, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str | None, name: str, uid: str | None) -> None:
        """Drop what is kept for a deleted InferenceService, and create no more children for it."""
        with self._guard:
            self._locks.pop((namespace, name), None)
            self._looked.pop((namespace, name), None)
        self._settling.forget((namespace, name))
        self._deleted_uid(uid)

    def _deleted_uid(self, uid: str | None) -> None:
        """Note that the InferenceService `uid` no longer exists: create no child for it again.

        Garbage collection deletes the children there are when their owner goes; a reconcile
        still running then, or started from an index that has not caught up (or never will:
        kopf sees no deletion that fell between a watch and the list after a 410 Gone), would
        create the rest, each one an object that starts pods until the collector finds it.
        """
        if not uid:
            return
        with self._guard:
            self._desired.pop(uid, None)
            self._deleted[uid] = None
            while len(self._deleted) > DELETED_KEPT:
                self._deleted.popitem(last=False)

    def _seen_deleted(self, uid: str | None) -> bool:
        with self._guard:
            return bool(uid) and uid in self._deleted

    # Desired state, built once per generation (and live split).

    def parse(self, body: Mapping[str, Any]) -> spec.InferenceService:
        """Parse the InferenceService, once per generation; raises SpecError when it is refused."""
        meta = body.get("metadata", {})
        uid, generation = meta.get("uid", ""), meta.get("generation") or 0
        cached = self._desired.get(uid) if uid and generation else None
        if cached is not None and cached.generation == generation:
            annotations = meta.get("annotations") or None
            if cached.isvc.metadata.annotations == annotations:
                return cached.isvc
            # Annotations change with no new generation, and the rollout's command is one.
            changed = cached.isvc.metadata.model_copy(update={"annotations": annotations})
            return cached.isvc.model_copy(update={"metadata": changed})
        isvc = validation.parse(dict(body))
        with self._guard:
            if uid and generation:
                # One generation per InferenceService: older ones are never asked again.
                self._desired[uid] = _Built(generation, isvc)
        return isvc

    def desired(
        self, body: Mapping[str, Any], live: Mapping[str, int] | None = None
    ) -> tuple[spec.InferenceService, packed.JsonObjects[ChildKey]]:
        """Parse and build the desired children, by (kind, name) in apply order.

        `live`: the split the router carries with spec.rollout (`rollouts.live_split`); None:
        the spec's. Built once per generation and split, and kept packed; raises SpecError
        when the spec is refused.
        """
        isvc = self.parse(body)
        meta = body.get("metadata", {})
        uid, generation = meta.get("uid", ""), meta.get("generation") or 0
        split = tuple(live.items()) if live else None
        cached = self._desired.get(uid) if uid and generation else None
        if (
            cached is not None
            and cached.generation == generation
            and cached.texts is not None
            and cached.live == split
        ):
            return isvc, packed.JsonObjects(cached.texts)
        shown = steps.live_spec(isvc, live) if live else isvc
        objects = children.build_children(shown, self._config)
        owner = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": dict(meta),
        }
        kopf.append_owner_reference(objects, owner=kopf.Body(owner))  # type: ignore[arg-type]
        texts = {(o["kind"], o["metadata"]["name"]): packed.pack(o) for o in objects}
        with self._guard:
            if uid and generation:
                self._desired[uid] = _Built(generation, isvc, split, texts)
        return isvc, packed.JsonObjects({(o["kind"], o["metadata"]["name"]): o for o in objects})

    # The reconcile.

    def reconcile(
        self,
        body: Mapping[str, Any],
        observe: Callable[[], Observed],
        todo: work.Work,
        outcome: Outcome | None = None,
    ) -> Outcome:
        """Do `todo` for one InferenceService: bring children to their desired state, then status.

        `observe` reads the watch caches; it is called once the InferenceService's lock is
        held, so the reconcile sees every write of the reconcile that held it before.
        `outcome` is filled in as the reconcile goes, so that a caller still has what was
        done (a status written, its Events) when a later call raises.
        """
        meta = body.get("metadata", {})
        with self._lock(meta.get("namespace"), meta.get("name", "")):
            # Our own last status write may be newer than the cache's copy of the resource.
            latest = self.overlay.current(
                ISVC_KIND.kind, meta.get("namespace"), meta.get("name", ""), body
            )
            try:
                return self._reconcile(latest or body, observe(), todo, outcome or Outcome())
            except _OwnerDeleted as gone:
                return gone.outcome  # deleted mid-way: the rest is garbage collection's

    def _reconcile(
        self, body: Mapping[str, Any], observed: Observed, todo: work.Work, outcome: Outcome
    ) -> Outcome:
        meta = body.get("metadata", {})
        namespace, uid = meta.get("namespace"), meta.get("uid")
        if meta.get("deletionTimestamp") or self._seen_deleted(uid):
            # Being deleted, or gone: garbage collection removes the children; putting back
            # one it has just removed would only make it do that again.
            return outcome
        previous = dict(body.get("status") or {})
        collected = None
        if isinstance(todo, work.Collect):
            collected, todo = todo, todo.other_work()
        try:
            isvc = self.parse(body)
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
        owner = (namespace, meta.get("name", ""))
        live = rollouts.live_split(isvc, previous)
        _, desired = self.desired(body, live)
        outcome.rollout_every = rollouts.interval(isvc, previous)
        outcome.rollout_variants = tuple(v.name for v in isvc.spec.variants)
        looked = self._look(owner, isvc, previous, collected, desired, observed)
        if looked is not None:
            if looked.live_weights != live:
                live = looked.live_weights
                _, desired = self.desired(body, live)
            outcome.events += looked.events
            if looked.rollout != previous.get("rollout"):
                # status.rollout first: the router follows it (see the module docstring).
                # status.traffic says the same split in the same write, never the last one.
                moved = looked.apply(previous)
                if live:
                    moved["traffic"] = endpoint.traffic_summary(steps.live_spec(isvc, live))
                outcome.status_written = self._write_status(body, previous, moved)
                previous = moved
                outcome.rollout_every = rollouts.interval(isvc, previous)
            if collected is not None and collected.rollout is not None:
                with self._guard:
                    self._looked[owner] = collected.rollout.seq
        shown = steps.live_spec(isvc, live) if live else isvc
        if isvc.spec.experiment is not None:
            outcome.collect_every = isvc.spec.experiment.interval_seconds()
            outcome.collect_variants = tuple(
                name for name, weight in shown.spec.live_weights().items() if weight > 0
            )

        match todo:
            case work.FullReconcile():
                compared: frozenset[ChildKey] = frozenset(desired)
                # One that had children (and a status) and misses some may have been deleted
                # a moment ago, its children with it; a new one's first children need no read.
                if previous.get("observedGeneration") is not None and self._owner_gone(
                    body, desired, observed, compared
                ):
                    return outcome
            case work.CompareChildren(children=compared):
                if self._owner_gone(body, desired, observed, compared):
                    return outcome
            case work.RefreshStatus():
                compared = frozenset()
        if looked is not None and compared != frozenset(desired):
            # A look may move the split: the router's children follow it in this reconcile.
            compared = frozenset(desired)
            if self._owner_gone(body, desired, observed, compared):
                return outcome
        current: dict[ChildKey, Mapping[str, Any]] = {}
        for key in desired:
            if key[0] in observed.unmanaged_kinds:
                continue
            if key in compared:
                actual = self.overlay.current(key[0], namespace, key[1], observed.children.get(key))
                result = self._apply(desired[key], actual, uid, outcome)
                if result is not None:
                    current[key] = result
            elif key[0] in status.STATUS_KINDS:
                # Not this work's child: only what the status reads is looked at (and decoded).
                actual = self.overlay.current(key[0], namespace, key[1], observed.children.get(key))
                if actual is not None:
                    current[key] = actual
        if isinstance(todo, work.FullReconcile):
            self._prune(observed, set(desired), namespace, uid, outcome)

        if (
            isinstance(todo, work.CompareChildren)
            and todo.status is None
            and looked is None
            and not outcome.conflicts
            and all(kind not in status.STATUS_KINDS for kind, _ in todo.children)
        ):
            return outcome  # the status reads nothing of what this work was about
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
                shown,
                current,
                observed.pods,
                previous,
                now=_now(),
                cluster_domain=self._config.cluster_domain,
                unmanaged_kinds=observed.unmanaged_kinds,
            )
            new_status = experiment_status(
                shown,
                previous,
                new_status,
                collected.experiment if collected is not None else None,
                outcome,
            )
            new_status = rollouts.finish(isvc, looked, new_status)
        outcome.ready = any(
            c["type"] == status.READY and c["status"] == "True"
            for c in new_status.get("conditions", [])
        )
        if (
            looked is None
            and _may_put_off(todo)
            and not status.same_status(previous, new_status)
            and self._settling.put_off((namespace, meta.get("name", "")))
        ):
            outcome.status_deferred = True
            return outcome
        written = self._write_status(body, previous, new_status)
        outcome.status_written = outcome.status_written or written
        return outcome

    def _look(
        self,
        owner: tuple[str | None, str],
        isvc: spec.InferenceService,
        previous: Mapping[str, Any],
        collected: work.Collect | None,
        desired: Mapping[ChildKey, dict[str, Any]],
        observed: Observed,
    ) -> rollout_look.RolloutLook | None:
        """Take the rollout's look when one is due (see `rollouts`); None when none is."""
        readings = collected.rollout if collected is not None else None
        with self._guard:
            seen = self._looked.get(owner, 0)
        if readings is not None and readings.seq and readings.seq <= seen:
            readings = None  # this collection was looked at: the work is tried again
        why = rollouts.due(isvc, previous, collected=readings is not None)
        if why is None:
            return None
        key = rollouts.candidate_key(isvc)
        actual = self.overlay.current(key[0], owner[0], key[1], observed.children.get(key))
        return rollout_look.look(
            isvc,
            previous,
            readings.pods if readings is not None else None,  # a start or a command reads none
            candidate_problem=rollouts.candidate_problem(desired.get(key), actual),
            now=datetime.datetime.now(tz=datetime.UTC),
        )

    def _owner_gone(
        self,
        body: Mapping[str, Any],
        desired: Mapping[ChildKey, Any],
        observed: Observed,
        compared: frozenset[ChildKey],
    ) -> bool:
        """Tell, before a reconcile creates a child, whether its owner is gone.

        Deleting an InferenceService deletes its children (garbage collection), and their
        deletion events can come before the InferenceService's own (and a full reconcile of
        an update can be under way): putting them back would leave objects whose owner no
        longer exists, until the collector finds them. Asking costs one read, and only when
        a child is missing (a repair, or a spec that gained a child).
        """
        meta = body.get("metadata", {})
        missing = [
            key
            for key in compared
            if key in desired
            and key[0] not in observed.unmanaged_kinds
            and self.overlay.current(
                key[0], meta.get("namespace"), key[1], observed.children.get(key)
            )
            is None
        ]
        if not missing:
            return False
        live = self._api.get(ISVC_KIND, meta.get("namespace"), meta.get("name", ""))
        live_meta = (live or {}).get("metadata", {})
        if live is None or live_meta.get("uid") != meta.get("uid"):
            self._deleted_uid(meta.get("uid"))
            return True
        return bool(live_meta.get("deletionTimestamp"))

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
            if self._seen_deleted(uid):
                raise _OwnerDeleted(outcome)
            try:
                created = self._api.create(diff.with_applied_annotation(desired))
            except cluster.AlreadyExists:
                # Our cache had not seen it yet (or someone else made it): read, then compare.
                actual = self._api.get(kind, meta.get("namespace"), meta["name"])
                if actual is None:
                    raise
            else:
                self.overlay.remember(created)
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
        self.overlay.remember(patched)
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
            self.overlay.observe(key[0], namespace, key[1], None)
            outcome.deleted.append(key)

    def _write_status(
        self, body: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any]
    ) -> bool:
        if status.same_status(previous, new):
            return False
        meta = body.get("metadata", {})
        # Only what changed, and a null for every key the new status no longer has, at any
        # depth: a merge patch keeps whatever it does not null (a removed variant's entry).
        patch = {"status": merge_patch.diff(previous, new)}
        written = self._api.patch(
            ISVC_KIND, meta.get("namespace"), meta["name"], patch, subresource="status"
        )
        if written is not None:
            self.overlay.remember(written)
        else:
            self._deleted_uid(meta.get("uid"))  # gone, though our index may never say so
        self._settling.written((meta.get("namespace"), meta["name"]))
        return True


@dataclasses.dataclass(frozen=True)
class _Built:
    """One generation of an InferenceService: its parsed spec, and its children for one split."""

    generation: int
    isvc: spec.InferenceService
    live: tuple[tuple[str, int], ...] | None = None
    texts: dict[ChildKey, bytes] | None = None


class _OwnerDeleted(Exception):
    """The InferenceService being reconciled was seen deleted: stop creating its children."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("the InferenceService was deleted")
        self.outcome = outcome  # what the reconcile did before


def _may_put_off(todo: work.Work) -> bool:
    """Tell whether a status this work computes may wait for the settle window.

    A full reconcile writes at once (the InferenceService changed: its reader waits for news);
    a settled refresh is the write that was put off.
    """
    match todo:
        case work.FullReconcile():
            return False
        case work.CompareChildren(status=refresh):
            return refresh is None or not refresh.settled
        case work.RefreshStatus(settled=settled):
            return not settled
        case work.Collect():
            return False
    return False


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
