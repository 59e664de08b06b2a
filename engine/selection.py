"""Choosing the next question: candidates, pending tasks, screening and the final pick.

For a rater with noise variance sigma^2 the candidates are the pairs i < j in the pairing scope
(same group, or any), minus excluded clips and pairs this rater already judged. Pending tasks
(handed out, not yet answered) are treated as answered: the clip covariance is shrunk by the
expected ADF factor, `S <- S - k_q (S a_q)(S a_q)'` (MATH.md §4, "kriging believer"), and pending
pairs are skipped while any other candidate is left.

All pairs are scored in row blocks of the n x n grid with `screening_score` (exp and rsqrt
only); the best `n_refine` are re-scored with the exact objective, and the rule (argmax, or a
sample from softmax(beta * gain)) picks among them. No Python loop runs over pairs.

A batch (`count` > 1, what a service's queue asks for) screens once: its later picks re-score
the kept candidates under the shrink grown by the earlier picks (`extend_shrink`), lazily for
argmax (a stale gain, lifted by the objective's bound on how much a gain can rise when the
variance falls, bounds the fresh one), so B picks cost about one screen plus B small
exact scorings instead of B screens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from torch import Tensor

from engine.likelihoods import expected_variance_factor
from engine.objectives import (
    OBJECTIVES,
    both_information_gain,
    expected_information_gain,
    outcome_probabilities,
    screening_score,
)
from engine.questions import NO_SECOND
from engine.scope import GroupBlocks
from engine.state import Posterior
from engine.targeted import weight_explained_variance

ScoreFunction = Callable[[Tensor, Tensor, float], Tensor]  # a screen: (mu, var, noise) -> score
N_REFINE = 256
# Elements of one screening block: ~2 MiB of float64 on a CPU (cache-sized), larger on a GPU.
CPU_BLOCK_ELEMENTS = 2**18
GPU_BLOCK_ELEMENTS = 2**24
LAZY_BLOCK = 8  # re-scored at once by a batch's lazy greedy: the top few bounds settle a pick
SCORE_OFFSET = 2.0  # lifts screening scores (>= -1) above the 0 that marks ineligible pairs


class NoEligibleTaskError(ValueError):
    """No candidate is left for this rater (scope, exclusions and judged pairs remove all)."""


@dataclass(frozen=True)
class Pending:
    """Q tasks handed out but not yet answered, in hand-out order.

    Attributes:
        first: (Q,) long item index.
        second: (Q,) long item index, or -1 for a single-clip rating task.
        noise_var: (Q,) noise variance of the rater holding each task.
    """

    first: Tensor
    second: Tensor
    noise_var: Tensor

    @staticmethod
    def of(tasks: Sequence[tuple[int, int, float]], like: Tensor) -> Pending:
        """From (first, second or -1, noise variance) triples."""
        first = torch.tensor([t[0] for t in tasks], dtype=torch.long, device=like.device)
        second = torch.tensor([t[1] for t in tasks], dtype=torch.long, device=like.device)
        return Pending(first, second, like.new_tensor([t[2] for t in tasks]))

    def __len__(self) -> int:
        return self.first.shape[0]


@dataclass(frozen=True)
class Shrink:
    """The believer shrink of the clip covariance: `S_ff - V diag(k) V'` (MATH.md §4)."""

    columns: Tensor  # n x Q: (S a_q) restricted to the clips, each under the earlier shrinks
    factor: Tensor  # Q

    def variances(self, item_cov: Tensor) -> Tensor:
        """(n,) shrunk clip variances."""
        return torch.diagonal(item_cov) - (self.columns.square() * self.factor).sum(-1)

    def pair_variances(self, item_cov: Tensor, first: Tensor, second: Tensor) -> Tensor:
        """Shrunk `Var(f_i - f_j)` for the listed pairs."""
        return self.shrink_pair_variances(
            unshrunk_pair_variances(item_cov, first, second), first, second
        )

    def shrink_pair_variances(self, var: Tensor, first: Tensor, second: Tensor) -> Tensor:
        """`pair_variances` from the pairs' unshrunk variances `var` (`unshrunk_pair_variances`)."""
        spread = self.columns[first] - self.columns[second]
        return (var - (spread.square() * self.factor).sum(-1)).clamp_min(0.0)

    def sum_moments(self, item_cov: Tensor, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        """Shrunk `Var(f_i + f_j)` and `Cov(f_i - f_j, f_i + f_j) = Var f_i - Var f_j` for the
        listed pairs (the both gain's, MATH.md §3)."""
        diag = torch.diagonal(item_cov)
        var_i = diag[first] - (self.columns[first].square() * self.factor).sum(-1)
        var_j = diag[second] - (self.columns[second].square() * self.factor).sum(-1)
        cross = item_cov[first, second] - (
            self.columns[first] * self.columns[second] * self.factor
        ).sum(-1)
        return (var_i + var_j + 2.0 * cross).clamp_min(0.0), var_i - var_j


@dataclass(frozen=True)
class PairChoice:
    """A chosen pair, its gain in bits and the predicted outcome probabilities.

    `probabilities` are (loss, tie, win) of `first` against `second` when ties are allowed,
    else (loss, win).
    """

    first: int
    second: int
    gain: float
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class RatingChoice:
    """A chosen clip to rate on the emoji scale, its gain and the level probabilities."""

    item: int
    gain: float
    probabilities: tuple[float, ...]


def believer_shrink(
    posterior: Posterior, pending: Pending | None, pair_cuts: Tensor, level_cuts: Tensor | None
) -> Shrink:
    """Expected shrink of the clip covariance from pending tasks, applied in hand-out order.

    `k_q = sum_y Z_y dlog_z_y^2` (MATH.md §4); the mean is left alone. Task q's column is
    `c_q = S_{q-1} a_q` under the earlier shrinks. Written as `c_q = B u_q` with `B = S A`
    (n x Q), the recursion `u_q = e_q - sum_{p<q} k_p u_p (u_p' G e_q)`, `G = A' S A`, runs
    in the Q x Q space: O(Q^3) small work and one n x Q x Q product, where applying the
    downdates to n-vectors one by one costs O(n Q^2) in Q^2 / 2 separate passes over n.
    """
    cov = posterior.item_cov
    if pending is None or len(pending) == 0:
        return Shrink(cov.new_zeros(posterior.n_items, 0), cov.new_zeros(0))
    single = pending.second == NO_SECOND
    if bool(single.any()) and level_cuts is None:
        raise ValueError("a pending rating task needs emoji thresholds")
    first, second = pending.first, pending.second.clamp_min(0)
    pair = (~single).to(cov.dtype)
    # B = S A from rows of S (S is symmetric): the clip covariance is a strided view, where
    # gathering Q columns is the expensive part at n = 1,000; Q rows are contiguous and cheap
    basis = (cov[first] - cov[second] * pair[:, None]).T
    gram = basis[first] - basis[second] * pair[:, None]  # G = A' S A
    mean = posterior.item_mean
    mu = (mean[first] - mean[second] * pair).tolist()
    coefficients_np, factor_np = shrink_coefficients(
        gram.cpu().numpy(), mu, pending, pair_cuts, level_cuts
    )
    coefficients = torch.from_numpy(coefficients_np).to(cov)
    return Shrink(basis @ coefficients, torch.from_numpy(factor_np).to(cov))


def shrink_coefficients(
    gram: np.ndarray,
    mu: Sequence[float],
    pending: Pending,
    pair_cuts: Tensor,
    level_cuts: Tensor | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The believer shrink of Q pending tasks in their own space (MATH.md §4): `U` (Q, Q),
    upper triangular, and `k` (Q,) with `c_q = S_{q-1} a_q = sum_p U_pq S a_p`, so that the
    shrunk covariance is `S - sum_q k_q c_q c_q'`.

    Args:
        gram: (Q, Q) `a_p' S a_q` of the tasks' directions.
        mu: (Q,) the tasks' `a_q' m`.
        pending: the tasks (which are ratings, the raters' noise).
        pair_cuts, level_cuts: the outcome cuts of pairs and of ratings.
    """
    single = (pending.second == NO_SECOND).tolist()
    if any(single) and level_cuts is None:
        raise ValueError("a pending rating task needs emoji thresholds")
    # The recursion is sequential over tasks and tiny: Python floats and NumPy, not torch calls.
    noise = pending.noise_var.tolist()
    level_list = [] if level_cuts is None else level_cuts.tolist()
    cut_lists = {True: level_list, False: pair_cuts.tolist()}
    n_pending = len(single)
    coefficients = np.eye(n_pending)  # U, upper triangular
    factor = np.zeros(n_pending)
    for q, is_single in enumerate(single):
        if q:
            earlier = coefficients[:q, :q]
            projection = earlier.T @ gram[:q, q]  # c_p' a_q, p < q
            coefficients[:q, q] -= earlier @ (factor[:q] * projection)
        var = max(float(gram[q] @ coefficients[:, q]), 0.0)
        factor[q] = expected_variance_factor(mu[q], var, noise[q], cut_lists[is_single])
    return coefficients, factor


def extend_shrink(
    posterior: Posterior,
    shrink: Shrink,
    first: int,
    second: int,
    noise_var: float | Tensor,
    pair_cuts: Tensor,
    level_cuts: Tensor | None,
) -> Shrink:
    """`shrink` with one more pending task (first, second or -1) handed out after the others:
    the same result as `believer_shrink` over all of them, for O(n Q) instead of O(n Q^2)."""
    column, factor = _believer_column(
        posterior, shrink.columns, shrink.factor, first, second, noise_var, pair_cuts, level_cuts
    )
    return Shrink(
        torch.cat((shrink.columns, column[:, None]), 1), torch.cat((shrink.factor, factor[None]))
    )


def _believer_column(
    posterior: Posterior,
    columns: Tensor,
    factor: Tensor,
    i: int,
    j: int,
    noise_var: float | Tensor,
    pair_cuts: Tensor,
    level_cuts: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """`(S a, k)` of a task under the earlier tasks' shrink (MATH.md §4)."""
    mean, cov = posterior.item_mean, posterior.item_cov
    single = j == NO_SECOND
    if single and level_cuts is None:
        raise ValueError("a pending rating task needs emoji thresholds")
    column = cov[i].clone() if single else cov[i] - cov[j]  # S a, from rows: S is symmetric
    earlier = columns[i] if single else columns[i] - columns[j]
    column -= columns @ (factor * earlier)
    mu = mean[i] if single else mean[i] - mean[j]
    var = (column[i] if single else column[i] - column[j]).clamp_min(0.0)
    cuts = level_cuts if single else pair_cuts
    factor = expected_variance_factor(float(mu), float(var), float(noise_var), cuts.tolist())
    return column, cov.new_tensor(factor)


def unshrunk_pair_variances(item_cov: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """`Var(f_i - f_j) = S_ii + S_jj - 2 S_ij` for the listed pairs, no pending shrink."""
    diag = torch.diagonal(item_cov)
    return diag[first] + diag[second] - 2.0 * item_cov[first, second]


def in_sorted(values: Tensor, sorted_set: Tensor) -> Tensor:
    """`torch.isin(values, sorted_set)` for an ascending `sorted_set`: a binary search beats
    isin's sort of both lists."""
    if sorted_set.numel() == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    at = torch.searchsorted(sorted_set, values).clamp_(max=sorted_set.numel() - 1)
    return torch.take(sorted_set, at) == values


def allowed_items(n_items: int, excluded: Tensor | None, device: torch.device) -> Tensor:
    """(n,) bool: False for the excluded clips."""
    allowed = torch.ones(n_items, dtype=torch.bool, device=device)
    if excluded is not None and excluded.numel():
        allowed[excluded.to(device)] = False
    return allowed


def _forbidden_flat(pairs: Tensor | None, n_items: int, device: torch.device) -> Tensor:
    """Flat indices i * n + j (i < j) of forbidden pairs, sorted and unique."""
    if pairs is None or pairs.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    pairs = pairs.to(device=device, dtype=torch.long).reshape(-1, 2)
    low, high = pairs.min(-1).values, pairs.max(-1).values
    return torch.unique(low * n_items + high)


def screen_pairs(
    posterior: Posterior,
    shrink: Shrink,
    noise_var: float,
    *,
    groups: Tensor | None,
    allowed_items: Tensor,
    forbidden: Tensor,
    n_keep: int,
    screen: ScoreFunction = screening_score,
    focus: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The `n_keep` best candidate pairs (first < second) by `screen` (an objective's cheap
    stand-in, `engine.objectives.Screen.score`).

    Args:
        posterior: the posterior.
        shrink: the pending shrink.
        noise_var: the rater's noise variance.
        groups: (n,) long group ids when pairs must share a group, else None.
        allowed_items: (n,) bool, False for excluded clips.
        forbidden: sorted flat indices i * n + j of pairs that may not be asked.
        n_keep: how many to return at most.
        focus: (n,) bool, when set every pair holds one of these clips (engine.exposure).

    Returns:
        (first, second), each (m,) with m <= n_keep, best first; empty if no candidate is left.
    """
    mean, cov = posterior.item_mean, posterior.item_cov
    n = posterior.n_items
    device = mean.device
    variances = shrink.variances(cov)
    weighted = shrink.columns * shrink.factor
    block = GPU_BLOCK_ELEMENTS if device.type == "cuda" else CPU_BLOCK_ELEMENTS
    rows_per_block = max(1, block // max(n, 1))
    excluding = not bool(allowed_items.all())
    allowed = allowed_items.to(mean.dtype)
    best_score, best_flat = [], []
    for start in range(0, max(n - 1, 0), rows_per_block):
        stop = min(n - 1, start + rows_per_block)
        # Only columns >= start can hold j > i for these rows: the triangle halves the work.
        block_cov = cov[start:stop, start:]
        if shrink.factor.numel():
            block_cov = torch.addmm(
                block_cov, weighted[start:stop], shrink.columns[start:].T, alpha=-1
            )
        var = (variances[start:stop, None] + variances[None, start:]).sub_(block_cov, alpha=2.0)
        var.clamp_min_(0.0)
        mu = mean[start:stop, None] - mean[None, start:]
        # screening_score >= -1, so valid candidates score >= SCORE_OFFSET - 1 > 0 and every
        # ineligible entry is set to exactly 0: masks are multiplications, no boolean temporaries.
        score = screen(mu, var, noise_var).add_(SCORE_OFFSET).triu_(1)
        if excluding:
            score.mul_(allowed[start:stop, None]).mul_(allowed[None, start:])
        if groups is not None:
            score.mul_(groups[start:stop, None] == groups[None, start:])
        if focus is not None:
            score.mul_(focus[start:stop, None] | focus[None, start:])
        lo, hi = torch.searchsorted(forbidden, torch.tensor([start * n, stop * n], device=device))
        hit = forbidden[lo:hi]
        if hit.numel():
            score[hit // n - start, hit % n - start] = 0.0
        width = n - start
        top = torch.topk(score.reshape(-1), min(n_keep, score.numel()))
        best_score.append(top.values)
        best_flat.append((top.indices // width + start) * n + top.indices % width + start)
    if not best_score:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    scores, flats = torch.cat(best_score), torch.cat(best_flat)
    keep = scores > 0
    scores, flats = scores[keep], flats[keep]
    order = torch.topk(scores, min(n_keep, scores.numel())).indices
    flats = flats[order]
    return flats // n, flats % n


def screen_listed_pairs(
    posterior: Posterior,
    shrink: Shrink,
    noise_var: float,
    *,
    candidates: tuple[Tensor, Tensor],
    allowed_items: Tensor,
    forbidden: Tensor,
    n_keep: int,
    blocks: GroupBlocks | None = None,
    screen: ScoreFunction = screening_score,
    focus: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """`screen_pairs` over an explicit list of candidate pairs (first < second), such as a
    same-group scope's `scope_pairs`: O(P Q) for P listed pairs instead of O(n^2 Q).

    `blocks` (`engine.scope.group_blocks` of the same list) takes the shrink's pair term from
    per-group Gram blocks instead of gathering both clips' Q-vectors for every pair."""
    first, second = candidates
    n = posterior.n_items
    mu = posterior.item_mean[first] - posterior.item_mean[second]
    cov = posterior.item_cov
    diag = torch.diagonal(cov)
    var = diag[first] + diag[second] - 2.0 * cov[first, second]
    if shrink.factor.numel():
        # the shrink term sum_q k_q (c_iq - c_jq)^2 of every listed pair is the screen's main
        # cost (Q up to ~100 pending tasks in a busy service)
        scaled = shrink.columns * shrink.factor.clamp_min(0.0).sqrt()
        if blocks is not None:
            # = |r_i|^2 + |r_j|^2 - 2 r_i . r_j for the rows r of C sqrt(k); the dot products
            # of a group's clips are one (m, m) block: one batched product reads each row once,
            # where gathering both rows of every listed pair reads each about m times
            padded = torch.cat((scaled, scaled.new_zeros(1, scaled.shape[1])))
            stacked = padded[blocks.members]  # (G, m, Q)
            gram = torch.bmm(stacked, stacked.transpose(1, 2)).reshape(-1)
            norms = scaled.square().sum(-1)
            var = var - (norms[first] + norms[second] - 2.0 * gram[blocks.slot])
        else:
            # P x Q gathered values: taken in float32, half the memory traffic; a screen only
            # ranks, the kept pairs are re-scored exactly
            scaled = scaled.float()
            var = var - (scaled[first] - scaled[second]).square_().sum(-1).to(var.dtype)
    score = screen(mu, var.clamp_min_(0.0), noise_var).add_(SCORE_OFFSET)
    eligible = allowed_items[first] & allowed_items[second]
    if focus is not None:
        eligible &= focus[first] | focus[second]
    if forbidden.numel():
        eligible &= ~in_sorted(first * n + second, forbidden)
    score = score.masked_fill_(~eligible, 0.0)
    top = torch.topk(score, min(n_keep, score.numel()))
    keep = top.indices[top.values > 0]
    return first[keep], second[keep]


def _argmax(gains: Tensor, beta: float, generator: torch.Generator | None) -> int:
    return int(torch.argmax(gains))


def _softmax(gains: Tensor, beta: float, generator: torch.Generator | None) -> int:
    """Sample from softmax(beta * gain) (Kirsch et al. 2023): cheap de-duplication."""
    if not beta > 0:
        raise ValueError(f"softmax selection needs beta > 0, got {beta}")
    probabilities = torch.softmax(beta * gains, dim=0)
    return int(torch.multinomial(probabilities.cpu(), 1, generator=generator))


Rule = Callable[[Tensor, float, "torch.Generator | None"], int]

RULES: dict[str, Rule] = {
    "argmax": _argmax,
    "softmax": _softmax,
}


@dataclass(frozen=True)
class SelectionOptions:
    """How to choose: objective (OBJECTIVES key), rule (RULES key), softmax beta, refine size,
    and `weight_share`: 0 aims the gain at the clips' qualities, 1 at the criterion weights
    alone (MATH.md §3 targeted gain), in between a mix (engine.targeted); `both_gain`: where
    the campaign takes "both good" / "both bad", a pair's gain counts them (False: win, loss
    and tie only, a lower bound)."""

    objective: str = "information_gain"
    rule: str = "argmax"
    beta: float = 20.0
    n_refine: int = N_REFINE
    weight_share: float = 0.0
    both_gain: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.weight_share <= 1:
            raise ValueError(f"weight_share must be in [0, 1], got {self.weight_share}")
        if self.objective not in OBJECTIVES:
            raise KeyError(f"unknown objective {self.objective!r}; known: {sorted(OBJECTIVES)}")
        if self.rule not in RULES:
            raise KeyError(f"unknown selection rule {self.rule!r}; known: {sorted(RULES)}")
        if self.n_refine < 1:
            raise ValueError("n_refine must be >= 1")
        if self.rule == "softmax" and not self.beta > 0:
            raise ValueError(f"softmax selection needs beta > 0, got {self.beta}")


@dataclass(frozen=True)
class PairRequest:
    """One rater's request for a batch of pairs (MATH.md §3-4): who answers (their noise
    variance and keep probability), what they may not be shown (excluded clips, pairs they
    judged), the outcome and level cuts, how many pairs, and how to choose."""

    noise_var: float
    pair_cuts: Tensor
    keep: float = 1.0
    count: int = 1
    excluded_items: Tensor | None = None
    judged_pairs: Tensor | None = None
    level_cuts: Tensor | None = None
    options: SelectionOptions = field(default_factory=SelectionOptions)
    generator: torch.Generator | None = None
    # (n,) bool: when set, every pair holds one of these clips (engine.exposure)
    focus: Tensor | None = None
    # (G,) bool: the groups holding a `focus` clip, where the campaign keeps them: the block
    # form's search passes over the other groups' kept bounds
    focus_groups: Tensor | None = None
    both_threshold: float | None = None  # tau of "both good" / "both bad"; None: not taken

    def keywords(self) -> dict[str, object]:
        """The request as the keyword arguments of `select_pair_batch` (which searches no
        groups: `focus_groups` is the block form's)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "focus_groups"}


@dataclass(frozen=True)
class RatingRequest:
    """One rater's request for an emoji rating (MATH.md §3): who answers (noise variance and
    keep probability), the level and outcome cuts, the clips not to offer, how to choose."""

    noise_var: float
    level_cuts: Tensor
    pair_cuts: Tensor
    keep: float = 1.0
    excluded_items: Tensor | None = None
    options: SelectionOptions = field(default_factory=SelectionOptions)
    generator: torch.Generator | None = None

    def keywords(self) -> dict[str, object]:
        """The request as the keyword arguments of `select_rating`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def select_pair_batch(
    posterior: Posterior,
    *,
    noise_var: float,
    pair_cuts: Tensor,
    keep: float = 1.0,
    count: int = 1,
    groups: Tensor | None = None,
    candidates: tuple[Tensor, Tensor] | None = None,
    excluded_items: Tensor | None = None,
    judged_pairs: Tensor | None = None,
    pending: Pending | None = None,
    level_cuts: Tensor | None = None,
    options: SelectionOptions | None = None,
    generator: torch.Generator | None = None,
    shrink: Shrink | None = None,
    blocks: GroupBlocks | None = None,
    focus: Tensor | None = None,
    both_threshold: float | None = None,
) -> tuple[list[PairChoice], Shrink]:
    """The next `count` pairs for one rater, each treated as pending for the next. MATH.md §3-4.

    Args:
        posterior: current posterior.
        noise_var: the rater's noise variance sigma^2.
        pair_cuts: cuts of the pair outcomes (`[0]`, or `[-t, t]` with ties).
        keep: the rater's probability of answering by the model rather than at random (the
            lapse model); the gains are the mixture's (engine.objectives).
        count: how many pairs (a batch); later ones see the earlier ones as pending.
        groups: (n,) long group ids for a same-group pairing scope; None pairs across groups.
        candidates: the pairs in scope (first < second, e.g. `scope_pairs(groups)`), screened
            as a list; faster than `groups` when groups are small. Overrides `groups`.
        excluded_items: (E,) long clip indices never to show.
        judged_pairs: (F, 2) pairs this rater already judged (either order).
        pending: tasks handed out and not yet answered (any rater).
        level_cuts: emoji thresholds, needed when `pending` holds rating tasks.
        options: objective, rule, beta, refine size.
        generator: randomness for the softmax rule.
        shrink: `believer_shrink(posterior, pending, ...)` when the caller keeps it (a cache);
            built here when None.
        blocks: `engine.scope.group_blocks` of `candidates` when they are same-group pairs
            (a faster screen); ignored without `candidates`.
        focus: (n,) bool, when set every pair holds one of these clips: the starved clips of
            `engine.exposure`.
        both_threshold: tau of "both good" / "both bad" where the campaign takes them: the
            gain is then `both_information_gain` (with `options.both_gain`); the screen
            stays the pair difference's.

    Returns:
        `count` PairChoice, best first for argmax, and the shrink with them pending too.

    Raises:
        NoEligibleTaskError: when no eligible pair is left for this rater.
    """
    options = options or SelectionOptions()
    objective, rule = OBJECTIVES[options.objective], RULES[options.rule]
    n, device = posterior.n_items, posterior.mean.device
    allowed = allowed_items(n, excluded_items, device)
    judged = _forbidden_flat(judged_pairs, n, device)
    pending_tasks = (
        []
        if pending is None
        else list(
            zip(
                pending.first.tolist(),
                pending.second.tolist(),
                pending.noise_var.tolist(),
                strict=True,
            )
        )
    )
    mean, cov = posterior.item_mean, posterior.item_cov
    # a stale gain plus the objective's rise bound, for this rater's keep probability, bounds
    # the fresh one (the rise is 0 for forced choice, ~0 for a lapsing rater with narrow tie
    # margins); without a finite bound every pick re-scores the kept candidates
    rise = objective.rise(pair_cuts, noise_var, keep)
    both = both_threshold if options.both_gain else None
    if both is not None:
        rise = math.inf  # no rise bound is known for the both gain: re-score after each pick
    lazy = options.rule == "argmax" and options.weight_share == 0 and math.isfinite(rise)

    def gains_of(
        first: Tensor, second: Tensor, mu: Tensor, unshrunk: Tensor, shrink: Shrink
    ) -> tuple[Tensor, Tensor]:
        """Gains of the pairs under `shrink`, and their shrunk variances; `mu` and `unshrunk`
        are the pairs' mean differences and unshrunk variances (kept per screen: neither
        changes within a batch)."""
        var = shrink.shrink_pair_variances(unshrunk, first, second)
        if both is None:
            gains = objective(mu, var, noise_var, pair_cuts, keep=keep)
        else:
            sum_var, cross = shrink.sum_moments(cov, first, second)
            sum_mu = mean[first] + mean[second]
            gains = both_information_gain(
                mu, var, sum_mu, sum_var, cross, noise_var, tie_margin_of(pair_cuts), both, keep
            )
        if options.weight_share > 0:
            # the weights' share of z's variance is taken from the posterior (pending tasks
            # shrink only the total), and candidates come from the clip-gain screen
            explained = torch.minimum(weight_explained_variance(posterior, first, second), var)
            weights = expected_information_gain(
                mu, explained, noise_var + var - explained, pair_cuts, keep=keep
            )
            gains = (1 - options.weight_share) * gains + options.weight_share * weights
        return gains, var

    if shrink is None:
        shrink = believer_shrink(posterior, pending, pair_cuts, level_cuts)
    # the batch's picks join the shrink in place: one buffer instead of a copy per pick
    held = shrink.factor.numel()
    columns = cov.new_empty(n, held + count)
    factors = cov.new_empty(held + count)
    columns[:, :held], factors[:held] = shrink.columns, shrink.factor

    def screen(forbidden: Tensor, n_keep: int) -> tuple[Tensor, Tensor]:
        if candidates is not None:
            return screen_listed_pairs(
                posterior,
                shrink,
                noise_var,
                candidates=candidates,
                allowed_items=allowed,
                forbidden=forbidden,
                n_keep=n_keep,
                blocks=blocks,
                screen=objective.screen.score,
                focus=focus,
            )
        return screen_pairs(
            posterior,
            shrink,
            noise_var,
            groups=groups,
            allowed_items=allowed,
            forbidden=forbidden,
            n_keep=n_keep,
            screen=objective.screen.score,
            focus=focus,
        )

    choices: list[PairChoice] = []
    first = second = mean.new_zeros(0, dtype=torch.long)
    # The lazy loop's bookkeeping over the few hundred kept candidates lives in NumPy on the
    # host: a pick takes ~10 argmax / mask / index steps on a few hundred values, where a torch
    # call's dispatch (a kernel launch on a GPU) outweighs the work and NumPy's costs far less.
    pairs = np.zeros((0, 2), dtype=np.int64)
    taken = fresh = np.zeros(0, dtype=bool)
    bound = variance = np.zeros(0)
    picked_var: list[float] = []

    pair_mu = pair_unshrunk = mean.new_zeros(0)

    def scored(index: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """`gains_of` the kept candidates at `index` (all when None), on the host."""
        if index is None:
            gains, var = gains_of(first, second, pair_mu, pair_unshrunk, shrink)
        else:
            at = torch.from_numpy(index).to(device)
            gains, var = gains_of(first[at], second[at], pair_mu[at], pair_unshrunk[at], shrink)
        return gains.cpu().numpy(), var.cpu().numpy()

    for _ in range(count):
        if taken.all():
            # Screen all pairs once per batch (the expensive part); the batch's later picks
            # re-score these candidates under the growing shrink. A pending pick only lowers
            # variances, so a pair outside the first screen rarely overtakes them.
            handed_out = torch.tensor(
                [(i, j) for i, j, _ in pending_tasks if j != NO_SECOND], dtype=torch.long
            ).reshape(-1, 2)
            busy = _forbidden_flat(handed_out, n, device)
            n_keep = options.n_refine + count - len(choices) - 1
            first, second = screen(torch.unique(torch.cat((judged, busy))), n_keep)
            if first.numel() == 0:  # every eligible pair is pending elsewhere: allow a duplicate
                first, second = screen(judged, n_keep)
            if first.numel() == 0:
                raise NoEligibleTaskError(
                    "no eligible pair is left for this rater (pairing scope, excluded clips and "
                    "pairs already judged leave none)"
                )
            pairs = torch.stack((first, second), 1).cpu().numpy()
            # elementwise: the same values as computed per re-scored subset
            pair_mu = mean[first] - mean[second]
            pair_unshrunk = unshrunk_pair_variances(cov, first, second)
            taken = np.zeros(len(pairs), dtype=bool)
            bound, variance = scored(None)
            fresh = np.ones_like(taken)
        if lazy:
            # Lazy greedy (Minoux 1978): a pending pick only lowers variances, and a gain
            # rises by at most `rise` when its variance falls (0 for forced choice), so a stale
            # gain plus `rise` bounds the fresh one; re-score only the few best lifted bounds
            # until the best one is fresh. Exactly the argmax of fresh gains.
            # Taken candidates have bound -inf and count as fresh.
            while True:
                lifted = bound + rise * ~fresh
                best = int(np.argmax(lifted))
                if fresh[best]:
                    break
                stale = np.flatnonzero(~fresh)
                if len(stale) > LAZY_BLOCK:
                    # with a rise bound, every stale gain whose lifted bound beats the best
                    # fresh one may win, and there are many: re-scored in one call
                    best_fresh = bound[fresh].max(initial=-math.inf)
                    if rise > 0 and best_fresh == -math.inf:
                        # nothing fresh yet (just after a pick): the top few bounds first, so
                        # the best fresh gain they give rules out most of the others
                        top = stale[np.argpartition(lifted[stale], -LAZY_BLOCK)[-LAZY_BLOCK:]]
                        bound[top], variance[top] = scored(top)
                        fresh[top] = True
                        continue
                    contenders = stale[lifted[stale] > best_fresh] if rise > 0 else stale[:0]
                    if len(contenders) > LAZY_BLOCK:
                        stale = contenders
                    else:
                        top = np.argpartition(lifted[stale], -LAZY_BLOCK)[-LAZY_BLOCK:]
                        stale = stale[top]
                bound[stale], variance[stale] = scored(stale)
                fresh[stale] = True
            pick = best
        else:
            if len(choices) and not fresh.all():
                bound, variance = scored(None)
            open_ = np.flatnonzero(~taken)
            pick = int(open_[rule(torch.from_numpy(bound[open_]), options.beta, generator)])
        i, j = int(pairs[pick, 0]), int(pairs[pick, 1])
        picked_var.append(float(variance[pick]))  # fresh: under the shrink of the earlier picks
        choices.append(PairChoice(i, j, float(bound[pick]), ()))
        taken[pick] = True
        bound[pick] = -math.inf
        pending_tasks.append((i, j, float(noise_var)))
        columns[:, held], factors[held] = _believer_column(
            posterior, shrink.columns, shrink.factor, i, j, noise_var, pair_cuts, level_cuts
        )
        held += 1
        shrink = Shrink(columns[:, :held], factors[:held])
        fresh = taken.copy()
    # each pick's outcome probabilities, under the shrink it was chosen with, in one call
    picks_first = torch.tensor([c.first for c in choices], dtype=torch.long, device=device)
    picks_second = torch.tensor([c.second for c in choices], dtype=torch.long, device=device)
    probabilities = outcome_probabilities(
        mean[picks_first] - mean[picks_second], mean.new_tensor(picked_var), noise_var, pair_cuts
    ).tolist()
    choices = [
        replace(c, probabilities=tuple(p)) for c, p in zip(choices, probabilities, strict=True)
    ]
    return choices, shrink


def tie_margin_of(pair_cuts: Tensor) -> float:
    """t of the pair cuts `[-t, t]`.

    Raises:
        ValueError: cuts without ties ("both" answers are ties).
    """
    if pair_cuts.numel() != 2 or not bool(pair_cuts[0] == -pair_cuts[1]):
        raise ValueError(f'"both good" and "both bad" need tie cuts [-t, t], got {pair_cuts}')
    return float(pair_cuts[1])


def select_pairs(
    posterior: Posterior,
    *,
    noise_var: float,
    pair_cuts: Tensor,
    keep: float = 1.0,
    count: int = 1,
    groups: Tensor | None = None,
    candidates: tuple[Tensor, Tensor] | None = None,
    excluded_items: Tensor | None = None,
    judged_pairs: Tensor | None = None,
    pending: Pending | None = None,
    level_cuts: Tensor | None = None,
    options: SelectionOptions | None = None,
    generator: torch.Generator | None = None,
) -> list[PairChoice]:
    """`select_pair_batch`'s pairs alone."""
    choices, _ = select_pair_batch(
        posterior,
        noise_var=noise_var,
        pair_cuts=pair_cuts,
        keep=keep,
        count=count,
        groups=groups,
        candidates=candidates,
        excluded_items=excluded_items,
        judged_pairs=judged_pairs,
        pending=pending,
        level_cuts=level_cuts,
        options=options,
        generator=generator,
    )
    return choices


def select_rating(
    posterior: Posterior,
    *,
    noise_var: float,
    level_cuts: Tensor,
    pair_cuts: Tensor,
    keep: float = 1.0,
    excluded_items: Tensor | None = None,
    pending: Pending | None = None,
    options: SelectionOptions | None = None,
    generator: torch.Generator | None = None,
    shrink: Shrink | None = None,
) -> RatingChoice:
    """The clip whose emoji level (ordered probit on f_i) is most informative. MATH.md §3.

    Clips in `excluded_items` (for example those this rater already rated) and clips with a
    pending rating task are skipped. `keep` is the rater's lapse keep probability, as for pairs.
    `shrink` is `pending`'s believer shrink when the caller keeps it (built here when None).

    Raises:
        NoEligibleTaskError: when every clip is excluded.
    """
    options = options or SelectionOptions()
    n, device = posterior.n_items, posterior.mean.device
    allowed = allowed_items(n, excluded_items, device)
    if shrink is None:
        shrink = believer_shrink(posterior, pending, pair_cuts, level_cuts)
    mean, var = posterior.item_mean, shrink.variances(posterior.item_cov).clamp_min(0.0)
    return choose_rating(
        mean,
        var,
        allowed,
        noise_var=noise_var,
        level_cuts=level_cuts,
        keep=keep,
        pending=pending,
        options=options,
        generator=generator,
    )


def choose_rating(
    mean: Tensor,
    var: Tensor,
    allowed: Tensor,
    *,
    noise_var: float,
    level_cuts: Tensor,
    keep: float,
    pending: Pending | None,
    options: SelectionOptions,
    generator: torch.Generator | None,
) -> RatingChoice:
    """`select_rating`'s choice from every clip's mean and (shrunk) variance (n,) and the
    allowed clips (n,) bool, whatever form the posterior is kept in.

    Raises:
        NoEligibleTaskError: when every clip is excluded.
    """
    objective, rule = OBJECTIVES[options.objective], RULES[options.rule]
    if pending is not None and len(pending):
        rated = pending.first[pending.second == NO_SECOND]
        not_pending = allowed.clone()
        not_pending[rated] = False
        if bool(not_pending.any()):
            allowed = not_pending
    if not bool(allowed.any()):
        raise NoEligibleTaskError("no clip is left for this rater to rate")
    # Screen by the nearest threshold's binary score, then refine exactly.
    score = (
        OBJECTIVES[options.objective]
        .screen.score(
            mean[:, None] - level_cuts[None, :],
            var[:, None].expand(-1, level_cuts.numel()).clone(),
            noise_var,
        )
        .amax(-1)
    )
    score = score.masked_fill(~allowed, -math.inf)
    top = torch.topk(score, min(options.n_refine, int(allowed.sum()))).indices
    gains = objective(mean[top], var[top], noise_var, level_cuts, keep=keep)
    pick = rule(gains, options.beta, generator)
    item = int(top[pick])
    probabilities = outcome_probabilities(mean[item], var[item], noise_var, level_cuts)
    return RatingChoice(item, float(gains[pick]), tuple(probabilities.tolist()))


__all__ = [
    "RULES",
    "NoEligibleTaskError",
    "PairChoice",
    "PairRequest",
    "Pending",
    "RatingChoice",
    "RatingRequest",
    "SelectionOptions",
    "Shrink",
    "allowed_items",
    "believer_shrink",
    "choose_rating",
    "extend_shrink",
    "in_sorted",
    "screen_listed_pairs",
    "screen_pairs",
    "select_pair_batch",
    "select_pairs",
    "select_rating",
    "shrink_coefficients",
    "tie_margin_of",
    "unshrunk_pair_variances",
]
