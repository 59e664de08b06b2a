"""What a rater is like, learned from their labels: how noisy, and how often they click at random.

A rater answers as the model says with probability `keep` (with their own Thurstone noise
sd sigma_r), and clicks one of the L outcomes at random otherwise (MATH.md §3, lapse paragraph;
the random-click form of the lapse, which also covers ties and emoji levels). Given the
posterior marginals of the rater's labels, the joint posterior of (keep, sigma_r) is
two-dimensional and is evaluated exactly on a grid:

    p(keep, sigma | labels) ∝ p(keep) p(sigma) prod_k (keep Z_k(sigma) + (1 - keep) / L_k),
    Z_k(sigma) = P(z_k + eps in [lo_k, hi_k]),  z_k ~ N(mu_k, s2_k),  eps ~ N(0, sigma^2).

The keep prior mixes a point mass at 0 (a share of pure random clickers) with a
Beta(alpha, beta); sigma's prior is log-normal around the campaign's default noise, its
spread fitted across raters by empirical Bayes (`fit_noise_spread`). (EM on the
keep likelihood stalls for random clickers: at keep = 0 its slope, sum_k (Z_k L_k - 1), is zero
on average for random answers, so the grid is used instead.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from engine.likelihoods import interval_moments

KEEP_POINTS = 400  # grid over keep in [0, 1)
NOISE_POINTS = 25  # grid over log sigma
NOISE_SPAN = 4.0  # sigma from default / 4 to default x 4
NOISE_PRIOR_LOG_SD = 0.5  # prior sd of log sigma around the default noise, until fitted
SPREAD_BOUNDS = (0.02, 2.0)  # the fitted sd of log sigma: from alike raters to a 50x range
FLAG_PROBABILITY = 0.5  # flagged once P(keep < 1/2) exceeds this: more likely random than not


@dataclass(frozen=True)
class RaterReliability:
    """A rater's posterior: keep probability (mean, 90 % interval, P(keep < 1/2)), noise sd
    (posterior mean), labels seen, and whether their labels look random."""

    keep: float
    keep_low: float
    keep_high: float
    probability_random: float
    noise_sd: float
    labels: int
    flagged: bool


@dataclass(frozen=True)
class RaterGrid:
    """One rater's labels on the (keep, sigma) grid: `log_likelihood` (G, S) of their labels,
    the keep grid (G,) with its log prior, and the log sigma grid (S,)."""

    log_likelihood: Tensor
    keep: Tensor
    log_keep_prior: Tensor
    log_sigma: Tensor
    labels: int


def rater_grid(
    mu: Tensor,
    var: Tensor,
    lo: Tensor,
    hi: Tensor,
    n_outcomes: Tensor,
    *,
    default_noise_sd: float,
    keep_prior: tuple[float, float] | None,
    random_share: float,
    learn_noise: bool,
) -> RaterGrid:
    """`log prod_k (keep Z_k(sigma) + (1 - keep) / L_k)` on the grid, for one rater's N labels.

    Args:
        mu, var: (N,) posterior marginals of each label's z.
        lo, hi: (N,) the interval each label says z + eps fell in.
        n_outcomes: (N,) outcomes of each question (for the random click).
        default_noise_sd: the campaign's default sigma (centre of sigma's prior and grid).
        keep_prior: Beta(alpha, beta) of keep for non-random raters; None: keep = 1.
        random_share: prior probability that a rater only clicks at random (keep = 0).
        learn_noise: False pins sigma at the default.
    """
    like = mu
    if keep_prior is None:
        keep_grid = like.new_ones(1)
        log_keep_prior = like.new_zeros(1)
    else:
        alpha, beta = keep_prior
        keep_grid = torch.linspace(0.0, 1.0, KEEP_POINTS + 1, dtype=like.dtype)[:-1].to(like)
        inner = keep_grid[1:]
        log_beta = (alpha - 1) * torch.log(inner) + (beta - 1) * torch.log1p(-inner)
        log_beta = torch.log_softmax(log_beta, 0) + math.log(1 - random_share)
        log_keep_prior = torch.cat((like.new_tensor([math.log(random_share)]), log_beta))
    if learn_noise:
        log_sigma = math.log(default_noise_sd) + torch.linspace(
            -math.log(NOISE_SPAN), math.log(NOISE_SPAN), NOISE_POINTS, dtype=like.dtype
        ).to(like)
    else:
        log_sigma = like.new_tensor([math.log(default_noise_sd)])
    noise_var = torch.exp(2 * log_sigma)[:, None]  # S x 1
    z = torch.exp(
        interval_moments(mu[None], var[None], lo[None], hi[None], noise_var).log_z
    )  # S x N
    mixture = keep_grid[:, None, None] * z[None] + (1 - keep_grid[:, None, None]) / n_outcomes
    return RaterGrid(
        torch.log(mixture).sum(-1), keep_grid, log_keep_prior, log_sigma, int(mu.numel())
    )


def log_noise_prior(grid: RaterGrid, default_noise_sd: float, spread: float) -> Tensor:
    """log p(sigma) on the grid: log-normal around the default with sd `spread` of log sigma,
    normalised over the grid (so evidences for different spreads compare)."""
    if grid.log_sigma.numel() == 1:
        return grid.log_sigma.new_zeros(1)
    return torch.log_softmax(
        -0.5 * ((grid.log_sigma - math.log(default_noise_sd)) / spread) ** 2, 0
    )


def rater_posterior(
    grid: RaterGrid, *, default_noise_sd: float, spread: float = NOISE_PRIOR_LOG_SD
) -> RaterReliability:
    """The grid posterior of (keep, sigma) for one rater (`rater_grid`), summarised."""
    log_post = (
        grid.log_likelihood
        + grid.log_keep_prior[:, None]
        + log_noise_prior(grid, default_noise_sd, spread)[None, :]
    )
    keep_grid = grid.keep
    weight = torch.softmax(log_post.reshape(-1), 0).reshape(log_post.shape)  # G x S
    keep_weight = weight.sum(1)
    cumulative = torch.cumsum(keep_weight, 0)
    last = keep_grid.numel() - 1
    low = keep_grid[min(int(torch.searchsorted(cumulative, cumulative.new_tensor(0.05))), last)]
    high = keep_grid[min(int(torch.searchsorted(cumulative, cumulative.new_tensor(0.95))), last)]
    probability_random = float(keep_weight[keep_grid < 0.5].sum())
    return RaterReliability(
        keep=float((keep_weight * keep_grid).sum()),
        keep_low=float(low),
        keep_high=float(high),
        probability_random=probability_random,
        noise_sd=float((weight.sum(0) * torch.exp(grid.log_sigma)).sum()),
        labels=grid.labels,
        flagged=probability_random > FLAG_PROBABILITY,
    )


def fit_noise_spread(grids: Sequence[RaterGrid], default_noise_sd: float) -> float:
    """Empirical Bayes for the rater-noise prior: the sd of log sigma across raters that
    maximises `sum_r log sum_{keep, sigma} p(labels_r | keep, sigma) p(keep) p(sigma)`.

    The prior's centre stays at the default noise: it sets the latent unit, which the prior
    scales are measured in. One bounded scalar search over log spread.

    Raises:
        ValueError: no rater grid, or grids without a noise axis.
    """
    if not grids or any(g.log_sigma.numel() < 2 for g in grids):
        raise ValueError("fitting the rater-noise prior needs raters with learned noise")
    joint = [g.log_likelihood + g.log_keep_prior[:, None] for g in grids]

    def negative(log_spread: float) -> float:
        total = 0.0
        for grid, log_joint in zip(grids, joint, strict=True):
            prior = log_noise_prior(grid, default_noise_sd, math.exp(log_spread))
            total += float(torch.logsumexp((log_joint + prior[None, :]).reshape(-1), 0))
        return -total

    low, high = (math.log(b) for b in SPREAD_BOUNDS)
    result = minimize_scalar(negative, bounds=(low, high), method="bounded")
    return float(math.exp(result.x))


__all__ = [
    "FLAG_PROBABILITY",
    "NOISE_PRIOR_LOG_SD",
    "RaterGrid",
    "RaterReliability",
    "fit_noise_spread",
    "log_noise_prior",
    "rater_grid",
    "rater_posterior",
]
