"""`kubeserve traffic | promote | rollback`: read the InferenceService, plan, patch it back.

The plan is `traffic`'s pure logic; this module only reads and writes. Against a cluster it
sends a JSON Patch, like `kubectl patch --type json`, pinned to the resourceVersion it read
(a concurrent edit makes it re-read and re-plan, up to three times). With `-f FILE` it edits a
YAML file instead and prints the result, for GitOps repositories; `--dry-run` prints the patch
and sends nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Protocol

import kubeserve
from kubeserve import manifests, traffic

PLURAL = "inferenceservices"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
ATTEMPTS = 3
EXIT_FAILED = 1


class Api(Protocol):
    """The two calls the commands need; `KubernetesApi` makes them, tests fake them."""

    default_namespace: str

    def get(self, namespace: str, name: str) -> dict[str, Any]: ...

    def patch(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]: ...


class ConflictError(Exception):
    """The object changed between the read and the patch."""


class ApiUnavailableError(Exception):
    """No cluster to talk to, or the API server refused; the message says which."""


class KubernetesApi:
    """The InferenceService API through the official client and the usual kubeconfig."""

    def __init__(self, context: str | None = None) -> None:
        # The client is untyped and only the operator extra installs it: import it here.
        import kubernetes

        client: Any = kubernetes.client
        config: Any = kubernetes.config
        # Like kubectl: the context's namespace, or the pod's own in a cluster, else default.
        self.default_namespace = "default"
        try:
            config.load_incluster_config()
            with contextlib.suppress(OSError), open(SERVICE_ACCOUNT_NAMESPACE) as f:
                self.default_namespace = f.read().strip() or "default"
        except config.ConfigException:
            # The client reads KUBECONFIG once, at import; read it now instead.
            kubeconfig = os.environ.get("KUBECONFIG")
            try:
                config.load_kube_config(config_file=kubeconfig, context=context)
                contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            except (config.ConfigException, OSError) as exc:
                raise ApiUnavailableError(f"no cluster configured: {exc}") from None
            chosen = (
                next((c for c in contexts if c["name"] == context), active) if context else active
            )
            self.default_namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
        self._api = client.CustomObjectsApi()
        self._errors = client.exceptions.ApiException

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            obj: Any = self._api.get_namespaced_custom_object(
                kubeserve.API_GROUP, kubeserve.API_VERSION, namespace, PLURAL, name
            )
        except self._errors as exc:
            if exc.status == 404:
                raise traffic.TrafficError(f"not found in namespace {namespace!r}") from None
            raise ApiUnavailableError(f"reading it failed: {exc.status} {exc.reason}") from None
        return dict(obj)

    def patch(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            obj: Any = self._api.patch_namespaced_custom_object(
                kubeserve.API_GROUP,
                kubeserve.API_VERSION,
                namespace,
                PLURAL,
                name,
                ops,
                _content_type="application/json-patch+json",
            )
        except self._errors as exc:
            # A failed `test` operation comes back as 422 ("testing value ... failed"; 500 on
            # old API servers); a stale resourceVersion as 409.
            if exc.status in (422, 500) and "test" in str(exc.body or "").lower():
                raise ConflictError(str(exc.body)) from exc
            if exc.status == 409:
                raise ConflictError(str(exc.body)) from exc
            raise ApiUnavailableError(
                f"the patch was refused: {exc.status} {exc.reason}: {exc.body}"
            ) from None
        return dict(obj)


def plan(args: argparse.Namespace, obj: dict[str, Any]) -> traffic.Change:
    """Plan the command's change for one InferenceService dict."""
    if args.command == "traffic":
        return traffic.set_traffic(obj, args.split)
    if args.command == "promote":
        return traffic.promote(obj, args.variant)
    return traffic.rollback(obj)


def _run_on_file(args: argparse.Namespace) -> int:
    docs = manifests.load_documents(args.filename)
    out = []
    found = False
    for doc in docs:
        if (
            isinstance(doc, dict)
            and doc.get("kind") == kubeserve.KIND
            and (doc.get("metadata") or {}).get("name") == args.name
        ):
            change = plan(args, doc)
            doc = traffic.apply(doc, change)
            print(
                f"inferenceservice/{args.name}: {change.before} -> {change.after}", file=sys.stderr
            )
            found = True
        out.append(doc)
    if not found:
        print(f"no InferenceService {args.name!r} in {args.filename}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(manifests.dump_documents(out))
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
        return _run_on_cluster(args, api or KubernetesApi(args.context))
    except (traffic.TrafficError, ApiUnavailableError) as exc:
        print(f"kubeserve {args.command}: {args.name}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def add_commands(sub: Any) -> None:
    """Register the three commands on the main parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)"
    )
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
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
    )
    p.add_argument("name", help="InferenceService name")
    p.add_argument("split", help="VARIANT=PERCENT,... summing to 100")
    p.set_defaults(func=run)
    p = sub.add_parser(
        "promote",
        parents=[common],
        help="send 100%% to one variant (the others stay deployed at 0 for a rollback)",
    )
    p.add_argument("name", help="InferenceService name")
    p.add_argument("variant", help="the variant to promote")
    p.set_defaults(func=run)
    p = sub.add_parser(
        "rollback", parents=[common], help="return to the split before the last traffic/promote"
    )
    p.add_argument("name", help="InferenceService name")
    p.set_defaults(func=run)
