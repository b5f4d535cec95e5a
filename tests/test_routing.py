"""gateway.routing: user id → bucket → stable or canary (SPEC section 3)."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.models import Deployment, RolloutState, Version
from gateway.routing import BUCKETS, bucket, choose_version, in_canary

FAST = settings(max_examples=200, deadline=None)

deployments = st.text(min_size=1, max_size=40)
user_ids = st.text(max_size=200)
# Percentages have two decimals: 0.00 .. 100.00 in 0.01 steps, as hundredths.
hundredths = st.integers(min_value=0, max_value=10_000)


def spec_bucket(deployment: str, user_id: str) -> int:
    """SPEC section 3, literally."""
    return int(hashlib.md5(f"{deployment}:{user_id}".encode()).hexdigest(), 16) % 10000


def ids(count: int, prefix: str = "user-") -> list[str]:
    return [f"{prefix}{index}" for index in range(count)]


# -- the formula ------------------------------------------------------------


@FAST
@given(deployment=deployments, user_id=user_ids, k=hundredths)
def test_in_canary_matches_the_spec_formula(deployment: str, user_id: str, k: int) -> None:
    # `percent * 100` is exact for a two-decimal percent, so compare against k.
    assert bucket(deployment, user_id) == spec_bucket(deployment, user_id)
    assert in_canary(deployment, user_id, k / 100) == (spec_bucket(deployment, user_id) < k)


@pytest.mark.parametrize(
    "user_id",
    [
        "",
        "alice",
        "\U0001f600\U0001f680 emoji-user",
        "nul\x00inside",
        "\x00",
        "x" * 10_240,
        "日本語のユーザー",
        "line\nbreak\ttab",
        "colon:in:id",
    ],
)
@pytest.mark.parametrize("k", [0, 1, 5, 500, 2500, 5000, 9999, 10_000])
def test_formula_for_awkward_ids(user_id: str, k: int) -> None:
    expected = spec_bucket("support-bot", user_id) < k
    assert in_canary("support-bot", user_id, k / 100) is expected


def test_known_values_are_pinned() -> None:
    # Literal values guard against a change of the hash input (separator, order, encoding)
    # that would silently reshuffle every running canary.
    assert bucket("support-bot", "alice") == 3568
    assert bucket("checkout", "alice") == 4905
    assert bucket("support-bot", "") == 7305


@FAST
@given(deployment=deployments, user_id=user_ids)
def test_bucket_is_in_range(deployment: str, user_id: str) -> None:
    assert 0 <= bucket(deployment, user_id) < BUCKETS == 10_000


@FAST
@given(
    user_id=st.text(
        alphabet=st.one_of(
            st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
            st.characters(codec="utf-8"),
        ),
        min_size=1,
        max_size=20,
    ),
    k=hundredths,
)
def test_lone_surrogates_hash_without_raising(user_id: str, k: int) -> None:
    first = bucket("support-bot", user_id)
    assert 0 <= first < BUCKETS
    assert bucket("support-bot", user_id) == first
    assert in_canary("support-bot", user_id, k / 100) == (first < k)


def test_lone_surrogate_examples() -> None:
    for user_id in ["\ud800", "\udfff", "a\ud83dz", "\udc00\ud800"]:
        assert bucket("d", user_id) == bucket("d", user_id)
    # Different lone surrogates do not collapse onto one replacement character.
    assert len({bucket("support-bot", chr(code)) for code in range(0xD800, 0xD820)}) > 1


# -- sticky, monotonic, edges -------------------------------------------------


@FAST
@given(deployment=deployments, user_id=user_ids, k=hundredths)
def test_sticky(deployment: str, user_id: str, k: int) -> None:
    answers = {in_canary(deployment, user_id, k / 100) for _ in range(3)}
    assert len(answers) == 1


@FAST
@given(deployment=deployments, user_id=user_ids, p=hundredths, q=hundredths)
def test_monotonic_in_the_percentage(deployment: str, user_id: str, p: int, q: int) -> None:
    low, high = sorted((p, q))
    if in_canary(deployment, user_id, low / 100):
        assert in_canary(deployment, user_id, high / 100)


@FAST
@given(deployment=deployments, user_id=user_ids)
def test_zero_percent_is_nobody_and_hundred_is_everybody(deployment: str, user_id: str) -> None:
    assert in_canary(deployment, user_id, 0) is False
    assert in_canary(deployment, user_id, 0.0) is False
    assert in_canary(deployment, user_id, 100) is True
    assert in_canary(deployment, user_id, 100.0) is True


def test_out_of_range_percentages_clamp() -> None:
    for user_id in ids(200):
        assert in_canary("d", user_id, -5) is False
        assert in_canary("d", user_id, 150) is True


def test_monotonic_over_the_stages_for_many_users() -> None:
    stages = [0, 0.05, 1, 5, 25, 50, 99.99, 100]
    for user_id in ids(2000):
        answers = [in_canary("support-bot", user_id, stage) for stage in stages]
        # Once in, never out: the list is some Falses followed by Trues.
        assert answers == sorted(answers)


def test_one_hundredth_of_a_percent_is_exactly_one_bucket() -> None:
    users = ids(40_000)
    zero = next(user for user in users if bucket("support-bot", user) == 0)
    one = next(user for user in users if bucket("support-bot", user) == 1)
    assert in_canary("support-bot", zero, 0.01) is True
    assert in_canary("support-bot", one, 0.01) is False
    assert in_canary("support-bot", one, 0.02) is True


@pytest.mark.parametrize("k", [7, 29, 57, 58, 1001, 3333])
def test_float_noise_in_the_percentage_does_not_move_the_threshold(k: int) -> None:
    # 0.07 * 100 == 7.000000000000001 and 0.29 * 100 == 28.999999999999996:
    # the user in bucket k must be out at k/100 %, the user in bucket k-1 in.
    users = ids(120_000)
    at = next(user for user in users if bucket("support-bot", user) == k)
    below = next(user for user in users if bucket("support-bot", user) == k - 1)
    assert in_canary("support-bot", at, k / 100) is False
    assert in_canary("support-bot", below, k / 100) is True


# -- distribution and salting ---------------------------------------------------


@pytest.fixture(scope="module")
def buckets_100k() -> list[int]:
    return [bucket("support-bot", user_id) for user_id in ids(100_000, prefix="u")]


@pytest.mark.parametrize("percent", [0.05, 1, 5, 25, 50, 75, 99.95])
def test_observed_share_is_within_one_point(buckets_100k: list[int], percent: float) -> None:
    share = 100 * sum(1 for value in buckets_100k if value < round(percent * 100)) / len(buckets_100k)
    assert abs(share - percent) <= 1.0
    # And in_canary agrees with the bucket list it was computed from.
    sample = ids(100_000, prefix="u")[:2000]
    assert [in_canary("support-bot", user, percent) for user in sample] == [
        value < round(percent * 100) for value in buckets_100k[:2000]
    ]


def test_observed_share_via_in_canary() -> None:
    users = ids(100_000, prefix="share-")
    share = 100 * sum(in_canary("checkout", user, 25) for user in users) / len(users)
    assert abs(share - 25) <= 1.0


def test_buckets_are_spread_over_the_whole_range(buckets_100k: list[int]) -> None:
    # Each tenth of the range holds about a tenth of the users.
    deciles = [0] * 10
    for value in buckets_100k:
        deciles[value // 1000] += 1
    assert all(9_000 < count < 11_000 for count in deciles)


def test_salting_by_deployment() -> None:
    users = ids(5000)
    same_bucket = sum(bucket("support-bot", user) == bucket("checkout", user) for user in users)
    # Independent buckets collide with probability 1/10000: about 0.5 of 5000.
    assert same_bucket < 10
    in_a = {user for user in users if in_canary("support-bot", user, 50)}
    in_b = {user for user in users if in_canary("checkout", user, 50)}
    assert in_a != in_b
    # Independent 50 % canaries overlap on about a quarter of the users, not half.
    assert 0.20 < len(in_a & in_b) / len(users) < 0.30


def test_same_user_in_a_small_canary_is_not_in_every_canary() -> None:
    users = ids(2000)
    in_all = [user for user in users if all(in_canary(f"deployment-{n}", user, 5) for n in range(5))]
    # 5 independent 5 % canaries: 2000 * 0.05**5 is far below one user.
    assert in_all == []


# -- choose_version -----------------------------------------------------------------


def make_deployment(
    *,
    canary: str | None = "v2",
    percent: float = 25.0,
    anonymous: str = "stable",
    name: str = "support-bot",
) -> Deployment:
    versions = {
        "v1": Version(name="v1", provider="p", model="m"),
        "v2": Version(name="v2", provider="p", model="m"),
    }
    return Deployment(
        name=name,
        versions=versions,
        rollout=RolloutState(
            stable="v1",
            canary=canary,
            canary_percent=percent,
            status="canary" if canary else "stable",
        ),
        anonymous=anonymous,  # type: ignore[arg-type]
    )


@FAST
@given(user_id=st.one_of(st.none(), user_ids), percent=st.sampled_from([0, 5, 50, 100]))
def test_no_canary_means_stable(user_id: str | None, percent: float) -> None:
    deployment = make_deployment(canary=None, percent=percent, anonymous="random")
    assert choose_version(deployment, user_id, rng=random.Random(1)) == "v1"


def test_canary_at_zero_percent_serves_stable() -> None:
    deployment = make_deployment(percent=0.0, anonymous="random")
    rng = random.Random(7)
    assert {choose_version(deployment, user, rng=rng) for user in ids(500)} == {"v1"}
    assert {choose_version(deployment, None, rng=rng) for _ in range(500)} == {"v1"}


def test_canary_at_hundred_percent_serves_everybody_the_canary() -> None:
    deployment = make_deployment(percent=100.0)
    assert {choose_version(deployment, user) for user in ids(500)} == {"v2"}


@FAST
@given(user_id=user_ids, k=hundredths)
def test_known_user_follows_in_canary(user_id: str, k: int) -> None:
    deployment = make_deployment(percent=k / 100)
    expected = "v2" if (k > 0 and in_canary("support-bot", user_id, k / 100)) else "v1"
    assert choose_version(deployment, user_id) == expected
    # The rng is for anonymous users only; it does not move a known user.
    assert choose_version(deployment, user_id, rng=random.Random(0)) == expected


def test_choose_version_salts_with_the_deployment_name() -> None:
    first = make_deployment(name="support-bot", percent=50)
    second = make_deployment(name="checkout", percent=50)
    users = ids(1000)
    assert [choose_version(first, user) for user in users] != [choose_version(second, user) for user in users]
    for user in users[:200]:
        assert (choose_version(second, user) == "v2") == in_canary("checkout", user, 50)


def test_anonymous_user_goes_to_stable_by_default() -> None:
    deployment = make_deployment(percent=99.99)
    assert deployment.anonymous == "stable"
    assert {choose_version(deployment, None, rng=random.Random(seed)) for seed in range(200)} == {"v1"}
    assert choose_version(make_deployment(percent=100.0), None) == "v1"


@pytest.mark.parametrize("percent", [5.0, 25.0, 50.0])
def test_anonymous_random_splits_by_the_percentage(percent: float) -> None:
    deployment = make_deployment(percent=percent, anonymous="random")
    rng = random.Random(12345)
    draws = [choose_version(deployment, None, rng=rng) for _ in range(20_000)]
    assert set(draws) <= {"v1", "v2"}
    share = 100 * draws.count("v2") / len(draws)
    assert abs(share - percent) <= 1.5


def test_anonymous_random_uses_the_injected_rng() -> None:
    deployment = make_deployment(percent=50.0, anonymous="random")
    first = [choose_version(deployment, None, rng=random.Random(99)) for _ in range(1)]
    one = random.Random(99)
    two = random.Random(99)
    run_one = [choose_version(deployment, None, rng=one) for _ in range(300)]
    run_two = [choose_version(deployment, None, rng=two) for _ in range(300)]
    assert run_one == run_two
    assert first == run_one[:1]
    # A different seed gives a different sequence: the draw really comes from the rng.
    other = random.Random(100)
    assert [choose_version(deployment, None, rng=other) for _ in range(300)] != run_one


def test_anonymous_random_at_the_edges() -> None:
    rng = random.Random(3)
    everybody = make_deployment(percent=100.0, anonymous="random")
    assert {choose_version(everybody, None, rng=rng) for _ in range(500)} == {"v2"}
    tiny = make_deployment(percent=0.01, anonymous="random")
    share = sum(choose_version(tiny, None, rng=rng) == "v2" for _ in range(20_000)) / 20_000
    assert share < 0.005
