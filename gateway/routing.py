"""Pure routing: user id → bucket → stable or canary.

`bucket = int(md5(f"{deployment}:{user_id}").hexdigest(), 16) % 10000`, and a
user is in the canary when `bucket < percent * 100`. Salting with the
deployment keeps one user from landing in every canary at once; comparing a
fixed bucket against a growing threshold makes routing sticky and monotonic.
"""

from __future__ import annotations

import hashlib
import random

from gateway.models import Deployment

BUCKETS = 10_000


def bucket(deployment: str, user_id: str) -> int:
    """The user's bucket, 0 to 9999: md5 of `deployment:user_id` modulo 10,000 (SPEC's routing formula)."""
    # surrogatepass: a lone surrogate in a JSON user id still hashes, stably.
    key = f"{deployment}:{user_id}".encode("utf-8", "surrogatepass")
    return int(hashlib.md5(key, usedforsecurity=False).hexdigest(), 16) % BUCKETS


def threshold(percent: float) -> int:
    """Buckets below this are canary; percent has two decimals (0.01 % = one bucket)."""
    return max(0, min(BUCKETS, round(percent * 100)))


def in_canary(deployment: str, user_id: str, percent: float) -> bool:
    """Whether `user_id` is routed to the canary of `deployment` at `percent` (0 to 100)."""
    return bucket(deployment, user_id) < threshold(percent)


def choose_version(
    deployment: Deployment,
    user_id: str | None,
    *,
    rng: random.Random | None = None,
) -> str:
    """The version name that serves this user now."""
    rollout = deployment.rollout
    if rollout.canary is None or rollout.canary_percent <= 0:
        return rollout.stable
    if user_id is None:
        if deployment.anonymous == "stable":
            return rollout.stable
        draw = (rng or random).randrange(BUCKETS)
        return rollout.canary if draw < threshold(rollout.canary_percent) else rollout.stable
    if in_canary(deployment.name, user_id, rollout.canary_percent):
        return rollout.canary
    return rollout.stable
