"""The demo behind `make demo`: an A/B test of two digit classifiers, run locally.

Starts `kubeserve up` on examples/ab-sticky.yaml (v1 ONNX logistic regression, v2 a
scikit-learn MLP, 50/50, sticky on x-user-id), sends real digits from scikit-learn's bundled
dataset as a few users would, shows which variant answered each, then stops everything.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ab-sticky.yaml"
MODELS = ROOT / "models"
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
# Enough requests per user that one variant answering all of them is no coincidence.
REQUESTS_PER_USER = 5


def predict(url: str, row: list[float], headers: dict[str, str]) -> tuple[str, int]:
    body = json.dumps({"instances": [row]}).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["x-kubeserve-variant"], json.load(response)["predictions"][0]


def main() -> int:
    from sklearn.datasets import load_digits

    if not (MODELS / "digits-onnx" / "v1" / "model.onnx").exists():
        print("training the example models ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "train_example_models.py"),
                "--out",
                str(MODELS),
            ],
            check=True,
        )
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeserve.cli",
            "up",
            "-f",
            str(EXAMPLE),
            "--port",
            "0",
            "--models-root",
            str(MODELS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert up.stdout is not None
    base = None
    deadline = time.monotonic() + 180
    while base is None and time.monotonic() < deadline:
        line = up.stdout.readline()
        if not line:
            print("kubeserve up did not start", file=sys.stderr)
            return up.wait() or 1
        print(line, end="")
        if match := re.search(r"is up at (http://\S+)", line):
            base = match.group(1)
    try:
        url = f"{base}/v1/models/digits-ab:predict"
        digits = load_digits()
        print(f"\nSticky users (x-user-id), {REQUESTS_PER_USER} requests each:")
        rows, variants_per_user = [], []
        for i, user in enumerate(USERS):
            served, answers = [], []
            for j in range(REQUESTS_PER_USER):
                k = REQUESTS_PER_USER * i + j
                variant, predicted = predict(url, digits.data[k].tolist(), {"x-user-id": user})
                served.append(variant)
                answers.append(f"{digits.target[k]}->{predicted}")
            rows.append((user, " ".join(served), " ".join(answers)))
            variants_per_user.append(len(set(served)))
        header = ("user", "variant per request", "digit->predicted")
        widths = [max(len(row[c]) for row in [header, *rows]) for c in range(2)]
        for user, served_by, answered in [header, *rows]:
            print(f"{user:{widths[0]}}  {served_by:{widths[1]}}  {answered}")
        kept = sum(n == 1 for n in variants_per_user)
        print(f"{kept} of {len(USERS)} users were served by one variant throughout")
        counts: collections.Counter[str] = collections.Counter()
        for k in range(200):
            counts[predict(url, digits.data[k].tolist(), {})[0]] += 1
        print(f"\n200 anonymous requests, split by weight 50/50: {dict(sorted(counts.items()))}")
        forced = {
            predict(url, digits.data[k].tolist(), {"x-kubeserve-variant": "v2"})[0]
            for k in range(10)
        }
        print(f"10 requests with x-kubeserve-variant: v2 -> served by {sorted(forced)}")
    finally:
        up.send_signal(2)
        up.wait(timeout=60)
    print("stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
