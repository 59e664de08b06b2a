"""Moment functions: against 50-digit quadrature, autograd, and the LIKELIHOODS contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import norm

from engine.likelihoods import (
    LIKELIHOODS,
    Outcome,
    expected_variance_factor,
    interval_moments,
    interval_moments_scalar,
    lapse_mixture,
    lapse_mixture_scalar,
    level_interval,
    pair_interval,
)
from tests.engine.reference import tilted_moments

INF = math.inf
# (mu, var, lo, hi, noise_sd): wins, losses, ties and emoji intervals, out to |mu/c| = 40.
CASES = [
    (0.0, 1.0, 0.0, INF, 1.0),
    (0.4, 2.0, -0.5, 0.5, 0.7),
    (-3.0, 1.0, 0.3, INF, 0.5),
    (2.5, 0.3, -INF, -0.2, 1.2),
    (0.2, 4.0, -1.5, -0.5, 1.0),
    (-30.0 * math.sqrt(1.25), 1.0, 0.0, INF, 0.5),
    (-40.0 * math.sqrt(2.0), 1.0, 0.0, INF, 1.0),
    (40.0 * math.sqrt(2.0), 1.0, -INF, 0.0, 1.0),
    (35.0, 1.0, -0.5, 0.5, 1.0),
    (0.0, 1.0, -1e-3, 1e-3, 1.0),
    (1.0, 9.0, 0.0, INF, 0.0),
]


def _moments(mu: float, var: float, lo: float, hi: float, noise_sd: float):
    t = torch.tensor
    return interval_moments(t(mu), t(var), t(lo), t(hi), t(noise_sd**2))


@pytest.mark.parametrize("case", CASES)
def test_interval_moments_match_quadrature(case: tuple[float, ...]) -> None:
    mu, var, lo, hi, noise_sd = case
    log_z, mean, variance = tilted_moments(mu, var, lo, hi, noise_sd)
    moments = _moments(*case)
    assert float(moments.log_z) == pytest.approx(log_z, rel=1e-9, abs=1e-12)
    # MATH.md §2: E[z | y] = mu + var dlog_z, Var[z | y] = var + var^2 d2log_z
    assert mu + var * float(moments.dlog_z) == pytest.approx(mean, rel=1e-7, abs=1e-8)
    assert var + var**2 * float(moments.d2log_z) == pytest.approx(variance, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("case", [c for c in CASES if abs(c[0]) < 10 and c[4] > 0])
def test_derivatives_match_autograd(case: tuple[float, ...]) -> None:
    mu, var, lo, hi, noise_sd = case
    # Autograd through where() with infinite ends gives inf * 0; an end at +-60 c is the same
    # event to double precision.
    lo, hi = max(lo, -60.0), min(hi, 60.0)
    mu_t = torch.tensor(mu, requires_grad=True)
    log_z = interval_moments(
        mu_t, torch.tensor(var), torch.tensor(lo), torch.tensor(hi), torch.tensor(noise_sd**2)
    ).log_z
    (first,) = torch.autograd.grad(log_z, mu_t, create_graph=True)
    (second,) = torch.autograd.grad(first, mu_t)
    moments = _moments(*case)
    first, second = first.detach(), second.detach()
    assert float(moments.dlog_z) == pytest.approx(float(first), rel=1e-8, abs=1e-10)
    assert float(moments.d2log_z) == pytest.approx(float(second), rel=1e-6, abs=1e-9)


def test_narrow_interval_keeps_kappa_in_range() -> None:
    """Intervals below ~1e-4 c give kappa < 0 in doubles (MATH.md §2): it must be clamped."""
    for width in (1e-5, 1e-7, 1e-9):
        moments = _moments(0.3, 1.0, -width, width, 0.0)
        assert -1.0 / 1.0 <= float(moments.d2log_z) <= 0.0


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
@given(
    mu=st.floats(-60, 60),
    var=st.floats(1e-6, 50),
    lo=st.floats(-20, 20),
    width=st.one_of(st.floats(1e-3, 20), st.just(INF)),
    lower_open=st.booleans(),
    noise_sd=st.floats(0.05, 5),
)
def test_likelihood_contract(
    name: str, mu: float, var: float, lo: float, width: float, lower_open: bool, noise_sd: float
) -> None:
    """Every registered likelihood: finite moments, log-concave (d2log_z in [-1/c2, 0])."""
    hi = lo + width
    lo = -INF if lower_open and math.isfinite(hi) else lo
    t = torch.tensor
    moments = LIKELIHOODS[name](t(mu), t(var), t(lo), t(hi), t(noise_sd**2))
    assert all(math.isfinite(float(m)) for m in moments)
    assert -1.0 / (var + noise_sd**2) - 1e-12 <= float(moments.d2log_z) <= 0.0


@given(mu=st.floats(-30, 30), var=st.floats(1e-4, 30), t=st.floats(0, 5), noise=st.floats(0.01, 5))
def test_pair_outcome_probabilities_sum_to_one(
    mu: float, var: float, t: float, noise: float
) -> None:
    outcomes = [Outcome.LOSS, Outcome.WIN] + ([Outcome.TIE] if t > 0 else [])
    total = 0.0
    for outcome in outcomes:
        lo, hi = pair_interval(outcome, t)
        total += math.exp(float(_moments(mu, var, lo, hi, noise).log_z))
    assert total == pytest.approx(1.0, abs=1e-12)


def test_intervals() -> None:
    assert pair_interval(Outcome.WIN, 0.5) == (0.5, INF)
    assert pair_interval(Outcome.LOSS, 0.5) == (-INF, -0.5)
    assert pair_interval(Outcome.TIE, 0.5) == (-0.5, 0.5)
    with pytest.raises(ValueError, match="tie"):
        pair_interval(Outcome.TIE, 0.0)
    assert level_interval(0, (-1.0, 1.0)) == (-INF, -1.0)
    assert level_interval(2, (-1.0, 1.0)) == (1.0, INF)
    with pytest.raises(ValueError, match="level"):
        level_interval(3, (-1.0, 1.0))


def test_degenerate_observation_is_rejected() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        _moments(0.0, 0.0, 0.0, INF, 0.0)


def test_expected_variance_factor_is_total_variance_of_the_mean() -> None:
    """`k s2^2 = Var(E[z | y])` (law of total variance), by quadrature per outcome."""
    mu, var, noise_sd, cuts = 0.7, 2.0, 0.8, [-0.5, 0.5]
    edges = [-INF, *cuts, INF]
    between = 0.0
    for k in range(3):
        log_z, mean, _ = tilted_moments(mu, var, edges[k], edges[k + 1], noise_sd)
        between += math.exp(log_z) * (mean - mu) ** 2
    factor = expected_variance_factor(mu, var, noise_sd**2, cuts)
    assert factor * var**2 == pytest.approx(between, rel=1e-8)


@pytest.mark.parametrize(
    ("mu", "var", "lo", "hi", "keep", "n_outcomes"),
    [
        (0.3, 1.0, 0.0, math.inf, 0.9, 2),
        (-3.0, 1.0, 0.0, math.inf, 0.7, 2),  # a surprising win: the lapse explains much of it
        (2.0, 4.0, -0.5, 0.5, 0.5, 3),  # a tie
        (0.0, 0.5, 1.0, 2.0, 0.95, 5),  # an emoji level
        (1.0, 2.0, 0.0, math.inf, 1.0, 2),  # keep = 1: the plain interval moments
    ],
)
def test_lapse_mixture_matches_quadrature(
    mu: float, var: float, lo: float, hi: float, keep: float, n_outcomes: int
) -> None:
    """Tilted mean and variance of N(z; mu, var) [keep P(y | z) + (1 - keep) / L] by dense
    quadrature against the ADF moments `mu + var dlog_z`, `var + var^2 d2log_z`."""
    noise = 1.0
    z = np.linspace(mu - 12 * math.sqrt(var), mu + 12 * math.sqrt(var), 200_001)
    density = np.exp(-0.5 * (z - mu) ** 2 / var)
    likelihood = norm.cdf((hi - z) / noise) - norm.cdf((lo - z) / noise)
    tilted = density * (keep * likelihood + (1 - keep) / n_outcomes)
    tilted_mean = np.sum(z * tilted) / np.sum(tilted)
    tilted_var = np.sum((z - tilted_mean) ** 2 * tilted) / np.sum(tilted)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    moments = lapse_mixture(
        interval_moments(t(mu), t(var), t(lo), t(hi), t(noise)), t(keep), t(float(n_outcomes))
    )
    assert float(mu + var * moments.dlog_z) == pytest.approx(tilted_mean, abs=1e-7)
    assert float(var + var**2 * moments.d2log_z) == pytest.approx(tilted_var, abs=1e-7)
    evidence = keep * np.exp(float(interval_moments(t(mu), t(var), t(lo), t(hi), t(noise)).log_z))
    assert float(moments.log_z) == pytest.approx(math.log(evidence + (1 - keep) / n_outcomes))


@given(
    st.floats(-30, 30),
    st.floats(1e-4, 50),
    st.sampled_from([0.01, 0.25, 2.25, 9.0]),
    st.sampled_from(
        [(-math.inf, 0.0), (0.0, math.inf), (-0.5, 0.5), (-1.5, -0.5), (1.5, math.inf)]
    ),
    st.sampled_from([0.05, 0.5, 0.95]),
)
def test_scalar_moments_equal_the_tensor_moments(
    mu: float, var: float, noise_var: float, interval: tuple[float, float], keep: float
) -> None:
    """The Python-float moments (the sequential ADF's) are the tensor moments, lapse included."""
    lo, hi = interval
    args = [torch.tensor(x, dtype=torch.float64) for x in (mu, var, lo, hi, noise_var)]
    tensor = interval_moments(*args)
    scalar = interval_moments_scalar(mu, var, lo, hi, noise_var)
    mixed = lapse_mixture(tensor, torch.tensor(keep, dtype=torch.float64), torch.tensor(3.0))
    mixed_scalar = lapse_mixture_scalar(scalar, keep, 3.0)
    for want, got in [*zip(tensor, scalar, strict=True), *zip(mixed, mixed_scalar, strict=True)]:
        assert got == pytest.approx(float(want), rel=1e-9, abs=1e-12)


def test_scalar_moments_reject_a_degenerate_observation() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        interval_moments_scalar(0.0, 0.0, 0.0, math.inf, 0.0)
