"""Check that the variants got the share of requests their weights promised (sample ratio).

A split that is not what it should be (a variant that crashes on some users, a router that
drops a cookie, an override header used for real traffic) means the arms are no longer
comparable, whatever the test says; it shows as a χ² goodness-of-fit test of the observed
requests against the expected ones. A mismatch is flagged when p < 0.001 with at least 1,000
requests in all: strict enough that a healthy split raises it one time in a thousand, and
sensitive enough to see a 52/48 split of a 50/50 one at 100,000 requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from kubeserve.api import status
from kubeserve.experiment import chi_square

MISMATCH_P_VALUE = 0.001
MIN_REQUESTS = 1000


def check(
    variants: Mapping[str, status.VariantCounts], weights: Mapping[str, int]
) -> status.SampleRatio:
    """Compare each variant's requests with its expected share; flag a mismatch.

    The expected shares are the collector's `expected` requests (what the live weights should
    have sent, accumulated across weight changes), or, while every one of those is 0, the
    current weights. Only variants with an expected share take part: requests to a variant
    that should get none (an override header, a weight since set to 0 with no `expected`)
    are outside the split. With fewer than two such variants there is nothing to test.
    """
    shares = {name: max(0.0, counts.expected) for name, counts in variants.items()}
    shares = {name: share for name, share in shares.items() if math.isfinite(share)}
    if not any(share > 0 for share in shares.values()):
        shares = {name: float(max(0, weight)) for name, weight in weights.items()}
    shares = {name: share for name, share in shares.items() if share > 0}
    if len(shares) < 2:
        return status.SampleRatio()
    observed = {name: max(0, variants[name].requests if name in variants else 0) for name in shares}
    total = sum(observed.values())
    if total == 0:
        return status.SampleRatio()
    share_total = sum(shares.values())
    statistic = 0.0
    for name, share in shares.items():
        expected = total * (share / share_total)
        gap = observed[name] - expected
        statistic += gap * gap / expected
    if not math.isfinite(statistic):
        return status.SampleRatio()
    p = chi_square.survival(statistic, len(shares) - 1)
    return status.SampleRatio(
        chi_square=statistic,
        p_value=p,
        mismatch=p < MISMATCH_P_VALUE and total >= MIN_REQUESTS,
    )
