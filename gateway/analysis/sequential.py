"""One-sided asymptotic confidence sequences: bounds valid however often a check looks.

Method: the asymptotic confidence sequence (AsympCS) of Waudby-Smith, Arnold,
Wu, Howard and Ramdas, "Time-uniform central limit theory and asymptotic
confidence sequences" (Annals of Statistics, 2024; arXiv:2103.06476), which is
what GrowthBook's "GAVI" sequential intervals and safe rollouts use. The
estimate's standardised error process is compared with the *one-sided*
Robbins normal-mixture boundary (Howard, Ramdas, McAuliffe and Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of
Statistics 2021, section 3.5, the half-normal mixture): with t units observed
(users, both versions together) and mixing scale ρ, the mixture martingale is

    M_t(z) = 2 / sqrt(1 + ρ²t) · exp(z²/2) · Φ(z),   z = ρ·S_t / sqrt(1 + ρ²t),

and the one-sided bound sits where M_t = 1/α (Ville's inequality makes the
chance of ever crossing it at most α). In units of the estimate's standard
error the bound's radius is

    radius = SE · z_t · sqrt(1 + ρ²t) / (ρ·sqrt(t)),  z_t solving z²/2 + log Φ(z) = log(sqrt(1 + ρ²t) / (2α)).

There is no closed form for z_t; Newton's method from the two-sided solution
converges in a few steps. ρ is tuned so the bound is narrowest near
`tuning` units, with GrowthBook's rule ρ² = (−2 log α + log(−2 log α + 1)) / tuning.
The two-sided AsympCS radius (WS et al., Theorem 2.2) is
SE · sqrt(2(tρ² + 1)/(tρ²) · log(sqrt(tρ² + 1)/α)); tests check both against
numerical integration of the mixtures with SciPy.

Written here rather than imported: it is a dozen lines of closed forms, and
the decision core stays free of numerical libraries.
"""

from __future__ import annotations

import math
from functools import lru_cache

_SQRT2 = math.sqrt(2.0)


def mixture_rho(alpha: float, tuning: float) -> float:
    """The normal-mixture scale ρ that makes the boundary narrowest near `tuning` units."""
    log_term = -2.0 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1.0)) / tuning)


def _log_normal_cdf(z: float) -> float:
    return math.log(0.5 * math.erfc(-z / _SQRT2))


@lru_cache(maxsize=65536)
def radius_multiplier(units: int, alpha: float, tuning: float) -> float:
    """How many standard errors the one-sided level-α bound lies from the estimate after `units` units.

    `units` ≥ 1 (users observed, both versions), 0 < alpha < 0.5, tuning > 0.
    Raises ValueError outside those ranges.
    """
    if units < 1 or not 0 < alpha < 0.5 or tuning <= 0:
        raise ValueError("need units >= 1, 0 < alpha < 0.5 and tuning > 0")
    rho2 = mixture_rho(alpha, tuning) ** 2
    growth = 1.0 + rho2 * units
    target = math.log(math.sqrt(growth) / (2.0 * alpha))
    z = math.sqrt(2.0 * target)  # the solution when Φ(z) = 1; the root lies just above it
    for _ in range(50):
        phi_ratio = math.exp(-0.5 * z * z - _log_normal_cdf(z)) / math.sqrt(2.0 * math.pi)
        step = (0.5 * z * z + _log_normal_cdf(z) - target) / (z + phi_ratio)
        z -= step
        if abs(step) < 1e-12:
            break
    return z * math.sqrt(growth / (rho2 * units))


def two_sided_multiplier(units: int, alpha: float, tuning: float) -> float:
    """The two-sided AsympCS half-width in standard errors (WS et al. 2021, Theorem 2.2)."""
    rho2 = mixture_rho(alpha, tuning) ** 2
    growth = 1.0 + rho2 * units
    return math.sqrt(2.0 * growth / (rho2 * units) * math.log(math.sqrt(growth) / alpha))
