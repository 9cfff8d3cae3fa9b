"""`kubeserve operator`: run the operator against the cluster of the environment."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence

import kopf

from kubeserve import cluster
from kubeserve.controller import handlers, reconcile, runtime
from kubeserve.controller.config import ENV_PREFIX, OperatorConfig
from kubeserve.controller.metrics import OperatorMetrics

# The API client's timeout is read here, not in OperatorConfig: it shapes the clients this
# module makes, not the reconciles.
API_TIMEOUT_ENV = f"{ENV_PREFIX}API_TIMEOUT"


def seconds(raw: str) -> float:
    """Parse a number of seconds > 0 (argparse names the flag in its error)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {raw!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Flags override the KUBESERVE_* environment, which overrides the defaults."""
    parser = argparse.ArgumentParser(
        prog="kubeserve operator", description="Run the kubeserve operator."
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        help="watch this namespace (repeatable; default: all, or KUBESERVE_NAMESPACES)",
    )
    parser.add_argument("--server-image", help="model server image for variants that name none")
    parser.add_argument("--router-image", help="nginx image of the routers")
    parser.add_argument("--resync-seconds", type=float, help="full resync interval (default 300)")
    parser.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics port, 0 to disable (default 8081)"
    )
    parser.add_argument(
        "--health-port", type=int, help="liveness /healthz port, 0 to disable (default 8080)"
    )
    parser.add_argument(
        "--gateway-api",
        action="store_true",
        default=None,
        help="watch HTTPRoutes (Gateway API installed)",
    )
    parser.add_argument(
        "--log-format", choices=["plain", "json"], help="log format (default plain)"
    )
    parser.add_argument(
        "--prometheus-url",
        help="collect experiments from this Prometheus (its HTTP API) instead of reading the "
        "variant pods' /metrics (or KUBESERVE_PROMETHEUS_URL)",
    )
    parser.add_argument(
        "--prometheus-namespace-label",
        help="the label Prometheus puts a pod's namespace in (default namespace)",
    )
    parser.add_argument(
        "--prometheus-variant-label",
        help="the label that names a series' variant in Prometheus (default version)",
    )
    parser.add_argument(
        "--experiment-scrape",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="collect experiments at all (default on; KUBESERVE_EXPERIMENT_SCRAPE)",
    )
    parser.add_argument(
        "--testing-experiment-interval",
        type=float,
        help="for tests only: collect every experiment this often, whatever its interval",
    )
    parser.add_argument(
        "--testing-rollout-interval",
        type=float,
        help="for tests only: look at every running rollout this often, whatever its interval",
    )
    parser.add_argument(
        "--api-timeout",
        type=seconds,
        metavar="SECONDS",
        help=f"how long one call to the Kubernetes API may take (default "
        f"{cluster.DEFAULT_TIMEOUT:g}, or {API_TIMEOUT_ENV}); watches add it to their own "
        "timeout",
    )
    parser.add_argument(
        "--testing-retry-delay",
        type=seconds,
        metavar="SECONDS",
        help=f"for tests only: try refused work again after this long instead of "
        f"{runtime.RETRY_DELAY:g} s (a longer Retry-After still wins)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    return parser


def config_from(args: argparse.Namespace) -> OperatorConfig:
    """Merge flags over the environment."""
    config = OperatorConfig.from_env()
    overrides = {
        "namespaces": tuple(args.namespaces) if args.namespaces else None,
        "server_image": args.server_image,
        "router_image": args.router_image,
        "resync_seconds": args.resync_seconds,
        "metrics_port": args.metrics_port,
        "health_port": args.health_port,
        "gateway_api": args.gateway_api,
        "log_format": args.log_format,
        "prometheus_url": args.prometheus_url,
        "prometheus_namespace_label": args.prometheus_namespace_label,
        "prometheus_variant_label": args.prometheus_variant_label,
        "scrape_pods": args.experiment_scrape,
        "experiment_interval_override": args.testing_experiment_interval,
        "rollout_interval_override": args.testing_rollout_interval,
    }
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def api_timeout_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> float:
    """Give the API client's timeout: the flag, else the environment, else the default."""
    if args.api_timeout is not None:
        value: float = args.api_timeout
        return value
    raw = (os.environ if env is None else env).get(API_TIMEOUT_ENV) or ""
    if not raw:
        return cluster.DEFAULT_TIMEOUT
    try:
        return seconds(raw)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{API_TIMEOUT_ENV}: {exc}") from None


def build_runtime(
    config: OperatorConfig,
    metrics: OperatorMetrics,
    *,
    api_timeout: float,
    retry_delay: float = runtime.RETRY_DELAY,
) -> runtime.OperatorRuntime:
    """Connect (reconciles and watches each have a client) and make the operator's runtime."""
    reconciler = reconcile.Reconciler(
        cluster.Cluster.from_environment(timeout=api_timeout), config.build_config()
    )
    return runtime.OperatorRuntime(
        config,
        reconciler,
        metrics,
        watch_api=cluster.Cluster.from_environment(timeout=api_timeout),
        retry_delay=retry_delay,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
        api_timeout = api_timeout_from(args)
    except ValueError as exc:
        print(f"kubeserve operator: {exc}", file=sys.stderr)
        return 2
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if not args.verbose:
        # kopf says "Handler ... succeeded" for every event of every child: thousands a minute.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    metrics = OperatorMetrics()
    operator = build_runtime(
        config,
        metrics,
        api_timeout=api_timeout,
        retry_delay=args.testing_retry_delay or runtime.RETRY_DELAY,
    )
    handlers.register(registry, operator)
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    liveness = f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=liveness,
        )
    )
    return 0
