"""A rater's (keep, noise) posterior against direct numerical integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import beta as beta_distribution
from scipy.stats import norm

from engine.reliability import rater_posterior

SEED = 0
SHARE = 0.05
KEEP_PRIOR = (9.0, 1.0)


def _labels(agree: bool) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(SEED)
    mu = rng.normal(scale=2.0, size=8)
    var = rng.uniform(0.1, 0.5, size=8)
    said_first = (mu > 0) == agree  # what the rater said: with the model or against it
    lo = np.where(said_first, 0.0, -np.inf)
    hi = np.where(said_first, np.inf, 0.0)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return t(mu), t(var), t(lo), t(hi), t(np.full(8, 2.0))


def _reference_keep(mu, var, lo, hi, sigma: float) -> tuple[float, float]:
    """Posterior mean of keep and P(keep < 1/2) by quad, noise fixed at sigma."""
    c = np.sqrt(var.numpy() + sigma**2)
    z = norm.cdf((hi.numpy() - mu.numpy()) / c) - norm.cdf((lo.numpy() - mu.numpy()) / c)

    def likelihood(keep: float) -> float:
        return float(np.prod(keep * z + (1 - keep) / 2))

    def density(keep: float) -> float:
        return (1 - SHARE) * beta_distribution.pdf(keep, *KEEP_PRIOR) * likelihood(keep)

    spike = SHARE * likelihood(0.0)
    total = spike + quad(density, 0, 1, points=[0.5])[0]
    mean = quad(lambda k: k * density(k), 0, 1)[0] / total
    below = (spike + quad(density, 0, 0.5)[0]) / total
    return mean, below


@pytest.mark.parametrize("agree", [True, False])
def test_keep_posterior_matches_integration(agree: bool) -> None:
    mu, var, lo, hi, n_outcomes = _labels(agree)
    result = rater_posterior(
        mu,
        var,
        lo,
        hi,
        n_outcomes,
        default_noise_sd=1.0,
        keep_prior=KEEP_PRIOR,
        random_share=SHARE,
        learn_noise=False,
    )
    mean, below = _reference_keep(mu, var, lo, hi, 1.0)
    assert result.keep == pytest.approx(mean, abs=5e-3)  # a 400-point grid
    assert result.probability_random == pytest.approx(below, abs=5e-3)
    assert result.flagged == (below > 0.5)
    assert result.flagged != agree  # contradicting the model 8 times out of 8 looks random


def test_without_lapses_or_noise_learning_the_rater_is_the_default() -> None:
    mu, var, lo, hi, n_outcomes = _labels(True)
    result = rater_posterior(
        mu,
        var,
        lo,
        hi,
        n_outcomes,
        default_noise_sd=1.3,
        keep_prior=None,
        random_share=SHARE,
        learn_noise=False,
    )
    assert result.keep == 1.0 and result.noise_sd == pytest.approx(1.3)
    assert not result.flagged and result.labels == 8
    assert math.isfinite(result.keep_low) and result.keep_low <= result.keep_high
