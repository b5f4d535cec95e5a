"""Sample ratio mismatch: does each version get the share of users the router was told to give it?

A Pearson χ² goodness-of-fit test on the unique users seen per version
against the configured canary percentage (one degree of freedom), as
GrowthBook and LaunchDarkly run before trusting any comparison (Fabijan et
al., "Diagnosing Sample Ratio Mismatch in Online Controlled Experiments",
KDD 2019). A mismatch means the comparison is biased (a version failing
before it records, a client retrying, a routing bug), so a check that finds
one holds and alerts instead of judging.

The χ² survival function with one degree of freedom is erfc(sqrt(x / 2)):
a closed form, so the decision core needs no statistics library (tests
compare it with scipy.stats.chisquare).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The threshold GrowthBook and LaunchDarkly use: a false alarm about once in a thousand checks.
SRM_P_VALUE = 0.001


@dataclass(frozen=True, slots=True)
class SrmResult:
    p_value: float
    expected_canary_share: float
    observed_canary_share: float
    mismatch: bool


def sample_ratio_mismatch(*, canary_users: int, stable_users: int, canary_percent: float,
                          threshold: float = SRM_P_VALUE) -> SrmResult | None:
    """χ² test of the users per version against `canary_percent` (0 < percent < 100).

    None when the test cannot be run: no users, or fewer than five users
    expected on a side (the χ² approximation needs them).
    """
    total = canary_users + stable_users
    share = canary_percent / 100.0
    if total == 0 or not 0 < share < 1 or min(total * share, total * (1 - share)) < 5:
        return None
    expected_canary = total * share
    expected_stable = total - expected_canary
    statistic = ((canary_users - expected_canary) ** 2 / expected_canary
                 + (stable_users - expected_stable) ** 2 / expected_stable)
    p_value = math.erfc(math.sqrt(statistic / 2.0))
    return SrmResult(p_value=p_value, expected_canary_share=share, observed_canary_share=canary_users / total,
                     mismatch=p_value < threshold)
