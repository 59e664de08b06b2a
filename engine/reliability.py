"""What a rater is like, learned from their labels: how noisy, and how often they click at random.

A rater answers as the model says with probability `keep` (with their own Thurstone noise
sd sigma_r), and clicks one of the L outcomes at random otherwise (MATH.md §3, lapse paragraph;
the random-click form of the lapse, which also covers ties and emoji levels). Given the
posterior marginals of the rater's labels, the joint posterior of (keep, sigma_r) is
two-dimensional and is evaluated exactly on a grid:

    p(keep, sigma | labels) ∝ p(keep) p(sigma) prod_k (keep Z_k(sigma) + (1 - keep) / L_k),
    Z_k(sigma) = P(z_k + eps in [lo_k, hi_k]),  z_k ~ N(mu_k, s2_k),  eps ~ N(0, sigma^2).

The keep prior mixes a point mass at 0 (a share of pure random clickers) with a
Beta(alpha, beta); sigma's prior is log-normal around the campaign's default noise. (EM on the
keep likelihood stalls for random clickers: at keep = 0 its slope, sum_k (Z_k L_k - 1), is zero
on average for random answers, so the grid is used instead.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.likelihoods import interval_moments

KEEP_POINTS = 400  # grid over keep in [0, 1)
NOISE_POINTS = 25  # grid over log sigma
NOISE_SPAN = 4.0  # sigma from default / 4 to default x 4
NOISE_PRIOR_LOG_SD = 0.5  # prior sd of log sigma around the default noise
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


def rater_posterior(
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
) -> RaterReliability:
    """The grid posterior of (keep, sigma) for one rater's N labels.

    Args:
        mu, var: (N,) posterior marginals of each label's z.
        lo, hi: (N,) the interval each label says z + eps fell in.
        n_outcomes: (N,) outcomes of each question (for the random click).
        default_noise_sd: the campaign's default sigma (centre of sigma's prior).
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
        log_noise_prior = (
            -0.5 * ((log_sigma - math.log(default_noise_sd)) / NOISE_PRIOR_LOG_SD) ** 2
        )
    else:
        log_sigma = like.new_tensor([math.log(default_noise_sd)])
        log_noise_prior = like.new_zeros(1)
    noise_var = torch.exp(2 * log_sigma)[:, None]  # S x 1
    z = torch.exp(
        interval_moments(mu[None], var[None], lo[None], hi[None], noise_var).log_z
    )  # S x N
    mixture = keep_grid[:, None, None] * z[None] + (1 - keep_grid[:, None, None]) / n_outcomes
    log_post = torch.log(mixture).sum(-1) + log_keep_prior[:, None] + log_noise_prior[None, :]
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
        noise_sd=float((weight.sum(0) * torch.exp(log_sigma)).sum()),
        labels=int(mu.numel()),
        flagged=probability_random > FLAG_PROBABILITY,
    )


__all__ = ["FLAG_PROBABILITY", "RaterReliability", "rater_posterior"]
