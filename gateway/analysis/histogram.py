"""Mergeable latency histograms: fixed log-spaced buckets stored as counts.

A latency x (milliseconds) falls in bucket

    i = ceil(ln(max(x, FLOOR_MS)) / ln(GAMMA)),   covering (GAMMA^(i-1), GAMMA^i],

the same fixed grid for every minute, version and replica, so histograms merge
by adding the counts of equal buckets (the log-bucketed store of DDSketch:
Masson, Rim and Lee, "DDSketch: A Fast and Fully-Mergeable Quantile Sketch
with Relative-Error Guarantees", VLDB 2019). A bucket is read back as
2·GAMMA^i / (GAMMA + 1), which is within ALPHA = (GAMMA − 1)/(GAMMA + 1)
(0.99 % for GAMMA = 1.02) of every value the bucket holds.

`percentile` interpolates between the two closest ranks as PostgreSQL's
`percentile_cont` does, with each rank's value read from its bucket. Both
values are within ALPHA of the true order statistics, so the result is within
ALPHA (relative) of `percentile_cont` over the raw values; values at or below
FLOOR_MS (0.01 ms) are read as about FLOOR_MS (an absolute error of at most
0.01 ms). PostgreSQL computes the same bucket in SQL with the same formula
(`canary_latency_bucket`, created by the migrations): both use the C
library's `log`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

GAMMA = 1.02
ALPHA = (GAMMA - 1.0) / (GAMMA + 1.0)
FLOOR_MS = 0.01
_LOG_GAMMA = math.log(GAMMA)


def bucket_of(latency_ms: float) -> int:
    """The bucket index of a latency in milliseconds (see the module docstring)."""
    return math.ceil(math.log(max(latency_ms, FLOOR_MS)) / _LOG_GAMMA)


def bucket_value(bucket: int) -> float:
    """The value a bucket is read as: within ALPHA (relative) of every latency it holds."""
    return 2.0 * GAMMA**bucket / (GAMMA + 1.0)


def merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """Bucket → count, summed over `histograms`."""
    merged: dict[int, int] = {}
    for histogram in histograms:
        for bucket, count in histogram.items():
            merged[bucket] = merged.get(bucket, 0) + count
    return merged


def percentile(histogram: Mapping[int, int], fraction: float) -> float | None:
    """`percentile_cont(fraction)` of the values counted in `histogram`, within ALPHA; None when it is empty."""
    total = sum(count for count in histogram.values() if count > 0)
    if total <= 0:
        return None
    position = fraction * (total - 1)
    lower = int(position)
    upper = min(lower + 1, total - 1)
    low_value = high_value = None
    seen = 0
    for bucket in sorted(histogram):
        count = histogram[bucket]
        if count <= 0:
            continue
        seen += count
        if low_value is None and lower < seen:
            low_value = bucket_value(bucket)
        if upper < seen:
            high_value = bucket_value(bucket)
            break
    assert low_value is not None and high_value is not None
    return low_value + (high_value - low_value) * (position - lower)
