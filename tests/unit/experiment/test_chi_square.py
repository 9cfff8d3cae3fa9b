"""The χ² upper tail: table values, and the density integrated numerically."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kubeserve.experiment import chi_square


@pytest.mark.parametrize(
    ("statistic", "degrees", "p"),
    [
        # The χ² table's critical values (to more digits than printed tables give).
        (3.841458820694124, 1, 0.05),
        (6.634896601021214, 1, 0.01),
        (5.991464547107979, 2, 0.05),
        (7.814727903251178, 3, 0.05),
        (9.487729036781154, 4, 0.05),
        (23.209251158954356, 10, 0.01),
        (24.995790139728616, 15, 0.05),
        (10.827566170662733, 1, 0.001),
        (13.815510557964274, 2, 0.001),
    ],
)
def test_table_critical_values_give_their_levels(statistic: float, degrees: int, p: float) -> None:
    assert chi_square.survival(statistic, degrees) == pytest.approx(p, rel=1e-9)


def _survival_by_integration(statistic: float, degrees: int) -> float:
    """Integrate the χ² density from the statistic to far out (trapezoid, log-spaced grid)."""
    k = degrees / 2
    x = statistic + np.expm1(np.linspace(0.0, math.log(2000.0), 400_001))
    log_density = (k - 1) * np.log(x) - x / 2 - k * math.log(2) - math.lgamma(k)
    density = np.exp(log_density)
    return float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(x)))


@pytest.mark.parametrize("degrees", [1, 2, 3, 4, 5, 7, 10, 15])
@pytest.mark.parametrize("statistic", [0.05, 0.7, 3.0, 12.5, 40.0])
def test_survival_matches_the_density_integrated(statistic: float, degrees: int) -> None:
    assert chi_square.survival(statistic, degrees) == pytest.approx(
        _survival_by_integration(statistic, degrees), rel=1e-6, abs=1e-15
    )


def test_edges_stay_inside_zero_to_one() -> None:
    assert chi_square.survival(0.0, 3) == 1.0
    assert chi_square.survival(-2.0, 3) == 1.0
    assert chi_square.survival(math.inf, 3) == 0.0
    assert chi_square.survival(1e300, 15) == 0.0
    assert 0.0 < chi_square.survival(160.0, 1) < 1e-35


def test_no_degrees_of_freedom_or_nan_is_refused() -> None:
    with pytest.raises(ValueError):
        chi_square.survival(1.0, 0)
    with pytest.raises(ValueError):
        chi_square.survival(math.nan, 1)
