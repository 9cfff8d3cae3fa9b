"""The operator's settings: flags, with environment variables (the chart's values) as defaults."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from kubeserve.builders.config import DEFAULT_ROUTER_IMAGE, DEFAULT_SERVER_IMAGE, BuildConfig

ENV_PREFIX = "KUBESERVE_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    """Everything that shapes the operator's behaviour, beyond each InferenceService's spec."""

    namespaces: tuple[str, ...] = ()  # empty: every namespace
    server_image: str = DEFAULT_SERVER_IMAGE
    router_image: str = DEFAULT_ROUTER_IMAGE
    cluster_domain: str = "cluster.local"
    resync_seconds: float = 300.0
    # Status changes closer together than this are written once (0: every change at once).
    status_settle_seconds: float = 0.5
    metrics_port: int = 8081  # 0: no metrics endpoint
    health_port: int = 8080  # 0: no liveness endpoint
    gateway_api: bool = False  # watch HTTPRoutes (needs the Gateway API CRDs in the cluster)
    workers: int = 16  # reconcile threads: InferenceServices reconciled at once
    log_format: str = "plain"
    # Experiments: read the variant pods' /metrics (the default), or ask Prometheus.
    scrape_pods: bool = True
    prometheus_url: str | None = None
    prometheus_namespace_label: str = "namespace"
    # The label that names a series' variant in Prometheus: the server's `version` when
    # versions are named after variants, else a pod label kept by relabelling.
    prometheus_variant_label: str = "version"
    # For tests only: collect every experiment this often instead of its spec's interval
    # (the API refuses intervals under 5 s).
    experiment_interval_override: float | None = None
    # For tests only: look at every running rollout this often instead of its spec's interval.
    rollout_interval_override: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read KUBESERVE_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value if value not in (None, "") else None

        values: dict[str, object] = {}
        if (ns := get("NAMESPACES")) is not None:
            values["namespaces"] = tuple(n.strip() for n in ns.split(",") if n.strip())
        for field, name, conv in (
            ("server_image", "SERVER_IMAGE", str),
            ("router_image", "ROUTER_IMAGE", str),
            ("cluster_domain", "CLUSTER_DOMAIN", str),
            ("resync_seconds", "RESYNC_SECONDS", float),
            ("status_settle_seconds", "STATUS_SETTLE_SECONDS", float),
            ("metrics_port", "METRICS_PORT", int),
            ("health_port", "HEALTH_PORT", int),
            ("workers", "WORKERS", int),
            ("log_format", "LOG_FORMAT", str),
            ("prometheus_url", "PROMETHEUS_URL", str),
            ("prometheus_namespace_label", "PROMETHEUS_NAMESPACE_LABEL", str),
            ("prometheus_variant_label", "PROMETHEUS_VARIANT_LABEL", str),
            ("experiment_interval_override", "TESTING_EXPERIMENT_INTERVAL", float),
            ("rollout_interval_override", "TESTING_ROLLOUT_INTERVAL", float),
        ):
            if (raw := get(name)) is not None:
                try:
                    values[field] = conv(raw)
                except ValueError:
                    raise ValueError(
                        f"{ENV_PREFIX}{name}={raw!r} is not a valid {conv.__name__}"
                    ) from None
        if (gw := get("GATEWAY_API")) is not None:
            values["gateway_api"] = gw.lower() in {"1", "true", "yes"}
        if (scrape := get("EXPERIMENT_SCRAPE")) is not None:
            values["scrape_pods"] = scrape.lower() in {"1", "true", "yes"}
        return cls(**values)  # type: ignore[arg-type]

    def build_config(self) -> BuildConfig:
        """Give the builders' view of these settings."""
        return BuildConfig(
            server_image=self.server_image,
            router_image=self.router_image,
            cluster_domain=self.cluster_domain,
        )
