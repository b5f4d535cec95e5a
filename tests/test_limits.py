"""gateway.limits: token buckets with an injected clock."""

from __future__ import annotations

import pytest

from gateway.limits import KeyedLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_rate_and_says_when_the_next_token_comes() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock)  # one a second
    assert [bucket.take() for _ in range(60)] == [True] * 60
    assert bucket.wait_for_token() == pytest.approx(1.0)
    clock.now += 0.5
    assert bucket.wait_for_token() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take()
    clock.now += 3600
    assert sum(bucket.take() for _ in range(100)) == 60  # refills to capacity, no further


def test_keys_have_their_own_buckets_and_old_keys_are_forgotten() -> None:
    clock = Clock()
    limiter = KeyedLimiter(2, max_keys=2, clock=clock)
    assert [limiter.wait_for_token("a") for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.wait_for_token("a") > 0
    assert limiter.wait_for_token("b") == 0.0
    assert limiter.wait_for_token("c") == 0.0  # "a" is forgotten: memory stays bounded
    assert limiter.wait_for_token("a") == 0.0
