"""The only module that talks to the Kubernetes API.

Every read and write of the operator goes through `Cluster`: it maps objects to API paths,
sends JSON merge patches, and turns HTTP failures into the few exceptions the reconciler
acts on (NotFound is an answer, not an error; AlreadyExists and Conflict are retried).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any

import kubernetes

import kubeserve

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


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
    """The API refused a call; `status` is the HTTP code, `reason` the Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message

    @property
    def retriable(self) -> bool:
        """Tell whether trying again later can succeed (conflicts, throttling, server errors)."""
        return self.status in {409, 429} or self.status >= 500


class AlreadyExists(ApiError):
    """A create found an object of that name."""


Objects = list[dict[str, Any]]


class Cluster:
    """Typed access to the objects kubeserve manages."""

    def __init__(self, api: kubernetes.client.ApiClient, *, timeout: float = 30.0) -> None:
        self._api = api
        self._timeout = timeout

    @classmethod
    def from_environment(cls, *, pool_size: int = 32) -> Cluster:
        """Connect with the in-cluster service account, or with KUBECONFIG outside a cluster."""
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = pool_size
        return cls(kubernetes.client.ApiClient(configuration))

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
            raise ApiError(exc.status or 0, exc.reason or "Error", str(exc.body or exc)) from None
        except Exception as exc:  # urllib3 connection errors: the API is unreachable or slow
            raise ApiError(503, "Unavailable", f"{method} {path}: {exc}") from None
        payload = json.loads(data) if data else {}
        if response.status >= 400:
            error = AlreadyExists if payload.get("reason") == "AlreadyExists" else ApiError
            raise error(response.status, payload.get("reason", "Error"), payload.get("message", ""))
        return payload

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
            raise ApiError(exc.status or 0, exc.reason or "Error", str(exc.body or exc)) from None
        except Exception as exc:
            raise ApiError(503, "Unavailable", f"watch {kind.plural}: {exc}") from None
        raw = response.response
        complete = False
        try:
            if response.status >= 400:
                payload = json.loads(raw.read() or b"{}")
                raise ApiError(
                    response.status, payload.get("reason", "Error"), payload.get("message", "")
                )
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
