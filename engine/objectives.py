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
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor

from engine.likelihoods import interval_moments, outcome_intervals
from engine.numerics import (
    BALD_C2,
    SQRT_HALF,
    binary_entropy_bits,
    entropy_bits_of,
    gauss_hermite,
    gauss_legendre,
    interval_probabilities,
    log_ndtr_diff,
    log_normal_pdf,
)
from engine.questions import KSet, kset_answers

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
    lo, hi = outcome_intervals(cuts)
    return log_ndtr_diff((lo - mu.unsqueeze(-1)) / c, (hi - mu.unsqueeze(-1)) / c)


def outcome_probabilities(
    mu: Tensor, var: Tensor, noise_var: Tensor | float, cuts: Tensor
) -> Tensor:
    """Predictive outcome probabilities (..., L), lowest interval first (loss, [tie,] win)."""
    return torch.exp(outcome_log_probabilities(mu, var, noise_var, cuts))


def _outcome_entropy(z: Tensor, noise_sd: Tensor | float, cuts: Tensor, keep: float) -> Tensor:
    """`H[y]` in bits for y the interval of `z + N(0, noise_sd^2)` between `cuts`, elementwise.

    With a lapse the outcome is `keep q(y | z) + (1 - keep) / L`. This is `H[p(y | z)]` of
    MATH.md §3, and with z = mu, noise_sd = c it is the predictive entropy `H[P(y)]`.

    Args:
        z: (...,) points.
        noise_sd: scalar, or a tensor broadcasting against z.
        cuts: (L - 1,) finite increasing cut points.
        keep: the rater's probability of answering by the model.

    Returns:
        (...,) entropies in bits.
    """
    # outcomes on the first axis, where summing over them is cheap
    u = (cuts.reshape(-1, *(1,) * z.dim()) - z) / noise_sd  # (L - 1, ...)
    # entropies need the probabilities to absolute accuracy only: erfc, no log_ndtr
    return entropy_bits_of(_lapse(interval_probabilities(u), keep), dim=0)


def _lapse(probabilities: Tensor, keep: float) -> Tensor:
    """`keep p + (1 - keep) / L` over the first axis (L outcomes); `p` itself when keep = 1."""
    if keep >= 1.0:
        return probabilities
    return probabilities.mul(keep).add_((1.0 - keep) / probabilities.shape[0])


@lru_cache(maxsize=16)
def _hermite_rule(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """The Gauss-Hermite nodes and weights for N(0, 1), made once per dtype and device."""
    # cached tensors outlive the caller's mode: made inside inference_mode they could not be
    # saved for backward later
    with torch.inference_mode(False):
        return gauss_hermite(N_QUADRATURE_NODES, torch.empty(0, dtype=dtype, device=device))


def _panel_rule(noise_sd: Tensor, cuts: Tensor, keep: float) -> tuple[Tensor, Tensor]:
    """Nodes z_j and weights w_j, (..., n_cuts Q), of the Gauss-Legendre panels of MATH.md §3:
    `E_{z ~ N(mu, s2)} H[p(y | z)] = floor + sum_j w_j N(z_j; mu, s2)` for every (mu, s2).

    Each finite cut b_k gets one panel over [b_k - 7 sigma, b_k + 7 sigma]; overlapping panels
    are split at the midpoint between neighbouring cuts, so they never double-count and each
    keeps its Q nodes (no coarser than merging). Outside the panels the answer is certain but
    for the lapse, so the weights carry the excess of the entropy over that `_lapse_entropy`
    floor. Nothing here depends on (mu, s2): one rater's rule serves every candidate.

    Args:
        noise_sd: () or (n,) rater noise sd sigma.
        cuts: (L - 1,) finite increasing cut points.
        keep: the rater's probability of answering by the model.

    Returns:
        nodes, weights: (n_cuts Q,) or (n, n_cuts Q).
    """
    legendre_x, legendre_w = gauss_legendre(N_QUADRATURE_NODES, cuts)
    half = PANEL_HALF_WIDTH * noise_sd.unsqueeze(-1)  # (..., 1)
    mid = 0.5 * (cuts[1:] + cuts[:-1])
    inf = cuts.new_tensor([math.inf])
    left = torch.maximum(cuts - half, torch.cat((-inf, mid)))
    right = torch.minimum(cuts + half, torch.cat((mid, inf)))
    centre, radius = 0.5 * (left + right), 0.5 * (right - left)  # (..., n_cuts)
    nodes = centre.unsqueeze(-1) + radius.unsqueeze(-1) * legendre_x  # (..., n_cuts, Q)
    floor = _lapse_entropy(keep, cuts.numel() + 1)
    excess = _outcome_entropy(nodes, noise_sd[..., None, None], cuts, keep) - floor
    weights = excess * legendre_w * radius.unsqueeze(-1)
    return nodes.flatten(-2), weights.flatten(-2)


@lru_cache(maxsize=64)
def _one_rater_panel_rule(
    noise_sd: float, cuts: tuple[float, ...], keep: float, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """`_panel_rule` for one rater, made once: the service asks for it with every batch of pairs.

    Keyed by plain floats and tuples (a tensor would hash by identity); a miss costs what one
    uncached call does.
    """
    with torch.inference_mode(False), torch.no_grad():  # as in _hermite_rule
        cuts_tensor = torch.tensor(cuts, dtype=dtype, device=device)
        return _panel_rule(cuts_tensor.new_tensor(noise_sd), cuts_tensor, keep)


def _hermite_expectation(
    mu: Tensor, sd: Tensor, noise_sd: Tensor | float, cuts: Tensor, keep: float
) -> Tensor:
    """`E_{z ~ N(mu, sd^2)} H[p(y | z)]` by Gauss-Hermite, (n,) -> (n,); for sd < sigma."""
    nodes, weights = _hermite_rule(mu.dtype, mu.device)
    z = torch.addcmul(mu.unsqueeze(-1), sd.unsqueeze(-1), nodes)  # n x Q
    if isinstance(noise_sd, Tensor):
        noise_sd = noise_sd.unsqueeze(-1)  # n x 1
    return _outcome_entropy(z, noise_sd, cuts, keep) @ weights


def _panel_expectation(
    mu: Tensor, sd: Tensor, noise_sd: Tensor | float, cuts: Tensor, keep: float
) -> Tensor:
    """`E_{z ~ N(mu, sd^2)} H[p(y | z)]` by the Gauss-Legendre panels, (n,) -> (n,); sd >= sigma.

    One rater (a float sigma) shares one cached rule, so a candidate costs one exp per node;
    per-candidate noise builds each candidate's panels.
    """
    if isinstance(noise_sd, Tensor):
        nodes, weights = _panel_rule(noise_sd, cuts, keep)  # n x (n_cuts Q)
    else:
        key = (noise_sd, tuple(cuts.tolist()), keep, mu.dtype, mu.device)
        nodes, weights = _one_rater_panel_rule(*key)  # (n_cuts Q,)
    density = torch.exp(log_normal_pdf((nodes - mu.unsqueeze(-1)) / sd.unsqueeze(-1)))
    floor = _lapse_entropy(keep, cuts.numel() + 1)
    return torch.linalg.vecdot(density, weights) / sd + floor


def _expected_conditional_entropy(
    mu: Tensor, var: Tensor, noise_sd: Tensor | float, cuts: Tensor, keep: float = 1.0
) -> Tensor:
    """`E_{z ~ N(mu, var)} H[p(y | z)]`, the Gauss-Hermite / Gauss-Legendre switch of MATH.md §3.

    - s < sigma: 32-node Gauss-Hermite on N(mu, var) (error <= 1e-14 bits);
    - s >= sigma: the nodes must sit on the narrow bumps of H around each cut, so each finite cut
      gets a 32-node Gauss-Legendre panel weighted by N(z; mu, var) (`_panel_rule`).

    Each candidate's rule is evaluated for that candidate only.

    Args:
        mu, var: (...,) marginals of z.
        noise_sd: one rater's sigma > 0 as a float, or (...,) per-candidate sigma > 0.
        cuts: (L - 1,) finite increasing cut points.
        keep: the rater's probability of answering by the model.

    Returns:
        (...,) expected conditional entropies in bits.
    """
    shape = mu.shape
    mu, sd = mu.reshape(-1), torch.sqrt(var).reshape(-1)
    if isinstance(noise_sd, Tensor):
        noise_sd = noise_sd.reshape(-1)
    narrow = sd < noise_sd
    entropy = torch.empty_like(mu)
    # evaluating both rules everywhere and picking one with torch.where pays for both on each
    for expectation, chosen in ((_hermite_expectation, narrow), (_panel_expectation, ~narrow)):
        index = chosen.nonzero().squeeze(-1)
        if index.numel() == mu.numel():  # all candidates take this rule: no gather or scatter
            return expectation(mu, sd, noise_sd, cuts, keep).reshape(shape)
        if index.numel() > 0:
            noise = noise_sd[index] if isinstance(noise_sd, Tensor) else noise_sd
            entropy[index] = expectation(mu[index], sd[index], noise, cuts, keep)
    return entropy.reshape(shape)


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
        noise_var: scalar (one rater: the panels are made once and cached) or (...,) rater
            noise variance per candidate.
        cuts: (L - 1,) finite increasing cut points.
        keep: the answering rater's probability of answering by the model, in [0, 1].

    Returns:
        (...,) gains, clamped at 0 against quadrature round-off.

    Raises:
        ValueError: keep outside [0, 1].
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be in [0, 1], got {keep}")
    # a noise-free rater's answer is certain given z: only the lapse is left to guess
    certain = _lapse_entropy(keep, cuts.numel() + 1)
    if not isinstance(noise_var, Tensor) or noise_var.numel() == 1:
        # one rater for every candidate (the service's case): the panels are shared
        noise_var = float(noise_var)
        predictive = _outcome_entropy(mu, torch.sqrt(var + noise_var), cuts, keep)
        if noise_var <= 0:
            return (predictive - certain).clamp_min(0.0)
        conditional = _expected_conditional_entropy(mu, var, math.sqrt(noise_var), cuts, keep)
        return (predictive - conditional).clamp_min(0.0)
    noise_var = noise_var.to(dtype=mu.dtype, device=mu.device).expand_as(mu)
    predictive = _outcome_entropy(mu, torch.sqrt(var + noise_var), cuts, keep)
    noisy = noise_var > 0
    noise_sd = torch.sqrt(torch.where(noisy, noise_var, torch.ones_like(noise_var)))
    conditional = _expected_conditional_entropy(mu, var, noise_sd, cuts, keep)
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


@dataclass(frozen=True)
class Screen:
    """A cheap stand-in for a gain, for ranking millions of candidates, and how fast it can
    move, which a kept screen's bound needs (engine.block_selection.GroupScreen). A screen
    never falls as var grows nor rises as |mu| grows (tests check both for every registered
    screen): the block screen bounds a prompt's pairs by `score(min |mu|, max var)`.

    Attributes:
        score: (mu, var, noise_var) -> scores, elementwise.
        mu_rate, var_rate: `sup |ds/dmu|` and `sup |ds/dvar|` at unit noise; the score is
            scale-free, `s(mu, var; sigma) = s(mu / sigma, var / sigma^2; 1)`.
    """

    score: Callable[[Tensor, Tensor, float], Tensor]
    mu_rate: float
    var_rate: float

    def rates(self, noise_var: float) -> tuple[float, float]:
        """`(sup |ds/dmu|, sup |ds/dvar|)` at rater noise sigma^2."""
        noise_var = max(float(noise_var), 1e-12)  # as screening_score treats a noise-free rater
        return self.mu_rate / math.sqrt(noise_var), self.var_rate / noise_var


# screening_score's rates, rounded up: 0.136443 at x = 2.25, v = 3.3 (a fine grid, interior
# maximum) and 1 / (2 C^2) = 0.459224 at x = 0, v -> 0 (closed form); tests check both on a grid,
# and that the score never falls as the variance grows (a pending task never raises one).
BALD_SCREEN = Screen(screening_score, mu_rate=0.1365, var_rate=0.4593)


RISE_STEP = 0.05  # tie margins t / sigma are rounded up to this grid (the rise grows with it)
RISE_FLAT_FROM = 4.0  # past this t / sigma the rise no longer grows (0.252 at 4, 0.250 at 6)
RISE_SAFETY = 1.5  # the rise is measured on a grid; this covers what falls between its points
RISE_KEEP_STEP = 0.05  # keep probabilities are rounded up to this grid (the rise grows with it)


@lru_cache(maxsize=256)
def _tie_rise(gain: GainFunction, margin: float, keep: float = 1.0) -> float:
    """The most `gain` rises as the variance falls, ties at +-margin, unit noise, keep `keep`:
    the largest `max_{v' <= v} g(mu, v') - g(mu, v)` on a grid of mu in [-12, 12] (161 points)
    and var in [1e-6, 1e4] (120, log-spaced)."""
    mu = torch.linspace(-12.0, 12.0, 161, dtype=torch.float64).repeat_interleave(120)
    var = torch.logspace(-6.0, 4.0, 120, dtype=torch.float64).repeat(161)
    cuts = torch.tensor([-margin, margin], dtype=torch.float64)
    values = gain(mu, var, 1.0, cuts, keep=keep).reshape(161, 120)
    return float((torch.cummax(values, dim=1).values - values).max())


def gain_rise(gain: GainFunction, cuts: Tensor, noise_var: float, keep: float = 1.0) -> float:
    """A bound on how much `gain` can rise when a candidate's variance falls (a pending pick
    shrinks it), for a rater of keep probability `keep` or less: 0 for forced choice (the gain
    never falls as the variance grows: a stale gain bounds the fresh one); with ties at +-t the
    rise grows with t / sigma (~0.013 bits at 0.5, ~0.08 at 1, flat near 0.25 past 4) and
    shrinks as the keep probability falls (at t / sigma <= 0.35 it is 0 to rounding from keep
    0.95 down), so the rise at t / sigma rounded up to RISE_STEP and keep rounded up to
    RISE_KEEP_STEP, times RISE_SAFETY; infinite (no bound) for other cuts or a noise-free
    rater. Tests check it on random draws and the growth it relies on."""
    if cuts.numel() == 1:
        return 0.0
    if cuts.numel() != 2 or not noise_var > 0 or not bool(cuts[0] == -cuts[1]):
        return math.inf
    ratio = float(cuts[1]) / math.sqrt(noise_var)
    margin = min(math.ceil(ratio / RISE_STEP) * RISE_STEP, RISE_FLAT_FROM)
    keep = min(math.ceil(keep / RISE_KEEP_STEP - 1e-9) * RISE_KEEP_STEP, 1.0)
    rise = _tie_rise(gain, round(margin, 6), round(keep, 6))
    if ratio > RISE_FLAT_FROM:
        rise = max(rise, _tie_rise(gain, 2 * RISE_FLAT_FROM, round(keep, 6)))
    return RISE_SAFETY * rise + 1e-9


KSET_CHUNK_ELEMENTS = 2**22  # (candidates x answers x K x K) per chunk of the K-set gain


@lru_cache(maxsize=64)
def _kset_comparisons(size: int, mode: str) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Winner and loser positions of every answer's comparisons, flattened (answer-major),
    and the comparisons per answer (the same for every answer of a mode)."""
    winners: list[int] = []
    losers: list[int] = []
    per_answer = 0
    for answer in kset_answers(size, mode):
        if size == 2:
            comparisons: tuple[tuple[int, int], ...] = ((answer[0], 1 - answer[0]),)
        else:
            comparisons = KSet(tuple(range(size)), mode).comparisons(answer)
        per_answer = len(comparisons)
        winners += [w for w, _ in comparisons]
        losers += [loser for _, loser in comparisons]
    return tuple(winners), tuple(losers), per_answer


class KSetGain(NamedTuple):
    """Gain in bits (C,) of each candidate K-set and its answers' probabilities (C, O), the
    answers in `engine.questions.kset_answers` order."""

    gain: Tensor
    probabilities: Tensor


def kset_information_gain(
    mean: Tensor, cov: Tensor, mode: str, noise_var: Tensor | float
) -> KSetGain:
    """Expected information gain of a K-set's whole answer, by its rank-broken update.

    MATH.md §3, "K-sets": for each answer o, the comparisons it breaks into are applied to the
    K clips' Gaussian N(mean, cov) one after another by ADF (MATH.md §2); its probability is
    the product of their predictive probabilities Z (normalised over the answers), its
    information the entropy the Gaussian loses, sum_e -1/2 log2(1 + d2log_z_e var_e) (each
    rank-1 step scales the determinant by 1 + d2log_z a'Sa). Gain = sum_o P(o) info(o).
    Every answer is enumerated (K!, 720 at K = 6, for an order); K = 2 with mode "best" is a
    forced-choice pair.

    Args:
        mean: (C, K) the clips' posterior means, per candidate.
        cov: (C, K, K) their posterior covariance.
        mode: "best", "best_worst" or "rank".
        noise_var: the rater's noise variance sigma_r^2 (scalar or (C,)).

    Returns:
        KSetGain with gain (C,) and probabilities (C, O).
    """
    count, size = mean.shape
    winner_list, loser_list, per_answer = _kset_comparisons(size, mode)
    device = mean.device
    winners = torch.tensor(winner_list, device=device).view(-1, per_answer)  # (O, E)
    losers = torch.tensor(loser_list, device=device).view(-1, per_answer)
    n_answers = winners.shape[0]
    noise = torch.as_tensor(noise_var, dtype=mean.dtype, device=device).expand(count)
    chunk = max(1, KSET_CHUNK_ELEMENTS // (n_answers * size * size))
    gains, probabilities = [], []
    for start in range(0, count, chunk):
        stop = min(count, start + chunk)
        gain, probability = _kset_chunk(
            mean[start:stop], cov[start:stop], noise[start:stop], winners, losers
        )
        gains.append(gain)
        probabilities.append(probability)
    if not gains:
        return KSetGain(mean.new_zeros(0), mean.new_zeros(0, n_answers))
    return KSetGain(torch.cat(gains), torch.cat(probabilities))


def _kset_chunk(
    mean: Tensor, cov: Tensor, noise: Tensor, winners: Tensor, losers: Tensor
) -> tuple[Tensor, Tensor]:
    """`kset_information_gain` on one chunk: every (candidate, answer) is one small Gaussian,
    stepped through the answer's comparisons together (a loop over the K - 1 or 2K - 3
    comparisons, not over candidates)."""
    count, size = mean.shape
    n_answers, per_answer = winners.shape
    m = mean.unsqueeze(1).expand(count, n_answers, size).clone()
    s = cov.unsqueeze(1).expand(count, n_answers, size, size).clone()
    noise = noise.view(count, 1)
    log_p = mean.new_zeros(count, n_answers)
    info = mean.new_zeros(count, n_answers)
    lo = mean.new_full((), 0.0)
    hi = mean.new_full((), math.inf)
    for e in range(per_answer):
        # a = e_winner - e_loser in each (candidate, answer)
        direction = _one_hot(winners[:, e], size, mean) - _one_hot(losers[:, e], size, mean)
        column = torch.einsum("coij,oj->coi", s, direction)  # S a
        mu = torch.einsum("coi,oi->co", m, direction)
        var = torch.einsum("coi,oi->co", column, direction).clamp_min(0.0)
        moments = interval_moments(mu, var, lo, hi, noise)
        m = m + column * moments.dlog_z.unsqueeze(-1)
        s = s + moments.d2log_z[..., None, None] * column.unsqueeze(-1) * column.unsqueeze(-2)
        log_p = log_p + moments.log_z
        # the determinant's factor 1 + d2log_z var lies in [kappa, 1]: log1p is stable
        info = info - 0.5 * torch.log1p(moments.d2log_z * var) / math.log(2)
    probability = torch.softmax(log_p, dim=1)
    return (probability * info).sum(dim=1).clamp_min(0.0), probability


def _one_hot(index: Tensor, size: int, like: Tensor) -> Tensor:
    """(len(index), size) rows e_index in `like`'s dtype."""
    return torch.nn.functional.one_hot(index, size).to(like.dtype)


# quadrature nodes per axis of the both gain: within 3e-6 bits of 160 nodes (tests), at a third
# of 48 nodes' cost, which a batch pays once per pick
BOTH_NODES = 32
BOTH_CHUNK = 256  # candidates per chunk: (chunk, BOTH_NODES, BOTH_NODES, 5) values at once
# a Gaussian's mass beyond 9 sd is 2e-19: a panel need not reach further
PANEL_TAIL_SDS = 9.0
N_BOTH_OUTCOMES = 5  # loss, tie (neither both good nor both bad), win, both good, both bad


def _phi_cdf(x: Tensor) -> Tensor:
    """`Phi(x)` with relative accuracy in the lower tail (erfc, as interval_probabilities)."""
    return torch.special.erfc(x * -SQRT_HALF).mul_(0.5)


def _window_rule(
    mean: Tensor, sd: Tensor, width: Tensor, lo: float, hi: float
) -> tuple[Tensor, Tensor]:
    """Nodes and weights (..., Q) for `E_{x ~ N(mean, sd^2)} g(x)`, g vanishing outside
    `[lo - 7 width, hi + 7 width]` wherever sd >= width (MATH.md §3: Gauss-Hermite where
    sd < width, else Gauss-Legendre on that window cut to mean +- 9 sd, weighted by the
    density; a window the Gaussian misses gets zero weights).

    Args:
        mean, sd, width: broadcastable (...,) tensors; width > 0 the scale of g's features.
        lo, hi: the outermost cuts of g.

    Returns:
        nodes, weights: (..., BOTH_NODES).
    """
    mean, sd, width = torch.broadcast_tensors(mean, sd, width)
    hermite_x, hermite_w = gauss_hermite(BOTH_NODES, mean)
    legendre_x, legendre_w = gauss_legendre(BOTH_NODES, mean)
    left = torch.maximum(lo - PANEL_HALF_WIDTH * width, mean - PANEL_TAIL_SDS * sd)
    right = torch.minimum(hi + PANEL_HALF_WIDTH * width, mean + PANEL_TAIL_SDS * sd)
    radius = (0.5 * (right - left)).clamp_min(0.0).unsqueeze(-1)
    panel = (0.5 * (left + right)).unsqueeze(-1) + radius * legendre_x
    safe_sd = sd.clamp_min(torch.finfo(sd.dtype).tiny).unsqueeze(-1)
    density = torch.exp(log_normal_pdf((panel - mean.unsqueeze(-1)) / safe_sd)) / safe_sd
    narrow = (sd < width).unsqueeze(-1)
    nodes = torch.where(narrow, mean.unsqueeze(-1) + sd.unsqueeze(-1) * hermite_x, panel)
    weights = torch.where(narrow, hermite_w, radius * legendre_w * density)
    return nodes, weights


def both_information_gain(
    mu: Tensor,
    var: Tensor,
    sum_mu: Tensor,
    sum_var: Tensor,
    covariance: Tensor,
    noise_var: Tensor | float,
    tie_margin: float,
    both_threshold: float,
    keep: float = 1.0,
) -> Tensor:
    """`EIG = H[P(y)] - E_{d,s} H[p(y | d, s)]` in bits, y in {loss, tie, win, both good,
    both bad}, for d = f_i - f_j and s = f_i + f_j jointly Gaussian. MATH.md §3, "both good".

    The rater's answer is the model's of MATH.md §2: win / loss / tie on `d + e` (e ~ N(0,
    sigma^2), cuts +-t); a tie is "both good" when `s + e'` > 2 tau, "both bad" when below
    -2 tau (e' ~ N(0, 2 sigma^2), independent of e), else a plain tie. With a lapse the rater
    clicks one of the five at random with probability 1 - keep. The expectation over (d, s)
    is nested quadrature: over d by `_window_rule` (the window of the tie's cuts), over s
    given d (Gaussian, mean linear in d) by the same rule on the window of +-2 tau; the
    entropy is label-symmetric, so at any d the conditional entropy is the same for every s
    far from +-2 tau, and each level integrates only its excess over that value. The tie's
    share of "both good" in the predictive is the one-dimensional `E_d[P(tie | d) Phi(...)]`.
    Vectorised over candidates, in chunks of BOTH_CHUNK.

    Args:
        mu, var: (...,) mean and variance of d.
        sum_mu, sum_var: (...,) mean and variance of s.
        covariance: (...,) Cov(d, s) = Var f_i - Var f_j.
        noise_var: the rater's sigma^2 > 0, scalar or (...,).
        tie_margin: t > 0.
        both_threshold: tau >= 0.
        keep: the rater's probability of answering by the model, in [0, 1].

    Returns:
        (...,) gains, clamped at 0 against quadrature round-off.

    Raises:
        ValueError: t <= 0, tau < 0 or not finite, keep outside [0, 1], sigma^2 <= 0.
    """
    if not tie_margin > 0:
        raise ValueError(f"both answers are ties: tie_margin must be > 0, got {tie_margin}")
    if not (both_threshold >= 0 and math.isfinite(both_threshold)):
        raise ValueError(f"both_threshold must be finite and >= 0, got {both_threshold}")
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be in [0, 1], got {keep}")
    noise = torch.as_tensor(noise_var, dtype=mu.dtype, device=mu.device)
    if not bool((noise > 0).all()):
        raise ValueError("the both gain needs a noisy rater (noise_var > 0)")
    shape = torch.broadcast_shapes(
        mu.shape, var.shape, sum_mu.shape, sum_var.shape, covariance.shape, noise.shape
    )
    flat = [x.expand(shape).reshape(-1) for x in (mu, var, sum_mu, sum_var, covariance, noise)]
    gains = [
        _both_chunk(
            *(x[start : start + BOTH_CHUNK] for x in flat), tie_margin, both_threshold, keep
        )
        for start in range(0, flat[0].numel(), BOTH_CHUNK)
    ]
    if not gains:
        return mu.new_zeros(shape)
    return torch.cat(gains).reshape(shape)


def _both_chunk(
    mu: Tensor,
    var: Tensor,
    sum_mu: Tensor,
    sum_var: Tensor,
    covariance: Tensor,
    noise_var: Tensor,
    tie_margin: float,
    both_threshold: float,
    keep: float,
) -> Tensor:
    """`both_information_gain` on (C,) flat candidates."""
    t, cut = tie_margin, 2.0 * both_threshold
    sigma = torch.sqrt(noise_var)
    sum_noise = math.sqrt(2.0) * sigma  # each clip's noise on the sum (MATH.md §2)
    d_nodes, d_weights = _window_rule(mu, torch.sqrt(var), sigma, -t, t)  # C x Q
    # s given d: mean linear in d, variance constant
    slope = torch.where(var > 0, covariance / var.clamp_min(torch.finfo(var.dtype).tiny), 0.0)
    given_var = (sum_var - slope * covariance).clamp_min(0.0)
    given_mean = sum_mu.unsqueeze(-1) + slope.unsqueeze(-1) * (d_nodes - mu.unsqueeze(-1))
    s_nodes, s_weights = _window_rule(
        given_mean, torch.sqrt(given_var).unsqueeze(-1), sum_noise.unsqueeze(-1), -cut, cut
    )  # C x Q x Q
    column = sigma.view(-1, 1)
    loss = _phi_cdf((-t - d_nodes) / column)  # C x Q
    win = _phi_cdf((d_nodes - t) / column)
    tie = (1.0 - loss - win).clamp_min(0.0)
    good = _phi_cdf((s_nodes - cut) / sum_noise.view(-1, 1, 1))  # C x Q x Q
    bad = _phi_cdf((-cut - s_nodes) / sum_noise.view(-1, 1, 1))
    plain = (1.0 - good - bad).clamp_min(0.0)
    tie3 = tie.unsqueeze(-1)
    answers = torch.stack(  # 5 x C x Q x Q
        (
            loss.unsqueeze(-1).expand_as(good),
            tie3 * plain,
            win.unsqueeze(-1).expand_as(good),
            tie3 * good,
            tie3 * bad,
        )
    )
    entropy = entropy_bits_of(_lapse(answers, keep), dim=0)  # C x Q x Q
    # far from +-2 tau one of the tie's three parts is certain: the same entropy for each
    zero = torch.zeros_like(tie)
    far = entropy_bits_of(_lapse(torch.stack((loss, tie, win, zero, zero)), keep), dim=0)
    given_d = far + (s_weights * (entropy - far.unsqueeze(-1))).sum(-1)  # C x Q
    floor = _lapse_entropy(keep, N_BOTH_OUTCOMES)
    conditional = floor + (d_weights * (given_d - floor)).sum(-1)
    # predictive: loss / tie / win exact; the tie's split by the 1-d expectation over d
    cuts = mu.new_tensor([-t, t])
    ternary = outcome_probabilities(mu, var, noise_var, cuts)  # C x 3
    spread = torch.sqrt(given_var + 2.0 * noise_var).unsqueeze(-1)
    tie_good = (d_weights * tie * _phi_cdf((given_mean - cut) / spread)).sum(-1)
    tie_bad = (d_weights * tie * _phi_cdf((-cut - given_mean) / spread)).sum(-1)
    tie_plain = (ternary[:, 1] - tie_good - tie_bad).clamp_min(0.0)
    predictive = torch.stack((ternary[:, 0], tie_plain, ternary[:, 2], tie_good, tie_bad))
    return (entropy_bits_of(_lapse(predictive, keep), dim=0) - conditional).clamp_min(0.0)


@dataclass(frozen=True)
class Objective:
    """A registered objective: its exact gain, its cheap screen, and `rise(cuts, noise_var,
    keep)`, a bound on how much its gain can rise when the variance falls, for a rater of that
    keep probability or less (0: a stale gain bounds the fresh one, as a batch's lazy greedy
    needs; the greedy lifts stale gains by the bound otherwise). Called, it is its gain."""

    gain: GainFunction
    screen: Screen

    def rise(self, cuts: Tensor, noise_var: float, keep: float = 1.0) -> float:
        return gain_rise(self.gain, cuts, noise_var, keep)

    def __call__(self, *args: object, **kwargs: object) -> Tensor:
        return self.gain(*args, **kwargs)


OBJECTIVES: dict[str, Objective] = {
    "information_gain": Objective(expected_information_gain, BALD_SCREEN),
    "information_gain_quadrature": Objective(interval_information_gain, BALD_SCREEN),
}

__all__ = [
    "BALD_SCREEN",
    "OBJECTIVES",
    "KSetGain",
    "Objective",
    "Screen",
    "binary_information_gain",
    "both_information_gain",
    "expected_information_gain",
    "gain_rise",
    "interval_information_gain",
    "kset_information_gain",
    "outcome_log_probabilities",
    "outcome_probabilities",
    "screening_score",
]
