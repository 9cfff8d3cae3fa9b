"""`kubeserve traffic | promote | rollback`: read the InferenceService, plan, patch it back.

The plan is `traffic`'s pure logic; this module only reads and writes. Against a cluster it
sends, through `cluster.Cluster`, a JSON Patch like `kubectl patch --type json`, pinned to the
resourceVersion it read (a concurrent edit makes it re-read and re-plan, up to three times).
With `-f FILE` it edits a YAML file instead and prints the result, for GitOps repositories:
only the changed values differ, comments and layout kept; `--dry-run` prints the patch and
sends nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Protocol

import kubeserve
from kubeserve import manifests, traffic, yaml_text

if TYPE_CHECKING:
    from kubeserve import cluster

ATTEMPTS = 3
EXIT_FAILED = 1


class Api(Protocol):
    """The two calls the commands need; `ClusterApi` makes them, tests fake them."""

    default_namespace: str

    def get(self, namespace: str, name: str) -> dict[str, Any]: ...

    def patch(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]: ...


class ConflictError(Exception):
    """The object changed between the read and the patch."""


class ApiUnavailableError(Exception):
    """No cluster to talk to, or the API server refused; the message says which."""


class ClusterApi:
    """The InferenceService calls through `cluster.Cluster`, the one module that talks to the API.

    `cluster` is imported inside the methods: it needs the Kubernetes client, which only the
    operator extra installs, and `kubeserve validate` must run without it.
    """

    def __init__(self, client: cluster.Cluster) -> None:
        self._client = client
        self.default_namespace = client.default_namespace

    @classmethod
    def connect(cls, context: str | None = None) -> ClusterApi:
        """Connect as kubectl would: the kubeconfig (or `context` of it), or the pod's account."""
        try:
            from kubeserve import cluster
        except ImportError as exc:
            raise ApiUnavailableError(
                f"the Kubernetes client is not installed ({exc}); "
                "install it with: pip install 'kubeserve[operator]'"
            ) from None
        try:
            return cls(cluster.Cluster.from_environment(context=context, pool_size=1))
        except cluster.NotConfigured as exc:
            raise ApiUnavailableError(str(exc)) from None

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        from kubeserve import cluster

        try:
            obj = self._client.get(cluster.INFERENCE_SERVICE, namespace, name)
        except cluster.ApiError as exc:
            raise ApiUnavailableError(f"reading it failed: {exc.status} {exc.reason}") from None
        if obj is None:
            raise traffic.TrafficError(f"not found in namespace {namespace!r}")
        return obj

    def patch(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        from kubeserve import cluster

        try:
            obj = self._client.json_patch(cluster.INFERENCE_SERVICE, namespace, name, ops)
        except cluster.Conflict as exc:
            raise ConflictError(str(exc)) from None
        except cluster.ApiError as exc:
            raise ApiUnavailableError(f"the patch was refused: {exc}") from None
        if obj is None:
            raise traffic.TrafficError(f"not found in namespace {namespace!r}")
        return obj


def plan(args: argparse.Namespace, obj: dict[str, Any]) -> traffic.Change:
    """Plan the command's change for one InferenceService dict."""
    if args.command == "traffic":
        return traffic.set_traffic(obj, args.split)
    if args.command == "promote":
        return traffic.promote(obj, args.variant)
    return traffic.rollback(obj)


def _run_on_file(args: argparse.Namespace) -> int:
    text = manifests.read_text(args.filename)
    # Refuse what kubectl would (duplicate keys, bad YAML), saying where, before any edit.
    manifests.parse_documents(text, source=args.filename)
    changes: list[traffic.Change] = []

    def edit(doc: Any) -> dict[str, Any] | None:
        if not (
            isinstance(doc, dict)
            and doc.get("kind") == kubeserve.KIND
            and (doc.get("metadata") or {}).get("name") == args.name
        ):
            return None
        change = plan(args, doc)
        changes.append(change)
        return traffic.apply(doc, change)

    edited = yaml_text.edit_documents(text, edit)
    if not changes:
        print(f"no InferenceService {args.name!r} in {args.filename}", file=sys.stderr)
        return EXIT_FAILED
    for change in changes:
        print(f"inferenceservice/{args.name}: {change.before} -> {change.after}", file=sys.stderr)
    sys.stdout.write(edited)
    return 0


def _run_on_cluster(args: argparse.Namespace, api: Api) -> int:
    namespace = args.namespace or api.default_namespace
    for _ in range(ATTEMPTS):
        obj = api.get(namespace, args.name)
        change = plan(args, obj)
        ops = traffic.json_patch(obj, change)
        if args.dry_run:
            print(json.dumps(ops, indent=2))
            print(f"inferenceservice/{args.name}: {change.before} -> {change.after} (dry run)")
            return 0
        try:
            api.patch(namespace, args.name, ops)
        except ConflictError:
            continue
        print(f"inferenceservice/{args.name}: {change.before} -> {change.after}")
        return 0
    print(
        f"inferenceservice/{args.name} kept changing while being patched; try again",
        file=sys.stderr,
    )
    return EXIT_FAILED


def run(args: argparse.Namespace, api: Api | None = None) -> int:
    """Run `traffic`, `promote` or `rollback`; give the exit code."""
    try:
        if args.filename:
            return _run_on_file(args)
        return _run_on_cluster(args, api or ClusterApi.connect(args.context))
    except (traffic.TrafficError, ApiUnavailableError) as exc:
        print(f"kubeserve {args.command}: {args.name}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Add -n/--namespace and --context: which cluster and namespace, as kubectl chooses them."""
    parser.add_argument(
        "-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def add_commands(sub: Any) -> None:
    """Register the three commands on the main parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    add_cluster_arguments(common)
    common.add_argument(
        "-f",
        "--filename",
        help="edit this YAML file instead of the cluster and print the result (GitOps)",
    )
    common.add_argument(
        "--dry-run", action="store_true", help="print the JSON Patch and send nothing"
    )
    p = sub.add_parser(
        "traffic",
        parents=[common],
        help="set the split, e.g. `traffic digits v1=50,v2=50` (unnamed variants get 0)",
        description="Set the traffic split of an InferenceService: the named variants get "
        "their weights, every other variant 0 (it stays deployed). The split replaced is kept "
        "for `rollback`.",
    )
    p.add_argument("name", help="InferenceService name")
    p.add_argument("split", help="VARIANT=PERCENT,... summing to 100")
    p.set_defaults(func=run)
    p = sub.add_parser(
        "promote",
        parents=[common],
        help="send 100%% to one variant (the others stay deployed at 0 for a rollback)",
        description="Send all live traffic to one variant; the others stay deployed at weight "
        "0, so `rollback` is instant. Promoting the shadow ends the mirroring.",
    )
    p.add_argument("name", help="InferenceService name")
    p.add_argument("variant", help="the variant to promote")
    p.set_defaults(func=run)
    p = sub.add_parser(
        "rollback",
        parents=[common],
        help="return to the split before the last traffic/promote",
        description="Return to the split before the last `traffic` or `promote` (kept in the "
        "serving.kubeserve.dev/previous-traffic annotation); rolling back twice returns to "
        "where it started.",
    )
    p.add_argument("name", help="InferenceService name")
    p.set_defaults(func=run)
