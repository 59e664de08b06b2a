"""Choosing pairs in any scope past the dense limit: candidates from neighbours in
posterior-mean order, on the factorised block form (engine.structured, `across_groups`).

Comparing every clip with every other is O(n^2) candidates; the pairs that teach most are
close in quality and uncertain, so each clip is paired with its NEIGHBOURS nearest clips on
each side in posterior-mean order (as rating systems at scale match players of similar rating).
The candidates' predictive moments are those of the Gaussian the form keeps; they are ranked
by the objective's screen, and the best are solved exactly with the pending tasks as in the
group scope (`engine.block_selection.choose_block_pairs`, MATH.md §3-4). The screen leaves
the pending tasks out (it only ranks); pairs pending or judged are never candidates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.block_selection import SCREEN_DTYPE, choose_block_pairs
from engine.objectives import OBJECTIVES
from engine.questions import NO_SECOND
from engine.selection import PairChoice, PairRequest, Pending, allowed_items
from engine.structured import BlockShrink, GroupedPosterior, block_shrink

NEIGHBOURS = 8  # each side, in posterior-mean order
CHUNK_PAIRS = 2**16  # candidates scored at once: bounds the screen's working memory


def _pair_keys(first: Tensor, second: Tensor, n: int) -> Tensor:
    """One long per unordered pair: low * n + high."""
    return torch.minimum(first, second) * n + torch.maximum(first, second)


def neighbour_pairs(order: Tensor, offsets: range) -> tuple[Tensor, Tensor]:
    """(first, second): each clip of `order` with the clip `d` places further, d in offsets."""
    firsts = [order[:-d] for d in offsets if d < order.numel()]
    seconds = [order[d:] for d in offsets if d < order.numel()]
    if not firsts:
        empty = order.new_zeros(0)
        return empty, empty
    return torch.cat(firsts), torch.cat(seconds)


class _Moments:
    """Predictive moments of any pairs of the factorised form in O(K) each: every clip's
    marginal once, then `Cov(f_i, f_j) = r_i' S_w r_j (+ P_g[i, j] within one group)` from
    `t_i = S_w r_i` (n, D), computed once per context."""

    def __init__(self, posterior: GroupedPosterior) -> None:
        self.posterior = posterior
        self.mean, self.var = posterior.item_moments()
        self.rows = posterior.load[posterior.group, posterior.slot]  # (n, 2K)
        context = posterior.group_context[posterior.group]
        self.local = posterior.local_index(context)  # (n, 2K)
        through = self.rows.new_zeros(posterior.n_items, posterior.n_weights)
        if posterior.n_local:
            for c in torch.unique(context).tolist():
                clips = torch.nonzero(context == c).flatten()
                block = posterior.weight_cov[self.local[clips[0]]]  # (2K, D): S_w's rows
                through[clips] = self.rows[clips] @ block
        self.through = through

    def __call__(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        posterior = self.posterior
        cross = (self.through[first].gather(1, self.local[second]) * self.rows[second]).sum(-1)
        group = posterior.group[first]
        same = group == posterior.group[second]
        within = posterior.within[group, posterior.slot[first], posterior.slot[second]]
        cross = cross + within * same
        var = self.var[first] + self.var[second] - 2.0 * cross
        return self.mean[first] - self.mean[second], var.clamp_min(0.0)


def select_neighbour_pairs(
    posterior: GroupedPosterior,
    request: PairRequest,
    *,
    pending: Pending | None = None,
    shrink: BlockShrink | None = None,
    neighbours: int = NEIGHBOURS,
) -> list[PairChoice]:
    """The next `request.count` pairs in any scope for one rater, each pending for the next,
    as `engine.block_selection.select_block_pairs` chooses them; candidates are neighbours in
    posterior-mean order, the window doubling until some are eligible.

    Raises:
        NoEligibleTaskError: when no eligible pair is left for this rater.
    """
    screen = OBJECTIVES[request.options.objective].screen
    noise_var, excluded_items, judged_pairs = (
        request.noise_var,
        request.excluded_items,
        request.judged_pairs,
    )
    n = posterior.n_items
    device = posterior.group.device
    if shrink is None:
        shrink = block_shrink(posterior, pending, request.pair_cuts, request.level_cuts)
    shown = torch.ones(n, dtype=torch.bool, device=device)
    if excluded_items is not None and excluded_items.numel():
        shown = allowed_items(n, excluded_items, device)
    judged = torch.zeros(0, dtype=torch.long, device=device)
    if judged_pairs is not None and judged_pairs.numel():
        judged = _pair_keys(judged_pairs[:, 0], judged_pairs[:, 1], n).to(device)
    busy = torch.zeros(0, dtype=torch.long, device=device)
    if pending is not None and len(pending):
        pair = pending.second != NO_SECOND
        busy = _pair_keys(pending.first[pair], pending.second[pair], n)
    moments = _Moments(posterior)
    order = torch.argsort(moments.mean)
    order = order[shown[order]]  # excluded clips are nobody's neighbours
    n_keep = request.options.n_refine + request.count - 1
    window, start = neighbours, 1
    first = second = torch.zeros(0, dtype=torch.long, device=device)
    while True:
        first, second = _screen(
            moments,
            order,
            range(start, window + 1),
            judged,
            busy,
            n_keep,
            noise_var,
            screen,
            request.focus,
        )
        if first.numel() == 0 and busy.numel():  # only pending pairs are left: allow them
            first, second = _screen(
                moments,
                order,
                range(start, window + 1),
                judged,
                busy[:0],
                n_keep,
                noise_var,
                screen,
                request.focus,
            )
        if first.numel() or window >= order.numel() - 1:
            break
        start, window = window + 1, 2 * window
    return choose_block_pairs(posterior, first, second, request, pending=pending, shrink=shrink)


def _screen(
    moments: _Moments,
    order: Tensor,
    offsets: range,
    judged: Tensor,
    busy: Tensor,
    n_keep: int,
    noise_var: float,
    screen,
    focus: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The `n_keep` best eligible neighbour pairs at these offsets by the screen score; with
    `focus` ((n,) bool, engine.exposure) only pairs holding one of its clips."""
    first, second = neighbour_pairs(order, offsets)
    n = moments.mean.shape[0]
    keys = _pair_keys(first, second, n)
    eligible = ~torch.isin(keys, torch.cat((judged, busy)))
    if focus is not None:
        eligible &= focus[first] | focus[second]
    first, second = first[eligible], second[eligible]
    scores = []
    for lo in range(0, first.numel(), CHUNK_PAIRS):
        mu, var = moments(first[lo : lo + CHUNK_PAIRS], second[lo : lo + CHUNK_PAIRS])
        scores.append(screen.score(mu.to(SCREEN_DTYPE), var.to(SCREEN_DTYPE), noise_var))
    if not scores:
        return first, second
    best = torch.topk(torch.cat(scores), min(n_keep, first.numel())).indices
    first, second = first[best], second[best]
    return torch.minimum(first, second), torch.maximum(first, second)


__all__ = ["NEIGHBOURS", "neighbour_pairs", "select_neighbour_pairs"]
