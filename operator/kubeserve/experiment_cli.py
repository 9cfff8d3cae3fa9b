"""`kubeserve experiment NAME`: print an A/B test's comparison table, or draw it, from status.

The operator (or `kubeserve up --status-file`) writes the experiment into the InferenceService's
`status.experiment`; this module only reads it, through `traffic_cli.ClusterApi` (the one way to
the API) or from a YAML file with `-f`, and renders it. The rendering is pure: `render_table`
takes the object and gives the text, so the demo and the tests call it directly.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pydantic
import yaml

import kubeserve
from kubeserve import manifests, traffic, traffic_cli
from kubeserve.api import status

if TYPE_CHECKING:
    from matplotlib.axes import Axes

EXIT_FAILED = 1
# Metrics whose comparisons are differences of two rates, shown in percentage points.
RATE_METRICS = frozenset({"errorRate", "slowRate", "outcome"})
PLOT_EXTRA = "pip install 'kubeserve[plot]'"


class NoExperimentError(Exception):
    """The object has no experiment to show; the message says why and what to do."""


class PlotUnavailableError(Exception):
    """matplotlib, the `plot` extra, is not installed."""


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


def experiment_of(obj: Mapping[str, Any]) -> status.ExperimentStatus:
    """Give the object's status.experiment, or say why there is none to show."""
    name = _name(obj)
    if not (obj.get("spec") or {}).get("experiment"):
        raise NoExperimentError(
            f"inferenceservice/{name} has no spec.experiment: add one (control, metrics, "
            "minSamples, ...) to compare its variants"
        )
    raw = (obj.get("status") or {}).get("experiment")
    if not raw:
        interval = (obj.get("spec") or {}).get("experiment", {}).get("interval", "30s")
        raise NoExperimentError(
            f"inferenceservice/{name}: the experiment has no status yet; it is written at the "
            f"first collection (every {interval})"
        )
    try:
        return status.ExperimentStatus.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise NoExperimentError(
            f"inferenceservice/{name}: status.experiment is not in a form this kubeserve "
            f"reads ({where}: {first['msg']})"
        ) from None


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _difference(metric: str, x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.2f}pp" if metric in RATE_METRICS else f"{x:+.4g}"


def _seconds(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 0.01:
        return f"{x * 1000:.1f}ms"
    return f"{x * 1000:.0f}ms" if x < 1 else f"{x:.2f}s"


def _p_value(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Align rows like kubectl: left-justified columns, three spaces apart."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _elapsed(start: str | None, end: str | None) -> str | None:
    a, b = _parse_time(start), _parse_time(end)
    if a is None or b is None:
        return None
    seconds = max(0, int((b - a).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _variant_rows(exp: status.ExperimentStatus) -> list[list[str]]:
    rows = [
        [
            "VARIANT",
            "WEIGHT",
            "REQUESTS",
            "ERRORS",
            "SLOW",
            "FEEDBACK",
            "OUTCOME",
            "VALUE",
            "P50",
            "P95",
            "P99",
        ]
    ]
    for name, v in (exp.variants or {}).items():
        latency = v.latency or status.Latency()
        rows.append(
            [
                f"{name} (control)" if name == exp.control else name,
                str(v.weight),
                str(v.requests),
                _percent(v.error_rate),
                _percent(v.slow_rate),
                str(v.feedback + v.values),
                _percent(v.outcome_rate),
                _number(v.value_mean),
                _seconds(latency.p50),
                _seconds(latency.p95),
                _seconds(latency.p99),
            ]
        )
    return rows


def _comparison_rows(exp: status.ExperimentStatus) -> list[list[str]]:
    rows = [["VARIANT", "METRIC", "SAMPLES", "ESTIMATE", "INTERVAL", "P-VALUE", "VERDICT"]]
    for c in exp.comparisons or []:
        interval = (
            "-"
            if c.low is None or c.high is None
            else f"[{_difference(c.metric, c.low)}, {_difference(c.metric, c.high)}]"
        )
        rows.append(
            [
                c.variant,
                c.metric,
                str(c.samples),
                _difference(c.metric, c.estimate),
                interval,
                _p_value(c.p_value),
                c.verdict,
            ]
        )
    return rows


def _warnings(exp: status.ExperimentStatus) -> list[str]:
    lines = []
    ratio = exp.sample_ratio
    if ratio is not None and ratio.mismatch:
        lines.append(
            f"WARNING: sample ratio mismatch (chi-square {ratio.chi_square:.1f}, "
            f"p={_p_value(ratio.p_value)}): the variants did not get the requests their weights "
            "should send them, so the comparison cannot be trusted until the cause is found "
            "(a variant failing or restarting, a client pinning one variant)"
        )
    for pod in exp.unreadable or []:
        lines.append(f"note: pod {pod.pod} was not read at the last collection: {pod.reason}")
    return lines


def render_table(obj: Mapping[str, Any]) -> str:
    """Render an InferenceService's experiment as text; raise NoExperimentError when it has none."""
    exp = experiment_of(obj)
    lines = [f"inferenceservice/{_name(obj)}: {exp.verdict}"]
    if exp.summary:
        lines[0] += f": {exp.summary}"
    since = f"since {exp.start_time or '?'}"
    if took := _elapsed(exp.start_time, exp.last_collected):
        since += f" ({took}; last collected {exp.last_collected})"
    details = [since]
    if exp.control:
        details.append(f"control {exp.control}")
    if exp.slow_threshold_seconds is not None:
        details.append(f"slow: over {_seconds(exp.slow_threshold_seconds)}")
    lines.append(", ".join(details))
    lines += _warnings(exp)
    if exp.variants:
        lines += ["", *_columns(_variant_rows(exp))]
    if exp.comparisons:
        lines += ["", *_columns(_comparison_rows(exp))]
    else:
        lines += ["", "no comparison yet: every variant needs requests before the first one"]
    return "\n".join(lines) + "\n"


def _raw_experiment(obj: Mapping[str, Any]) -> dict[str, Any]:
    experiment_of(obj)  # the same messages as the table when there is nothing to show
    raw: dict[str, Any] = obj["status"]["experiment"]
    return raw


def _series(
    exp: status.ExperimentStatus,
) -> dict[str, dict[str, list[tuple[float, float | None, float | None, float | None]]]]:
    """Group the history per metric, then per variant: (minutes since start, estimate, low, high)."""
    points = exp.history or []
    times = [_parse_time(p.time) for p in points]
    start = _parse_time(exp.start_time) or next((t for t in times if t), None)
    out: dict[str, dict[str, list[tuple[float, float | None, float | None, float | None]]]] = {}
    for point, when in zip(points, times, strict=True):
        if when is None or start is None:
            continue
        minutes = (when - start).total_seconds() / 60
        for c in point.comparisons:
            out.setdefault(c.metric, {}).setdefault(c.variant, []).append(
                (minutes, c.estimate, c.low, c.high)
            )
    return out


def _draw_metric(
    ax: Axes,
    metric: str,
    variants: Mapping[str, list[tuple[float, float | None, float | None, float | None]]],
) -> None:
    scale = 100.0 if metric in RATE_METRICS else 1.0
    for variant, points in variants.items():
        xs = [p[0] for p in points if p[1] is not None]
        estimates = [p[1] * scale for p in points if p[1] is not None]
        (line,) = ax.plot(xs, estimates, marker=".", label=f"{variant} estimate")
        bounded = [p for p in points if p[2] is not None and p[3] is not None]
        if bounded:
            ax.fill_between(
                [p[0] for p in bounded],
                [p[2] * scale for p in bounded],  # type: ignore[operator]
                [p[3] * scale for p in bounded],  # type: ignore[operator]
                alpha=0.2,
                color=line.get_color(),
                label=f"{variant} confidence sequence",
            )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"{metric} vs control" + (" (pp)" if scale == 100 else ""))
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)


def plot(obj: Mapping[str, Any], path: str) -> None:
    """Draw each comparison's confidence sequence over time, one panel per metric, as a PNG."""
    exp = experiment_of(obj)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailableError(
            f"--png needs matplotlib, which is not installed: {PLOT_EXTRA}"
        ) from None
    series = _series(exp)
    if not series:
        raise NoExperimentError(
            f"inferenceservice/{_name(obj)}: no history to draw yet (one point per collection)"
        )
    # The Agg canvas, not pyplot: no display, no global figure state.
    figure = Figure(figsize=(8, 3 * len(series)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(series), 1, squeeze=False)
    for row, (metric, variants) in zip(axes, sorted(series.items()), strict=True):
        _draw_metric(row[0], metric, variants)
    axes[-1][0].set_xlabel("minutes since the experiment started")
    figure.suptitle(f"{_name(obj)}: {exp.verdict}" + (f" ({exp.summary})" if exp.summary else ""))
    figure.savefig(path, format="png", dpi=100)


def load_file(path: str, name: str | None) -> dict[str, Any]:
    """Read the InferenceService `name` (or the first one) from a YAML file."""
    for doc in manifests.load_documents(path):
        if (
            isinstance(doc, dict)
            and doc.get("kind") == kubeserve.KIND
            and (name is None or _name(doc) == name)
        ):
            return doc
    what = f"InferenceService {name!r}" if name else "InferenceService"
    raise traffic.TrafficError(f"no {what} in {path}")


def _read(args: argparse.Namespace, api: traffic_cli.Api | None) -> dict[str, Any]:
    if args.filename:
        return load_file(args.filename, args.name)
    if not args.name:
        raise traffic.TrafficError("name the InferenceService (or read a file with -f)")
    api = api or traffic_cli.ClusterApi.connect(args.context)
    return api.get(args.namespace or api.default_namespace, args.name)


def _write(obj: Mapping[str, Any], output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(_raw_experiment(obj), indent=2) + "\n")
    elif output == "yaml":
        sys.stdout.write(yaml.safe_dump(_raw_experiment(obj), sort_keys=False))
    else:
        sys.stdout.write(render_table(obj))


def run(args: argparse.Namespace, api: traffic_cli.Api | None = None) -> int:
    """Run `kubeserve experiment`; give the exit code."""
    label = args.name or args.filename
    try:
        obj = _read(args, api)
        _write(obj, args.output)
        if args.png:
            plot(obj, args.png)
            print(f"wrote {args.png}", file=sys.stderr)
    except (NoExperimentError, PlotUnavailableError) as exc:
        print(f"kubeserve experiment: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (traffic.TrafficError, traffic_cli.ApiUnavailableError) as exc:
        print(f"kubeserve experiment: {label}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def add_command(sub: Any) -> None:
    """Register `experiment` on the main parser's subparsers."""
    p = sub.add_parser(
        "experiment",
        help="show an A/B test's comparison table from status (or draw it with --png)",
        description="Show the A/B test of an InferenceService with spec.experiment, from "
        "status.experiment: per variant its requests, error, slow and outcome rates, value mean "
        "and latency; per comparison with control the estimate, confidence interval, "
        "always-valid p-value and verdict. With -f it reads a YAML file instead of the cluster "
        "(what `kubeserve up --status-file` writes).",
    )
    p.add_argument("name", nargs="?", help="InferenceService name (optional with -f)")
    traffic_cli.add_cluster_arguments(p)
    p.add_argument(
        "-f", "--filename", help="read the InferenceService, status included, from this YAML file"
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("table", "yaml", "json"),
        default="table",
        help="table (default), or status.experiment as YAML or JSON",
    )
    p.add_argument(
        "--png",
        metavar="FILE",
        help=f"also draw the confidence sequences over time into FILE (needs {PLOT_EXTRA})",
    )
    p.set_defaults(func=run)
