"""`kubeserve up -f FILE`: run an InferenceService on this machine, as the operator would.

Each variant's model is fetched by `kubeserve fetch` (the init container's command) and
served by a `kubeserve serve` process (the pod's command, with the pod's environment); the
router is Debian's or any nginx, started with the very config the operator puts in the
router's ConfigMap, its upstreams pointed at the local servers. With spec.experiment it
collects the variants' counts and keeps the status as the operator would (`local.experiment`).
FILE is watched: an edit is what `kubectl apply` (or a GitOps commit) would be, a new
generation applied live (`local.spec_file`); with spec.rollout the live split walks to the new
weights in steps and the router's config is swapped at each one without dropping a request
(`local.router_reload`). Ctrl-C (or SIGTERM) stops everything, servers draining their
requests first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import errno
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from kubeserve import manifests, redaction
from kubeserve.api import spec, validation
from kubeserve.api.errors import SpecError
from kubeserve.builders import endpoint, pod
from kubeserve.local import experiment, router_config, router_reload, spec_file
from kubeserve.local import rollout as local_rollout
from kubeserve.rollout import decide, steps

# Examples name paths inside the server image; locally the training script writes them here.
IMAGE_MODELS = "/models/"
READY_TIMEOUT = 120.0
# What a server's /v2/health/ready says while its model loads (server.dataplane); any other
# reason (a model that failed to load) is final.
LOADING = "model is loading"


class UpError(Exception):
    """Something that stops the local run, said for the user."""


@dataclasses.dataclass
class Process:
    """A child process of the local run."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: datetime.datetime = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC)
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the `kubeserve up` argument parser."""
    parser = argparse.ArgumentParser(prog="kubeserve up", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-f", "--filename", required=True, help="InferenceService YAML (the first one in the file)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="router port on 127.0.0.1 (default 8080; 0: any free one, named in the URL printed)",
    )
    parser.add_argument(
        "--models-root",
        default="models",
        help="where file:///models/... URIs are looked up when /models does not exist (default ./models)",
    )
    parser.add_argument(
        "--workdir",
        help="keep fetched models, configs and logs here (default: a temporary directory)",
    )
    parser.add_argument(
        "--nginx", default=None, help="nginx binary (default: nginx on PATH or /usr/sbin/nginx)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="stop by itself after this many seconds"
    )
    parser.add_argument(
        "--status-file",
        type=_status_path,
        help="keep the status, as the operator would write it, in this YAML file (rewritten "
        "at every experiment collection and rollout check); `kubeserve experiment -f` reads it",
    )
    parser.add_argument(
        "--interval",
        "--experiment-interval",
        dest="interval",
        type=_positive_seconds,
        metavar="SECONDS",
        help="collect the experiment and check the rollout this often instead of "
        "spec.experiment.interval and spec.rollout.interval (local runs only: the API's "
        "minimum is 5s, too slow for a demo or a test)",
    )
    parser.add_argument(
        "--start-weights",
        type=local_rollout.parse_weights,
        metavar="SPLIT",
        help="with spec.rollout: the live split to start from, e.g. v1=100,v2=0 (variants left "
        "out get 0); the first check walks it to the file's weights in the rollout's steps, as "
        "if the file had just been edited from it. Default: the file's weights (nothing to walk "
        "until the file is edited)",
    )
    return parser


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _status_path(text: str) -> Path:
    # Said now, not after the models loaded: the file is written beside itself, then renamed.
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path.parent} is not a directory")
    return path


def local_uri(uri: str, models_root: Path) -> str:
    """Map a file:///models/... URI of the server image to the local models directory."""
    if not uri.startswith("file://"):
        return uri
    path = Path(uri.removeprefix("file://"))
    if path.exists() or not str(path).startswith(IMAGE_MODELS):
        return uri
    return (models_root.resolve() / str(path).removeprefix(IMAGE_MODELS)).as_uri()


def check_port(port: int) -> None:
    """Refuse at once a router port that is taken, rather than after the models load.

    Bound as nginx binds it (SO_REUSEADDR), so a connection still closing on the port does
    not count as taken; port 0 means any free port, picked later.
    """
    if port == 0:
        return
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((router_config.LOOPBACK, port))
        except OSError as exc:
            why = (
                "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            )
            raise UpError(
                f"port {port} on {router_config.LOOPBACK} {why}: choose another with --port, "
                "or --port 0 for any free one"
            ) from None


def find_nginx(explicit: str | None) -> str:
    """Find the nginx binary, or say how to get one."""
    for candidate in [explicit, shutil.which("nginx"), "/usr/sbin/nginx"]:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise UpError("nginx is not installed: the router needs it (Debian: apt-get install nginx)")


def _kubeserve(*args: str) -> list[str]:
    return [sys.executable, "-m", "kubeserve.cli", *args]


def _wait_ready(url: str, proc: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise UpError(
                f"{proc.name} exited with code {proc.popen.returncode}; its log:\n{_tail(proc.log)}"
            )
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise UpError(f"{proc.name} was not ready after {timeout:.0f}s; its log:\n{_tail(proc.log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start(name: str, command: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    handle = log.open("wb")
    popen = subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    return Process(name, popen, log)


def _fetch(variant: spec.Variant, dest: Path, models_root: Path, logs: Path) -> None:
    uri = local_uri(variant.model.storage_uri, models_root)
    if uri.startswith("pvc://"):
        raise UpError(
            f"variant {variant.name}: pvc:// models exist only in a cluster; use a file:// or http(s):// URI"
        )
    # The pod's limit (model.maxSize), so a model too big for the cluster is too big here too.
    command = _kubeserve(
        "fetch", uri, str(dest), "--force", "--max-bytes", str(variant.model.max_bytes())
    )
    if variant.model.sha256:
        command += ["--sha256", variant.model.sha256]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    (logs / f"fetch-{variant.name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        hint = ""
        if uri.startswith("file://") and IMAGE_MODELS in variant.model.storage_uri:
            hint = " (the example models come from: python scripts/train_example_models.py --out models)"
        raise UpError(
            f"variant {variant.name}: cannot fetch {redaction.redact(uri)}: "
            f"{redaction.redact(result.stderr.strip())}{hint}"
        )


def _server_env(
    isvc: spec.InferenceService, variant: spec.Variant, model_dir: Path, port: int, grpc_port: int
) -> dict[str, str]:
    env = dict(os.environ)
    # The pod's environment, as the builders write it, with local paths and ports.
    for item in pod.server_env(isvc, variant):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            print(
                f"note: variant {variant.name}: {item['name']} comes from a Secret or the pod in a cluster; "
                "not set locally",
                file=sys.stderr,
            )
    env |= {
        "KUBESERVE_MODEL_DIR": str(model_dir),
        "KUBESERVE_PORT": str(port),
        # Each server its own gRPC port: the pod's fixed one would clash between variants here.
        "KUBESERVE_GRPC_PORT": str(grpc_port),
        "KUBESERVE_HOST": "127.0.0.1",
        "HOME": env.get("HOME", str(model_dir)),
    }
    return env


@contextlib.contextmanager
def _workdir(explicit: str | None) -> Iterator[Path]:
    if explicit:
        path = Path(explicit)
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve()
    else:
        with tempfile.TemporaryDirectory(prefix="kubeserve-up-") as tmp:
            yield Path(tmp)


def _stop(processes: Sequence[Process]) -> None:
    for p in reversed(processes):
        if p.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for p in processes:
        try:
            p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait()


def load(path: str) -> spec.InferenceService:
    """Read the first InferenceService of a file."""
    docs = manifests.load_documents(path)
    if not docs:
        raise UpError(f"{path}: no InferenceService in it")
    try:
        return validation.parse(docs[0])
    except SpecError as exc:
        raise UpError(
            f"{path}: invalid InferenceService:\n" + "\n".join(f"  {e}" for e in exc.errors)
        ) from None


def _start_split(args: argparse.Namespace, isvc: spec.InferenceService) -> dict[str, int] | None:
    if args.start_weights is None:
        return None
    try:
        return local_rollout.start_split(isvc, args.start_weights)
    except ValueError as exc:
        raise UpError(str(exc)) from None


def _may_fail(isvc: spec.InferenceService, live: dict[str, int]) -> str | None:
    """Give the variant whose server need not be ready to start: a rollout's candidate with no traffic.

    In a cluster such a candidate's pods may never pass their readiness probe (a model that
    does not load) while the rollout holds; here the run goes on the same way.
    """
    rollout = isvc.spec.rollout
    if rollout is None or live.get(rollout.candidate, 0) != 0:
        return None
    return rollout.candidate


def _health(port: int, what: str) -> str:
    return f"http://127.0.0.1:{port}/v2/health/{what}"


def _candidate_up(name: str, port: int, proc: Process) -> bool:
    """Wait for the candidate's server to be up, ready or not; False when it is gone.

    With no live traffic it need not be ready for the run to start: its rollout holds until
    it is (a model that fails to load stays not ready, as a pod that never passes its probe).
    """
    try:
        _wait_ready(_health(port, "live"), proc, READY_TIMEOUT)
    except UpError as exc:
        print(
            f"warning: variant {name}, the rollout's candidate, is not serving: {exc}\n"
            "  it gets no traffic and its rollout holds (restart kubeserve up to try again)",
            flush=True,
        )
        return False
    deadline = time.monotonic() + READY_TIMEOUT
    why = local_rollout.not_ready(port)
    while why == LOADING and time.monotonic() < deadline and proc.popen.poll() is None:
        time.sleep(0.1)
        why = local_rollout.not_ready(port)
    if why is not None:
        print(
            f"warning: variant {name}, the rollout's candidate, is not ready: {why}\n"
            "  it gets no traffic and its rollout holds until it is ready",
            flush=True,
        )
    return True


def run(args: argparse.Namespace) -> int:
    """Start everything, print the URL, serve FILE's edits until Ctrl-C or --duration, stop."""
    # Watched from before the first read: an edit made while the models load is not missed.
    watched = spec_file.Watched(Path(args.filename))
    loaded = load(args.filename)
    isvc = spec_file.with_generation(loaded, loaded.metadata.generation or 1)
    start_split = _start_split(args, isvc)
    live = start_split or isvc.spec.live_weights()
    check_port(args.port)
    nginx = find_nginx(args.nginx)
    models_root = Path(args.models_root)
    processes: list[Process] = []
    stop = {"signal": None}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum  # type: ignore[assignment]

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _workdir(args.workdir) as work:
            logs = work / "logs"
            logs.mkdir(exist_ok=True)
            ports: dict[str, int] = {}
            grpc_ports: dict[str, int] = {}
            for v in isvc.spec.variants:
                model_dir = work / "variants" / v.name
                _fetch(v, model_dir / v.name, models_root, logs)
                ports[v.name] = router_config.free_port()
                grpc_ports[v.name] = router_config.free_port()
                processes.append(
                    _start(
                        f"variant {v.name}",
                        _kubeserve("serve"),
                        logs / f"server-{v.name}.log",
                        _server_env(isvc, v, model_dir, ports[v.name], grpc_ports[v.name]),
                    )
                )
            may_fail = _may_fail(isvc, live)
            for v, p in zip(isvc.spec.variants, processes, strict=True):
                if v.name != may_fail:
                    _wait_ready(_health(ports[v.name], "ready"), p, READY_TIMEOUT)
            gone: set[str] = set()  # servers that may be, and are, down
            for v, p in zip(isvc.spec.variants, processes, strict=True):
                if v.name == may_fail and not _candidate_up(v.name, ports[v.name], p):
                    gone.add(p.name)
            listen = args.port or router_config.free_port()
            health = router_config.free_port()
            grpc = router_config.GrpcPorts(router_config.free_port(), grpc_ports)
            nginx_dir = work / "router"
            nginx_dir.mkdir(exist_ok=True)
            conf = nginx_dir / "nginx.conf"

            def render(served: spec.InferenceService) -> str:
                return router_config.loopback_config(
                    served, ports, listen=listen, health=health, workdir=nginx_dir, grpc=grpc
                )

            conf.write_text(render(steps.live_spec(isvc, live)))
            router_proc = _start(
                "router",
                [nginx, "-c", str(conf), "-p", str(nginx_dir), "-e", "stderr"],
                logs / "router.log",
            )
            processes.append(router_proc)
            _wait_ready(f"http://127.0.0.1:{health}/healthz", router_proc, 30)
            router = router_reload.LiveRouter(
                nginx=nginx,
                conf=conf,
                prefix=nginx_dir,
                master=router_proc.popen.pid,
                text=conf.read_text(),
            )
            local = _local_status(
                args, isvc, processes, ports, f"http://127.0.0.1:{listen}", start_split
            )
            _reroute(router, local, render)
            _announce(local.live_isvc, listen, grpc.listen, ports, work)
            deadline = time.monotonic() + args.duration if args.duration else None
            while stop["signal"] is None and (deadline is None or time.monotonic() < deadline):
                for p in processes:
                    if p.name not in gone and p.popen.poll() is not None:
                        raise UpError(
                            f"{p.name} stopped (exit code {p.popen.returncode}); its log:\n{_tail(p.log)}"
                        )
                edit = watched.poll(local.isvc)
                now = datetime.datetime.now(datetime.UTC)
                if edit is not None and _take_edit(edit, local, args.filename, now):
                    _reroute(router, local, render)
                if local.due(now) and local.collect(now):
                    _reroute(router, local, render)
                time.sleep(0.2)
            print("stopping ...", flush=True)
            _stop(processes)
            return 0
    finally:
        _stop(processes)
        for s, handler in previous.items():
            signal.signal(s, handler)


def _take_edit(
    edit: spec_file.Edit, local: experiment.LocalStatus, path: str, now: datetime.datetime
) -> bool:
    """Say what an edit of the file does and do it; give whether the router may need a new config."""
    generation = local.isvc.metadata.generation
    if isinstance(edit, spec_file.Invalid):
        print(f"{path}: invalid, still serving generation {generation}:", flush=True)
        for problem in edit.problems:
            print(f"  {problem}", flush=True)
        return False
    if isinstance(edit, spec_file.NeedsRestart):
        print(
            f"{path}: {'; '.join(edit.reasons)}: restart kubeserve up to apply it; still "
            f"serving generation {generation}",
            flush=True,
        )
        return False
    if isinstance(edit, spec_file.Unchanged):
        return False
    if isinstance(edit, spec_file.Relabelled):
        command = decide.manual_value(edit.isvc)
        said = (
            f"; rollout command {command!r} taken now"
            if command and command != decide.manual_value(local.isvc)
            else ""
        )
        print(f"{path}: metadata changed, generation {generation} kept{said}", flush=True)
        return local.change(edit.isvc, now)
    new = edit.isvc
    weights = local_rollout.split_text(new.spec.live_weights())
    how = (
        f"the rollout of {new.spec.rollout.candidate} walks there in steps"
        if new.spec.rollout is not None
        else "applied at once"
    )
    print(f"{path}: generation {new.metadata.generation}: weights {weights} ({how})", flush=True)
    local.change(new, now)
    return True


def _reroute(
    router: router_reload.LiveRouter,
    local: experiment.LocalStatus,
    render: Callable[[spec.InferenceService], str],
) -> None:
    """Have the router carry the live split (and the spec's routing); say so when it changes."""
    try:
        if router.apply(render(local.live_isvc)):
            print(
                f"router: {local_rollout.split_text(local.live)} live (config reloaded)",
                flush=True,
            )
    except router_reload.ReloadError as exc:
        print(f"router: warning: {exc}", flush=True)


def _local_status(
    args: argparse.Namespace,
    isvc: spec.InferenceService,
    processes: Sequence[Process],
    ports: dict[str, int],
    url: str,
    start_split: dict[str, int] | None,
) -> experiment.LocalStatus:
    """Keep the status; the first look makes each server's counters its baseline.

    With `start_split`, the first rollout check walks from it to the file's weights.
    """
    servers = [
        experiment.Server(v.name, ports[v.name], p.popen.pid, p.started)
        for v, p in zip(isvc.spec.variants, processes[: len(isvc.spec.variants)], strict=True)
    ]
    local = experiment.LocalStatus(
        isvc,
        servers,
        url=url,
        interval=args.interval,
        status_file=args.status_file,
        live=start_split,
    )
    now = datetime.datetime.now(datetime.UTC)
    if local.due(now):
        local.collect(now)
    else:
        local.save()
    return local


def _announce(
    isvc: spec.InferenceService, listen: int, grpc_listen: int, ports: dict[str, int], work: Path
) -> None:
    url = f"http://127.0.0.1:{listen}"
    name = isvc.metadata.name
    print(f"InferenceService {name} is up at {url}  (traffic {endpoint.traffic_summary(isvc)})")
    print(f"  gRPC (Open Inference Protocol): 127.0.0.1:{grpc_listen}")
    for variant, port in ports.items():
        print(f"  variant {variant}: http://127.0.0.1:{port}")
    sample = ",".join(["0"] * 64)
    print(f"try:  curl -s {url}/v1/models/{name}:predict -d '{{\"instances\": [[{sample}]]}}' -i")
    if isvc.spec.routing.mode == "gateway-api":
        print(
            "note: gateway-api mode runs on a Gateway in a cluster; locally the nginx router stands in for it"
        )
    print(f"logs: {work / 'logs'}   stop: Ctrl-C", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `kubeserve up`; exit codes: 0 stopped cleanly, 1 a part failed, 2 bad input."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (UpError, manifests.InputError) as exc:
        print(f"kubeserve up: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, manifests.InputError) else 1
