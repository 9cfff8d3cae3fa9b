"""The operator's runtime: its threads, its work queue, and where they meet kopf's asyncio loop.

kopf watches the InferenceServices and calls the handlers (`handlers`); everything else runs
here, on threads of our own:

- kopf's asyncio loop runs the handlers. They are async and only note work, so a burst of
  events never waits for a thread. (kopf's own pool runs the sync startup and cleanup
  handlers, which call `start` and `stop`.)
- Informer threads (`kubeserve-watch-<plural>-<namespace>`), one per watched kind and
  namespace, list and then watch the children and their pods (see `informer`); each event
  notes work through `_child_changed`.
- The start-work thread (`kubeserve-start-work`) waits until every informer has listed,
  then starts the workers: a reconcile must see every child there is, or it would create
  what exists.
- Reconcile worker threads (`kubeserve-pending-<n>`, `config.workers` of them) take the
  noted work, one InferenceService at a time each (see `pending`), and reconcile.
- The timer thread (`kubeserve-timers`) makes the delayed calls: settled statuses (see
  `settle`) and retries of work the API refused. They only note work.
- The resync thread (`kubeserve-resync`) notes a full reconcile of every InferenceService
  every `config.resync_seconds`, a safety net for missed events. (kopf's timers would put a
  finalizer on every InferenceService, and a finalizer outlives an uninstalled operator.)
- The memory trimmer (`kubeserve-malloc-trim`) gives freed heap back (see `memory`).
- The schedule of experiments and rollouts (`kubeserve-collect`) and the pod readers
  (`kubeserve-scrape-<n>`) read the variant pods' counters at each experiment's and each
  running rollout's interval (see `collect`); a collection only notes a `work.Collect`, so
  the status (and the live split a rollout moves) is written by the workers.

Where threads meet asyncio:
- Handlers only note work (a dict entry under a lock); nothing they call blocks the loop.
- The InferenceServices' index is kopf's and changes on the loop; threads read it with
  `list()`, which copies a store in one step under the GIL.
- `kopf.warn` finds where to post Events in context variables set on the loop: the first
  handler call copies its context (`capture`), and threads post Events in a copy of it.
"""

from __future__ import annotations

import contextvars
import datetime
import functools
import itertools
import logging
import threading
from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Any, cast

import kopf

from kubeserve import cluster
from kubeserve.builders import meta
from kubeserve.controller import (
    collect,
    informer,
    memory,
    packed,
    pending,
    prometheus,
    reconcile,
    scrape,
    settle,
    work,
)
from kubeserve.controller.config import OperatorConfig
from kubeserve.controller.metrics import OperatorMetrics
from kubeserve.controller.work import ChildKey
from kubeserve.experiment import readings

MANAGED = {"app.kubernetes.io/managed-by": meta.MANAGED_BY}
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED.items())
# What the informers watch: the kinds of the children, and the pods of the variants.
CHILD_KINDS = [
    cluster.KINDS[key]
    for key in [
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("v1", "ConfigMap"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
    ]
]
GATEWAY_KINDS = [
    cluster.KINDS[("gateway.networking.k8s.io/v1", "HTTPRoute")],
    cluster.KINDS[("gateway.networking.k8s.io/v1", "GRPCRoute")],
]
POD_KIND = cluster.KINDS[("v1", "Pod")]
RETRY_DELAY = 5.0
TRIM_SECONDS = 5.0
# Triggers: what asked for a piece of work, a label of the reconcile metrics (public: keep).
RESYNC, POD_EVENT, SETTLED_STATUS, COLLECT = "resync", "pod-event", "settled-status", "collect"
logger = logging.getLogger("kubeserve.reconcile")
changes_logger = logging.getLogger("kubeserve.changes")


def child_event(kind: str) -> str:
    """Give the trigger of a watch event of a child of `kind` ("deployment-event" ...)."""
    return f"{kind.lower()}-event"


def _values(index: Any, key: Any) -> list[Any]:
    """The values an index holds for `key`, copied at once.

    kopf changes its indexes on the event loop while reconciles read them on other threads;
    list() copies a store in one step under the GIL, where a Python loop over it could see
    it change size.
    """
    return list(index.get(key, [])) if index is not None else []


class OperatorRuntime:
    """The informers, the work queue and the threads around one `Reconciler`.

    `watch_api` lists and watches the children (default: a client of its own, from the
    environment, so long watches do not take the reconciles' connections). Work the API
    refused is tried again after `retry_delay` seconds, or after the API's Retry-After when
    that is longer (see `pending.PendingWork.retry_delay`).
    """

    def __init__(
        self,
        config: OperatorConfig,
        reconciler: reconcile.Reconciler,
        metrics: OperatorMetrics,
        *,
        watch_api: cluster.Cluster | None = None,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        self.config = config
        self.reconciler = reconciler
        self.metrics = metrics
        self._watch_api = watch_api
        self.kinds = CHILD_KINDS + (GATEWAY_KINDS if config.gateway_api else [])
        # Kinds of children the operator does not apply (see `reconcile.Observed`).
        self.unmanaged_kinds = (
            frozenset() if config.gateway_api else frozenset(k.kind for k in GATEWAY_KINDS)
        )
        self.informers: list[informer.Informer] = []
        self._by_kind: dict[cluster.Kind, list[informer.Informer]] = {}
        # Handed over by the first handler call (see `capture`): kopf's index of the
        # InferenceServices, and a context in which kopf.warn can post Events from any thread.
        self._index: Any = None
        self._context: contextvars.Context | None = None
        self._stop = threading.Event()
        self.work = pending.PendingWork(
            self._work_off, threads=config.workers, retry_delay=retry_delay
        )
        reconciler.settle_status(config.status_settle_seconds, self._settle_later)
        self.collector = collect.Collector(
            self._targets,
            self._collected,
            query=self._ask_prometheus if config.prometheus_url else None,
        )
        # Numbers the collections, so that a rollout looks once at each (see `work.Readings`).
        self._collections = itertools.count(1)

    # Called by the handlers, on kopf's event loop: quick, and they only note work.

    def capture(self, index: Any) -> None:
        """Keep kopf's InferenceServices index and a copy of the context, once.

        Only the index: a handler's other arguments are that one call's body, patch and logger.
        """
        if self._index is None:
            self._context = contextvars.copy_context()
            self._index = index

    def note(self, owner: Hashable, todo: work.Work, trigger: str) -> None:
        """Note work for one InferenceService (namespace, name); a worker thread does it."""
        self.work.add(owner, todo, trigger)

    def inferenceservice_seen(
        self,
        event: str | None,
        body: Mapping[str, Any],
        *,
        namespace: str | None,
        name: str,
        uid: str | None,
    ) -> None:
        """Tell the reconciler's overlay what a watch event of an InferenceService said."""
        gone = event == "DELETED"
        self.reconciler.overlay.observe(
            body.get("kind", cluster.INFERENCE_SERVICE.kind),
            namespace,
            name,
            None if gone else body,
        )
        if gone:
            self.reconciler.forget(namespace, name, uid)
            self.collector.untrack((namespace, name))

    # Starting and stopping the threads (from kopf's startup and cleanup handlers).

    def start(self) -> None:
        """Start the informers, and the threads that start the workers, resync and trim."""
        api = self._watch_api or cluster.Cluster.from_environment()
        namespaces: list[str | None] = list(self.config.namespaces) or [None]
        for kind, namespace in itertools.product([*self.kinds, POD_KIND], namespaces):
            watch = informer.Informer(
                api,
                kind,
                namespace,
                labels=MANAGED_SELECTOR,
                on_change=self._child_changed,
                transform=(
                    informer.pod_summary if kind == POD_KIND else informer.without_managed_fields
                ),
            )
            self.informers.append(watch)
            self._by_kind.setdefault(kind, []).append(watch)
            watch.start()
        threading.Thread(target=self._start_work, name="kubeserve-start-work", daemon=True).start()
        threading.Thread(target=self._resync_forever, name="kubeserve-resync", daemon=True).start()
        memory.start_trimming(TRIM_SECONDS, self._stop)
        # Rollouts read their pods whatever the experiments' setting says.
        self.collector.start()

    def stop(self) -> None:
        """Stop every thread (the workers finish the work they hold)."""
        self._stop.set()
        self.collector.stop()
        self.work.stop()
        for watch in self.informers:
            watch.stop()

    def _start_work(self) -> None:
        # A reconcile must see every child there is, or it would create what exists.
        for watch in self.informers:
            while not watch.synced.wait(30):
                logger.warning(f"still listing {watch.kind.plural}: reconciles wait")
        self.work.start()

    def _resync_forever(self) -> None:
        while not self._stop.wait(self.config.resync_seconds):
            if self._index is not None:
                for owner in list(self._index):
                    self.note(owner, work.FullReconcile(), RESYNC)

    def _settle_later(self, owner: settle.Owner, delay: float) -> None:
        self.work.timers.call_later(
            delay, self.note, owner, work.RefreshStatus(settled=True), SETTLED_STATUS
        )

    # The informers' events (on informer threads).

    def _child_changed(self, event: str, obj: dict[str, Any]) -> None:
        owner = informer.owner_of(obj)
        metadata = obj.get("metadata") or {}
        if obj.get("kind") == "Pod":
            if owner is not None:
                self.note(owner, work.RefreshStatus(), POD_EVENT)
            return
        kind, child = obj["kind"], metadata["name"]
        ours = self.reconciler.overlay.observe(
            kind, metadata.get("namespace"), child, None if event == "DELETED" else obj
        )
        if owner is not None and not ours:  # our own write coming back needs nothing
            self.note(owner, work.compare((kind, child)), child_event(kind))

    # The experiments' collections (on the collector's threads).

    def _targets(self, owner: collect.Owner, variants: Collection[str]) -> list[scrape.Target]:
        pods = reconcile.pods_by_variant(
            [
                packed.unpack(data)
                for watch in self._by_kind.get(POD_KIND, [])
                for _, data in watch.children(cast(informer.Owner, owner))
            ]
        )
        return scrape.targets(pods, variants)

    def _collected(
        self,
        owner: collect.Owner,
        purpose: collect.Purpose,
        looked: list[readings.PodReading],
        totals: readings.VariantTotals | None,
    ) -> None:
        taken = work.Readings(looked, totals, next(self._collections))
        if purpose == "rollout":
            self.note(owner, work.Collect(rollout=taken), COLLECT)
        else:
            self.note(owner, work.Collect(experiment=taken), COLLECT)

    def _ask_prometheus(
        self, owner: collect.Owner, variants: Collection[str]
    ) -> readings.VariantTotals | None:
        namespace, name = cast(informer.Owner, owner)
        values = _values(self._index, owner)
        if not values or self.config.prometheus_url is None:
            return None
        experiment = (packed.unpack(values[0]).get("status") or {}).get("experiment") or {}
        since = experiment.get("startTime")
        if not since:
            return None  # not started yet: its first look is the reconcile's
        return prometheus.totals(
            self.config.prometheus_url,
            namespace=namespace or "",
            name=name,
            variants=variants,
            since=since,
            now=datetime.datetime.now(tz=datetime.UTC),
            namespace_label=self.config.prometheus_namespace_label,
            variant_label=self.config.prometheus_variant_label,
        )

    def observed(self, namespace: str | None, name: str) -> reconcile.Observed:
        """Give what the informers hold for one InferenceService."""
        seen: dict[ChildKey, bytes | dict[str, Any]] = {}
        for kind in self.kinds:
            for watch in self._by_kind.get(kind, []):
                for child, data in watch.children((namespace, name)):
                    seen[(watch.kind.kind, child)] = data
        pods = reconcile.pods_by_variant(
            [
                packed.unpack(data)
                for watch in self._by_kind.get(POD_KIND, [])
                for _, data in watch.children((namespace, name))
            ]
        )
        return reconcile.Observed(
            children=packed.JsonObjects(seen), pods=pods, unmanaged_kinds=self.unmanaged_kinds
        )

    # The work (on worker threads).

    def _work_off(self, owner: Hashable, todo: work.Work, trigger: str) -> None:
        namespace, name = cast(informer.Owner, owner)
        values = _values(self._index, owner)
        if not values:
            return  # gone (or not seen yet): garbage collection deals with its children
        body = packed.unpack(values[0])
        try:
            outcome = self._reconcile(
                body, functools.partial(self.observed, namespace, name), todo, trigger
            )
        except cluster.ApiError as exc:
            if exc.retriable:
                delay = self.work.retry_delay(exc.retry_after)
                logger.warning(
                    f"{namespace}/{name}: the API refused a call, retrying in {delay:g}s: {exc}"
                )
                raise pending.Retry(exc.retry_after) from exc
            logger.error(f"{namespace}/{name}: the API refused a call: {exc}")
            return
        self._track(owner, outcome)

    def _track(self, owner: Hashable, outcome: reconcile.Outcome) -> None:
        """Collect what the reconcile said needs collecting, at the intervals it said."""
        experiment = outcome.collect_every
        if not (self.config.scrape_pods or self.config.prometheus_url):
            experiment = None  # experiments are not collected at all
        elif experiment is not None:
            experiment = self.config.experiment_interval_override or experiment
        self.collector.track(owner, experiment, outcome.collect_variants)
        rollout = outcome.rollout_every
        if rollout is not None:
            rollout = self.config.rollout_interval_override or rollout
        self.collector.track(owner, rollout, outcome.rollout_variants, purpose="rollout")

    def _reconcile(
        self,
        body: Mapping[str, Any],
        observe: Callable[[], reconcile.Observed],
        todo: work.Work,
        trigger: str,
    ) -> reconcile.Outcome:
        outcome = reconcile.Outcome()
        try:
            with self.metrics.timed(trigger):
                outcome = self.reconciler.reconcile(body, observe, todo, outcome)
        except Exception:
            # A rollout's decision is written before its children: written, it has its Events
            # even when a later call fails (the work tried again does not decide it again).
            self._post_events(body, outcome)
            raise
        self.metrics.record(outcome)
        if outcome.status_written and (outcome.invalid or outcome.conflicts):
            reason = "InvalidSpec" if outcome.invalid else "NameConflict"
            self.warn(body, reason, "; ".join(outcome.invalid or outcome.conflicts)[:1024])
        self._post_events(body, outcome)
        if outcome.created or outcome.patched or outcome.deleted:
            metadata = body.get("metadata", {})
            changes_logger.info(
                f"{metadata.get('namespace')}/{metadata.get('name')} {trigger}: "
                f"{reconcile.summarise(outcome)}"
            )
        return outcome

    def _post_events(self, body: Mapping[str, Any], outcome: reconcile.Outcome) -> None:
        if outcome.status_written:
            for reason, message in outcome.events:
                self.event(body, reason, message, warning=reason in reconcile.WARNING_REASONS)

    def warn(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        """Post a Warning Event on an InferenceService, from any thread."""
        self.event(body, reason, message, warning=True)

    def event(self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool) -> None:
        """Post an Event (Warning or Normal) on an InferenceService, from any thread."""
        post = functools.partial(
            kopf.event,
            kopf.Body(dict(body)),  # type: ignore[arg-type]
            type="Warning" if warning else "Normal",
            reason=reason,
            message=message[:1024],
        )
        try:
            self._context.copy().run(post) if self._context is not None else post()
        except LookupError:  # no handler has run yet: nowhere to post to
            changes_logger.warning(f"event not posted: {reason}: {message}")
