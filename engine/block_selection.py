"""Choosing the next question on the block-form posterior (engine.structured), without an n x n
covariance: the same choice as engine.selection makes over same-group pairs (MATH.md §3-4).

Pairs: every group's block of the clip covariance under the pending tasks' believer shrink
(`block_shrink`, exact) is screened in cache-sized chunks of groups with `screening_score`; the
best `n_refine` go on. Those candidates and the pending tasks are then a small dense problem:
the joint Gaussian of their projections (`GroupedPosterior.joint_moments`), on which the
pending tasks and each pick of a batch shrink the rest one rank-1 step at a time (MATH.md §4),
and the exact objective picks.

Ratings: every clip's mean and shrunk variance in one pass, then `choose_rating`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from engine.likelihoods import expected_variance_factor
from engine.objectives import (
    OBJECTIVES,
    expected_information_gain,
    outcome_probabilities,
    screening_score,
)
from engine.selection import (
    RULES,
    SCORE_OFFSET,
    NoEligibleTaskError,
    PairChoice,
    Pending,
    RatingChoice,
    SelectionOptions,
    allowed_items,
    choose_rating,
)
from engine.structured import BlockShrink, GroupedPosterior, block_shrink
from engine.update import NO_SECOND


def pair_positions(posterior: GroupedPosterior, pairs: Tensor | None) -> Tensor:
    """Sorted unique positions `g * P + p` of same-group pairs (F, 2) in the screen's layout
    (P = M (M - 1) / 2 slot pairs a < b per group, row-major); pairs across groups are out of
    scope and dropped."""
    device = posterior.group.device
    if pairs is None or pairs.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    pairs = pairs.to(device=device, dtype=torch.long).reshape(-1, 2)
    group = posterior.group[pairs[:, 0]]
    same = group == posterior.group[pairs[:, 1]]
    slots = posterior.slot[pairs[same]]
    a, b = slots.min(-1).values, slots.max(-1).values
    size = posterior.members.shape[1]
    per_group = size * (size - 1) // 2
    index = a * (2 * size - a - 1) // 2 + (b - a - 1)
    return torch.unique(group[same] * per_group + index)


def screen_block_pairs(
    posterior: GroupedPosterior,
    shrink: BlockShrink | None,
    noise_var: float,
    *,
    allowed: Tensor,
    forbidden: Tensor,
    n_keep: int,
) -> tuple[Tensor, Tensor]:
    """The `n_keep` best same-group pairs by `screening_score` under the shrink, best first.

    Args:
        posterior: the block-form posterior.
        shrink: the pending tasks' `block_shrink`, or None.
        noise_var: the rater's noise variance.
        allowed: (n,) bool, False for clips never to show.
        forbidden: `pair_positions` of pairs not to ask.
        n_keep: how many to return at most.

    Returns:
        (first, second) clip indices (first < second), each (m,) with m <= n_keep, best first;
        empty when none is left.
    """
    size = posterior.members.shape[1]
    device = posterior.group.device
    first_slot, second_slot = torch.triu_indices(size, size, 1, device=device)
    per_group = first_slot.numel()
    padded_allowed = torch.cat((allowed, allowed.new_zeros(1)))  # index -1: padding
    kept_score, kept_first, kept_second = [], [], []
    for groups in posterior.group_chunks():
        marginals = posterior.group_marginals(groups, shrink)
        members = marginals.members
        diagonal = torch.diagonal(marginals.cov, dim1=1, dim2=2)
        var = diagonal[:, first_slot] + diagonal[:, second_slot]
        var.sub_(marginals.cov[:, first_slot, second_slot], alpha=2.0).clamp_min_(0.0)
        mu = marginals.mean[:, first_slot] - marginals.mean[:, second_slot]
        # eligible pairs score >= SCORE_OFFSET - 1 > 0; every other entry is exactly 0
        score = screening_score(mu, var, noise_var).add_(SCORE_OFFSET)
        shown = padded_allowed[members]  # padding (-1) reads the appended False
        score.mul_((shown[:, first_slot] & shown[:, second_slot]).to(score.dtype))
        start, stop, _ = groups.indices(posterior.n_groups)
        lo, hi = torch.searchsorted(
            forbidden, torch.tensor([start * per_group, stop * per_group], device=device)
        ).tolist()
        if hi > lo:
            score.view(-1)[forbidden[lo:hi] - start * per_group] = 0.0
        top = torch.topk(score.reshape(-1), min(n_keep, score.numel()))
        chosen = top.indices[top.values > 0]
        group, pair = chosen // per_group, chosen % per_group
        kept_score.append(top.values[top.values > 0])
        kept_first.append(members[group, first_slot[pair]])
        kept_second.append(members[group, second_slot[pair]])
    scores = torch.cat(kept_score) if kept_score else torch.zeros(0, device=device)
    if scores.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    best = torch.topk(scores, min(n_keep, scores.numel())).indices
    first, second = torch.cat(kept_first)[best], torch.cat(kept_second)[best]
    return torch.minimum(first, second), torch.maximum(first, second)


class _Believer:
    """Rank-1 believer steps (MATH.md §4) on the joint Gaussian of a few projections:
    `Cov <- Cov - k c c'`, c the stepped projection's column under the earlier steps."""

    def __init__(self, mean: Tensor, cov: Tensor, steps: int) -> None:
        self.mean, self.cov = mean, cov
        self.columns = cov.new_zeros(cov.shape[0], steps)
        self.factors = cov.new_zeros(steps)
        self.held = 0

    def variances(self) -> Tensor:
        """(B,) every projection's variance under the steps so far."""
        held = self.held
        shrink = (self.columns[:, :held].square() * self.factors[:held]).sum(-1)
        return (torch.diagonal(self.cov) - shrink).clamp_min(0.0)

    def step(self, index: int, noise_var: float, cuts: Tensor) -> float:
        """Treat projection `index` as answered; returns its variance before the step."""
        held = self.held
        column = self.cov[:, index] - self.columns[:, :held] @ (
            self.factors[:held] * self.columns[index, :held]
        )
        var = max(float(column[index]), 0.0)
        factor = expected_variance_factor(float(self.mean[index]), var, noise_var, cuts.tolist())
        self.columns[:, held], self.factors[held] = column, factor
        self.held += 1
        return var


def select_block_pairs(
    posterior: GroupedPosterior,
    *,
    noise_var: float,
    pair_cuts: Tensor,
    keep: float = 1.0,
    count: int = 1,
    excluded_items: Tensor | None = None,
    judged_pairs: Tensor | None = None,
    pending: Pending | None = None,
    level_cuts: Tensor | None = None,
    options: SelectionOptions | None = None,
    generator: torch.Generator | None = None,
) -> list[PairChoice]:
    """The next `count` same-group pairs for one rater, each pending for the next: the block
    form of `engine.selection.select_pair_batch` (same arguments, MATH.md §3-4).

    Raises:
        NoEligibleTaskError: when no eligible pair is left for this rater.
    """
    options = options or SelectionOptions()
    objective, rule = OBJECTIVES[options.objective], RULES[options.rule]
    allowed = allowed_items(posterior.n_items, excluded_items, posterior.group.device)
    shrink = block_shrink(posterior, pending, pair_cuts, level_cuts)
    judged = pair_positions(posterior, judged_pairs)
    handed_out = None
    if pending is not None and len(pending):
        pair = pending.second != NO_SECOND
        handed_out = torch.stack((pending.first[pair], pending.second[pair]), 1)
    busy = pair_positions(posterior, handed_out)
    n_keep = options.n_refine + count - 1
    first, second = screen_block_pairs(
        posterior,
        shrink,
        noise_var,
        allowed=allowed,
        forbidden=torch.unique(torch.cat((judged, busy))),
        n_keep=n_keep,
    )
    if first.numel() == 0:  # every eligible pair is pending elsewhere: allow a duplicate
        first, second = screen_block_pairs(
            posterior, shrink, noise_var, allowed=allowed, forbidden=judged, n_keep=n_keep
        )
    if first.numel() == 0:
        raise NoEligibleTaskError(
            "no eligible pair is left for this rater (pairing scope, excluded clips and "
            "pairs already judged leave none)"
        )
    n_pending = 0 if pending is None else len(pending)
    all_first = first if pending is None else torch.cat((pending.first, first))
    all_second = second if pending is None else torch.cat((pending.second, second))
    mean, cov, weight = posterior.joint_moments(all_first, all_second)
    believer = _Believer(mean, cov, n_pending + count)
    if pending is not None:
        for q, (j, noise) in enumerate(
            zip(pending.second.tolist(), pending.noise_var.tolist(), strict=True)
        ):
            cuts = pair_cuts if j != NO_SECOND else level_cuts
            if cuts is None:
                raise ValueError("a pending rating task needs emoji thresholds")
            believer.step(q, noise, cuts)
    mu = mean[n_pending:]
    explained = torch.diagonal(weight)[n_pending:]
    taken = torch.zeros(first.numel(), dtype=torch.bool, device=first.device)
    choices: list[PairChoice] = []
    picked_var: list[float] = []
    picked: list[int] = []
    for _ in range(min(count, first.numel())):
        var = believer.variances()[n_pending:]
        gains = objective(mu, var, noise_var, pair_cuts, keep=keep)
        if options.weight_share > 0:
            # the weights' share of z's variance, r' S_w r in block form (engine.targeted):
            # pending tasks shrink only the total, as in the dense selection
            part = torch.minimum(explained, var)
            weights = expected_information_gain(
                mu, part, noise_var + var - part, pair_cuts, keep=keep
            )
            gains = (1 - options.weight_share) * gains + options.weight_share * weights
        open_ = torch.nonzero(~taken).flatten()
        pick = int(open_[rule(gains[open_], options.beta, generator)])
        taken[pick] = True
        picked.append(pick)
        picked_var.append(believer.step(n_pending + pick, noise_var, pair_cuts))
        choices.append(PairChoice(int(first[pick]), int(second[pick]), float(gains[pick]), ()))
    # each pick's outcome probabilities, under the shrink it was chosen with
    probabilities = outcome_probabilities(
        mu[torch.tensor(picked, device=mu.device)], mu.new_tensor(picked_var), noise_var, pair_cuts
    ).tolist()
    return [replace(c, probabilities=tuple(p)) for c, p in zip(choices, probabilities, strict=True)]


def select_block_rating(
    posterior: GroupedPosterior,
    *,
    noise_var: float,
    level_cuts: Tensor,
    pair_cuts: Tensor,
    keep: float = 1.0,
    excluded_items: Tensor | None = None,
    pending: Pending | None = None,
    options: SelectionOptions | None = None,
    generator: torch.Generator | None = None,
) -> RatingChoice:
    """The clip whose emoji level is most informative: the block form of
    `engine.selection.select_rating` (same arguments, MATH.md §3).

    Raises:
        NoEligibleTaskError: when every clip is excluded.
    """
    options = options or SelectionOptions()
    allowed = allowed_items(posterior.n_items, excluded_items, posterior.group.device)
    shrink = block_shrink(posterior, pending, pair_cuts, level_cuts)
    mean, var = posterior.item_moments(shrink)
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


__all__ = ["pair_positions", "screen_block_pairs", "select_block_pairs", "select_block_rating"]
