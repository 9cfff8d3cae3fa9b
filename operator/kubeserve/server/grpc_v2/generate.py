"""Regenerate the committed protobuf code of ``grpc_v2`` from its ``.proto``.

    python -m kubeserve.server.grpc_v2.generate            # rewrite the committed files
    python -m kubeserve.server.grpc_v2.generate --out DIR  # write them under DIR instead

Needs ``grpcio-tools`` (the test extra pins the version the committed files came from: its
protoc stamps its version into them). After protoc, two edits:

- the messages are registered in a descriptor pool of their own, not protobuf's default
  one: a process that also imports another copy of the ``inference`` package (tritonclient's
  ``grpc_service.proto``, KServe's) would otherwise fail with "duplicate symbol";
- both files get a header that keeps ruff, ruff format and mypy out of generated code.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

# operator/, the source root the proto's import path is relative to.
SOURCE_ROOT = pathlib.Path(__file__).resolve().parents[3]
PROTO = "kubeserve/server/grpc_v2/open_inference_grpc.proto"
MODULE = "kubeserve/server/grpc_v2/open_inference_grpc_pb2"
OUTPUTS = (f"{MODULE}.py", f"{MODULE}.pyi")

_HEADER = "# ruff: noqa\n# fmt: off\n# Generated: python -m kubeserve.server.grpc_v2.generate\n"
_STUB_HEADER = _HEADER + "# mypy: ignore-errors\n"
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile("


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    """Write the generated files under ``out`` (a source root) and return their paths."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # test extra only

    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{SOURCE_ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        str(SOURCE_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    code, stub = (out / name for name in OUTPUTS)
    text = code.read_text()
    if text.count(_DEFAULT_POOL) != 1:
        raise RuntimeError(f"{code}: protoc's output changed; update {__name__}")
    code.write_text(_HEADER + text.replace(_DEFAULT_POOL, _OWN_POOL))
    stub.write_text(_STUB_HEADER + stub.read_text())
    return [code, stub]


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate into ``--out`` (default: the source tree itself)."""
    parser = argparse.ArgumentParser(prog="python -m kubeserve.server.grpc_v2.generate")
    parser.add_argument("--out", type=pathlib.Path, default=SOURCE_ROOT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
