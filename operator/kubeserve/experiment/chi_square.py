"""The χ² distribution's upper tail, for whole degrees of freedom, without scipy.

The survival function of χ² with k degrees of freedom at x is the regularised upper incomplete
gamma Q(k/2, x/2). For whole k it has closed forms (Abramowitz & Stegun 26.4.4 and 26.4.5):

    k even:  Q = e^{-x/2} Σ_{i<k/2} (x/2)^i / i!
    k odd:   Q = erfc(√(x/2)) + e^{-x/2} Σ_{i<(k-1)/2} (x/2)^{i+½} / Γ(i + 3/2)

Each term is computed in logarithms, so no term overflows however large x is, and the sum has
at most k/2 terms; the sample-ratio check needs k = variants - 1 ≤ 15.
"""

from __future__ import annotations

import math


def survival(statistic: float, degrees: int) -> float:
    """Give P(χ²_degrees ≥ statistic), in [0, 1]."""
    if degrees < 1:
        raise ValueError(f"degrees of freedom must be at least 1, not {degrees}")
    if math.isnan(statistic):
        raise ValueError("the statistic is not a number")
    if statistic <= 0.0:
        return 1.0
    if math.isinf(statistic):
        return 0.0
    half = statistic / 2.0
    log_half = math.log(half)
    if degrees % 2 == 0:
        total = 0.0
        offsets = [float(i) for i in range(degrees // 2)]
    else:
        total = math.erfc(math.sqrt(half))
        offsets = [i + 0.5 for i in range((degrees - 1) // 2)]
    for power in offsets:
        total += math.exp(power * log_half - half - math.lgamma(power + 1.0))
    return min(1.0, max(0.0, total))
