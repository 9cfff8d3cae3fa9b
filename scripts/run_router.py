"""Run an InferenceService's router on this machine: the rendered nginx.conf, on loopback.

    .venv/bin/python scripts/run_router.py -f examples/ab-sticky.yaml \\
        --upstream v1=127.0.0.1:9001 --upstream v2=127.0.0.1:9002 --listen 8080

renders the config as the operator does, placed on this machine: each variant at the given
address (variants not given get a stand-in from upstream.py that answers with its name),
listening on 127.0.0.1:PORT (health on PORT+1), writing under a temporary directory. It runs
Debian's nginx in the foreground until Ctrl-C; `--print` prints the config instead.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from kubeserve import manifests
from kubeserve.api import validation
from kubeserve.builders import nginx_config
from kubeserve.local import router_config
from kubeserve.testing import nginx as dataplane


def _interrupt(*_: object) -> None:
    # SIGTERM stops as cleanly as Ctrl-C: nginx and the stand-ins are stopped too.
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-f", "--filename", required=True, help="InferenceService YAML")
    parser.add_argument("--name", help="which InferenceService in the file (default: the first)")
    parser.add_argument(
        "--upstream", action="append", default=[], help="VARIANT=HOST:PORT (repeatable)"
    )
    parser.add_argument("--listen", type=int, default=8080, help="loopback port (health: PORT+1)")
    parser.add_argument("--print", action="store_true", help="print the config and exit")
    args = parser.parse_args()

    docs = [validation.parse(d) for d in manifests.load_documents(args.filename)]
    isvc = next(d for d in docs if args.name in (None, d.metadata.name))
    given = dict(u.split("=", 1) for u in args.upstream)
    variants = [v.name for v in isvc.spec.variants]
    unknown = sorted(set(given) - set(variants))
    if unknown:
        parser.error(f"no variant named {', '.join(unknown)} (variants: {', '.join(variants)})")
    missing = [name for name in variants if name not in given]
    stand_ins = dataplane.Upstreams(missing) if missing and not args.print else None
    stand_in_ports = stand_ins.ports if stand_ins else {}
    # --print without stand-ins: a placeholder port for the variants not given.
    upstreams = {
        name: f"{router_config.LOOPBACK}:{stand_in_ports.get(name, 9)}" for name in missing
    } | given
    work = Path(tempfile.mkdtemp(prefix="kubeserve-router-"))
    placement = nginx_config.Placement(
        host=router_config.LOOPBACK,
        port=args.listen,
        health_port=args.listen + 1,
        upstreams=upstreams,
        temp_dir=work,
    )
    text = nginx_config.render_config(isvc, placement=placement)
    if args.print:
        sys.stdout.write(text)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    nginx = dataplane.Nginx(work, text, health=args.listen + 1)
    print(
        f"router for {isvc.metadata.name} on http://127.0.0.1:{args.listen} (config {work}/nginx.conf)"
    )
    for name, port in stand_in_ports.items():
        print(f"  {name}: stand-in on 127.0.0.1:{port}")
    try:
        while nginx.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        nginx.stop()
        if stand_ins:
            stand_ins.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
