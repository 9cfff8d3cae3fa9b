"""Simulate many experiments through `sequential`, to measure false positives, power, coverage.

Each run is one experiment looked at repeatedly: at every look both arms get their requests
(the variant its share of them, which may change from look to look as a rollout ramps), the
cumulative counts go through the same `sequential` functions the operator uses, and the run
records whether and which way the test decided. The data are drawn with numpy, whole arrays at
a time; the test itself runs look by look in plain Python, as in the operator, so what is
measured is the code that ships.

Beside it, the naive analysis that peeking breaks: a two-sample z-test at level alpha re-run at
every look, on the same data.

numpy is needed (the test and server extras); only the tests and scripts/experiment_simulation.py
import this module, never the operator.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Literal

import numpy as np
import numpy.typing as npt

from kubeserve.experiment import sequential

Array = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One kind of experiment: what the arms are, how traffic is split, how often it is read."""

    kind: Literal["rate", "value"]
    # Control's event rate, or its mean value.
    base: float
    # The true (variant - control); 0 for an A/A test.
    difference: float
    # The practical margin: τ = margin; None for values means 0.1 pooled SD at each look, as
    # the operator does when spec.experiment.margin.value is left out.
    margin: float | None
    # Requests (both arms together) between two looks.
    requests_per_look: int
    # The variant's share of the requests before each look; one entry per look.
    shares: tuple[float, ...]
    alpha: float = 0.05
    # The values' standard deviation, both arms (kind "value").
    sd: float = 1.0
    # Looks before both arms have this many samples do not count (as minSamples).
    min_samples: int = 0

    @property
    def looks(self) -> int:
        """Give the number of looks."""
        return len(self.shares)


@dataclasses.dataclass(frozen=True)
class Result:
    """How a scenario's runs ended."""

    runs: int
    # Runs in which the test decided, either way, at some look.
    decided: int
    # Runs in which it decided the way the true difference lies (for an A/A test: none).
    correct: int
    # Runs in which some look's running interval missed the true difference.
    missed: int
    # Runs in which the naive z-test re-run at every look rejected at some look.
    naive_decided: int
    # Samples per arm at the last look (the same in every run).
    control_samples: int
    variant_samples: int
    # The variant's samples at the look that decided, for each run that decided.
    decided_at: tuple[int, ...] = ()

    @property
    def decided_rate(self) -> float:
        """Give the share of runs decided either way (false positives in an A/A test)."""
        return self.decided / self.runs

    @property
    def power(self) -> float:
        """Give the share of runs decided the right way."""
        return self.correct / self.runs

    @property
    def naive_rate(self) -> float:
        """Give the share of runs the naive repeated z-test rejected."""
        return self.naive_decided / self.runs

    @property
    def coverage(self) -> float:
        """Give the share of runs whose running interval held the truth at every look."""
        return 1.0 - self.missed / self.runs


def ramp(looks: int, steps: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)) -> tuple[float, ...]:
    """Give a rollout's shares over `looks` looks: each step held for an equal run of looks."""
    return tuple(steps[min(len(steps) - 1, i * len(steps) // looks)] for i in range(looks))


def arm_sizes(scenario: Scenario) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Give each look's new requests per arm, control then variant (the same in every run)."""
    shares = np.asarray(scenario.shares, dtype=np.float64)
    variant = np.rint(shares * scenario.requests_per_look).astype(np.int64)
    control = scenario.requests_per_look - variant
    return control, variant


def _rate_draws(
    rng: np.random.Generator, sizes: npt.NDArray[np.int64], rate: float, runs: int
) -> npt.NDArray[np.int64]:
    return np.cumsum(rng.binomial(np.broadcast_to(sizes, (runs, sizes.size)), rate), axis=1)


def _value_draws(
    rng: np.random.Generator, sizes: npt.NDArray[np.int64], mean: float, sd: float, runs: int
) -> tuple[Array, Array]:
    """Give cumulative sums and sums of squares of normal values.

    A batch of m normal values has its sum ~ N(m mean, m sd²) and, independently, its squared
    deviations from the batch mean ~ sd² χ²(m - 1): the exact sufficient statistics, drawn
    without drawing every value.
    """
    m = np.broadcast_to(sizes, (runs, sizes.size)).astype(np.float64)
    sums = rng.normal(m * mean, sd * np.sqrt(m))
    freedom = np.maximum(m - 1.0, 1.0)
    spread = np.where(m > 1.0, sd * sd * rng.chisquare(freedom), 0.0)
    squares = spread + np.divide(sums * sums, m, out=np.zeros_like(sums), where=m > 0)
    return np.cumsum(sums, axis=1), np.cumsum(squares, axis=1)


def _naive_rates(
    control_n: Array, control_x: Array, variant_n: Array, variant_x: Array, alpha: float
) -> npt.NDArray[np.bool_]:
    critical = statistics.NormalDist().inv_cdf(1.0 - alpha / 2.0)
    pooled = (control_x + variant_x) / (control_n + variant_n)
    variance = pooled * (1.0 - pooled) * (1.0 / control_n + 1.0 / variant_n)
    estimate = variant_x / variant_n - control_x / control_n
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(variance > 0, estimate / np.sqrt(variance), 0.0)
    return np.asarray(np.abs(z) > critical)


def _naive_values(
    control_n: Array,
    control_sum: Array,
    control_squares: Array,
    variant_n: Array,
    variant_sum: Array,
    variant_squares: Array,
    alpha: float,
) -> npt.NDArray[np.bool_]:
    critical = statistics.NormalDist().inv_cdf(1.0 - alpha / 2.0)
    spread = (control_squares - control_sum**2 / control_n) + (
        variant_squares - variant_sum**2 / variant_n
    )
    variance = spread / (control_n + variant_n - 2.0) * (1.0 / control_n + 1.0 / variant_n)
    estimate = variant_sum / variant_n - control_sum / control_n
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(variance > 0, estimate / np.sqrt(variance), 0.0)
    return np.asarray(np.abs(z) > critical)


def simulate(scenario: Scenario, *, runs: int, seed: int) -> Result:
    """Run a scenario `runs` times with a fixed seed; count decisions, misses, naive rejections."""
    if scenario.kind == "rate" and scenario.margin is None:
        raise ValueError("a rate needs a margin")
    rng = np.random.default_rng(seed)
    control_sizes, variant_sizes = arm_sizes(scenario)
    control_n = np.cumsum(control_sizes)
    variant_n = np.cumsum(variant_sizes)
    counted = np.minimum(control_n, variant_n) >= max(1, scenario.min_samples)
    truth = scenario.difference
    differences: list[list[sequential.Difference | None]]
    margins: list[list[float | None]] | None = None
    if scenario.kind == "rate":
        control_x = _rate_draws(rng, control_sizes, scenario.base, runs)
        variant_x = _rate_draws(rng, variant_sizes, scenario.base + truth, runs)
        naive = _naive_rates(
            np.broadcast_to(control_n, control_x.shape).astype(np.float64),
            control_x.astype(np.float64),
            np.broadcast_to(variant_n, variant_x.shape).astype(np.float64),
            variant_x.astype(np.float64),
            scenario.alpha,
        )
        differences = [
            [
                sequential.bernoulli_difference(
                    control_n=int(control_n[k]),
                    control_x=int(control_x[r, k]),
                    variant_n=int(variant_n[k]),
                    variant_x=int(variant_x[r, k]),
                )
                for k in range(scenario.looks)
            ]
            for r in range(runs)
        ]
    else:
        control_sum, control_squares = _value_draws(
            rng, control_sizes, scenario.base, scenario.sd, runs
        )
        variant_sum, variant_squares = _value_draws(
            rng, variant_sizes, scenario.base + truth, scenario.sd, runs
        )
        naive = _naive_values(
            np.broadcast_to(control_n, control_sum.shape).astype(np.float64),
            control_sum,
            control_squares,
            np.broadcast_to(variant_n, variant_sum.shape).astype(np.float64),
            variant_sum,
            variant_squares,
            scenario.alpha,
        )
        moments = [
            [
                (
                    sequential.Moments(
                        int(control_n[k]), float(control_sum[r, k]), float(control_squares[r, k])
                    ),
                    sequential.Moments(
                        int(variant_n[k]), float(variant_sum[r, k]), float(variant_squares[r, k])
                    ),
                )
                for k in range(scenario.looks)
            ]
            for r in range(runs)
        ]
        differences = [[sequential.normal_difference(c, v) for c, v in run] for run in moments]
        if scenario.margin is None:
            margins = [[sequential.default_value_margin(c, v) for c, v in run] for run in moments]
    decided = correct = missed = 0
    decided_at: list[int] = []
    for r, run in enumerate(differences):
        state = sequential.State()
        first = 0
        miss = False
        for k, difference in enumerate(run):
            margin = scenario.margin if margins is None else margins[r][k]
            if not counted[k] or margin is None:
                continue
            tau2 = sequential.tau_squared(margin)
            state = sequential.step(state, difference, tau2=tau2, alpha=scenario.alpha).state
            if state.low is not None and state.high is not None:
                miss = miss or not state.low <= truth <= state.high
            if not first:
                first = sequential.side(state, scenario.alpha)
                if first:
                    decided_at.append(int(variant_n[k]))
        decided += first != 0
        correct += first != 0 and first == (1 if truth > 0 else -1 if truth < 0 else 0)
        missed += miss
    naive_decided = int(np.count_nonzero((naive & counted).any(axis=1)))
    return Result(
        runs=runs,
        decided=decided,
        correct=correct,
        missed=missed,
        naive_decided=naive_decided,
        control_samples=int(control_n[-1]),
        variant_samples=int(variant_n[-1]),
        decided_at=tuple(decided_at),
    )


def binomial_margin(rate: float, runs: int, *, errors: float = 3.0) -> float:
    """Give `errors` binomial standard errors of a rate estimated from `runs` runs."""
    return errors * math.sqrt(rate * (1.0 - rate) / runs)
