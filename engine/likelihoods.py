"""Observation likelihoods as moment functions of the observed projection z = a . theta.

Every observation the engine knows is an *interval event* (MATH.md §2): the rater's noisy
perception `z_obs = z + eps`, `eps ~ N(0, noise_var)`, fell in `[lo, hi]`.

- a win of i over j: `(t, inf)`; a loss: `(-inf, -t)`; a tie: `(-t, t)` with t >= 0 the tie
  margin (Thurstone with ties, Glenn and David 1960);
- emoji level k of one clip: `(b_k, b_{k+1})` with ordered thresholds (ordered probit, Chu and
  Ghahramani 2005).

A likelihood maps the Gaussian marginal `z ~ N(mu, var)` to the moments the update needs:
`log_z = log E[p(y | z)]` and its first two derivatives with respect to mu. update.py never
branches on the likelihood's name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from engine.numerics import LOG_SQRT_2PI, log_ndtr_diff, log_ndtr_diff_scalar, log_normal_pdf


class Moments(NamedTuple):
    """`log Z`, `d log Z / d mu` and `d^2 log Z / d mu^2` of one or more observations."""

    log_z: Tensor
    dlog_z: Tensor
    d2log_z: Tensor


class Outcome(StrEnum):
    """What a rater said about the ordered pair (first, second)."""

    WIN = "win"  # first beat second
    LOSS = "loss"  # second beat first
    TIE = "tie"


# Intervals narrower than ~1e-4 c give kappa slightly below 0 in double precision (MATH.md §2).
KAPPA_MIN = 0.0
KAPPA_MAX = 1.0


def interval_moments(mu: Tensor, var: Tensor, lo: Tensor, hi: Tensor, noise_var: Tensor) -> Moments:
    """Moments of `Z = P(lo < z + eps < hi) = Phi(be) - Phi(al)` under `z ~ N(mu, var)`.

    With `c2 = noise_var + var`, `al = (lo - mu)/c`, `be = (hi - mu)/c`:
    `dlog_z = (phi(al) - phi(be)) / (c Z)` and `d2log_z = -(1 - kappa) / c2` with
    `kappa = 1 + (al phi(al) - be phi(be)) / Z - ((phi(al) - phi(be)) / Z)^2`. See MATH.md §2.
    Ratios are taken in log space; kappa is clamped to [0, 1].

    Args:
        mu, var: mean and variance of z, any broadcastable shapes.
        lo, hi: interval ends, lo < hi; +-inf allowed.
        noise_var: the rater's noise variance sigma_r^2 >= 0.

    Returns:
        Moments with the broadcast shape.

    Raises:
        ValueError: if some c2 = noise_var + var is not positive (a degenerate observation).
    """
    c2 = noise_var + var
    if bool((c2 <= 0).any()):
        raise ValueError("degenerate observation: noise variance plus posterior variance is 0")
    c = torch.sqrt(c2)
    al = (lo - mu) / c
    be = (hi - mu) / c
    log_z = log_ndtr_diff(al, be)
    ratio_al = torch.exp(log_normal_pdf(al) - log_z)  # phi(al) / Z; 0 at al = -inf
    ratio_be = torch.exp(log_normal_pdf(be) - log_z)
    mean_shift = ratio_al - ratio_be
    # al phi(al) / Z written via the ratio so that an infinite end contributes exactly 0.
    tail_al = torch.where(torch.isfinite(al), al * ratio_al, torch.zeros_like(al))
    tail_be = torch.where(torch.isfinite(be), be * ratio_be, torch.zeros_like(be))
    kappa = 1.0 + tail_al - tail_be - mean_shift * mean_shift  # MATH.md eq. kappa
    kappa = kappa.clamp(KAPPA_MIN, KAPPA_MAX)
    return Moments(log_z, mean_shift / c, -(1.0 - kappa) / c2)


def lapse_mixture(moments: Moments, keep: Tensor, n_outcomes: Tensor) -> Moments:
    """Moments of `eta p(y | z) + (1 - eta) / L`: a rater who answers as the model says with
    probability eta (`keep`) and clicks one of the L outcomes at random otherwise.

    With `rho = eta Z / Z_mix` (the chance the answer was not a random click):
    `dlog Z_mix = rho dlog Z`, `d2log Z_mix = rho (d2log Z + dlog Z^2) - dlog Z_mix^2`, the ADF
    update of the mixture (MATH.md §2, lapse paragraph). d2log Z_mix can be positive: a label
    that looks random may widen the posterior, as it should. keep = 1 returns the moments.
    """
    log_keep = torch.log(keep)
    log_random = torch.log1p(-keep) - torch.log(n_outcomes)
    log_z = torch.logaddexp(log_keep + moments.log_z, log_random)
    rho = torch.exp(log_keep + moments.log_z - log_z)
    dlog_z = rho * moments.dlog_z
    d2log_z = rho * (moments.d2log_z + moments.dlog_z.square()) - dlog_z.square()
    return Moments(log_z, dlog_z, d2log_z)


def outcome_cuts(tie_margin: float, like: Tensor) -> Tensor:
    """Finite cut points that split z into (loss, [tie,] win): `[0]` or `[-t, t]`."""
    if tie_margin < 0 or not math.isfinite(tie_margin):
        raise ValueError(f"tie margin must be finite and >= 0, got {tie_margin}")
    if tie_margin == 0:
        return like.new_zeros(1)
    return like.new_tensor([-tie_margin, tie_margin])


def level_cuts(thresholds: Sequence[float], like: Tensor) -> Tensor:
    """Finite ordered-probit thresholds b_1 < ... < b_{L-1} for L emoji levels."""
    cuts = like.new_tensor(list(thresholds))
    if cuts.numel() == 0 or not bool(torch.isfinite(cuts).all()):
        raise ValueError("emoji thresholds must be a non-empty list of finite numbers")
    if cuts.numel() > 1 and not bool((cuts[1:] > cuts[:-1]).all()):
        raise ValueError(f"emoji thresholds must increase strictly, got {list(thresholds)}")
    return cuts


def interval_of(cuts: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """The interval `(b_k, b_{k+1})` of outcome k given the finite cuts (b_0 = -inf, b_L = inf)."""
    inf = cuts.new_tensor([math.inf])
    edges = torch.cat((-inf, cuts, inf))
    return edges[index], edges[index + 1]


def outcome_intervals(cuts: Tensor) -> tuple[Tensor, Tensor]:
    """Every outcome's interval `(b_k, b_{k+1})`, k = 0 .. L - 1, as (L,) lower and upper
    ends: `interval_of(cuts, arange(L))`, as two views of the edges instead of two gathers."""
    inf = cuts.new_tensor([math.inf])
    edges = torch.cat((-inf, cuts, inf))
    return edges[:-1], edges[1:]


def pair_interval(outcome: Outcome, tie_margin: float) -> tuple[float, float]:
    """The interval on z = f_first - f_second that `outcome` reports. MATH.md §2."""
    t = float(tie_margin)
    intervals = {
        Outcome.WIN: (t, math.inf),
        Outcome.LOSS: (-math.inf, -t),
        Outcome.TIE: (-t, t),
    }
    if outcome is Outcome.TIE and t == 0:
        raise ValueError("a tie was reported but the tie margin is 0 (ties are not allowed)")
    return intervals[Outcome(outcome)]


def level_interval(level: int, thresholds: Sequence[float]) -> tuple[float, float]:
    """The interval on f_clip that emoji level `level` (0 = worst) reports. MATH.md §2."""
    edges = (-math.inf, *map(float, thresholds), math.inf)
    if not 0 <= level < len(edges) - 1:
        raise ValueError(f"emoji level must be in 0..{len(edges) - 2}, got {level}")
    return edges[level], edges[level + 1]


class ScalarMoments(NamedTuple):
    """`Moments` of one observation in Python floats."""

    log_z: float
    dlog_z: float
    d2log_z: float


def _exp(x: float) -> float:
    """`exp` that overflows to inf as torch does, instead of raising."""
    return math.exp(x) if x < 709.0 else math.inf


def interval_moments_scalar(
    mu: float, var: float, lo: float, hi: float, noise_var: float
) -> ScalarMoments:
    """`interval_moments` for one observation in Python floats: the same formulas (MATH.md
    §2), for the sequential ADF, where a torch call's dispatch far outweighs the arithmetic.

    Raises:
        ValueError: if noise_var + var is not positive.
    """
    c2 = noise_var + var
    if not c2 > 0:
        raise ValueError("degenerate observation: noise variance plus posterior variance is 0")
    c = math.sqrt(c2)
    al, be = (lo - mu) / c, (hi - mu) / c
    log_z = log_ndtr_diff_scalar(al, be)
    ratio_al = _exp(-0.5 * al * al - LOG_SQRT_2PI - log_z) if al > -math.inf else 0.0
    ratio_be = _exp(-0.5 * be * be - LOG_SQRT_2PI - log_z) if be < math.inf else 0.0
    mean_shift = ratio_al - ratio_be
    tail_al = al * ratio_al if math.isfinite(al) else 0.0
    tail_be = be * ratio_be if math.isfinite(be) else 0.0
    kappa = min(max(1.0 + tail_al - tail_be - mean_shift * mean_shift, KAPPA_MIN), KAPPA_MAX)
    return ScalarMoments(log_z, mean_shift / c, -(1.0 - kappa) / c2)


def lapse_mixture_scalar(moments: ScalarMoments, keep: float, n_outcomes: float) -> ScalarMoments:
    """`lapse_mixture` for one observation in Python floats (0 < keep < 1)."""
    log_keep = math.log(keep)
    log_random = math.log1p(-keep) - math.log(n_outcomes)
    log_z = float(np.logaddexp(log_keep + moments.log_z, log_random))
    rho = math.exp(log_keep + moments.log_z - log_z)
    dlog_z = rho * moments.dlog_z
    d2log_z = rho * (moments.d2log_z + moments.dlog_z**2) - dlog_z**2
    return ScalarMoments(log_z, dlog_z, d2log_z)


def expected_variance_factor(
    mu: float, var: float, noise_var: float, cuts: Sequence[float]
) -> float:
    """`k = E_y[1 - kappa_y] / c^2 = sum_y Z_y dlog_z_y^2`: the expected ADF shrink factor of
    one task, in Python floats.

    Treating a pending task as answered shrinks the covariance by `k (S a)(S a)'` (MATH.md §4,
    GP-BUCB / kriging believer). Outcomes y are the intervals between consecutive cuts. The
    believer shrink computes one per pending task in sequence, where a torch call's dispatch
    would dwarf a handful of flops.

    Raises:
        ValueError: if noise_var + var is not positive.
    """
    total = 0.0
    for lo, hi in itertools.pairwise((-math.inf, *cuts, math.inf)):
        moments = interval_moments_scalar(mu, var, lo, hi, noise_var)
        if moments.log_z > -math.inf:
            total += math.exp(moments.log_z) * moments.dlog_z**2
    return total


MomentFunction = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Moments]

LIKELIHOODS: dict[str, MomentFunction] = {
    "interval": interval_moments,
}
ScalarMomentFunction = Callable[[float, float, float, float, float], ScalarMoments]
# Python-float forms of LIKELIHOODS entries, which the sequential ADF uses where one exists.
SCALAR_LIKELIHOODS: dict[str, ScalarMomentFunction] = {
    "interval": interval_moments_scalar,
}

__all__ = [
    "LIKELIHOODS",
    "SCALAR_LIKELIHOODS",
    "Moments",
    "Outcome",
    "ScalarMoments",
    "expected_variance_factor",
    "interval_moments",
    "interval_moments_scalar",
    "interval_of",
    "lapse_mixture",
    "lapse_mixture_scalar",
    "level_cuts",
    "level_interval",
    "outcome_cuts",
    "outcome_intervals",
    "pair_interval",
]
