"""Turn one or more ``run_benchmark.py`` result files into the Markdown tables of the docs.

With several files (repeated full runs on a shared machine), each server and scenario keeps
its best run by requests/s, the same rule for every server, and that run's latencies.
``--override FILE`` (repeatable) takes every scenario FILE measured from the override files
only, so that rows of a newer partial run are never mixed with older runs' rows.

    python bench/server/report.py bench/server/results*.json
    python bench/server/report.py results-run1.json results-run2.json \
        --override results-b32-run1.json --png docs/benchmarks-server.png
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

Key = tuple[str, str, int, int]


def best_of(files: Sequence[pathlib.Path]) -> dict[Key, dict[str, Any]]:
    """Return the best measurement per (server, protocol, batch, connections)."""
    best: dict[Key, dict[str, Any]] = {}
    for f in files:
        for row in json.loads(f.read_text())["results"]:
            key = (row["server"], row["protocol"], row["batch"], row["connections"])
            if key not in best or row["rps"] > best[key]["rps"]:
                best[key] = row
    return best


def overridden(
    best: dict[Key, dict[str, Any]], newer: dict[Key, dict[str, Any]]
) -> dict[Key, dict[str, Any]]:
    """Return ``best`` with every scenario that ``newer`` covers taken from ``newer`` alone."""
    covered = {k[1:] for k in newer}
    kept = {k: v for k, v in best.items() if k[1:] not in covered}
    return {**kept, **newer}


def _workers(server: str) -> int:
    return 2 if "2 workers" in server else 1


def _is_peer(server: str) -> bool:
    return not server.startswith("kubeserve")


def markdown(best: dict[Key, dict[str, Any]]) -> str:
    """Render one table row per measurement with ratios against the faster peer."""
    lines = [
        "| protocol | batch | conns | server | req/s | p50 ms | p99 ms | "
        "vs faster peer, same workers | vs fastest peer overall | "
        "faster same-workers peer's p99 ms |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    scenarios = sorted({k[1:] for k in best})
    servers = list(dict.fromkeys(k[0] for k in best))
    for proto, batch, conns in scenarios:
        rows = [best[(s, proto, batch, conns)] for s in servers if (s, proto, batch, conns) in best]
        peers = [r for r in rows if _is_peer(r["server"])]
        overall = max((r["rps"] for r in peers), default=0.0)
        for r in rows:
            same = [p for p in peers if _workers(p["server"]) == _workers(r["server"])]
            # MLServer always runs its default single inference worker; count it as 1.
            rival = max(same, key=lambda p: p["rps"]) if same else None
            mine = rival is not None and not _is_peer(r["server"])
            ratio_same = r["rps"] / rival["rps"] if mine and rival else None
            rival_p99 = f"{rival['p99_ms']:.2f}" if mine and rival else ""
            ratio_all = r["rps"] / overall if peers and not _is_peer(r["server"]) else None
            lines.append(
                f"| {proto.upper()} | {batch} | {conns} | {r['server']} | {r['rps']:,.0f} | "
                f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{f'{ratio_same:.1f}x' if ratio_same else ''} | "
                f"{f'{ratio_all:.1f}x' if ratio_all else ''} | {rival_p99} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """Print the table for the given result files; ``--png PATH`` also draws the plot."""
    args = list(argv)
    png = None
    if "--png" in args:
        i = args.index("--png")
        png = pathlib.Path(args[i + 1])
        del args[i : i + 2]
    overrides = []
    while "--override" in args:
        i = args.index("--override")
        overrides.append(pathlib.Path(args[i + 1]))
        del args[i : i + 2]
    files = [pathlib.Path(a) for a in args] or [pathlib.Path(__file__).with_name("results.json")]
    best = best_of(files)
    if overrides:
        best = overridden(best, best_of(overrides))
    print(markdown(best))
    if png is not None:
        sys.path.insert(0, str(pathlib.Path(__file__).parent))
        import run_benchmark

        run_benchmark.plot(list(best.values()), png)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
