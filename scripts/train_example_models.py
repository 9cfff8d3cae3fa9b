"""Train the example digits classifiers and export them for serving.

Uses scikit-learn's bundled digits dataset (8x8 images, 64 features, no download):

- v1: LogisticRegression on standardised pixels;
- v2: a small multi-layer perceptron.

Writes, under ``--out`` (default ``models/``):

    digits-onnx/{v1,v2}/model.onnx      ONNX (skl2onnx), outputs "label" and "probabilities"
    digits-sklearn/{v1,v2}/model.skops  safe skops format for the sklearn runtime
    digits-joblib/{v1,v2}/model.joblib  pickle-family, for the benchmark's peer servers

``--formats`` picks a subset, so a peer's own environment can write joblib files with its
own scikit-learn version.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

FORMATS = ("onnx", "skops", "joblib")


def train() -> dict[str, Any]:
    """Return the two fitted estimators, keyed by version, and print their accuracy."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    models = {
        "v1": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "v2": make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0),
        ),
    }
    for version, estimator in models.items():
        # 1,437 rows of 64 features are too small to share out: BLAS and OpenMP threads only
        # wait on each other, worst when the test suite keeps every core busy (fitting both
        # took 0.99 s with the default threads, 0.65 s with one, on an idle 2-core machine).
        with threadpool_limits(limits=1):
            estimator.fit(x_train, y_train)
        last = estimator.steps[-1][1]
        if hasattr(last, "_optimizer"):
            # Adam's state only serves further partial_fit calls; dropping it keeps the skops
            # file within skops' trusted types, so the server loads it without extra trust.
            last._optimizer = None
        print(f"{version}: test accuracy {estimator.score(x_test, y_test):.3f}", file=sys.stderr)
    return models


def export(models: dict[str, Any], out: pathlib.Path, formats: Sequence[str]) -> None:
    """Write each model in each requested format under ``out``."""
    for version, estimator in models.items():
        if "onnx" in formats:
            from skl2onnx import to_onnx
            from skl2onnx.common.data_types import FloatTensorType

            onx = to_onnx(
                estimator,
                initial_types=[("input", FloatTensorType([None, 64]))],
                # Plain tensors instead of a list of per-row dicts: V2 serves tensors.
                options={id(estimator.steps[-1][1]): {"zipmap": False}},
                target_opset=17,
            )
            # Name the outputs as the sklearn runtime does, so clients see one contract.
            renames = {"output_label": "label", "output_probability": "probabilities"}
            for o in onx.graph.output:
                new = renames.get(o.name, o.name)
                for node in onx.graph.node:
                    node.output[:] = [new if n == o.name else n for n in node.output]
                o.name = new
            path = out / "digits-onnx" / version / "model.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(onx.SerializeToString())
        if "skops" in formats:
            import skops.io

            path = out / "digits-sklearn" / version / "model.skops"
            path.parent.mkdir(parents=True, exist_ok=True)
            skops.io.dump(estimator, path)
        if "joblib" in formats:
            import joblib

            path = out / "digits-joblib" / version / "model.joblib"
            path.parent.mkdir(parents=True, exist_ok=True)
            joblib.dump(estimator, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Train and export; return an exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("models"))
    parser.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help="comma-separated subset of " + ", ".join(FORMATS),
    )
    args = parser.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    unknown = set(formats) - set(FORMATS)
    if unknown:
        parser.error(f"unknown formats: {', '.join(sorted(unknown))}")
    export(train(), args.out, formats)
    print(f"wrote {', '.join(formats)} models under {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
