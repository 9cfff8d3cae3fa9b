"""The only module that talks to the Kubernetes API.

Every read and write of the operator and of `kubeserve traffic | promote | rollback` goes
through `Cluster`: it maps objects to API paths, sends JSON merge patches (and JSON Patches
pinned to a resourceVersion), and turns HTTP failures into the few exceptions its callers act
on (NotFound is an answer, not an error; AlreadyExists and Conflict are retried). A refusal
carries the server's Retry-After, for whoever retries to wait at least that long.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import kubernetes

import kubeserve

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# A pod's own namespace, which kubectl also takes as the default inside a cluster.
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_NAMESPACE = "default"
# Seconds a call (or a watch's connect) may take before it counts as failed: a reconcile
# waits for its writes, so a stuck connection must not hold a worker for long.
DEFAULT_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """Give the API path of a collection, an object or one of its subresources."""
        prefix = (
            f"/apis/{self.api_version}" if "/" in self.api_version else f"/api/{self.api_version}"
        )
        parts = [prefix]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{urllib.parse.quote(namespace)}")
        parts.append(self.plural)
        if name:
            parts.append(urllib.parse.quote(name))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


# Everything kubeserve reads or writes; RBAC in the chart grants exactly these.
KINDS = {
    (k.api_version, k.kind): k
    for k in [
        Kind(f"{kubeserve.API_GROUP}/{kubeserve.API_VERSION}", kubeserve.KIND, kubeserve.PLURAL),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("v1", "Service", "services"),
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "Pod", "pods"),
        Kind("v1", "Event", "events"),
        Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
        Kind("gateway.networking.k8s.io/v1", "GRPCRoute", "grpcroutes"),
    ]
}

# The kind kubeserve defines; every other module names it through this.
INFERENCE_SERVICE = KINDS[(f"{kubeserve.API_GROUP}/{kubeserve.API_VERSION}", kubeserve.KIND)]


def kind_of(obj: dict[str, Any]) -> Kind:
    """Look up the Kind of an object by its apiVersion and kind."""
    try:
        return KINDS[(obj["apiVersion"], obj["kind"])]
    except KeyError:
        raise ValueError(
            f"kubeserve does not manage {obj.get('apiVersion')}/{obj.get('kind')}"
        ) from None


class ApiError(Exception):
    """The API refused a call; `status` is the HTTP code, `reason` the Status reason.

    `retry_after` is how many seconds the server asked the client to wait before it tries
    again (its Retry-After), None when it asked nothing usable.
    """

    def __init__(
        self, status: int, reason: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        self.retry_after = retry_after

    @property
    def retriable(self) -> bool:
        """Tell whether trying again later can succeed (conflicts, throttling, server errors)."""
        return self.status in {409, 429} or self.status >= 500


class AlreadyExists(ApiError):
    """A create found an object of that name."""


class Conflict(ApiError):
    """The object changed since it was read: a 409, or a JSON Patch `test` that failed."""

    @property
    def retriable(self) -> bool:
        """Always: reading the object again and re-planning can succeed."""
        return True


class NotConfigured(Exception):
    """Neither a pod's service account nor a usable kubeconfig; the message says why."""


Objects = list[dict[str, Any]]


class Cluster:
    """Typed access to the objects kubeserve manages."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        default_namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        self._api = api
        self._timeout = timeout
        # Where a command without -n works, as kubectl decides it (see from_environment).
        self.default_namespace = default_namespace

    @property
    def timeout(self) -> float:
        """Seconds a call may take; a watch adds it to its own timeout (see `watch`)."""
        return self._timeout

    @classmethod
    def from_environment(
        cls,
        *,
        pool_size: int = 32,
        context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Cluster:
        """Connect with the pod's service account, or with the kubeconfig outside a cluster.

        The default namespace follows kubectl: the pod's own in a cluster, else the kubeconfig
        context's, else "default". Naming a `context` means the kubeconfig, even in a pod.
        Raises NotConfigured when there is nothing to connect with.
        """
        configuration = kubernetes.client.Configuration()
        if context is None and _load_service_account(configuration):
            namespace = _pod_namespace()
        else:
            namespace = _load_kubeconfig(configuration, context)
        configuration.connection_pool_maxsize = pool_size
        return cls(
            kubernetes.client.ApiClient(configuration),
            timeout=timeout,
            default_namespace=namespace or DEFAULT_NAMESPACE,
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        serialized = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*serialized, _request_timeout=self._timeout)
            data = response.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.ApiException as exc:
            raise _refused(exc) from None
        except Exception as exc:  # urllib3 connection errors: the API is unreachable or slow
            raise ApiError(503, "Unavailable", f"{method} {path}: {exc}") from None
        if response.status >= 400:
            raise _answered(response.status, response.headers, data)
        return json.loads(data) if data else {}

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        """Read an object; None when it does not exist."""
        try:
            result: dict[str, Any] = self._call("GET", kind.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def list_page(
        self,
        kind: Kind,
        namespace: str | None,
        *,
        labels: str | None = None,
        limit: int = 500,
        token: str | None = None,
    ) -> tuple[Objects, str, str | None]:
        """One page of a list: (items, the list's resourceVersion, the next page's token)."""
        query = {"limit": str(limit)}
        if labels:
            query["labelSelector"] = labels
        if token:
            query["continue"] = token
        page = self._call("GET", kind.path(namespace), query=query)
        meta = page.get("metadata") or {}
        items: Objects = page.get("items") or []
        for item in items:  # list items may leave out what the list says once
            item.setdefault("kind", kind.kind)
            item.setdefault("apiVersion", kind.api_version)
        return items, str(meta.get("resourceVersion", "")), meta.get("continue") or None

    def watch(
        self,
        kind: Kind,
        namespace: str | None,
        *,
        resource_version: str,
        labels: str | None = None,
        timeout_seconds: int = 300,
    ) -> Iterator[dict[str, Any]]:
        """Watch events after `resource_version` until the server ends the stream.

        A 410 (the version is too old) comes as an ApiError with status 410, whether the
        server answers with it or sends it as an ERROR event.
        """
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if labels:
            query["labelSelector"] = labels
        serialized = self._api.param_serialize(
            method="GET",
            resource_path=kind.path(namespace),
            query_params=list(query.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                *serialized, _request_timeout=(self._timeout, timeout_seconds + self._timeout)
            )
        except kubernetes.client.ApiException as exc:
            raise _refused(exc) from None
        except Exception as exc:
            raise ApiError(503, "Unavailable", f"watch {kind.plural}: {exc}") from None
        raw = response.response
        complete = False
        try:
            if response.status >= 400:
                raise _answered(response.status, response.headers, raw.read())
            for line in raw:
                if not line.strip():
                    continue
                event: dict[str, Any] = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(
                        int(status.get("code") or 500),
                        status.get("reason", "Error"),
                        status.get("message", ""),
                    )
                yield event
            complete = True
        except ApiError:
            raise
        except Exception as exc:  # the connection broke mid-stream
            raise ApiError(503, "Unavailable", f"watch {kind.plural}: {exc}") from None
        finally:
            if not complete:
                # Left mid-stream: the connection still carries the rest of the response and
                # must not serve another request.
                raw.close()
            raw.release_conn()

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object; AlreadyExists when its name is taken."""
        kind = kind_of(obj)
        result: dict[str, Any] = self._call(
            "POST", kind.path(obj["metadata"].get("namespace")), body=obj
        )
        return result

    def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        """Merge-patch an object (or its status); None when it no longer exists."""
        try:
            result: dict[str, Any] = self._call(
                "PATCH",
                kind.path(namespace, name, subresource),
                body=patch,
                content_type=MERGE_PATCH,
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def json_patch(
        self, kind: Kind, namespace: str | None, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """Apply a JSON Patch (RFC 6902), as `kubectl patch --type json`; None when gone.

        A patch that starts with a `test` of metadata.resourceVersion changes the object only
        as it was read: if it changed since, this raises Conflict, and so does a 409.
        """
        try:
            result: dict[str, Any] = self._call(
                "PATCH", kind.path(namespace, name), body=ops, content_type=JSON_PATCH
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            # A failed `test` comes back as 422 ("testing value ... failed"), or as 500 from
            # API servers before 1.16.
            failed_test = exc.status in {422, 500} and _is_failed_test(exc.message)
            if exc.status == 409 or failed_test:
                raise Conflict(exc.status, exc.reason, exc.message) from None
            raise
        return result

    def delete(
        self, kind: Kind, namespace: str | None, name: str, *, uid: str | None = None
    ) -> bool:
        """Delete an object, only if it still has `uid`; False when it was already gone."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", kind.path(namespace, name), body=body)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _load_service_account(configuration: kubernetes.client.Configuration) -> bool:
    """Load the pod's service account into `configuration`; False outside a cluster."""
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        return False
    return True


def _pod_namespace() -> str:
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _load_kubeconfig(configuration: kubernetes.client.Configuration, context: str | None) -> str:
    """Load the kubeconfig into `configuration`; give the chosen context's namespace or ""."""
    # The client reads KUBECONFIG once, when it is imported; read it at the call instead.
    path = os.environ.get("KUBECONFIG")
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration
        )
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise NotConfigured(f"no cluster configured: {exc}") from None
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    namespace: str = ((chosen or {}).get("context") or {}).get("namespace") or ""
    return namespace


def _refused(exc: kubernetes.client.ApiException) -> ApiError:
    """Give the ApiError of the client's own exception (it raises some refusals itself)."""
    return ApiError(
        exc.status or 0,
        exc.reason or "Error",
        str(exc.body or exc),
        retry_after=_retry_after(exc.headers, None),
    )


def _answered(status: int, headers: Mapping[str, str] | None, data: bytes | None) -> ApiError:
    """Give the ApiError of an error answer: a Status, or what a proxy in front of the API
    answered (HTML, text, nothing), for calls and watches alike."""
    payload = _status_of(data)
    error = AlreadyExists if payload.get("reason") == "AlreadyExists" else ApiError
    return error(
        status,
        str(payload.get("reason") or "Error"),
        _status_message(payload) or _text(data),
        retry_after=_retry_after(headers, payload),
    )


def _retry_after(headers: Mapping[str, str] | None, payload: Any) -> float | None:
    """Give the seconds a refusal asks to wait: its Retry-After, else its Status's details.

    Only the delay-seconds form of Retry-After (RFC 9110 section 10.2.3), which is the one
    kube-apiserver sends (with `details.retryAfterSeconds`, which older clients read); an
    HTTP-date, a negative number or anything else is ignored, as client-go's
    `retryAfterSeconds` (rest/request.go) ignores what it cannot parse as an integer.
    """
    raw = headers.get("Retry-After") if headers is not None else None
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        return float(raw.strip())
    details = payload.get("details") if isinstance(payload, dict) else None
    seconds = details.get("retryAfterSeconds") if isinstance(details, dict) else None
    if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds >= 0:
        return float(seconds)
    return None


def _status_of(data: bytes | None) -> dict[str, Any]:
    """Give the Status an error answer carries; {} when it carries none."""
    try:
        payload = json.loads(data) if data else {}
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _text(data: bytes | None, limit: int = 200) -> str:
    return (data or b"")[:limit].decode("utf-8", errors="replace").strip()


def _status_message(payload: dict[str, Any]) -> str:
    """Give a Status's message with its causes, where the API server puts the details."""
    details = payload.get("details")
    causes = (details.get("causes") if isinstance(details, dict) else None) or []
    messages = [payload.get("message"), *(c.get("message") for c in causes if isinstance(c, dict))]
    return "; ".join(m for m in messages if isinstance(m, str) and m)


def _is_failed_test(message: str) -> bool:
    text = message.lower()
    return "testing value" in text or "test failed" in text
