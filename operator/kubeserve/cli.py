"""The `kubeserve` command line: crd, validate, render, traffic, experiment, rollout, serve, fetch, up."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from kubeserve import experiment_cli, manifests, rollout_cli, traffic_cli
from kubeserve.api import validation
from kubeserve.api.errors import SpecError
from kubeserve.builders import children
from kubeserve.builders.config import BuildConfig

EXIT_INVALID = 1
EXIT_USAGE = 2
SERVER_COMMANDS = ("serve", "fetch")
OPERATOR_COMMAND = "operator"
UP_COMMAND = "up"


def _describe(doc: Any, index: int, source: str) -> str:
    name = (
        doc.get("metadata", {}).get("name")
        if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict)
        else None
    )
    kind = doc.get("kind", "object") if isinstance(doc, dict) else "document"
    label = f"{str(kind).lower()}/{name}" if name else f"document {index + 1}"
    return f"{source}: {label}"


def _parse_all(paths: Sequence[str]) -> tuple[list[Any], list[str], list[str]]:
    """Parse every InferenceService in the files.

    Gives what parsed, each problem as a printable line, and the files with no document.
    """
    parsed, problems, empty = [], [], []
    for path in paths:
        documents = manifests.load_documents(path)
        if not documents:
            empty.append(path)
        for i, doc in enumerate(documents):
            try:
                parsed.append(validation.parse(doc))
            except SpecError as exc:
                where = _describe(doc, i, path)
                problems += [f"{where}: {e}" for e in exc.errors]
    return parsed, problems, empty


def _cmd_crd(args: argparse.Namespace) -> int:
    text = manifests.crd_text()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    parsed, problems, empty = _parse_all(args.filename)
    problems += [f"{path}: no InferenceService found" for path in empty]
    for line in problems:
        print(line, file=sys.stderr)
    for isvc in parsed:
        print(f"inferenceservice/{isvc.metadata.name}: valid")
    return EXIT_INVALID if problems else 0


def _cmd_render(args: argparse.Namespace) -> int:
    parsed, problems, _ = _parse_all(args.filename)
    if problems:
        # Print nothing on stdout: half a render piped into `kubectl apply` is worse than none.
        for line in problems:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    config = BuildConfig(**({"server_image": args.server_image} if args.server_image else {}))
    objects: list[dict[str, Any]] = []
    for isvc in parsed:
        if args.namespace:
            isvc = isvc.model_copy(
                update={"metadata": isvc.metadata.model_copy(update={"namespace": args.namespace})}
            )
        objects += children.build_children(isvc, config)
    sys.stdout.write(manifests.dump_documents(objects))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (the server's commands parse their own arguments)."""
    parser = argparse.ArgumentParser(
        prog="kubeserve",
        description="Serve ML models on Kubernetes with canary, A/B and shadow traffic.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "crd",
        help="print the InferenceService CustomResourceDefinition",
        description="Print the InferenceService CustomResourceDefinition, generated from the "
        "API models: its schema and CEL rules refuse at `kubectl apply` what the API server can "
        "check. crds/ and the Helm chart hold this output.",
    )
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.set_defaults(func=_cmd_crd)
    p = sub.add_parser(
        "validate",
        help="check InferenceService YAML and report every problem",
        description="Check InferenceService YAML as the operator does, and report every "
        "problem, one line each: file, object, field path, what is wrong. Exit status 1 when "
        "there is one, 2 when a file cannot be read or is not YAML.",
    )
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="file to check ('-' for stdin); repeatable",
    )
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser(
        "render",
        help="print everything the operator would create for InferenceService YAML",
        description="Print every object the operator would create for the InferenceServices "
        "(Deployments, Services, the router, autoscalers, disruption budgets, HTTPRoutes and GRPCRoutes), "
        "without a cluster. When one is invalid it prints nothing and exits 1, so a pipe into "
        "`kubectl apply -f -` applies nothing.",
    )
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="file to render ('-' for stdin); repeatable",
    )
    p.add_argument(
        "-n", "--namespace", help="namespace for the rendered objects (default: the resource's own)"
    )
    p.add_argument("--server-image", help="model server image (default: the release's image)")
    p.set_defaults(func=_cmd_render)
    traffic_cli.add_commands(sub)
    experiment_cli.add_command(sub)
    rollout_cli.add_parser(sub)
    for name in SERVER_COMMANDS:
        sub.add_parser(
            name, help=f"model server: {name} (see `kubeserve {name} --help`)", add_help=False
        )
    sub.add_parser(
        OPERATOR_COMMAND, help="run the operator (see `kubeserve operator --help`)", add_help=False
    )
    sub.add_parser(
        UP_COMMAND,
        help="run an InferenceService on this machine, no cluster (see `kubeserve up --help`)",
        add_help=False,
    )
    return parser


def _run_server_command(argv: list[str]) -> int:
    try:
        from kubeserve.server import cli as server_cli
    except ImportError as exc:
        print(
            f"kubeserve {argv[0]}: the model server is not installed ({exc}); "
            "install it with: pip install 'kubeserve[server]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return server_cli.main(argv)


def _run_operator(argv: list[str]) -> int:
    try:
        from kubeserve.controller import main as operator_main
    except ImportError as exc:
        print(
            f"kubeserve operator: the operator is not installed ({exc}); "
            "install it with: pip install 'kubeserve[operator]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return operator_main.main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in SERVER_COMMANDS:
        return _run_server_command(args_list)
    if args_list and args_list[0] == OPERATOR_COMMAND:
        return _run_operator(args_list[1:])
    if args_list and args_list[0] == UP_COMMAND:
        from kubeserve.local import up

        return up.main(args_list[1:])
    args = build_parser().parse_args(args_list)
    try:
        return int(args.func(args))
    except manifests.InputError as exc:
        print(f"kubeserve {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
