"""Every statistic of the decision core against a reference computed with SciPy or statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from statsmodels.stats._delta_method import NonlinearDeltaCov

from gateway.analysis.evidence import Sums, log_ratio, percentile_cont
from gateway.analysis.sequential import mixture_rho, radius_multiplier, two_sided_multiplier
from gateway.analysis.srm import sample_ratio_mismatch


def per_user(seed: int, users: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    calls = rng.poisson(rng.lognormal(1.0, 1.0, users)) + 1
    errors = rng.binomial(calls, np.clip(rng.normal(rate, rate / 2, users), 0, 1))
    return calls.astype(float), errors.astype(float)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_ratio_variance_is_the_delta_method_of_statsmodels(seed: int) -> None:
    x, y = per_user(seed, 500, 0.05)
    sums = Sums.of(zip(x.tolist(), y.tolist(), strict=True))
    n = len(x)
    reference = NonlinearDeltaCov(lambda p: np.array([p[1] / p[0]]), np.array([x.mean(), y.mean()]),
                                  np.cov(np.vstack([x, y]), ddof=1) / n)
    assert sums.ratio == pytest.approx(y.sum() / x.sum())
    assert sums.ratio_variance() == pytest.approx(float(reference.cov()[0, 0]), rel=1e-9)


def test_users_without_a_denominator_change_nothing() -> None:
    x, y = per_user(4, 200, 0.1)
    pairs = list(zip(x.tolist(), y.tolist(), strict=True))
    with_idle = Sums.of([*pairs, (0.0, 0.0), (0.0, 0.0)])
    assert with_idle == Sums.of(pairs) and with_idle.units == 200


def test_the_log_ratio_variance_adds_each_sides_relative_variance() -> None:
    xc, yc = per_user(5, 300, 0.08)
    xs, ys = per_user(6, 3000, 0.04)
    canary = Sums.of(zip(xc.tolist(), yc.tolist(), strict=True))
    stable = Sums.of(zip(xs.tolist(), ys.tolist(), strict=True))
    compared = log_ratio(canary, stable, counts=False)
    assert compared is not None
    # statsmodels: the delta method of log(ȳc/x̄c) − log(ȳs/x̄s) over the four means, independent arms.
    cov = np.zeros((4, 4))
    cov[:2, :2] = np.cov(np.vstack([xc, yc]), ddof=1) / len(xc)
    cov[2:, 2:] = np.cov(np.vstack([xs, ys]), ddof=1) / len(xs)
    reference = NonlinearDeltaCov(lambda p: np.array([np.log(p[1] / p[0]) - np.log(p[3] / p[2])]),
                                  np.array([xc.mean(), yc.mean(), xs.mean(), ys.mean()]), cov)
    assert compared.se == pytest.approx(math.sqrt(float(reference.cov()[0, 0])), rel=1e-6)
    assert compared.ratio == pytest.approx((yc.sum() / xc.sum()) / (ys.sum() / xs.sum()))
    assert compared.units == 3300


def test_counts_get_the_binomial_floor_and_an_empty_count_half_an_event() -> None:
    one_call_each = Sums.of([(1.0, 0.0)] * 400)
    stable = Sums.of([(1.0, 1.0)] * 10 + [(1.0, 0.0)] * 990)
    compared = log_ratio(one_call_each, stable, counts=True)
    assert compared is not None
    assert compared.ratio == pytest.approx((0.5 / 400) / 0.01)
    canary_floor = 1 / 0.5 - 1 / 400
    stable_binomial = stats.binom(1000, 0.01).var() / 10**2  # Var(count)/count²: (1 − p)/(n p)
    assert compared.se ** 2 == pytest.approx(canary_floor + stable_binomial, rel=0.02)


@pytest.mark.parametrize("units", [50, 1000, 5000, 40000])
@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_the_one_sided_bound_is_where_the_half_normal_mixture_reaches_one_over_alpha(units: int,
                                                                                     alpha: float) -> None:
    rho = mixture_rho(alpha, 5000)
    boundary = radius_multiplier(units, alpha, 5000) * math.sqrt(units)  # on the standardised sum, variance t

    def integrand(lam: float) -> float:
        return math.exp(lam * boundary - lam * lam * units / 2) * 2 * stats.norm.pdf(lam, scale=rho)

    mixture, _ = integrate.quad(integrand, 0, np.inf, limit=200)
    assert mixture == pytest.approx(1 / alpha, rel=1e-6)


@pytest.mark.parametrize("units", [100, 5000, 100000])
def test_the_two_sided_radius_is_where_the_normal_mixture_reaches_one_over_alpha(units: int) -> None:
    alpha = 0.05
    rho = mixture_rho(alpha, 5000)
    boundary = two_sided_multiplier(units, alpha, 5000) * math.sqrt(units)
    mixture, _ = integrate.quad(
        lambda lam: math.exp(lam * boundary - lam * lam * units / 2) * stats.norm.pdf(lam, scale=rho),
        -np.inf, np.inf)
    assert mixture == pytest.approx(1 / alpha, rel=1e-6)
    assert radius_multiplier(units, alpha, 5000) < two_sided_multiplier(units, alpha, 5000)


def test_the_bound_holds_at_every_look_of_a_random_walk() -> None:
    """Time-uniform coverage: Gaussian walks cross the one-sided bound at some look in at most α of runs."""
    rng = np.random.default_rng(7)
    alpha, looks, walks = 0.05, 2000, 4000
    paths = np.cumsum(rng.standard_normal((walks, looks)), axis=1)
    t = np.arange(1, looks + 1)
    bound = np.array([radius_multiplier(int(n), alpha, 500) for n in t]) * np.sqrt(t)
    crossed = (paths >= bound).any(axis=1).mean()
    fixed = (paths >= stats.norm.ppf(1 - alpha) * np.sqrt(t)).any(axis=1).mean()
    assert crossed <= alpha
    assert fixed > 3 * alpha  # a fixed-sample bound looked at 2,000 times is not valid: the reason for all this


@pytest.mark.parametrize(("canary", "stable", "percent"), [(130, 2470, 5.0), (52, 2548, 5.0), (260, 740, 25.0)])
def test_srm_is_scipys_chi_square_goodness_of_fit(canary: int, stable: int, percent: float) -> None:
    result = sample_ratio_mismatch(canary_users=canary, stable_users=stable, canary_percent=percent)
    total = canary + stable
    reference = stats.chisquare([canary, stable], [total * percent / 100, total * (1 - percent / 100)])
    assert result is not None
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert result.mismatch == (reference.pvalue < 0.001)


def test_srm_needs_five_expected_users_a_side() -> None:
    assert sample_ratio_mismatch(canary_users=1, stable_users=40, canary_percent=5.0) is None
    assert sample_ratio_mismatch(canary_users=0, stable_users=0, canary_percent=5.0) is None


def test_percentile_cont_is_numpys_linear_percentile() -> None:
    values = sorted(np.random.default_rng(3).lognormal(6, 0.5, 1001).tolist())
    for fraction in (0.5, 0.95, 0.99):
        assert percentile_cont(values, fraction) == pytest.approx(np.percentile(values, fraction * 100))
