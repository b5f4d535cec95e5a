"""Pure rollout analysis: per-user records → evidence → anytime-valid intervals → a decision.

- `evidence`: per-user sums, ratio metrics and their delta-method variances;
- `sequential`: one-sided asymptotic confidence sequences;
- `srm`: the sample ratio mismatch test;
- `decide`: evidence + policy + rollout state → `Decision`.

No I/O and no framework: the scheduler, the what-if endpoint and the
simulator call the same functions.
"""

from gateway.analysis.decide import Decision, MetricTest, decide
from gateway.analysis.evidence import (
    ArmEvidence,
    Evidence,
    LatencyThresholds,
    Sums,
    evidence_from_records,
    latency_reference,
    percentile_cont,
)

__all__ = [
    "ArmEvidence",
    "Decision",
    "Evidence",
    "LatencyThresholds",
    "MetricTest",
    "Sums",
    "decide",
    "evidence_from_records",
    "latency_reference",
    "percentile_cont",
]
