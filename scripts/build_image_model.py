"""Build the example image classifier: a MobileNetV2-shaped ONNX model with random weights.

Nothing is downloaded: the graph is assembled node by node with ``onnx.helper`` (the ``onnx``
package of the test extra) and filled with random weights from a fixed seed, so every build
of a version is byte-for-byte the same. It classifies nothing useful; it costs what a real
MobileNetV2 costs, which is what the examples and the image benchmark need.

The shape is MobileNetV2's (Sandler et al. 2018, and torchvision's and Keras's layout): a
stride-2 3x3 stem, 17 inverted residual blocks (1x1 expansion, 3x3 depthwise, 1x1 linear
projection, a residual add where shapes allow) with ReLU6 as ``Clip(0, 6)``, a 1x1 conv,
global average pooling and a 1000-class head with softmax. Batch norms are left out: folded
into the convolutions, as an exporter would, they cost nothing at inference.

Narrowed to keep the file and the CPU time small: the width multiplier defaults to 0.35
(Keras's smallest) and, unlike Keras and torchvision, the last conv's 1280 channels are
narrowed too (to 448), which keeps the file near 3 MB instead of 7 MB; ``--width 1.0 --full-head``
builds the real width (14 MB, about 6x the compute).

Writes, under ``--out`` (default ``models/``)::

    mobilenet/{v1,v2}/model.onnx      input "input" [N, 224, 224, 3] float32 (NHWC),
                                      output "probabilities" [N, 1000]
    mobilenet/{v1,v2}/kubeserve.json  declares "input" an image input, so the server
                                      decodes JPEG/PNG bytes into it

v1 and v2 differ only in their seed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

SIZE = 224
CLASSES = 1000
SEEDS = {"v1": 1, "v2": 2}
# (expansion t, output channels c, repeats n, first stride s), MobileNetV2's table 2.
BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# What the server does to an image before the model sees it: torchvision's preprocessing
# (pixels scaled to [0, 1], then ImageNet's per-channel mean and std).
IMAGE_DECLARATION = {
    "inputs": {
        "input": {
            "image": {
                "size": [SIZE, SIZE],
                "layout": "NHWC",
                "color": "RGB",
                "scale": 1 / 255,
                "mean": [0.485, 0.456, 0.406],
                "std": [0.229, 0.224, 0.225],
            }
        }
    }
}


def divisible(channels: float, by: int = 8) -> int:
    """Round a channel count as MobileNet does: to a multiple of 8, never below 90 %."""
    rounded = max(by, int(channels + by / 2) // by * by)
    return rounded + by if rounded < 0.9 * channels else rounded


class Graph:
    """The nodes and weights of the model as they are added, with fresh names for each."""

    def __init__(self, seed: int) -> None:
        import numpy as np

        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.weights: list[Any] = []
        self._count = 0

    def name(self, kind: str) -> str:
        """Return a new tensor name."""
        self._count += 1
        return f"{kind}_{self._count}"

    def weight(self, shape: tuple[int, ...], fan_in: int) -> str:
        """Add a He-initialised weight (activations neither vanish nor blow up over depth)."""
        import numpy as np
        from onnx import numpy_helper

        values = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
        name = self.name("w")
        self.weights.append(numpy_helper.from_array(values, name))
        return name

    def bias(self, size: int) -> str:
        """Add a small random bias (the folded batch norm's shift)."""
        import numpy as np
        from onnx import numpy_helper

        values = self.rng.normal(0.0, 0.01, size=(size,)).astype(np.float32)
        name = self.name("b")
        self.weights.append(numpy_helper.from_array(values, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        """Add a node with one output; return the output's name."""
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(
        self, x: str, c_in: int, c_out: int, *, kernel: int, stride: int = 1, groups: int = 1
    ) -> str:
        """Add a convolution with bias ("same" padding for odd kernels)."""
        w = self.weight((c_out, c_in // groups, kernel, kernel), fan_in=c_in // groups * kernel**2)
        pad = kernel // 2
        return self.node(
            "Conv",
            [x, w, self.bias(c_out)],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=groups,
        )

    def relu6(self, x: str) -> str:
        """Add ReLU6 as Clip(0, 6) (min and max are inputs since opset 11)."""
        if "relu6_min" not in {w.name for w in self.weights}:
            import numpy as np
            from onnx import numpy_helper

            self.weights.append(numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"))
            self.weights.append(numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"))
        return self.node("Clip", [x, "relu6_min", "relu6_max"])


def build(*, seed: int, width: float = 0.35, full_head: bool = False) -> Any:
    """Return the ModelProto of a MobileNetV2-shaped classifier with random weights."""
    from onnx import TensorProto, checker, helper

    g = Graph(seed)
    # Clients send NHWC images (TF Serving's and the lecture's layout); ONNX convolutions
    # take NCHW, so the graph transposes once at its start.
    x = g.node("Transpose", ["input"], perm=[0, 3, 1, 2])
    channels = divisible(32 * width)
    x = g.relu6(g.conv(x, 3, channels, kernel=3, stride=2))
    for t, c, n, s in BLOCKS:
        c_out = divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = channels * t
            y = x
            if t != 1:
                y = g.relu6(g.conv(y, channels, hidden, kernel=1))
            y = g.relu6(g.conv(y, hidden, hidden, kernel=3, stride=stride, groups=hidden))
            y = g.conv(y, hidden, c_out, kernel=1)  # linear bottleneck: no activation
            x = g.node("Add", [x, y]) if stride == 1 and channels == c_out else y
            channels = c_out
    last = divisible(1280 * max(1.0, width)) if full_head else divisible(1280 * width)
    x = g.relu6(g.conv(x, channels, last, kernel=1))
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x], axis=1)
    x = g.node("Gemm", [x, g.weight((CLASSES, last), fan_in=last), g.bias(CLASSES)], transB=1)
    g.nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1, name="softmax"))
    graph = helper.make_graph(
        g.nodes,
        "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=g.weights,
    )
    # IR 8 / opset 17: what every onnxruntime since 1.14 loads (the server asks >= 1.18).
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8,
        producer_name="kubeserve scripts/build_image_model.py",
        doc_string=f"MobileNetV2-shaped, width {width}, random weights (seed {seed})",
    )
    checker.check_model(model, full_check=True)
    return model


def write(out: pathlib.Path, *, width: float, full_head: bool) -> list[pathlib.Path]:
    """Write every version's model and image declaration under ``out``; return the models."""
    written = []
    for version, seed in SEEDS.items():
        directory = out / "mobilenet" / version
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "model.onnx"
        path.write_bytes(build(seed=seed, width=width, full_head=full_head).SerializeToString())
        (directory / "kubeserve.json").write_text(json.dumps(IMAGE_DECLARATION, indent=2) + "\n")
        written.append(path)
    return written


def check(path: pathlib.Path) -> None:
    """Run the model once in ONNX Runtime at batch 1 and 8: probabilities that sum to 1."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 8):
        images = np.random.default_rng(0).random((batch, SIZE, SIZE, 3), dtype=np.float32)
        (probabilities,) = session.run(["probabilities"], {"input": images})
        if probabilities.shape != (batch, CLASSES) or not np.allclose(probabilities.sum(1), 1):
            raise SystemExit(f"{path}: unexpected output {probabilities.shape}")


def main(argv: Sequence[str] | None = None) -> int:
    """Build, write and (with --check) run the models; return an exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("models"))
    parser.add_argument("--width", type=float, default=0.35, help="width multiplier (0.35)")
    parser.add_argument(
        "--full-head", action="store_true", help="keep the last conv at 1280 channels"
    )
    parser.add_argument("--check", action="store_true", help="run each model in onnxruntime")
    args = parser.parse_args(argv)
    if args.width <= 0:
        parser.error("--width must be positive")
    for path in write(args.out, width=args.width, full_head=args.full_head):
        if args.check:
            check(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
