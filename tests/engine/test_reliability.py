"""A rater's (keep, noise) posterior against direct numerical integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import beta as beta_distribution
from scipy.stats import norm

from engine.reliability import (
    KEEP_ALPHA_BOUNDS,
    fit_keep_prior,
    fit_noise_spread,
    grid_log_evidence,
    log_keep_prior_on,
    log_noise_prior,
    rater_grid,
    rater_grids,
    rater_posterior,
    rater_posteriors,
)

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
    grid = rater_grid(
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
    result = rater_posterior(grid, default_noise_sd=1.0)
    mean, below = _reference_keep(mu, var, lo, hi, 1.0)
    assert result.keep == pytest.approx(mean, abs=5e-3)  # a 400-point grid
    assert result.probability_random == pytest.approx(below, abs=5e-3)
    assert result.flagged == (below > 0.5)
    assert result.flagged != agree  # contradicting the model 8 times out of 8 looks random


def test_without_lapses_or_noise_learning_the_rater_is_the_default() -> None:
    mu, var, lo, hi, n_outcomes = _labels(True)
    grid = rater_grid(
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
    result = rater_posterior(grid, default_noise_sd=1.3)
    assert result.keep == 1.0 and result.noise_sd == pytest.approx(1.3)
    assert not result.flagged and result.labels == 8
    assert math.isfinite(result.keep_low) and result.keep_low <= result.keep_high


def test_raters_scored_together_match_each_scored_alone() -> None:
    """`rater_grids` over a rater index, interleaved labels and more than one chunk of them,
    and `rater_posteriors` give each rater what `rater_grid` and `rater_posterior` give them
    alone; a rater without labels keeps the prior."""
    rng = np.random.default_rng(SEED)
    count = 60
    rater = torch.tensor(rng.integers(0, 3, count))  # raters 0..2; rater 3 has no label
    said_first = rng.random(count) < 0.7
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    labels = (
        t(rng.normal(scale=2.0, size=count)),
        t(rng.uniform(0.1, 0.5, size=count)),
        t(np.where(said_first, 0.0, -np.inf)),
        t(np.where(said_first, np.inf, 0.0)),
        t(rng.choice([2.0, 3.0], size=count)),
    )
    options = dict(
        default_noise_sd=0.8, keep_prior=KEEP_PRIOR, random_share=SHARE, learn_noise=True
    )
    together = rater_grids(*labels, rater, 4, **options)  # type: ignore[arg-type]
    summaries = rater_posteriors(together, default_noise_sd=0.8, spread=0.4)
    for r in range(4):
        own = rater == r
        alone = rater_grid(*(x[own] for x in labels), **options)  # type: ignore[arg-type]
        assert together[r].labels == alone.labels == int(own.sum())
        torch.testing.assert_close(
            together[r].log_likelihood, alone.log_likelihood, rtol=0, atol=1e-12
        )
        expected = rater_posterior(alone, default_noise_sd=0.8, spread=0.4)
        for name in ("keep", "keep_low", "keep_high", "probability_random", "noise_sd"):
            assert getattr(summaries[r], name) == pytest.approx(getattr(expected, name), abs=1e-12)
        assert summaries[r].flagged == expected.flagged
    # against the sum over labels of log(keep Z + (1 - keep) / L), Z by scipy
    mu, var, lo, hi, n_outcomes = (x.numpy() for x in labels)
    keep = together[0].keep.numpy()
    sigma = np.exp(together[0].log_sigma.numpy())
    c = np.sqrt(var[:, None] + sigma**2)  # N x S
    z = norm.cdf((hi[:, None] - mu[:, None]) / c) - norm.cdf((lo[:, None] - mu[:, None]) / c)
    terms = np.log(keep[:, None] * z[:, None, :] + (1 - keep[:, None]) / n_outcomes[:, None, None])
    for r in range(4):
        direct = torch.from_numpy(terms[(rater == r).numpy()].sum(0))
        torch.testing.assert_close(together[r].log_likelihood, direct, rtol=0, atol=1e-10)
    assert together[3].labels == 0 and not bool(together[3].log_likelihood.any())
    assert rater_posteriors([], default_noise_sd=0.8) == []
    pinned = rater_grids(*labels, rater, 4, **{**options, "learn_noise": False})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same keep and sigma axes"):
        rater_posteriors([together[0], pinned[0]], default_noise_sd=0.8)


def _well_known_pairs(
    mu: np.ndarray,
    said_first: np.ndarray,
    *,
    keep_prior: tuple[float, float] | None,
    learn_noise: bool,
):
    """One rater's grid from forced choices on pairs known to var 0.01 (default noise 1)."""
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return rater_grid(
        t(mu),
        t(np.full(mu.size, 0.01)),
        t(np.where(said_first, 0.0, -np.inf)),
        t(np.where(said_first, np.inf, 0.0)),
        t(np.full(mu.size, 2.0)),
        default_noise_sd=1.0,
        keep_prior=keep_prior,
        random_share=SHARE,
        learn_noise=learn_noise,
    )


def _raters_with_spread(spread: float, seed: int) -> tuple[list, float]:
    """40 raters, sigma_r log-normal around 1 with sd `spread` of log sigma, 150 labels each on
    well-known pairs (posterior var 0.01), as (keep, sigma) grids; and the drawn sd of log
    sigma."""
    rng = np.random.default_rng(seed)
    grids = []
    log_sigma = rng.normal(0.0, spread, 40)
    for sigma in np.exp(log_sigma):
        mu = rng.normal(scale=1.5, size=150)
        said_first = mu + rng.normal(scale=sigma, size=150) > 0
        grids.append(_well_known_pairs(mu, said_first, keep_prior=None, learn_noise=True))
    return grids, float(log_sigma.std())


def test_noise_spread_is_recovered_by_empirical_bayes() -> None:
    """The rater-noise prior's spread, fitted across raters, tracks the spread of the drawn log
    sigma. Measured (drawn sd -> fitted): 0.472 -> 0.434, 0.236 -> 0.213, 0.039 -> 0.055."""
    for spread in (0.6, 0.3, 0.05):
        grids, drawn = _raters_with_spread(spread, SEED)
        assert fit_noise_spread(grids, default_noise_sd=1.0) == pytest.approx(drawn, abs=0.06)
    with pytest.raises(ValueError, match="learned noise"):
        fit_noise_spread([], default_noise_sd=1.0)


def _raters_with_keep(alpha: float, seed: int) -> tuple[list, float]:
    """40 raters, keep ~ Beta(alpha, 1), 150 labels each on well-known pairs (noise 1, known),
    as keep grids; and the mean of the drawn keeps."""
    rng = np.random.default_rng(seed)
    keeps = rng.beta(alpha, 1.0, 40)
    grids = []
    for keep in keeps:
        mu = rng.normal(scale=1.5, size=150)
        said_first = mu + rng.normal(size=150) > 0
        random = rng.random(150) >= keep
        said_first = np.where(random, rng.random(150) < 0.5, said_first)
        grids.append(_well_known_pairs(mu, said_first, keep_prior=KEEP_PRIOR, learn_noise=False))
    return grids, float(keeps.mean())


def _evidence_by_quad(label_probabilities: list, alpha: float) -> float:
    """sum_r log [SHARE prod_k 1/2 + (1 - SHARE) int Beta(keep; alpha, 1) prod_k (keep Z_k
    + (1 - keep)/2) dkeep] for each rater's label probabilities Z, by quadrature on the
    continuous keep (not the grid)."""
    total = 0.0
    for z in label_probabilities:

        def integrand(keep: float, z: np.ndarray = z) -> float:
            return alpha * keep ** (alpha - 1) * math.exp(np.log(keep * z + (1 - keep) / 2).sum())

        inner, _ = quad(integrand, 0.0, 1.0, points=[0.9, 0.99], limit=200)
        total += math.log(SHARE * 0.5 ** len(z) + (1 - SHARE) * inner)
    return total


def test_keep_prior_is_recovered_by_empirical_bayes() -> None:
    """The keep prior's alpha, fitted across raters, puts the prior's mean keep near the
    drawn keeps' mean; raters who never lapse take it to the top of its range. Measured
    (drawn mean keep -> fitted alpha / (alpha + 1)): 0.800 -> 0.788, 0.953 -> 0.953,
    1 -> 0.9975."""
    for alpha, tolerance in ((4.0, 0.03), (19.0, 0.015)):
        grids, drawn = _raters_with_keep(alpha, SEED)
        fitted, beta = fit_keep_prior(grids, KEEP_PRIOR, SHARE, default_noise_sd=1.0, spread=0.5)
        assert beta == KEEP_PRIOR[1]
        assert fitted / (fitted + 1) == pytest.approx(drawn, abs=tolerance)
    honest, _ = _raters_with_keep(1e9, SEED)
    fitted, _ = fit_keep_prior(honest, KEEP_PRIOR, SHARE, default_noise_sd=1.0, spread=0.5)
    assert fitted == pytest.approx(KEEP_ALPHA_BOUNDS[1], rel=0.01)
    with pytest.raises(ValueError, match="lapse model"):
        fit_keep_prior([], KEEP_PRIOR, SHARE, default_noise_sd=1.0, spread=0.5)


def test_keep_prior_evidence_matches_quadrature() -> None:
    """The evidence the fit maximises, compared between two priors on the grid, equals the
    same comparison by quadrature over a continuous keep (noise known, so no sigma axis), to
    the grid's resolution."""
    rng = np.random.default_rng(SEED + 1)
    grids, labels = [], []
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    for _ in range(5):
        mu = rng.normal(scale=1.5, size=30)
        said_first = (mu + rng.normal(size=30) > 0) | (rng.random(30) < 0.1)
        var = np.full(30, 0.3)
        lo, hi = np.where(said_first, 0.0, -np.inf), np.where(said_first, np.inf, 0.0)
        grids.append(
            rater_grid(
                t(mu),
                t(var),
                t(lo),
                t(hi),
                t(np.full(30, 2.0)),
                default_noise_sd=1.0,
                keep_prior=KEEP_PRIOR,
                random_share=SHARE,
                learn_noise=False,
            )
        )
        p_first = norm.cdf(mu / np.sqrt(var + 1.0))
        labels.append(np.where(said_first, p_first, 1 - p_first))

    def grid_evidence(alpha: float) -> float:
        prior = log_keep_prior_on(grids[0].keep, (alpha, 1.0), SHARE)
        stacked = torch.stack([grid.log_likelihood for grid in grids])
        return grid_log_evidence(stacked, prior, log_noise_prior(grids[0], 1.0, 0.5))

    for low, high in ((3.0, 9.0), (9.0, 30.0), (1.0, 3.0)):
        expected = _evidence_by_quad(labels, high) - _evidence_by_quad(labels, low)
        # the grid's keep points are 1/400 apart and stop short of 1: measured 0.858 vs 0.843
        # and -1.123 vs -1.173 for the first two
        assert grid_evidence(high) - grid_evidence(low) == pytest.approx(expected, rel=0.05)
