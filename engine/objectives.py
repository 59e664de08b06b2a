"""Expected information gain of asking a question whose answer is an interval of z.

All gains are in bits and elementwise over candidates: a candidate is a Gaussian marginal
`z ~ N(mu, var)` (a pair difference f_i - f_j, or one clip's f_i) plus the answering rater's
noise variance; the outcomes are the intervals between the finite `cuts` (MATH.md §3):

- forced choice, cuts `[0]`: the closed form of Houlsby et al. (2011), clamped at 0;
- ties `[-t, t]` and emoji levels `[b_1, ..., b_{L-1}]`: `H[predictive] - E_z H[p(y | z)]`
  with the expectation by quadrature.

Because I(y; theta) = I(y; z) (MATH.md §1), these one-dimensional kernels are all selection
needs, and they batch on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from engine.likelihoods import interval_of
from engine.numerics import (
    BALD_C2,
    binary_entropy_bits,
    entropy_bits,
    gauss_hermite,
    gauss_legendre,
    log_ndtr_diff,
    log_normal_pdf,
)

N_QUADRATURE_NODES = 32
# Outside +-7 sigma of every cut the outcome is certain to ~1e-12: the conditional entropy is 0
# there for interval events (MATH.md §3).
PANEL_HALF_WIDTH = 7.0


def binary_information_gain(mu: Tensor, var: Tensor, noise_var: Tensor | float) -> Tensor:
    """`EIG ~= h(Phi(mu / c)) - C s / sqrt(var + C^2 s^2) exp(-mu^2 / 2(var + C^2 s^2))`.

    With `c^2 = var + s^2` and s the rater's noise sd. Houlsby, Huszar, Ghahramani, Lengyel
    (2011), "BALD"; MATH.md §3, with h in bits and
    C^2 = pi ln 2 / 2. A lower bound of the exact gain (error <= 0.0027 bits); clamped at 0.
    """
    noise_var = torch.as_tensor(noise_var, dtype=mu.dtype, device=mu.device)
    first = binary_entropy_bits(mu * torch.rsqrt(var + noise_var))
    spread = var + BALD_C2 * noise_var
    second = torch.sqrt(BALD_C2 * noise_var / spread) * torch.exp(-0.5 * mu * mu / spread)
    return (first - second).clamp_min(0.0)


def outcome_log_probabilities(
    mu: Tensor, var: Tensor, noise_var: Tensor | float, cuts: Tensor
) -> Tensor:
    """`log P(y = k) = log(Phi((b_{k+1} - mu)/c) - Phi((b_k - mu)/c))`, shape (..., L). Exact."""
    c = torch.sqrt(var + noise_var).unsqueeze(-1)
    lo, hi = interval_of(cuts, torch.arange(cuts.numel() + 1, device=cuts.device))
    return log_ndtr_diff((lo - mu.unsqueeze(-1)) / c, (hi - mu.unsqueeze(-1)) / c)


def outcome_probabilities(
    mu: Tensor, var: Tensor, noise_var: Tensor | float, cuts: Tensor
) -> Tensor:
    """Predictive outcome probabilities (..., L), lowest interval first (loss, [tie,] win)."""
    return torch.exp(outcome_log_probabilities(mu, var, noise_var, cuts))


def _conditional_entropy(z: Tensor, noise_sd: Tensor, cuts: Tensor, keep: float = 1.0) -> Tensor:
    """`H[p(y | z)]` in bits for the noisy interval outcome, elementwise over z; with a lapse,
    `p(y | z) = keep q(y | z) + (1 - keep) / L`."""
    lo, hi = interval_of(cuts, torch.arange(cuts.numel() + 1, device=cuts.device))
    z = z.unsqueeze(-1)
    sd = noise_sd.unsqueeze(-1)
    return entropy_bits(_lapse(log_ndtr_diff((lo - z) / sd, (hi - z) / sd), keep))


def _lapse(log_p: Tensor, keep: float) -> Tensor:
    """`log(keep p + (1 - keep) / L)` over the last axis (L outcomes); `log_p` when keep = 1."""
    if keep >= 1.0:
        return log_p
    random_click = log_p.new_tensor(math.log1p(-keep) - math.log(log_p.shape[-1]))
    if keep <= 0.0:
        return random_click.expand_as(log_p)
    return torch.logaddexp(log_p + math.log(keep), random_click)


def _expected_conditional_entropy(
    mu: Tensor, var: Tensor, noise_sd: Tensor, cuts: Tensor, keep: float = 1.0
) -> Tensor:
    """`E_{z ~ N(mu, var)} H[p(y | z)]`, the Gauss-Hermite / Gauss-Legendre switch of MATH.md §3.

    - s < sigma: 32-node Gauss-Hermite on N(mu, var) (error <= 1e-14 bits);
    - s >= sigma: the nodes must sit on the narrow bumps of H around each cut, so each finite cut
      b_k gets one 32-node Gauss-Legendre panel over [b_k - 7 sigma, b_k + 7 sigma] weighted by
      N(z; mu, var). Overlapping panels are split at the midpoint between neighbouring cuts, so
      they never double-count and each keeps its 32 nodes (no coarser than merging).
      Outside the panels a lapsing rater's entropy is the constant `_lapse_entropy` floor.
    """
    hermite_x, hermite_w = gauss_hermite(N_QUADRATURE_NODES, mu)
    legendre_x, legendre_w = gauss_legendre(N_QUADRATURE_NODES, mu)
    sd = torch.sqrt(var)
    narrow = sd < noise_sd

    # Gauss-Hermite: (..., Q)
    z_h = mu.unsqueeze(-1) + sd.unsqueeze(-1) * hermite_x
    entropy_h = (_conditional_entropy(z_h, noise_sd.unsqueeze(-1), cuts, keep) * hermite_w).sum(-1)

    # Gauss-Legendre panels: (..., n_cuts, Q)
    half = PANEL_HALF_WIDTH * noise_sd.unsqueeze(-1)  # (..., 1)
    mid = 0.5 * (cuts[1:] + cuts[:-1])
    inf = cuts.new_tensor([math.inf])
    left = torch.maximum(cuts - half, torch.cat((-inf, mid)))
    right = torch.minimum(cuts + half, torch.cat((mid, inf)))
    centre, radius = 0.5 * (left + right), 0.5 * (right - left)
    z_l = centre.unsqueeze(-1) + radius.unsqueeze(-1) * legendre_x
    safe_sd = torch.where(narrow, torch.ones_like(sd), sd)
    std = (z_l - mu[..., None, None]) / safe_sd[..., None, None]
    density = torch.exp(log_normal_pdf(std)) / safe_sd[..., None, None]
    panel_noise = noise_sd[..., None, None].expand_as(z_l)
    # away from every cut the answer is certain but for the lapse: the entropy there is the
    # lapse floor, so the panels integrate the excess over it
    floor = _lapse_entropy(keep, cuts.numel() + 1)
    excess = _conditional_entropy(z_l, panel_noise, cuts, keep) - floor
    entropy_l = ((excess * density * legendre_w).sum(-1) * radius).sum(-1) + floor
    return torch.where(narrow, entropy_h, entropy_l)


def _lapse_entropy(keep: float, n_outcomes: int) -> float:
    """Entropy in bits of `keep * one-hot + (1 - keep) / L`: a known answer behind a lapse."""
    masses = [keep + (1 - keep) / n_outcomes] + [(1 - keep) / n_outcomes] * (n_outcomes - 1)
    return -sum(m * math.log2(m) for m in masses if m > 0)


def interval_information_gain(
    mu: Tensor, var: Tensor, noise_var: Tensor | float, cuts: Tensor, keep: float = 1.0
) -> Tensor:
    """`EIG = H[P(y)] - E_z H[p(y | z)]` in bits for outcomes split at `cuts`. MATH.md §3.

    Exact up to quadrature error (<= 1e-8 bits, tests/engine/test_objectives.py). A noise-free
    rater (noise_var = 0) answers deterministically, so the gain is the predictive entropy.
    With a lapse (MATH.md §3, lapse paragraph) the rater answers by the model with probability
    `keep` and clicks one of the L outcomes at random otherwise; both entropies then take the
    mixture `keep p + (1 - keep) / L`, so a rater who mostly clicks at random teaches little.

    Args:
        mu, var: (...,) marginals of z.
        noise_var: scalar or (...,) rater noise variance.
        cuts: (L - 1,) finite increasing cut points.
        keep: the answering rater's probability of answering by the model, in [0, 1].

    Returns:
        (...,) gains, clamped at 0 against quadrature round-off.
    """
    noise_var = torch.as_tensor(noise_var, dtype=mu.dtype, device=mu.device).expand_as(mu)
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be in [0, 1], got {keep}")
    predictive = entropy_bits(_lapse(outcome_log_probabilities(mu, var, noise_var, cuts), keep))
    noisy = noise_var > 0
    noise_sd = torch.sqrt(torch.where(noisy, noise_var, torch.ones_like(noise_var)))
    conditional = _expected_conditional_entropy(mu, var, noise_sd, cuts, keep)
    # a noise-free rater's answer is certain given z: only the lapse is left to guess
    certain = _lapse_entropy(keep, cuts.numel() + 1)
    conditional = torch.where(noisy, conditional, torch.full_like(conditional, certain))
    return (predictive - conditional).clamp_min(0.0)


def expected_information_gain(
    mu: Tensor, var: Tensor, noise_var: Tensor | float, cuts: Tensor, keep: float = 1.0
) -> Tensor:
    """`EIG(question) = I(y; z)` in bits: the closed form for forced choice, quadrature otherwise.

    See MATH.md §3. Forced choice is the single cut at 0 by a rater who never lapses; anything
    else (ties, emoji levels, a lapse probability) takes `interval_information_gain`.
    """
    if keep < 1.0:
        return interval_information_gain(mu, var, noise_var, cuts, keep)
    if cuts.numel() == 1 and float(cuts[0]) == 0.0:
        noise = torch.as_tensor(noise_var, dtype=mu.dtype, device=mu.device)
        if bool((noise > 0).all()):
            return binary_information_gain(mu, var, noise)
    return interval_information_gain(mu, var, noise_var, cuts)


def screening_score(mu: Tensor, var: Tensor, noise_var: float) -> Tensor:
    """A cheap stand-in for the binary gain, for ranking millions of candidate pairs.

    `exp(-mu^2 / (2 C^2 c^2)) - C s / sqrt(var + C^2 s^2) exp(-mu^2 / 2(var + C^2 s^2))`: the
    BALD closed form with its first term h(Phi(x)) replaced by Houlsby's own approximation
    exp(-x^2 / (pi ln 2)). Only exp and rsqrt, no log_ndtr; selection re-scores the best few
    hundred candidates exactly. Computed in place on fresh temporaries to save memory traffic.
    """
    mu2 = mu * mu
    noise_var = max(float(noise_var), 1e-12)  # a noise-free rater: the limit of a tiny noise
    first = torch.div(mu2, (var + noise_var).mul_(2.0 * BALD_C2)).neg_().exp_()
    spread = var + BALD_C2 * noise_var
    second = torch.div(mu2, spread).mul_(-0.5).exp_()
    second.mul_(spread.rsqrt_()).mul_(math.sqrt(BALD_C2 * noise_var))
    return first.sub_(second)


GainFunction = Callable[..., Tensor]  # (mu, var, noise_var, cuts, keep=1.0) -> gains

OBJECTIVES: dict[str, GainFunction] = {
    "information_gain": expected_information_gain,
    "information_gain_quadrature": interval_information_gain,
}

__all__ = [
    "OBJECTIVES",
    "binary_information_gain",
    "expected_information_gain",
    "interval_information_gain",
    "outcome_log_probabilities",
    "outcome_probabilities",
    "screening_score",
]
