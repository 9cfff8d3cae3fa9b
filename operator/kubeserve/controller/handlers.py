"""kopf's handlers: settings, login, the InferenceServices' index, and calls into the runtime.

Why watch the children instead of polling them: a child deleted or edited by hand is put
back within one watch event, and the watch caches are what make a reconcile free of reads.
kopf watches the InferenceServices (an index); the children and their pods are watched by
informers of our own (see `informer`), and the reconciles run on threads of the runtime's
(see `runtime`, which names every thread and says how they meet kopf's event loop).

Every handler that kopf calls per event is async and quick: kopf runs it at once, without a
trip through its thread pool, and it only notes work.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

import kubeserve
from kubeserve import API_GROUP, API_VERSION
from kubeserve.controller import informer, packed, runtime, work

# kopf's own bookkeeping lives under our prefix, not kopf.zalando.org.
KOPF_PREFIX = f"kopf.{API_GROUP}"
PLURAL = kubeserve.PLURAL
LIST_PAGE = informer.PAGE
# The id of kopf's index of the InferenceServices: (namespace, name) -> the packed object.
INDEX = "inferenceservices"


def register(registry: kopf.OperatorRegistry, operator: runtime.OperatorRuntime) -> None:
    """Register every handler of the operator in `registry`, calling into `operator`."""

    @kopf.on.startup(id="configure", registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=KOPF_PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{KOPF_PREFIX}/finalizer"
        # Only warnings become Kubernetes Events: an Event is a write, and most logs are not news.
        settings.posting.level = logging.WARNING
        # Handlers are async and only note work (see `runtime`): kopf's pool has little to do.
        settings.execution.max_workers = 2
        # Watching given namespaces needs no namespace list (and no RBAC to list them).
        settings.scanning.disabled = bool(operator.config.namespaces)
        # An idle worker holds the last body it handled; handlers are quick and level-based
        # (events of one object are coalesced later anyway), so workers need not linger.
        settings.queueing.idle_timeout = 0.1
        # Listed in pages, as kubectl does, rather than one response read and parsed whole.
        settings.watching.chunk_size = LIST_PAGE
        settings.watching.server_timeout = 600
        settings.watching.client_timeout = 660

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as `cluster`: the service account in a pod, KUBECONFIG outside.
        return kopf.login_via_client(**kwargs)

    @kopf.index(API_GROUP, API_VERSION, PLURAL, id=INDEX, registry=registry)
    async def inferenceservices(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, name): packed.pack(informer.without_managed_fields(dict(body)))}

    # create, update and resume only note the work: the reconcile reads the InferenceService
    # from the index, which kopf fills before it calls any handler, so it sees this change.
    @kopf.on.resume(API_GROUP, API_VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(API_GROUP, API_VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(API_GROUP, API_VERSION, PLURAL, id="reconcile", registry=registry)
    async def reconcile_inferenceservice(
        namespace: str | None, name: str, reason: str | None = None, **kwargs: Any
    ) -> None:
        operator.capture(kwargs[INDEX])  # kopf passes each index by its id
        operator.note((namespace, name), work.FullReconcile(), reason or "resume")

    # Async: it only updates in-memory state, so it needs no trip through the thread pool.
    @kopf.on.event(API_GROUP, API_VERSION, PLURAL, id="inferenceservice_seen", registry=registry)
    async def inferenceservice_seen(
        type: str | None,
        body: kopf.Body,
        namespace: str | None,
        name: str,
        uid: str | None,
        **_: Any,
    ) -> None:
        operator.inferenceservice_seen(type, body, namespace=namespace, name=name, uid=uid)

    @kopf.on.startup(id="start_threads", registry=registry)
    def start_threads(**_: Any) -> None:
        operator.start()

    @kopf.on.cleanup(id="stop_threads", registry=registry)
    def stop_threads(**_: Any) -> None:
        operator.stop()
