"""What an InferenceService's status says about its endpoint: its URL and its traffic split."""

from __future__ import annotations

from kubeserve.api import spec
from kubeserve.builders import traffic_text
from kubeserve.builders.config import BuildConfig


def endpoint_url(isvc: spec.InferenceService, config: BuildConfig | None = None) -> str:
    """Give the URL where the InferenceService is served, for `status.url`.

    nginx mode: the router Service's cluster DNS name. gateway-api mode: the URL depends on
    the Gateway's listeners, which no spec says, so this names the first parent Gateway as
    `gateway://<namespace>/<name>`; an operator that reads the Gateway may replace it.
    """
    config = config or BuildConfig()
    name, ns = isvc.metadata.name, isvc.metadata.namespace
    if isvc.spec.routing.mode == "gateway-api":
        refs = isvc.spec.routing.parent_refs
        if not refs:
            return ""
        ref = refs[0]
        return f"gateway://{ref.namespace or ns or 'default'}/{ref.name}"
    if not ns:
        return f"http://{name}"
    return f"http://{name}.{ns}.svc.{config.cluster_domain}"


def traffic_summary(isvc: spec.InferenceService) -> str:
    """Summarise the split for `status.traffic`, e.g. `v1=90,v2=10,v3=mirror20%`."""
    return str(traffic_text.of(isvc))
