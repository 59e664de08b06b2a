"""Read-outs of a posterior: per-clip credible intervals and ranks, pair probabilities, weights."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import norm
from torch import Tensor

from engine.blocks import WEIGHTS, border_layout, context_block
from engine.objectives import outcome_probabilities
from engine.scope import scope_pairs
from engine.state import Posterior


@dataclass(frozen=True)
class ClipSummary:
    """Per clip (n,): posterior mean, sd, central credible interval, rank (1 = best)."""

    mean: Tensor
    sd: Tensor
    lower: Tensor
    upper: Tensor
    rank: Tensor
    level: float


@dataclass(frozen=True)
class WeightSummary:
    """Criterion weights: the global block and the effective weights w + w_c per context.

    Attributes:
        mean: (K,), cov: (K, K) of the global weights.
        context_mean: (C, K), context_cov: (C, K, K) of w + w_c.
    """

    mean: Tensor
    cov: Tensor
    context_mean: Tensor
    context_cov: Tensor

    @property
    def sd(self) -> Tensor:
        """(K,) posterior sd of the global weights."""
        return self.cov.diagonal().clamp_min(0.0).sqrt()

    @property
    def context_sd(self) -> Tensor:
        """(C, K) posterior sd of w + w_c per context."""
        return self.context_cov.diagonal(dim1=-2, dim2=-1).clamp_min(0.0).sqrt()

    def halfwidths(self, level: float) -> tuple[Tensor, Tensor]:
        """Half-widths of the central `level` intervals: (K,) global and (C, K) per context."""
        if not 0 < level < 1:
            raise ValueError(f"credible level must be in (0, 1), got {level}")
        return credible_halfwidth(self.sd, level), credible_halfwidth(self.context_sd, level)


def summarise_clips(posterior: Posterior, level: float = 0.9) -> ClipSummary:
    """`mean +- z_{(1 + level)/2} sd` per clip and the rank by posterior mean (ties by index)."""
    return summarise_moments(posterior.item_mean, torch.diagonal(posterior.item_cov), level)


def summarise_moments(mean: Tensor, var: Tensor, level: float = 0.9) -> ClipSummary:
    """`summarise_clips` from every clip's marginal mean and variance (n,), whatever form the
    posterior is kept in."""
    if not 0 < level < 1:
        raise ValueError(f"credible level must be in (0, 1), got {level}")
    sd = torch.sqrt(var.clamp_min(0.0))
    half = credible_halfwidth(sd, level)
    order = torch.argsort(-mean, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, mean.numel() + 1, device=mean.device)
    return ClipSummary(mean.clone(), sd, mean - half, mean + half, rank, level)


def pair_marginal(posterior: Posterior, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of `z = f_i - f_j` for the listed pairs, or of `z = f_i` where
    second is -1 (a single clip's rating). MATH.md §1."""
    mean, cov = posterior.item_mean, posterior.item_cov
    single = second < 0
    other = second.clamp_min(0)
    pair_var = cov[first, first] + cov[other, other] - 2.0 * cov[first, other]
    var = torch.where(single, cov[first, first], pair_var)
    mu = torch.where(single, mean[first], mean[first] - mean[other])
    return mu, var.clamp_min(0.0)


def probability_better(posterior: Posterior, first: Tensor, second: Tensor) -> Tensor:
    """`P(f_i > f_j) = Phi(mu / s)` under the posterior (no rater noise). MATH.md §1."""
    return probability_positive(*pair_marginal(posterior, first, second))


def probability_positive(mu: Tensor, var: Tensor) -> Tensor:
    """`P(z > 0) = Phi(mu / s)` for z ~ N(mu, var); var is floored at the smallest normal
    number, so a certain z gives 0 or 1 rather than NaN."""
    tiny = torch.finfo(mu.dtype).tiny
    return torch.special.ndtr(mu / torch.sqrt(var.clamp_min(tiny)))


def predict_pair(
    posterior: Posterior, first: Tensor, second: Tensor, noise_var: float, cuts: Tensor
) -> Tensor:
    """Predictive (loss, [tie,] win) probabilities of `first` vs `second`. MATH.md §3."""
    mu, var = pair_marginal(posterior, first, second)
    return outcome_probabilities(mu, var, noise_var, cuts)


def summarise_weights(posterior: Posterior) -> WeightSummary:
    """The global weights' Gaussian and each context's effective weights `w + w_c`."""
    n = posterior.n_items
    return summarise_border(
        posterior.mean[n:], posterior.cov[n:, n:], posterior.n_criteria, posterior.n_contexts
    )


def summarise_border(mean: Tensor, cov: Tensor, n_criteria: int, n_contexts: int) -> WeightSummary:
    """`summarise_weights` from the border's own Gaussian, (D,) and (D, D) in
    `engine.blocks.border_layout`."""
    layout = border_layout(n_criteria, n_contexts)
    index = layout[WEIGHTS].positions(mean.device)
    blocks = [layout[context_block(c)] for c in range(n_contexts)]
    context = torch.tensor(
        [range(b.start, b.stop) for b in blocks], dtype=torch.long, device=mean.device
    ).reshape(n_contexts, n_criteria)
    both = torch.cat((index.expand(n_contexts, n_criteria), context), dim=-1)  # C x 2K
    block = cov[both[:, :, None], both[:, None, :]]  # C x 2K x 2K
    summed = block.reshape(n_contexts, 2, n_criteria, 2, n_criteria).sum((1, 3))
    context_mean = mean[index] + mean[context]
    return WeightSummary(mean[index], cov[index][:, index], context_mean, summed)


def expected_kendall_tau(
    posterior: Posterior, groups: Tensor | None = None, chunk: int = 512
) -> float:
    """The posterior's expected Kendall tau between its mean ranking and the true ranking.

    Each pair (i, j) is ordered by the posterior mean; the order is right with probability
    `max(p, 1 - p)`, `p = P(f_i > f_j)` (MATH.md §1), so `E[tau] = mean_pairs |2p - 1|`. Only
    pairs inside the same group count when `groups` is given (the same-prompt scope). Rows
    are taken `chunk` at a time, so memory stays O(chunk * n). NaN when no pair counts.
    """
    mean, cov = posterior.item_mean, posterior.item_cov
    n = mean.numel()
    var = torch.diagonal(cov)
    if groups is not None:
        # the scope as a list: O(pairs in scope), not O(n^2), for many small groups
        first, second = scope_pairs(groups.to(mean.device))
        if first.numel() == 0:
            return math.nan
        pair_var = var[first] + var[second] - 2.0 * cov[first, second]
        return expected_tau_of_pairs(mean[first] - mean[second], pair_var)
    total, count = 0.0, 0
    columns = torch.arange(n, device=mean.device)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk), device=mean.device)
        keep = columns[None, :] > rows[:, None]
        mu = mean[rows][:, None] - mean[None, :]
        pair_var = var[rows][:, None] + var[None, :] - 2.0 * cov[rows]
        p = probability_positive(mu, pair_var)
        total += float(torch.abs(2.0 * p - 1.0)[keep].sum())
        count += int(keep.sum())
    return total / count if count else math.nan


def expected_tau_of_pairs(mu: Tensor, var: Tensor) -> float:
    """`mean_pairs |2 Phi(mu / s) - 1|` over pairs with difference mean mu and variance var (P,):
    `expected_kendall_tau` over listed pairs. NaN when none is listed."""
    if mu.numel() == 0:
        return math.nan
    return float(pair_tau_terms(mu, var).mean())


def pair_tau_terms(mu: Tensor, var: Tensor) -> Tensor:
    """`|2 Phi(mu / s) - 1|` elementwise: each pair's expected share in the Kendall tau between
    the posterior mean order and the truth (MATH.md §1; `expected_kendall_tau`), for pairs with
    difference mean mu and variance var of any shape."""
    return torch.abs(2.0 * probability_positive(mu, var) - 1.0)


def sampled_kendall_tau(draws: Tensor, mean: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """Kendall tau between each draw and the posterior mean order, over the listed pairs:
    `tau_s = mean_pairs sign(m_i - m_j) sign(f_si - f_sj)`. Its mean over draws estimates
    `expected_kendall_tau` (the same pairs); its spread is what a quantile target reads.

    Args:
        draws: (S, n) draws of the clips' qualities.
        mean: (n,) the posterior mean whose order is judged.
        first, second: (P,) the pairs in scope.

    Returns:
        (S,) one tau per draw; NaN when no pair is listed.
    """
    if first.numel() == 0:
        return draws.new_full((draws.shape[0],), math.nan)
    order = torch.sign(mean[first] - mean[second])  # P
    return (torch.sign(draws[:, first] - draws[:, second]) * order).mean(1)


def credible_halfwidth(sd: Tensor, level: float) -> Tensor:
    """`z_{(1 + level)/2} sd`, the half-width of a central Gaussian interval."""
    return sd * float(norm.ppf(0.5 + level / 2))


__all__ = [
    "ClipSummary",
    "WeightSummary",
    "credible_halfwidth",
    "expected_kendall_tau",
    "expected_tau_of_pairs",
    "pair_marginal",
    "pair_tau_terms",
    "predict_pair",
    "probability_better",
    "probability_positive",
    "sampled_kendall_tau",
    "summarise_border",
    "summarise_clips",
    "summarise_moments",
    "summarise_weights",
]
