"""The demo behind `make demo`: an A/B test of two digit classifiers, run locally, to a verdict.

First `kubeserve up` on examples/ab-sticky.yaml (v1 ONNX logistic regression, v2 a
scikit-learn MLP, 50/50, sticky on x-user-id): real digits from scikit-learn's bundled
dataset sent as a few users would, and which variant answered each.

Then `kubeserve up` on examples/ab-experiment.yaml, the same two variants with an experiment
on `outcome`: simulated users each get a prediction, and report through the router, to the
variant that served them, whether it led to the outcome wanted. The outcomes are simulated
(10% for v1, 16% for v2), the servers, router, counts and sequential test are the real ones;
the status the local run keeps is shown as `kubeserve experiment` shows it, until a verdict.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from kubeserve import experiment_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ab-sticky.yaml"
EXPERIMENT = ROOT / "examples" / "ab-experiment.yaml"
MODELS = ROOT / "models"
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
# Enough requests per user that one variant answering all of them is no coincidence.
REQUESTS_PER_USER = 5
# The simulated users' chance of the outcome wanted, per variant that served them.
OUTCOME_RATES = {"v1": 0.10, "v2": 0.16}
# The local run collects this often (the API's interval is at least 5s: too slow for a demo).
COLLECT_SECONDS = 1.0
USERS_PER_ROUND = 250
EXPERIMENT_SECONDS = 90
SHOW_TABLE_SECONDS = 15
CLIENTS = 6


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[Any, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers, json.load(response)


def predict(url: str, row: list[float], headers: dict[str, str]) -> tuple[str, int]:
    response_headers, answer = post(url, {"instances": [row]}, headers)
    return response_headers["x-kubeserve-variant"], answer["predictions"][0]


@contextlib.contextmanager
def kubeserve_up(example: Path, *extra: str) -> Iterator[str]:
    """Run `kubeserve up` on an example, give its URL, stop it on the way out."""
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubeserve.cli",
            "up",
            "-f",
            str(example),
            "--port",
            "0",
            "--models-root",
            str(MODELS),
            *extra,
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
            raise SystemExit(f"kubeserve up did not start (exit code {up.wait()})")
        print(line, end="")
        if match := re.search(r"is up at (http://\S+)", line):
            base = match.group(1)
    if base is None:
        up.kill()
        raise SystemExit("kubeserve up did not start in time")
    # The rest of what it says (the experiment's verdict changes among it) shows as it comes.
    echo = threading.Thread(target=lambda: [print(line, end="", flush=True) for line in up.stdout])
    echo.start()
    try:
        yield base
    finally:
        up.send_signal(2)
        up.wait(timeout=60)
        echo.join()


def sticky_users() -> None:
    from sklearn.datasets import load_digits

    with kubeserve_up(EXAMPLE) as base:
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
    print("stopped.")


def simulated_user(base: str, name: str, user: int, row: list[float]) -> tuple[str, int]:
    """One user: a prediction, then the outcome it led to, sent to the variant that served it."""
    headers, _ = post(
        f"{base}/v1/models/{name}:predict", {"instances": [row]}, {"x-user-id": f"user-{user}"}
    )
    variant, request_id = headers["x-kubeserve-variant"], headers["x-request-id"]
    # Simulated: the user converts with the served variant's rate (fixed per user, repeatable).
    outcome = int(random.Random(user).random() < OUTCOME_RATES[variant])
    post(
        f"{base}/v2/models/{name}/feedback",
        {"outcome": outcome, "requestId": request_id},
        {"x-kubeserve-variant": variant},
    )
    return variant, outcome


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return obj


def experiment() -> None:
    from sklearn.datasets import load_digits

    rows = [r.tolist() for r in load_digits().data]
    name = yaml.safe_load(EXPERIMENT.read_text())["metadata"]["name"]
    rates = ", ".join(f"{v} {p:.0%}" for v, p in OUTCOME_RATES.items())
    print(
        f"\nA/B test to a verdict on SIMULATED OUTCOMES: simulated users, one prediction each, "
        f"then feedback {{'outcome': 0|1}} to the variant that served them ({rates})."
    )
    with tempfile.TemporaryDirectory(prefix="kubeserve-demo-") as tmp:
        status_file = Path(tmp) / "status.yaml"
        with (
            kubeserve_up(
                EXPERIMENT,
                "--status-file",
                str(status_file),
                "--experiment-interval",
                str(COLLECT_SECONDS),
            ) as base,
            concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool,
        ):
            verdict, obj = conclude(base, name, rows, status_file, pool)
        print()
        if obj is not None:
            print(experiment_cli.render_table(obj), end="")
        if verdict in {"Better", "Worse", "Equivalent"}:
            print(f"\nverdict reached: {verdict} (simulated outcomes)")
        else:
            print(
                f"\nno verdict within {EXPERIMENT_SECONDS}s ({verdict}): the test would keep "
                "collecting; its p-values stay valid however long it runs"
            )


def conclude(
    base: str,
    name: str,
    rows: list[list[float]],
    status_file: Path,
    pool: concurrent.futures.Executor,
) -> tuple[str, dict[str, Any] | None]:
    """Send rounds of simulated users until the status has a verdict or the time is up."""
    started = time.monotonic()
    shown = started
    served: collections.Counter[str] = collections.Counter()
    converted: collections.Counter[str] = collections.Counter()
    user, verdict, obj = 0, "Collecting", None
    while time.monotonic() - started < EXPERIMENT_SECONDS:
        batch = range(user, user + USERS_PER_ROUND)
        for variant, outcome in pool.map(
            lambda u: simulated_user(base, name, u, rows[u % len(rows)]), batch
        ):
            served[variant] += 1
            converted[variant] += outcome
        user += USERS_PER_ROUND
        # Let the local run collect what this round sent before reading its verdict.
        time.sleep(COLLECT_SECONDS * 1.5)
        obj = read_status(status_file)
        exp = ((obj or {}).get("status") or {}).get("experiment") or {}
        verdict = exp.get("verdict", "Collecting")
        seen = "  ".join(
            f"{v}: {served[v]} users, {converted[v] / served[v]:.1%} converted"
            for v in sorted(served)
        )
        print(f"{time.monotonic() - started:4.0f}s  {user} simulated users  {seen}  -> {verdict}")
        if verdict in {"Better", "Worse", "Equivalent"}:
            break
        if obj is not None and time.monotonic() - shown >= SHOW_TABLE_SECONDS:
            shown = time.monotonic()
            print(experiment_cli.render_table(obj))
    return verdict, obj


def main() -> int:
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
    sticky_users()
    experiment()
    return 0


if __name__ == "__main__":
    sys.exit(main())
