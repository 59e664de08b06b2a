"""Independent references for the engine's maths: 30-digit mpmath quadrature and closed forms.

Nothing here imports the engine; each function integrates the definitions in MATH.md directly.
"""

from __future__ import annotations

import itertools
import math

import mpmath as mp
import numpy as np
import torch
from scipy.special import log_ndtr

mp.mp.dps = 30


def ncdf(x: float) -> mp.mpf:
    if x == math.inf:
        return mp.mpf(1)
    if x == -math.inf:
        return mp.mpf(0)
    return mp.ncdf(x)


def interval_likelihood(z: mp.mpf, lo: float, hi: float, noise_sd: float) -> mp.mpf:
    """`P(lo < z + eps < hi)` with eps ~ N(0, noise_sd^2); a step function when noise_sd = 0."""
    if noise_sd == 0:
        return mp.mpf(1) if lo < z < hi else mp.mpf(0)
    return interval_probability((lo - z) / noise_sd, (hi - z) / noise_sd)


def _tilted_mode(mu: float, sd: float, lo: float, hi: float, noise_sd: float) -> float:
    """Where `N(z; mu, sd) P(lo < z + eps < hi)` peaks, on a fine float grid (scipy, not torch)."""
    finite = [c for c in (lo, hi) if math.isfinite(c)]
    left = min([mu - 12 * sd, *[c - 12 * max(noise_sd, 1e-9) for c in finite]])
    right = max([mu + 12 * sd, *[c + 12 * max(noise_sd, 1e-9) for c in finite]])
    z = np.linspace(left, right, 200_001)
    log_weight = -0.5 * ((z - mu) / sd) ** 2
    if noise_sd > 0:
        a, b = (lo - z) / noise_sd, (hi - z) / noise_sd
        upper = np.where(a + b > 0, log_ndtr(-a), log_ndtr(b))
        lower = np.where(a + b > 0, log_ndtr(-b), log_ndtr(a))
        log_weight = log_weight + upper + np.log1p(-np.exp(np.minimum(lower - upper, 0.0)))
    else:
        log_weight = np.where((z > lo) & (z < hi), log_weight, -np.inf)
    return float(z[np.argmax(log_weight)])


def _breakpoints(
    mu: float, sd: float, cuts: list[float], noise_sd: float, mode: float | None = None
) -> list[mp.mpf]:
    """Integration breakpoints: the Gaussian's bulk, each cut's bump and the tilted mode."""
    width = max(noise_sd, 1e-3 * sd)
    points = {mu - 40 * sd, mu + 40 * sd}
    for k in range(-8, 9):
        points.add(mu + k * sd)
    for cut in cuts:
        for k in (-12, -6, -3, -1, 0, 1, 3, 6, 12):
            points.add(cut + k * width)
    if mode is not None:
        narrow = min(sd, width)
        for k in range(-24, 25, 2):
            points.add(mode + k * narrow)
    return [mp.mpf(p) for p in sorted(points)]


def tilted_moments(
    mu: float, var: float, lo: float, hi: float, noise_sd: float
) -> tuple[float, float, float]:
    """`log Z`, `E[z | event]`, `Var[z | event]`: N(z; mu, var) times the interval likelihood."""
    sd = math.sqrt(var)
    cuts = [c for c in (lo, hi) if math.isfinite(c)]
    points = _breakpoints(mu, sd, cuts, noise_sd, _tilted_mode(mu, sd, lo, hi, noise_sd))

    def weight(z: mp.mpf) -> mp.mpf:
        return mp.npdf(z, mu, sd) * interval_likelihood(z, lo, hi, noise_sd)

    z0 = mp.quad(weight, points)
    z1 = mp.quad(lambda z: z * weight(z), points) / z0
    z2 = mp.quad(lambda z: (z - z1) ** 2 * weight(z), points) / z0
    return float(mp.log(z0)), float(z1), float(z2)


def interval_probability(lo: float, hi: float) -> mp.mpf:
    """`Phi(hi) - Phi(lo)` at 30 digits, taken in the lower tail (Phi(-lo) - Phi(-hi) when
    lo + hi > 0) so that upper-tail intervals keep their digits."""
    if lo + hi > 0:
        return ncdf(-lo) - ncdf(-hi)
    return ncdf(hi) - ncdf(lo)


def log_interval_probability(lo: float, hi: float) -> float:
    """`log(Phi(hi) - Phi(lo))` at 30 digits."""
    return float(mp.log(interval_probability(lo, hi)))


def _entropy_bits(probabilities: list[mp.mpf]) -> mp.mpf:
    return -sum((p * mp.log(p, 2) for p in probabilities if p > 0), mp.mpf(0))


def information_gain(
    mu: float, var: float, noise_sd: float, cuts: list[float], keep: float = 1.0
) -> float:
    """`H[P(y)] - E_z H[p(y | z)]` in bits, both terms by 30-digit quadrature. MATH.md §3.

    With a lapse every outcome distribution is `keep p + (1 - keep) / L`."""
    edges = [-math.inf, *cuts, math.inf]
    n_outcomes = len(cuts) + 1
    sd = math.sqrt(var)
    c = math.sqrt(var + noise_sd**2)

    def lapsed(probabilities: list) -> list:
        return [keep * p + (1 - mp.mpf(keep)) / n_outcomes for p in probabilities]

    predictive = lapsed(
        [
            interval_probability((edges[k] - mu) / c, (edges[k + 1] - mu) / c)
            for k in range(n_outcomes)
        ]
    )

    def conditional(z: mp.mpf) -> mp.mpf:
        probabilities = [
            interval_likelihood(z, edges[k], edges[k + 1], noise_sd) for k in range(n_outcomes)
        ]
        return mp.npdf(z, mu, sd) * _entropy_bits(lapsed(probabilities))

    expected = mp.quad(conditional, _breakpoints(mu, sd, cuts, noise_sd))
    return float(_entropy_bits(predictive) - expected)


def _entropy_bits_float(probabilities: np.ndarray) -> np.ndarray:
    """`-sum p log2 p` over the last axis in float64, 0 log 0 = 0."""
    safe = np.where(probabilities > 0, probabilities, 1.0)
    return -(probabilities * np.log2(safe)).sum(-1)


def _outcome_probabilities_float(z: np.ndarray, noise_sd: float, cuts: list[float]) -> np.ndarray:
    """`P(y = k | z)` for z + N(0, noise_sd^2) split at `cuts`, (..., L), in log space with the
    lower-tail reflection (as MATH.md §2), then exponentiated."""
    edges = np.array([-math.inf, *cuts, math.inf])
    lo = (edges[:-1] - z[..., None]) / noise_sd
    hi = (edges[1:] - z[..., None]) / noise_sd
    reflect = lo + hi > 0
    upper = np.where(reflect, log_ndtr(-lo), log_ndtr(hi))
    lower = np.where(reflect, log_ndtr(-hi), log_ndtr(lo))
    return np.exp(upper + np.log1p(-np.exp(np.minimum(lower - upper, 0.0))))


def quadrature_information_gain(
    mu: float, var: float, noise_sd: float, cuts: list[float], keep: float = 1.0
) -> float:
    """The engine's quadrature rule of MATH.md §3, transcribed for one candidate in float64.

    Gauss-Hermite (32 nodes) when sd < noise_sd, else one 32-node Gauss-Legendre panel per cut
    over [b_k - 7 sigma, b_k + 7 sigma] (split at midpoints between cuts) weighted by N(z; mu,
    var), integrating the excess over the lapse floor. Written the plain way, log_ndtr per
    interval and one candidate at a time, as a reference for the batched fast paths: the two
    should agree to rounding (~1e-15 bits), not just to the quadrature error.
    """
    n_outcomes = len(cuts) + 1

    def entropy(z: np.ndarray, sd: float) -> np.ndarray:
        probabilities = _outcome_probabilities_float(z, sd, cuts)
        return _entropy_bits_float(keep * probabilities + (1 - keep) / n_outcomes)

    sd = math.sqrt(var)
    predictive = float(entropy(np.array(mu), math.sqrt(var + noise_sd**2)))
    if sd < noise_sd:
        nodes, weights = np.polynomial.hermite.hermgauss(32)
        z = mu + sd * math.sqrt(2.0) * nodes
        conditional = float(entropy(z, noise_sd) @ (weights / math.sqrt(math.pi)))
    else:
        certain = np.eye(n_outcomes)[0]  # far from every cut the answer is known, but for the lapse
        floor = float(_entropy_bits_float(keep * certain + (1 - keep) / n_outcomes))
        nodes, weights = np.polynomial.legendre.leggauss(32)
        bounds = [-math.inf, *[(a + b) / 2 for a, b in itertools.pairwise(cuts)], math.inf]
        conditional = floor
        for k, cut in enumerate(cuts):
            left = max(cut - 7 * noise_sd, bounds[k])
            right = min(cut + 7 * noise_sd, bounds[k + 1])
            centre, radius = (left + right) / 2, (right - left) / 2
            z = centre + radius * nodes
            density = np.exp(-0.5 * ((z - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
            conditional += radius * float(((entropy(z, noise_sd) - floor) * density) @ weights)
    return max(predictive - conditional, 0.0)


def sampled_tilted_moments(
    mean: torch.Tensor,
    cov: torch.Tensor,
    direction: torch.Tensor,
    lo: float,
    noise_sd: float,
    *,
    count: int = 400_000,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of N(mean, cov) tilted by P(direction . theta + noise > lo), by
    importance sampling from the prior: the exact Gaussian projection one ADF step on an
    interval (lo, inf) must give, independent of the engine's moment formulas."""
    generator = torch.Generator().manual_seed(seed)
    root = torch.linalg.cholesky(cov)
    noise = torch.randn(count, mean.shape[0], generator=generator, dtype=mean.dtype)
    draws = mean + noise @ root.T
    weight = torch.special.ndtr((draws @ direction - lo) / noise_sd)
    weight = weight / weight.sum()
    tilted = weight @ draws
    centred = draws - tilted
    return tilted, (centred * weight[:, None]).T @ centred
