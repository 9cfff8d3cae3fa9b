"""Classify a picture with the example image model (examples/image.yaml), three ways.

- ``binary``: the client decodes and scales the picture itself (Pillow, numpy) and sends
  the FP32 tensor with the V2 binary tensor extension: a JSON header naming the tensor,
  then its raw little-endian bytes; ``Inference-Header-Content-Length`` says where the
  header ends. 0.6 MB per image, no JSON numbers to parse.
- ``b64``: the client sends the picture's own JPEG/PNG bytes, base64-encoded, in a V1
  request (``{"instances": [{"b64": ...}]}``, TF Serving's form); the server decodes and
  scales them because the model's ``kubeserve.json`` declares its input an image.
- ``bytes``: the same file bytes as a V2 ``BYTES`` tensor in the binary extension (each
  element: a 4-byte little-endian length, then the bytes).

Only the standard library, numpy and Pillow; no client package.

    python examples/clients/image_client.py photo.jpg --url http://127.0.0.1:8080
    python examples/clients/image_client.py photo.png --modes b64 --top 3
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import pathlib
import struct
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

# The example model's preprocessing, as its kubeserve.json declares it (torchvision's): the
# server does the same for b64 and BYTES images.
SIZE = (224, 224)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MODES = ("binary", "b64", "bytes")


def pixels(data: bytes) -> np.ndarray:
    """Decode a picture into the model's input row: [224, 224, 3] FP32, scaled as declared."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", SIZE)  # a JPEG decodes at a reduced scale when that still covers SIZE
        upright = ImageOps.exif_transpose(img)  # a portrait photo is stored on its side
        rgb = upright.convert("RGB").resize(SIZE, Image.Resampling.BILINEAR)
    return ((np.asarray(rgb, dtype=np.float32) / 255 - MEAN) / STD).astype(np.float32)


def picture_bytes(path: pathlib.Path) -> bytes:
    """Return the file's bytes when it is a JPEG or PNG, else the picture re-encoded as JPEG."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        if img.format in ("JPEG", "PNG"):
            return data
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def binary_request(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> tuple[bytes, int]:
    """Return a V2 binary-extension body for one input, and the length of its JSON header."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return header + raw, len(header)


def bytes_elements(items: Sequence[bytes]) -> bytes:
    """Serialise BYTES elements as the binary extension does: length (uint32 LE), then bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """POST and return the body and headers; an HTTP error exits with the server's message."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None


def v2_outputs(body: bytes, headers: dict[str, str]) -> np.ndarray:
    """Return the first output of a V2 response, JSON or binary."""
    length = headers.get("inference-header-content-length")
    document: dict[str, Any] = json.loads(body[: int(length)] if length else body)
    out = document["outputs"][0]
    if "data" in out:
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    # The server answered with the output's raw bytes after the header.
    raw = body[int(length or 0) :][: out["parameters"]["binary_data_size"]]
    return np.frombuffer(raw, dtype="<f4").reshape(out["shape"])


def classify(url: str, model: str, mode: str, picture: bytes) -> np.ndarray:
    """Send one picture in ``mode``; return the model's probabilities, [1, 1000]."""
    v2 = f"{url}/v2/models/{model}/infer"
    if mode == "binary":
        row = pixels(picture)[np.newaxis]
        body, header_length = binary_request(
            "input", "FP32", row.shape, row.astype("<f4").tobytes()
        )
    elif mode == "bytes":
        body, header_length = binary_request("input", "BYTES", [1], bytes_elements([picture]))
    else:
        request = {"instances": [{"b64": base64.b64encode(picture).decode()}]}
        answer, _ = post(
            f"{url}/v1/models/{model}:predict",
            json.dumps(request).encode(),
            {"Content-Type": "application/json"},
        )
        return np.asarray(json.loads(answer)["predictions"], dtype=np.float32)
    answer, headers = post(
        v2,
        body,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        },
    )
    return v2_outputs(answer, headers)


def main(argv: Sequence[str] | None = None) -> int:
    """Classify the picture in each mode and print the top classes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("picture", type=pathlib.Path, help="a JPEG or PNG (others: re-encoded)")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the router or server")
    parser.add_argument("--model", default="mobilenet")
    parser.add_argument("--modes", default=",".join(MODES), help="binary, b64 and/or bytes")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    picture = picture_bytes(args.picture)
    for mode in args.modes.split(","):
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; expected {', '.join(MODES)}")
        probabilities = classify(args.url.rstrip("/"), args.model, mode, picture)[0]
        best = np.argsort(probabilities)[::-1][: args.top]
        shown = ", ".join(f"class {i}: {probabilities[i]:.3f}" for i in best)
        print(f"{mode:6} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
