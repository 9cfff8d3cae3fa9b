"""A small synchronous Kubernetes client for tests: plain REST over requests, and waits."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import requests

T = TypeVar("T")
ISVC = ("serving.kubeserve.dev/v1alpha1", "inferenceservices")
DEPLOYMENTS = ("apps/v1", "deployments")
SERVICES = ("v1", "services")
CONFIGMAPS = ("v1", "configmaps")
EVENTS = ("v1", "events")
PODS = ("v1", "pods")


class Kube:
    """REST calls against one API server; errors raise, 404 reads give None."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()

    def _path(
        self,
        resource: tuple[str, str],
        namespace: str | None,
        name: str | None = None,
        sub: str | None = None,
    ) -> str:
        api_version, plural = resource
        base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        parts = [self.url + base] + ([f"namespaces/{namespace}"] if namespace else []) + [plural]
        return "/".join(parts + [p for p in (name, sub) if p])

    def create_namespace(self, name: str) -> None:
        response = self.session.post(
            self._path(("v1", "namespaces"), None), json={"metadata": {"name": name}}, timeout=10
        )
        if response.status_code not in (200, 201, 409):
            response.raise_for_status()

    def create(
        self, resource: tuple[str, str], namespace: str, obj: dict[str, Any]
    ) -> dict[str, Any]:
        response = self.session.post(self._path(resource, namespace), json=obj, timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def get(self, resource: tuple[str, str], namespace: str, name: str) -> dict[str, Any] | None:
        response = self.session.get(self._path(resource, namespace, name), timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def list(
        self, resource: tuple[str, str], namespace: str | None, labels: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": labels} if labels else None
        response = self.session.get(self._path(resource, namespace), params=params, timeout=10)
        response.raise_for_status()
        return list(response.json()["items"])

    def patch(
        self,
        resource: tuple[str, str],
        namespace: str,
        name: str,
        patch: dict[str, Any],
        *,
        sub: str | None = None,
    ) -> dict[str, Any]:
        response = self.session.patch(
            self._path(resource, namespace, name, sub),
            data=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
            timeout=10,
        )
        response.raise_for_status()
        return dict(response.json())

    def delete(self, resource: tuple[str, str], namespace: str, name: str) -> None:
        response = self.session.delete(self._path(resource, namespace, name), timeout=10)
        if response.status_code != 404:
            response.raise_for_status()

    def mark_deployment_ready(self, namespace: str, name: str) -> None:
        """Do what the Deployment controller and kubelets would: report every replica ready."""
        dep = self.get(DEPLOYMENTS, namespace, name)
        assert dep is not None, f"Deployment {name} does not exist"
        replicas = dep["spec"].get("replicas", 1)
        self.patch(
            DEPLOYMENTS,
            namespace,
            name,
            {
                "status": {
                    "observedGeneration": dep["metadata"]["generation"],
                    "replicas": replicas,
                    "readyReplicas": replicas,
                    "updatedReplicas": replicas,
                    "availableReplicas": replicas,
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "True",
                            "reason": "MinimumReplicasAvailable",
                            "message": "ok",
                        },
                        {
                            "type": "Progressing",
                            "status": "True",
                            "reason": "NewReplicaSetAvailable",
                            "message": "ok",
                        },
                    ],
                }
            },
            sub="status",
        )


def wait_for(
    check: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy; fail with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return cast(T, last)
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
