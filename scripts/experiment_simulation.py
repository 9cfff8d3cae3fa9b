"""Simulate the experiment's sequential test at scale and print the figures as Markdown tables.

    .venv/bin/python scripts/experiment_simulation.py [--runs 2000] [--seed 2024]

A/A runs (no true difference) give the false-positive rate under continuous monitoring, with
the weights ramping between looks, beside a naive z-test re-run at every look on the same data;
A/B runs give the power at the sample size `sequential.samples_for_power` reports, and how the
mixing variance τ chosen from the margin compares with others. The figures in
docs/experiments.md come from this script; it is a simulation, not a benchmark (about a minute
on one core).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

from kubeserve.experiment import sequential, simulation


def _percent(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def _interval(successes: int, runs: int) -> str:
    """Give a Wilson 95% interval of a binomial rate, in percent."""
    z = 1.959964
    p = successes / runs
    centre = (p + z * z / (2 * runs)) / (1 + z * z / runs)
    half = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs)) / (1 + z * z / runs)
    return f"[{100 * max(0.0, centre - half):.1f}, {100 * min(1.0, centre + half):.1f}]"


def _ramp_text(shares: tuple[float, ...]) -> str:
    steps = list(dict.fromkeys(round(100 * s) for s in shares))
    return "→".join(f"{s}%" for s in steps)


def aa_table(runs: int, seed: int, alpha: float) -> list[str]:
    """Give the A/A table: false positives of the sequential test and of the naive z-test."""
    cases: list[tuple[str, simulation.Scenario]] = []
    for base in (0.02, 0.10):
        cases.append(
            (
                f"rate {100 * base:g}%, margin 1pp",
                simulation.Scenario("rate", base, 0.0, 0.01, 1000, simulation.ramp(40), alpha),
            )
        )
    cases += [
        (
            "rate 0.5%, margin 0.5pp",
            simulation.Scenario("rate", 0.005, 0.0, 0.005, 2000, simulation.ramp(60), alpha),
        ),
        (
            "rate 2%, few requests (50 a look)",
            simulation.Scenario("rate", 0.02, 0.0, 0.01, 50, simulation.ramp(60), alpha),
        ),
        (
            "rate 10%, 50/50 throughout",
            simulation.Scenario("rate", 0.10, 0.0, 0.01, 1000, (0.5,) * 40, alpha),
        ),
        (
            "rate 2%, minSamples 1000",
            simulation.Scenario(
                "rate", 0.02, 0.0, 0.01, 1000, simulation.ramp(40), alpha, min_samples=1000
            ),
        ),
        (
            "value, sd 2, margin 0.1 sd (default)",
            simulation.Scenario("value", 5.0, 0.0, None, 1000, simulation.ramp(40), alpha, sd=2.0),
        ),
    ]
    lines = [
        "| A/A scenario | weights | looks | n control / variant at the end "
        "| mSPRT: false positives [95% CI] | interval held 0 | naive z-test |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (name, scenario) in enumerate(cases):
        result = simulation.simulate(scenario, runs=runs, seed=seed + i)
        lines.append(
            f"| {name} | {_ramp_text(scenario.shares)} | {scenario.looks} "
            f"| {result.control_samples:,} / {result.variant_samples:,} "
            f"| {_percent(result.decided_rate)} {_interval(result.decided, runs)} "
            f"| {_percent(result.coverage)} | {_percent(result.naive_rate)} |"
        )
    return lines


def _power_case(
    name: str,
    scenario_for: tuple[str, float, float, float | None, float],
    n: int,
    *,
    sd: float = 1.0,
) -> tuple[str, int, simulation.Scenario]:
    kind, base, difference, margin, alpha = scenario_for
    looks = 30
    scenario = simulation.Scenario(
        "rate" if kind == "rate" else "value",
        base,
        difference,
        margin,
        -(-2 * n // looks),
        (0.5,) * looks,
        alpha,
        sd=sd,
    )
    return name, n, scenario


def power_table(runs: int, seed: int, alpha: float) -> list[str]:
    """Give the power table: at the reported n per arm, looked at 30 times, 50/50."""
    rows = []
    n = sequential.samples_for_power(0.10, 0.02, margin=0.01, alpha=alpha)
    rows.append(_power_case("outcome 10% → 12%, margin 1pp", ("rate", 0.10, 0.02, 0.01, alpha), n))
    n4 = sequential.samples_for_power(0.10, 0.02, margin=0.01, alpha=alpha / 4)
    rows.append(
        _power_case(
            "same, alpha/4 (4 metrics, Bonferroni)", ("rate", 0.10, 0.02, 0.01, alpha / 4), n4
        )
    )
    n = sequential.samples_for_power(0.01, 0.005, margin=0.005, alpha=alpha)
    rows.append(
        _power_case("errorRate 1% → 1.5%, margin 0.5pp", ("rate", 0.01, 0.005, 0.005, alpha), n)
    )
    n = sequential.samples_for_power(0.10, 0.01, margin=0.01, alpha=alpha)
    rows.append(_power_case("outcome 10% → 11% (= margin)", ("rate", 0.10, 0.01, 0.01, alpha), n))
    n = sequential.samples_for_mean_power(2.0, 0.2, alpha=alpha)
    rows.append(
        _power_case("value +0.1 sd, default margin", ("value", 5.0, 0.2, None, alpha), n, sd=2.0)
    )
    lines = [
        "| A/B scenario | n per arm reported (`samples_for_power`) | power at n, 30 looks "
        "[95% CI] | median n per arm at detection | wrong direction |",
        "|---|---|---|---|---|",
    ]
    for i, (name, n, scenario) in enumerate(rows):
        result = simulation.simulate(scenario, runs=runs, seed=seed + 100 + i)
        median = statistics.median(result.decided_at) if result.decided_at else math.nan
        lines.append(
            f"| {name} | {n:,} | {_percent(result.power)} {_interval(result.correct, runs)} "
            f"| {median:,.0f} | {result.decided - result.correct} |"
        )
    return lines


def tau_table(runs: int, seed: int, alpha: float) -> list[str]:
    """Give power against τ, for an effect of one margin (1pp) and of two, on a 10% rate.

    Each effect is simulated at the n per arm that τ = margin = 1pp reports for it.
    """
    effects = (0.01, 0.02)
    sizes = [sequential.samples_for_power(0.10, d, margin=0.01, alpha=alpha) for d in effects]
    lines = [
        "| τ | "
        + " | ".join(
            f"effect {100 * d:g}pp: power at {n:,} | median n at detection"
            for d, n in zip(effects, sizes, strict=True)
        )
        + " |",
        "|---|---|---|---|---|",
    ]
    for i, tau in enumerate((0.005, 0.01, 0.02, 0.04)):
        cells = []
        for j, (d, n) in enumerate(zip(effects, sizes, strict=True)):
            _, _, scenario = _power_case("", ("rate", 0.10, d, tau, alpha), n)
            result = simulation.simulate(scenario, runs=runs, seed=seed + 200 + 10 * i + j)
            median = statistics.median(result.decided_at) if result.decided_at else math.nan
            cells += [_percent(result.power), f"{median:,.0f}"]
        label = f"{100 * tau:g}pp" + (" (= margin)" if tau == 0.01 else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run every table and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args(argv)
    started = time.monotonic()
    for title, table in (
        ("A/A: false positives under continuous monitoring", aa_table),
        ("A/B: power at the reported sample size", power_table),
        ("The mixing variance τ", tau_table),
    ):
        print(f"### {title}\n")
        print("\n".join(table(args.runs, args.seed, args.alpha)))
        print()
    print(
        f"_{args.runs} runs per row, seed {args.seed}, alpha {args.alpha}; "
        f"{time.monotonic() - started:.0f} s._"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
