"""Information gain about the criterion weights alone, and a mix of weights and clip ranking.

`I(y; w) = I(y; g)`, g = E[z | w] (MATH.md §3, targeted gain). Under N(m, S), with
`c_w = Cov(w, z)` (the weight rows of S a), `s2_w = c_w' S_ww^{-1} c_w` is the part of z's
variance the weights explain and `s2_u = s2 - s2_w` the rest; the gain about w is any gain
formula with mu unchanged, s2_w for the variance and sigma^2 + s2_u for the noise. This is
exact for any posterior (the naive `a_w' S_ww a_w` split is right only under the prior).
Here w is every weight parameter: the global weights and all context offsets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.objectives import expected_information_gain
from engine.state import Posterior
from engine.summaries import pair_marginal

JITTER = 1e-10  # relative diagonal jitter for S_ww's Cholesky (weights never fully known)


def weight_explained_variance(posterior: Posterior, first: Tensor, second: Tensor) -> Tensor:
    """`s2_w = c_w' S_ww^{-1} c_w` of `z = f_first - f_second`, per pair (0 without weights)."""
    n = posterior.n_items
    cov = posterior.cov
    if cov.shape[0] == n:
        return cov.new_zeros(first.shape)
    weights = cov[n:, n:]
    scale = float(torch.diagonal(weights).mean())
    chol = torch.linalg.cholesky(
        weights + JITTER * scale * torch.eye(weights.shape[0], dtype=cov.dtype, device=cov.device)
    )
    # V = L^{-1} Cov(w, f): then s2_w of a_i - a_j is |V_i - V_j|^2
    whitened = torch.linalg.solve_triangular(chol, cov[n:, :n], upper=False)  # d x n
    return (whitened[:, first] - whitened[:, second]).square().sum(0)


def weight_information_gain(
    posterior: Posterior, first: Tensor, second: Tensor, noise_var: float, cuts: Tensor
) -> Tensor:
    """`I(y; w)` in bits for the pairs (first[b], second[b]). MATH.md §3 (targeted gain)."""
    mu, var = pair_marginal(posterior, first, second)
    explained = torch.minimum(weight_explained_variance(posterior, first, second), var)
    return expected_information_gain(mu, explained, noise_var + (var - explained), cuts)


def mixed_information_gain(
    posterior: Posterior,
    first: Tensor,
    second: Tensor,
    noise_var: float,
    cuts: Tensor,
    weight_share: float,
) -> Tensor:
    """`(1 - share) I(y; f) + share I(y; w)`: clip ranking and weights in one objective.

    Raises:
        ValueError: share outside [0, 1].
    """
    if not 0 <= weight_share <= 1:
        raise ValueError(f"weight_share must be in [0, 1], got {weight_share}")
    mu, var = pair_marginal(posterior, first, second)
    clips = expected_information_gain(mu, var, noise_var, cuts)
    weights = weight_information_gain(posterior, first, second, noise_var, cuts)
    return (1 - weight_share) * clips + weight_share * weights


__all__ = ["mixed_information_gain", "weight_explained_variance", "weight_information_gain"]
