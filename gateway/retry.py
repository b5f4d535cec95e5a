"""Pure: how long to wait before trying again (exponential backoff with jitter).

One formula for every retry loop of the gateway (upstream calls, webhook
deliveries): `base_s × 2^attempt × U[0.5, 1.5)`, the "equal jitter" family
described in AWS's "Exponential Backoff and Jitter" (Brooker, 2015): the
mean doubles per attempt and replicas that failed together spread out.
"""

from __future__ import annotations

import random


def backoff_s(base_s: float, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (0 for the first), from `base_s` seconds.

    `rng` supplies the jitter (tests pass a seeded one); the module's default
    generator otherwise.
    """
    draw = rng.random() if rng is not None else random.random()
    return float(base_s * (2**attempt) * (0.5 + draw))
