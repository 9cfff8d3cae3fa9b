"""`kubeserve rollout NAME promote|abort|pause|resume`: ask the operator to act on a rollout.

The command writes no state of its own and never touches the spec (GitOps keeps owning it): it
sets the annotation `serving.kubeserve.dev/rollout: <command>/<nonce>` by a merge patch of
metadata.annotations, through `cluster.Cluster` (the one way to the API). The nonce is the
time, to the microsecond, so the same command given twice is two commands. The operator
honours each value once, at its next check of the rollout (`rollout.decide`): promote applies
the spec's weights at once, abort rolls back to the split before the rollout, pause holds the
split, resume continues a paused rollout with fresh evidence.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from typing import Any, Protocol

from kubeserve import traffic, traffic_cli
from kubeserve.rollout import decide

EXIT_FAILED = 1


class Api(Protocol):
    """The two calls the command needs; `ClusterApi` makes them, tests fake them."""

    default_namespace: str

    def get(self, namespace: str, name: str) -> dict[str, Any]: ...

    def annotate(
        self, namespace: str, name: str, annotations: dict[str, str]
    ) -> dict[str, Any]: ...


class ClusterApi(traffic_cli.ClusterApi):
    """The traffic commands' API, plus a merge patch of the annotations."""

    @classmethod
    def connect(cls, context: str | None = None) -> ClusterApi:
        """Connect as kubectl would: the kubeconfig (or `context` of it), or the pod's account."""
        api = super().connect(context)
        assert isinstance(api, ClusterApi)
        return api

    def annotate(self, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        """Merge the annotations into the object's metadata (a merge patch, no version pin)."""
        from kubeserve import cluster

        try:
            obj = self._client.patch(
                cluster.INFERENCE_SERVICE,
                namespace,
                name,
                {"metadata": {"annotations": annotations}},
            )
        except cluster.ApiError as exc:
            raise traffic_cli.ApiUnavailableError(f"the patch was refused: {exc}") from None
        if obj is None:
            raise traffic.TrafficError(f"not found in namespace {namespace!r}")
        return obj


def nonce(now: datetime.datetime) -> str:
    """Give the nonce of a command: the time in UTC, to the microsecond."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rollout_text(obj: dict[str, Any]) -> str:
    rollout = (obj.get("status") or {}).get("rollout") or {}
    return str(rollout.get("progress") or rollout.get("phase") or "not started")


def run(
    args: argparse.Namespace,
    api: Api | None = None,
    clock: Callable[[], datetime.datetime] | None = None,
) -> int:
    """Set the command's annotation on the InferenceService; give the exit code."""
    now = (clock or (lambda: datetime.datetime.now(datetime.UTC)))()
    try:
        client: Api = api or ClusterApi.connect(args.context)
        namespace = args.namespace or client.default_namespace
        obj = client.get(namespace, args.name)
        config = (obj.get("spec") or {}).get("rollout")
        if not config:
            raise traffic.TrafficError(
                "has no spec.rollout: add one (candidate, steps) to roll out in steps"
            )
        value = f"{args.action}/{nonce(now)}"
        client.annotate(namespace, args.name, {decide.MANUAL_ANNOTATION: value})
    except (traffic.TrafficError, traffic_cli.ApiUnavailableError) as exc:
        print(f"kubeserve rollout: {args.name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    interval = config.get("interval", "30s") if isinstance(config, dict) else "30s"
    print(
        f"inferenceservice/{args.name}: {args.action} requested ({decide.MANUAL_ANNOTATION}="
        f"{value}); rollout {_rollout_text(obj)}; the operator acts at its next check "
        f"(every {interval}), see `kubectl describe inferenceservice {args.name}` for the event"
    )
    return 0


def add_parser(sub: Any) -> None:
    """Register `rollout` on the main parser's subparsers."""
    p = sub.add_parser(
        "rollout",
        help="promote, abort, pause or resume a progressive rollout",
        description="Ask the operator to act on the rollout of an InferenceService, through "
        f"the {decide.MANUAL_ANNOTATION} annotation (honoured once, at the next check): "
        "promote applies the spec's weights at once, abort rolls back to the split before "
        "the rollout, pause holds the live split, resume continues a paused rollout with "
        "fresh evidence. The spec is not changed.",
    )
    p.add_argument("name", help="InferenceService name")
    p.add_argument("action", choices=decide.COMMANDS, help="what to do")
    traffic_cli.add_cluster_arguments(p)
    p.set_defaults(func=run)
