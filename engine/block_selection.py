"""Choosing the next question on the block-form posterior (engine.structured), without an n x n
covariance: the same choice as engine.selection makes over same-group pairs (MATH.md §3-4).

Pairs: every group's block of the clip covariance under the pending tasks' believer shrink
(`block_shrink`, exact) is screened in cache-sized chunks of groups with the objective's screen
(`engine.objectives.Screen`); the
best `n_refine` go on. Those candidates and the pending tasks are then a small dense problem:
the joint Gaussian of their projections (`GroupedPosterior.joint_moments`), on which the
pending tasks and each pick of a batch shrink the rest one rank-1 step at a time (MATH.md §4),
and the exact objective picks.

Ratings: every clip's mean and shrunk variance in one pass, then `choose_rating`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from engine.likelihoods import expected_variance_factor
from engine.objectives import (
    BALD_SCREEN,
    OBJECTIVES,
    Screen,
    both_information_gain,
    expected_information_gain,
    outcome_probabilities,
)
from engine.questions import NO_SECOND
from engine.selection import (
    RULES,
    SCORE_OFFSET,
    NoEligibleTaskError,
    PairChoice,
    PairRequest,
    Pending,
    RatingChoice,
    SelectionOptions,
    allowed_items,
    choose_rating,
    in_sorted,
    tie_margin_of,
)
from engine.structured import (
    BlockShrink,
    GroupedPosterior,
    JointProjections,
    block_shrink,
    take,
)


def pair_positions(posterior: GroupedPosterior, pairs: Tensor | None) -> Tensor:
    """Sorted unique positions `g * P + p` of same-group pairs (F, 2) in the screen's layout
    (P = M (M - 1) / 2 slot pairs a < b per group, row-major); pairs across groups are out of
    scope and dropped."""
    device = posterior.group.device
    if pairs is None or pairs.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    first, second = pairs.to(device=device, dtype=torch.long).reshape(-1, 2).unbind(1)
    group = posterior.group.index_select(0, first)
    same = group == posterior.group.index_select(0, second)
    size = posterior.members.shape[1]
    per_group = size * (size - 1) // 2
    # every pair's position, read from the table by `a M + b`, then the same-group ones kept
    slots = torch.add(
        posterior.slot.index_select(0, second), posterior.slot.index_select(0, first), alpha=size
    )
    index = _pair_index(size, device).reshape(-1).index_select(0, slots)
    return torch.unique(torch.add(index, group, alpha=per_group).masked_select(same))


_PAIR_INDEX: dict[tuple[int, torch.device], Tensor] = {}


def _pair_index(size: int, device: torch.device) -> Tensor:
    """(size, size) the position of the slot pair (min, max) among a block's pairs a < b,
    row-major: `a (2 M - a - 1) / 2 + (b - a - 1)`, as a table read by either order (made
    once per size and device, read only)."""
    key = (size, device)
    table = _PAIR_INDEX.get(key)
    if table is None:
        slot = torch.arange(size, device=device)
        a, b = torch.minimum(slot[:, None], slot), torch.maximum(slot[:, None], slot)
        table = a * (2 * size - a - 1) // 2 + (b - a - 1)
        _PAIR_INDEX[key] = table
    return table


# The screen only ranks (the kept candidates are re-scored exactly in the posterior's dtype):
# single precision halves its memory traffic. A kept score may be off by its rounding, which
# the kept screen's slack covers (scores are below SCORE_OFFSET + 1 = 3: ~30 ulp of float32).
SCREEN_DTYPE = torch.float32
SCREEN_ROUNDING = 1e-5
# pair scores in one call from which groups are first bounded (`_reaching_rows`): below it the
# bound's own calls cost about what they would spare
PRUNE_FROM = 2**14

_SLOT_PAIRS: dict[tuple[int, torch.device], tuple[Tensor, Tensor, Tensor]] = {}


def _slot_pairs(size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(first_slot, second_slot, flat): a block's slot pairs a < b, row-major, and their
    positions in the flattened (size, size) block; made once per size and device (read only,
    every screen of every pick indexes with them)."""
    key = (size, device)
    kept = _SLOT_PAIRS.get(key)
    if kept is None:
        first_slot, second_slot = torch.triu_indices(size, size, 1, device=device)
        kept = (first_slot, second_slot, first_slot * size + second_slot)
        _SLOT_PAIRS[key] = kept
    return kept


_PAIR_RANGE: dict[tuple[int, torch.device], Tensor] = {}


def _pair_range(per_group: int, device: torch.device) -> Tensor:
    """`arange(P)`, a group's pair positions, made once per size and device (read only)."""
    key = (per_group, device)
    kept = _PAIR_RANGE.get(key)
    if kept is None:
        kept = torch.arange(per_group, device=device)
        _PAIR_RANGE[key] = kept
    return kept


# prompt sizes whose (M, P) pair maps are kept: M^2 (M - 1) / 2 entries each, 8 MB of float32
# at 64 (a prompt of thousands of clips would need gigabytes), where products beat gathers
PAIR_MAP_UP_TO = 64
_PAIR_MAPS: dict[tuple[int, torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}


def _pair_maps(size: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(M, P) `difference` (+1 at slot a, -1 at slot b of each pair a < b, `_slot_pairs`
    order) and `total` (+1 at both): `x @ difference` is every pair's `x_a - x_b` and
    `x @ total` its `x_a + x_b` for (T, M) slot values. Each output is one rounding of the
    same two terms (the other products are exact zeros), so it equals the elementwise form.
    Made once per size, device and dtype (read only)."""
    key = (size, device, dtype)
    kept = _PAIR_MAPS.get(key)
    if kept is None:
        first_slot, second_slot, _ = _slot_pairs(size, device)
        column = torch.arange(first_slot.numel(), device=device)
        difference = torch.zeros(size, first_slot.numel(), device=device, dtype=dtype)
        difference[first_slot, column] = 1.0
        difference[second_slot, column] = -1.0
        kept = (difference, difference.abs())
        _PAIR_MAPS[key] = kept
    return kept


def _pair_terms(values: Tensor, sign: float) -> Tensor:
    """(T, P) `x_a + sign x_b` (sign +1 or -1) over the slot pairs a < b of (T, M) slot
    values: one matrix product with a pair map up to PAIR_MAP_UP_TO slots, where it costs
    less than two gathers along short rows; the gathers past it."""
    size = values.shape[1]
    if size <= PAIR_MAP_UP_TO:
        difference, total = _pair_maps(size, values.device, values.dtype)
        return torch.matmul(values, total if sign > 0 else difference)
    first_slot, second_slot, _ = _slot_pairs(size, values.device)
    first, second = values.index_select(1, first_slot), values.index_select(1, second_slot)
    return torch.add(first, second, alpha=sign)


def _pair_spread(block: Tensor, flat: Tensor) -> Tensor:
    """(T, P) `B_aa + B_bb - 2 B_ab` of (T, M, M) blocks over the slot pairs a < b
    (`_slot_pairs`): the diagonal's pair sums (`_pair_terms`), the cross terms gathered,
    then elementwise on (T, P), where a broadcast over whole blocks does twice the work on
    strided reads."""
    spread = _pair_terms(torch.diagonal(block, dim1=1, dim2=2), 1.0)
    return spread.sub_(block.reshape(block.shape[0], -1).index_select(1, flat), alpha=2.0)


def _score_groups(
    posterior: GroupedPosterior,
    groups: slice | Tensor,
    shrink: BlockShrink | None,
    noise_var: float,
    allowed: Tensor | None,
    forbidden: Tensor | None,
    local_maps: Tensor | None = None,
    screen: Screen = BALD_SCREEN,
    focus: Tensor | None = None,
    floor: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Every slot pair's screening score (+ SCORE_OFFSET; exactly 0 where ineligible) in the
    given groups, (T, P), under the shrink, and the groups' members (T, M). `allowed` (n,)
    bool, when set, keeps only pairs of clips it allows; `local_maps` is
    `GroupedPosterior.local_maps` under the shrink, when the caller has it; `focus` (n,)
    bool, when set, keeps only pairs holding one of its clips (engine.exposure). With a
    `floor` (offset scores), a group whose bound (`_reaching_rows`) stays below it scores 0
    throughout: the caller ranks only scores at or above its floor."""
    size = posterior.members.shape[1]
    device = posterior.group.device
    _, _, flat = _slot_pairs(size, device)  # (P,) the pairs a < b
    per_group = flat.numel()
    marginals = posterior.group_marginals(groups, shrink, local_maps, dtype=SCREEN_DTYPE)
    members, cov, mean = marginals.members, marginals.cov, marginals.mean
    count = members.shape[0]
    var = _pair_spread(cov, flat).clamp_min_(0.0)
    mu = _pair_terms(mean, -1.0)
    # padding (-1) is never shown; the masks read clip 0 there, and drop it
    shown = present = members >= 0
    if allowed is not None or focus is not None:
        clips = members.clamp_min(0)
    if allowed is not None:
        shown = allowed[clips] & present
    eligible = None
    if not bool(shown.all()):
        eligible = (shown[:, :, None] & shown[:, None, :]).view(count, -1).index_select(1, flat)
    if focus is not None:
        held = focus.take(clips) & present
        either = (held[:, :, None] | held[:, None, :]).view(count, -1).index_select(1, flat)
        eligible = either if eligible is None else eligible & either
    live = None
    if floor > 0 and mu.numel() >= PRUNE_FROM:
        live = _reaching_rows(mu, var, eligible, noise_var, screen, floor)
    # eligible pairs score >= SCORE_OFFSET - 1 > 0; every other entry is exactly 0
    if live is None:
        score = screen.score(mu, var, noise_var).add_(SCORE_OFFSET)
    else:
        score = mu.new_zeros(mu.shape)
        scored = screen.score(mu.index_select(0, live), var.index_select(0, live), noise_var)
        score.index_copy_(0, live, scored.add_(SCORE_OFFSET))
    if eligible is not None:
        score.mul_(eligible.to(score.dtype))
    if forbidden is not None and forbidden.numel():
        if isinstance(groups, slice):
            start, stop, _ = groups.indices(posterior.n_groups)
            lo, hi = torch.searchsorted(
                forbidden, torch.tensor([start * per_group, stop * per_group], device=device)
            ).tolist()
            if hi > lo:
                score.view(-1)[forbidden[lo:hi] - start * per_group] = 0.0
        else:
            flat = torch.add(_pair_range(per_group, device), groups[:, None], alpha=per_group)
            score.masked_fill_(in_sorted(flat, forbidden), 0.0)
    return score, members


def _reaching_rows(
    mu: Tensor, var: Tensor, eligible: Tensor | None, noise_var: float, screen: Screen, floor: float
) -> Tensor | None:
    """The rows (groups) of (T, P) pair moments whose best eligible pair may score at least
    `floor` (offset): a screen never rises with |mu| nor falls with var (`Screen`), so
    `score(min |mu|, max var)` over a group's eligible pairs bounds every one of them. None
    when every row may: the bound then spares nothing."""
    closest = mu.abs()
    if eligible is not None:
        closest.masked_fill_(eligible.logical_not(), math.inf)
    bound = screen.score(closest.amin(-1), var.amax(-1), noise_var)
    live = torch.nonzero(bound.add_(SCORE_OFFSET + SCREEN_ROUNDING) >= floor).flatten()
    return None if live.numel() == mu.shape[0] else live


def _radius2(posterior: GroupedPosterior, groups: slice | Tensor) -> Tensor:
    """(T,) each group's radius R_g^2, the largest `|r_a - r_b|^2` over its pairs:
    `|r_a|^2 + |r_b|^2 - 2 r_a . r_b` from one Gram product per group, in the posterior's
    precision (0 for a group with fewer than two clips)."""
    members = take(posterior.members, groups)
    first_slot, second_slot, flat = _slot_pairs(members.shape[1], members.device)
    if first_slot.numel() == 0:
        return posterior.load.new_zeros(members.shape[0])
    rows = take(posterior.load, groups)  # (T, M, L); padding rows are 0
    spread = _pair_spread(torch.bmm(rows, rows.transpose(1, 2)), flat)
    present = (members.index_select(1, first_slot) >= 0) & (
        members.index_select(1, second_slot) >= 0
    )
    return spread.clamp_min_(0.0).mul_(present).amax(-1)


class GroupScreen:
    """A kept screen: each group's best screen score over its pairs (no pending tasks, no
    rater's exclusions) at one rater noise, with the border it was computed under.

    Between rebuilds, a group that took a label or a clip is `dirty` until `refresh` scores
    it afresh; any other group g, of context c, moved only through the border:
    `|d mu_p| <= R_g |d m_c|` and `|d var_p| <= R_g^2 ||d S_c||` (R_g the largest `|r_p|` in
    g; m_c, S_c the border's global and context-c blocks, here the largest over contexts), so
    its scores moved by at most `slack` (docs/MATH.md §6); pending tasks only lower
    variances, which never raises a score. A group refreshed at a later border keeps its
    fresh best plus the slack of that border against the kept one: by the triangle
    inequality the usual slack then bounds it as any other group's (`refresh`).
    `screen_block_pairs` then scores groups by their kept best plus slack until no unscored
    group can matter.

    Args:
        posterior: the posterior to screen.
        noise_var: the rater noise the scores are for.
        screen: the screen score.
        previous: the stale screen this one replaces, of the same layout: its radii are
            kept for every group it does not list as dirty (a group's rows change only
            where it takes a label or a clip, which marks it dirty), so a rebuild scores
            every group but measures only those radii afresh.
    """

    def __init__(
        self,
        posterior: GroupedPosterior,
        noise_var: float,
        screen: Screen = BALD_SCREEN,
        previous: GroupScreen | None = None,
    ) -> None:
        self.noise_var = float(noise_var)
        self.screen = screen
        size = posterior.members.shape[1]
        maps = posterior.local_maps(dtype=SCREEN_DTYPE) if posterior.n_local else None
        chunks = posterior.group_chunks()
        best = [self._best(posterior, groups, maps) for groups in chunks]
        self.best = torch.cat(best) if best else posterior.offset.new_zeros(0)
        if previous is not None and previous.fits(posterior):
            self.radius2 = previous.radius2.clone()
            if previous.dirty:
                stale = torch.tensor(
                    sorted(previous.dirty), dtype=torch.long, device=posterior.group.device
                )
                self.radius2[stale] = _radius2(posterior, stale).to(self.radius2.dtype)
        else:
            radius = [_radius2(posterior, groups) for groups in chunks]
            self.radius2 = torch.cat(radius) if radius else posterior.offset.new_zeros(0)
        self.radius = self.radius2.sqrt()
        # groups by kept best, best first: a bound query reads the prefix that can reach it
        self.order = torch.argsort(self.best, descending=True)
        self.rising_best = self.best[self.order].flip(0).contiguous()  # for searchsorted
        self.max_radius2 = float(self.radius2.max()) if self.radius2.numel() else 0.0
        typical = self.radius2.median() if self.radius2.numel() else self.radius2.new_zeros(())
        self.typical_radius2 = float(typical)
        self.weight_mean = posterior.weight_mean.clone()
        self.weight_cov = posterior.weight_cov.clone()
        self.shape = (posterior.n_groups, size)
        self.dirty: set[int] = set()
        # groups refreshed since the build: their kept best moved, so the kept order (read by
        # `reaching`) may place them wrongly and they are checked apart
        self.refreshed = torch.zeros(0, dtype=torch.long, device=posterior.group.device)
        self._is_refreshed = torch.zeros(self.best.shape, dtype=torch.bool, device=self.best.device)
        self._drift_cache: tuple[int, tuple[Tensor, Tensor]] | None = None
        self._rates_cache: tuple[int, tuple[float, float, float]] | None = None

    def _best(
        self, posterior: GroupedPosterior, groups: slice | Tensor, maps: Tensor | None
    ) -> Tensor:
        """The groups' best screen score (no pending tasks, no exclusions)."""
        score, _ = _score_groups(
            posterior, groups, None, self.noise_var, None, None, maps, self.screen
        )
        if score.shape[1] == 0:
            return score.new_zeros(score.shape[0])
        return score.amax(-1)

    def refresh(self, posterior: GroupedPosterior) -> None:
        """Score the dirty groups afresh and keep them clean: each keeps its fresh best plus
        its slack now (the border's drift from the kept one, at its fresh radius), so that a
        later slack, read against the kept border, still bounds it (triangle inequality)."""
        if not self.dirty:
            return
        device = posterior.group.device
        groups = torch.tensor(sorted(self.dirty), dtype=torch.long, device=device)
        maps = posterior.local_maps(dtype=SCREEN_DTYPE) if posterior.n_local else None
        best, radius2 = self._best(posterior, groups, maps), _radius2(posterior, groups)
        by_cov, by_mean = self.rates(posterior)
        radius2 = radius2.to(self.radius2.dtype)
        radius = radius2.sqrt()
        now = torch.add(radius2 * by_cov, radius, alpha=by_mean).add_(SCREEN_ROUNDING)
        self.best[groups] = best.to(self.best.dtype) + now.to(self.best.dtype)
        self.radius2[groups], self.radius[groups] = radius2, radius
        self._is_refreshed[groups] = True
        self.refreshed = torch.nonzero(self._is_refreshed).flatten()
        self.dirty.clear()

    def _drift(self, posterior: GroupedPosterior) -> tuple[Tensor, Tensor]:
        """(C,) per context: the border's mean drift `|d m_c|` and covariance drift
        `||d S_c||_F` (which bounds the spectral norm) in its global and context blocks,
        times the score's rates (kept for the posterior's version: one selection reads it
        several times)."""
        if self._drift_cache is not None and self._drift_cache[0] == posterior.version:
            return self._drift_cache[1]
        l_mu, l_var = self.screen.rates(self.noise_var)
        drift_mean = torch.linalg.vector_norm(
            posterior.context_means(posterior.weight_mean - self.weight_mean), dim=-1
        )
        drift = posterior.weight_cov - self.weight_cov
        # the Frobenius norm bounds the spectral norm the slack needs, with no eigensolve; the
        # drift since a build is a few labels' low-rank steps, where the two nearly agree
        drift_cov = torch.linalg.matrix_norm(posterior.context_blocks(drift))
        result = (l_mu * drift_mean, l_var * drift_cov)
        self._drift_cache = (posterior.version, result)
        return result

    def rates(self, posterior: GroupedPosterior) -> tuple[float, float]:
        """(by R^2, by R): a clean group's slack is `R^2 by_cov + R by_mean + rounding`; the
        context that drifted most stands for all, a looser bound that spares a gather over
        every group on each call."""
        if posterior.n_local == 0:
            return 0.0, 0.0
        by_cov, by_mean, _ = self._summary(posterior)
        return by_cov, by_mean

    def _summary(self, posterior: GroupedPosterior) -> tuple[float, float, float]:
        """`rates` and `typical_slack`, read back in one transfer (kept for the posterior's
        version)."""
        if self._rates_cache is None or self._rates_cache[0] != posterior.version:
            by_mean, by_cov = self._drift(posterior)
            typical = by_mean * math.sqrt(self.typical_radius2) + by_cov * self.typical_radius2
            values = torch.stack((by_cov.max(), by_mean.max(), typical.max())).tolist()
            self._rates_cache = (posterior.version, (values[0], values[1], values[2]))
        return self._rates_cache[1]

    def slack(self, posterior: GroupedPosterior, groups: Tensor | None = None) -> Tensor:
        """The most each clean group's pair scores (all, or `groups`) can have moved since the
        screen was kept (up without pending tasks; down as well, without them)."""
        by_cov, by_mean = self.rates(posterior)
        radius2 = self.radius2 if groups is None else self.radius2.index_select(0, groups)
        radius = self.radius if groups is None else self.radius.index_select(0, groups)
        return torch.add(radius2 * by_cov, radius, alpha=by_mean).add_(SCREEN_ROUNDING)

    def reaching(self, posterior: GroupedPosterior, threshold: float) -> Tensor:
        """The groups whose bound may exceed `threshold`: those whose kept best at the build
        plus the largest slack of any group at the build does (a prefix of the kept order),
        and every refreshed group (its bound is checked by the caller)."""
        by_cov, by_mean = self.rates(posterior)
        most = self.max_radius2 * by_cov + math.sqrt(self.max_radius2) * by_mean
        floor = self.rising_best.new_tensor([threshold - most - 2 * SCREEN_ROUNDING])
        count = self.rising_best.numel() - int(torch.searchsorted(self.rising_best, floor))
        prefix = self.order[:count]
        if self.refreshed.numel() == 0:
            return prefix
        fresh = self._is_refreshed.index_select(0, prefix)
        return torch.cat((prefix.masked_select(fresh.logical_not_()), self.refreshed))

    def typical_slack(self, posterior: GroupedPosterior) -> float:
        """The slack of a group of median spread in the context that drifted most: when it
        passes the screening tolerance, the kept screen narrows little and is rebuilt."""
        if posterior.n_local == 0:
            return 0.0
        return self._summary(posterior)[2]

    def fits(self, posterior: GroupedPosterior) -> bool:
        """Whether the screen still describes the posterior's layout."""
        return self.shape == (posterior.n_groups, posterior.members.shape[1])


def screen_block_pairs(
    posterior: GroupedPosterior,
    shrink: BlockShrink | None,
    noise_var: float,
    *,
    allowed: Tensor | None,
    forbidden: Tensor,
    n_keep: int,
    kept: GroupScreen | None = None,
    tolerance: float | None = None,
    screen: Screen = BALD_SCREEN,
    focus: Tensor | None = None,
    focus_groups: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The `n_keep` best same-group pairs by `screen` under the shrink, best first.

    Args:
        posterior: the block-form posterior.
        shrink: the pending tasks' `block_shrink`, or None.
        noise_var: the rater's noise variance.
        allowed: (n,) bool, False for clips never to show; None when every clip may be shown.
        forbidden: `pair_positions` of pairs not to ask.
        n_keep: how many to return at most.
        kept: a `GroupScreen` at this noise (fitting the layout) to screen from; None scores
            every group.
        tolerance: with `kept`, None keeps exactly the full screen's candidates (ties aside);
            a number stops scoring groups once no unscored pair can beat the best kept one by
            more than that (screening-score units, about bits): the full screen's best then
            scores at most `tolerance` above the kept best.
        focus: (n,) bool, when set only pairs holding one of these clips (engine.exposure):
            only their groups are scored.
        focus_groups: (G,) bool, the groups holding a `focus` clip: with it a kept screen
            is read (its bounds hold for any subset of a group's pairs) on those groups
            only; without it the focused groups are found and scored directly.

    Returns:
        (first, second) clip indices (first < second), each (m,) with m <= n_keep, best first;
        empty when none is left.
    """
    size = posterior.members.shape[1]
    device = posterior.group.device
    first_slot, second_slot, _ = _slot_pairs(size, device)
    per_group = first_slot.numel()
    kept_score: list[Tensor] = []
    kept_first: list[Tensor] = []
    kept_second: list[Tensor] = []

    local_maps = None
    if posterior.n_local:
        local_maps = posterior.local_maps(shrink, SCREEN_DTYPE)

    floor = [0.0]  # the n_keep-th best score kept so far; 0 while fewer are kept

    def score(groups: slice | Tensor) -> None:
        values, members = _score_groups(
            posterior,
            groups,
            shrink,
            noise_var,
            allowed,
            forbidden,
            local_maps,
            screen,
            focus,
            floor[0],
        )
        flat = values.reshape(-1)
        if floor[0] > 0:
            # only scores that can enter the kept set are ranked: the groups whose best can
            # (a reduction and a compare per group), then their pairs
            reach = torch.nonzero(values.amax(-1) >= floor[0]).flatten()
            rows = values.index_select(0, reach).reshape(-1)
            hits = torch.nonzero(rows >= floor[0]).flatten()
            top = torch.topk(rows[hits], min(n_keep, hits.numel()))
            values_kept, at = top.values, hits[top.indices]
            chosen = reach[at // per_group] * per_group + at % per_group
        else:
            top = torch.topk(flat, min(n_keep, flat.numel()))
            values_kept, chosen = top.values, top.indices
        eligible = values_kept > 0
        chosen = chosen.masked_select(eligible)
        group, pair = chosen // per_group, chosen % per_group
        kept_score.append(values_kept.masked_select(eligible))
        # `members[group, slot]`, as one gather by `group M + slot`
        flat_members = members.reshape(-1)
        for store, slots in ((kept_first, first_slot), (kept_second, second_slot)):
            at = torch.add(slots.index_select(0, pair), group, alpha=size)
            store.append(flat_members.index_select(0, at))
        if sum(s.numel() for s in kept_score) >= 2 * n_keep:
            # compact to the best n_keep, whose last score is the floor from now on
            scores = torch.cat(kept_score)
            best = torch.topk(scores, n_keep).indices
            compact = (scores[best], torch.cat(kept_first)[best], torch.cat(kept_second)[best])
            for store, value in zip((kept_score, kept_first, kept_second), compact, strict=True):
                store[:] = [value]
            floor[0] = float(compact[0][-1])

    def threshold() -> float:
        """The score an unscored group must beat to matter: the n_keep-th best so far (0
        while fewer are kept), or with a tolerance the best so far plus it."""
        scores = _joined(kept_score) if kept_score else torch.zeros(0, device=device)
        if tolerance is not None:
            return (float(scores.max()) if scores.numel() else 0.0) + tolerance
        if scores.numel() < n_keep:
            return 0.0
        return float(torch.topk(scores, n_keep).values[-1])

    if focus is not None and (kept is None or focus_groups is None):
        # the starved clips' prompts only, in chunks of the size a full pass takes, so memory
        # stays bounded
        starved = torch.unique(posterior.group[torch.nonzero(focus).flatten()])
        step = posterior.group_chunks()[0].stop if posterior.n_groups else 1
        for start in range(0, starved.numel(), step):
            score(starved[start : start + step])
    elif kept is None:
        for groups in posterior.group_chunks():
            score(groups)
    else:
        # bounds (kept best + slack) are read only on the prefix of the kept order that can
        # reach a threshold (`GroupScreen.reaching`), not over every group; with a focus,
        # a kept bound still bounds the focused pairs (a subset), and groups without a
        # focused clip are passed over
        fresh = set(kept.dirty)
        if shrink is not None:
            fresh.update(shrink.groups.tolist())
        scored = torch.tensor(sorted(fresh), dtype=torch.long, device=device)
        if focus_groups is not None:
            scored = scored.masked_select(focus_groups.index_select(0, scored))

        def open_bounds(threshold: float) -> tuple[Tensor, Tensor]:
            """The unscored groups whose bound exceeds `threshold`, and their bounds."""
            index = kept.reaching(posterior, threshold)
            if focus_groups is not None:
                index = index.masked_select(focus_groups.index_select(0, index))
            index = index.masked_select(in_sorted(index, torch.sort(scored).values).logical_not_())
            bounds = kept.best.index_select(0, index).add_(kept.slack(posterior, index))
            above = bounds > threshold
            return index.masked_select(above), bounds.masked_select(above)

        step = max(16, -(-2 * n_keep // max(per_group, 1)))
        # the groups of the highest bounds, about twice n_keep pairs, are always scored: the
        # candidates are never only the groups that just took labels
        wanted = max(16, -(-2 * n_keep // max(per_group, 1)))
        unscored = int(kept.best.numel()) - int(scored.numel())
        if unscored > 0:
            nth = kept.best[kept.order[min(wanted, kept.order.numel()) - 1]]
            index, bounds = open_bounds(float(nth) - 1e-12)
            index = index.index_select(0, torch.topk(bounds, min(wanted, bounds.numel())).indices)
            scored = torch.cat((scored, index))
        if scored.numel():
            score(scored)  # the fresh groups and those of the highest bounds, in one pass
        while True:
            # groups whose kept best plus slack cannot reach the kept set are done
            index, bounds = open_bounds(threshold())
            remaining = int(index.numel())
            if remaining == 0:
                break
            if remaining > max(4 * step, posterior.n_groups // 4):
                # the kept screen no longer narrows much: one pass over every group
                kept_score.clear(), kept_first.clear(), kept_second.clear()
                floor[0] = 0.0
                for groups in posterior.group_chunks():
                    if focus_groups is None or bool(focus_groups[groups].any()):
                        score(groups)
                break
            index = index[torch.topk(bounds, min(step, remaining)).indices]
            score(index)
            scored = torch.cat((scored, index))
            step *= 2
    scores = _joined(kept_score) if kept_score else torch.zeros(0, device=device)
    if scores.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    best = torch.topk(scores, min(n_keep, scores.numel())).indices
    first = _joined(kept_first).index_select(0, best)
    second = _joined(kept_second).index_select(0, best)
    return torch.minimum(first, second), torch.maximum(first, second)


def _joined(pieces: list[Tensor]) -> Tensor:
    """`torch.cat(pieces)`, without the copy when there is one piece (read only after)."""
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


class _Believer:
    """Rank-1 believer steps (MATH.md §4) on the joint Gaussian of a few projections:
    `Cov <- Cov - k c c'`, c the stepped projection's column under the earlier steps; the
    covariance is read a column per step (`JointProjections`)."""

    def __init__(
        self,
        joint: JointProjections,
        steps: int,
        taken: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        """Room for `steps` steps in all; `taken`, the columns (B, H) and factors (H,) of H
        steps already taken (the pending tasks'), held as they are while no step follows."""
        self.joint, self.mean = joint, joint.mean
        like, count = joint.mean, joint.mean.shape[0]
        columns, factors = taken if taken is not None else (like.new_zeros(count, 0), like[:0])
        self.held = columns.shape[1]
        if steps > self.held:
            more = steps - self.held
            columns = torch.cat((columns, like.new_zeros(count, more)), 1)
            factors = torch.cat((factors, like.new_zeros(more)))
        self.columns, self.factors = columns, factors

    def variances(self) -> Tensor:
        """(B,) every projection's variance under the steps so far."""
        held = self.held
        shrink = (self.columns[:, :held].square() * self.factors[:held]).sum(-1)
        return (self.joint.var - shrink).clamp_min(0.0)

    def step(self, index: int, noise_var: float, cuts: Tensor) -> float:
        """Treat projection `index` as answered; returns its variance before the step."""
        held = self.held
        own = self.joint.columns(torch.tensor([index], device=self.mean.device))[:, 0]
        column = own - self.columns[:, :held] @ (self.factors[:held] * self.columns[index, :held])
        var = max(float(column[index]), 0.0)
        factor = expected_variance_factor(float(self.mean[index]), var, noise_var, cuts.tolist())
        self.columns[:, held], self.factors[held] = column, factor
        self.held += 1
        return var


def _both_gains(
    mean: Tensor,
    variances: Tensor,
    n_candidates: int,
    request: PairRequest,
    both_threshold: float,
) -> Tensor:
    """`both_information_gain` of the candidates from the believer's projections: the
    candidates' differences, their first clips alone, their second clips alone, in that
    order."""
    diff = slice(0, n_candidates)
    first = slice(n_candidates, 2 * n_candidates)
    second = slice(2 * n_candidates, 3 * n_candidates)
    var, var_i, var_j = variances[diff], variances[first], variances[second]
    sum_var = (2.0 * var_i + 2.0 * var_j - var).clamp_min(0.0)
    return both_information_gain(
        mean[diff],
        var,
        mean[first] + mean[second],
        sum_var,
        var_i - var_j,
        request.noise_var,
        tie_margin_of(request.pair_cuts),
        both_threshold,
        request.keep,
    )


def select_block_pairs(
    posterior: GroupedPosterior,
    request: PairRequest,
    *,
    pending: Pending | None = None,
    kept: GroupScreen | None = None,
    tolerance: float | None = None,
    shrink: BlockShrink | None = None,
) -> list[PairChoice]:
    """The next `request.count` same-group pairs for one rater, each pending for the next: the
    block form of `engine.selection.select_pair_batch` (MATH.md §3-4); `kept` is a
    `GroupScreen` at this rater's noise to screen from, within `tolerance`
    (`screen_block_pairs`); `shrink` the pending tasks' `block_shrink` when the caller keeps it
    (built here when None).

    Raises:
        NoEligibleTaskError: when no eligible pair is left for this rater.
    """
    objective = OBJECTIVES[request.options.objective]
    noise_var, excluded_items = request.noise_var, request.excluded_items
    allowed = None
    if excluded_items is not None and excluded_items.numel():
        allowed = allowed_items(posterior.n_items, excluded_items, posterior.group.device)
    if shrink is None:
        shrink = block_shrink(posterior, pending, request.pair_cuts, request.level_cuts)
    judged_pairs = request.judged_pairs
    not_again = judged_pairs
    if pending is not None and len(pending):
        pair = pending.second != NO_SECOND
        handed_out = torch.stack(
            (pending.first.masked_select(pair), pending.second.masked_select(pair)), 1
        )
        judged_device = None if judged_pairs is None else judged_pairs.to(handed_out.device)
        not_again = handed_out if judged_device is None else torch.cat((judged_device, handed_out))
    n_keep = request.options.n_refine + request.count - 1
    first, second = screen_block_pairs(
        posterior,
        shrink,
        noise_var,
        allowed=allowed,
        forbidden=pair_positions(posterior, not_again),
        n_keep=n_keep,
        kept=kept,
        tolerance=tolerance,
        screen=objective.screen,
        focus=request.focus,
        focus_groups=request.focus_groups,
    )
    if first.numel() == 0:  # every eligible pair is pending elsewhere: allow a duplicate
        first, second = screen_block_pairs(
            posterior,
            shrink,
            noise_var,
            allowed=allowed,
            forbidden=pair_positions(posterior, judged_pairs),
            n_keep=n_keep,
            kept=kept,
            tolerance=tolerance,
            screen=objective.screen,
            focus=request.focus,
            focus_groups=request.focus_groups,
        )
    return choose_block_pairs(posterior, first, second, request, pending=pending, shrink=shrink)


def choose_block_pairs(
    posterior: GroupedPosterior,
    first: Tensor,
    second: Tensor,
    request: PairRequest,
    *,
    pending: Pending | None,
    shrink: BlockShrink | None,
) -> list[PairChoice]:
    """The batch from screened candidates (first, second): their joint Gaussian, with the
    pending tasks' believer steps (MATH.md §4) read from `shrink` (the `block_shrink` of
    `pending`, None when nothing is pending: its coefficients, and its joint for the
    candidates' covariances with the tasks), exact gains, one believer step per pick
    (MATH.md §3-4).

    Raises:
        NoEligibleTaskError: no candidate.
    """
    noise_var, pair_cuts, keep, count = (
        request.noise_var,
        request.pair_cuts,
        request.keep,
        request.count,
    )
    options, generator = request.options, request.generator
    if first.numel() == 0:
        raise NoEligibleTaskError(
            "no eligible pair is left for this rater (pairing scope, excluded clips and "
            "pairs already judged leave none)"
        )
    objective, rule = OBJECTIVES[options.objective], RULES[options.rule]
    both = request.both_threshold if options.both_gain else None
    # the pending tasks act through the shrink's steps alone, whose joint is kept with it
    n_pending = 0 if shrink is None else shrink.factor.shape[0]
    n_candidates = first.numel()
    all_first, all_second = first, second
    if both is not None:
        # each candidate's clips alone too: the both gain needs the pair's sum (MATH.md §3),
        # Var(f_i + f_j) = 2 Var f_i + 2 Var f_j - Var(f_i - f_j) under the same steps
        alone = torch.full_like(first, NO_SECOND)
        all_first = torch.cat((first, first, second))
        all_second = torch.cat((second, alone, alone))
    joint = posterior.joint(all_first, all_second)
    n_picks = min(count, first.numel())
    taken = None
    if shrink is not None:
        # the pending tasks' steps, from the shrink's recursion: cov(z_b, c_q) =
        # sum_p U_pq cov(z_b, z_p)
        taken = (joint.cross(shrink.joint) @ shrink.coefficients, shrink.factor)
    # every pick but the last steps (the last shrinks nothing after it)
    believer = _Believer(joint, n_pending + n_picks - 1, taken)
    candidates = slice(0, n_candidates)
    mu = joint.mean[candidates]
    explained = joint.weight_var[candidates]
    taken = torch.zeros(first.numel(), dtype=torch.bool, device=first.device)
    choices: list[PairChoice] = []
    picked_var: list[float] = []
    picked: list[int] = []
    for step in range(n_picks):
        variances = believer.variances()
        var = variances[candidates]
        if both is None:
            gains = objective(mu, var, noise_var, pair_cuts, keep=keep)
        else:
            gains = _both_gains(joint.mean, variances, n_candidates, request, both)
        if options.weight_share > 0:
            # the weights' share of z's variance, r' S_w r in block form (engine.targeted):
            # pending tasks shrink only the total, as in the dense selection
            part = torch.minimum(explained, var)
            weights = expected_information_gain(
                mu, part, noise_var + var - part, pair_cuts, keep=keep
            )
            gains = (1 - options.weight_share) * gains + options.weight_share * weights
        if step == 0:  # nothing taken yet
            pick = rule(gains, options.beta, generator)
        else:
            open_ = torch.nonzero(~taken).flatten()
            pick = int(open_[rule(gains[open_], options.beta, generator)])
        picked.append(pick)
        if step + 1 < n_picks:
            taken[pick] = True  # read by the later picks only
            picked_var.append(believer.step(pick, noise_var, pair_cuts))
        else:  # the last pick shrinks nothing after it: its variance is the one it was chosen by
            picked_var.append(float(var[pick]))
        choices.append(PairChoice(int(first[pick]), int(second[pick]), float(gains[pick]), ()))
    # each pick's outcome probabilities, under the shrink it was chosen with
    at = torch.tensor(picked, device=mu.device)
    probabilities = outcome_probabilities(
        mu.index_select(0, at), mu.new_tensor(picked_var), noise_var, pair_cuts
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
    shrink: BlockShrink | None = None,
) -> RatingChoice:
    """The clip whose emoji level is most informative: the block form of
    `engine.selection.select_rating` (same arguments, MATH.md §3); `shrink` as for
    `select_block_pairs`.

    Raises:
        NoEligibleTaskError: when every clip is excluded.
    """
    options = options or SelectionOptions()
    allowed = allowed_items(posterior.n_items, excluded_items, posterior.group.device)
    if shrink is None:
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


__all__ = [
    "GroupScreen",
    "choose_block_pairs",
    "pair_positions",
    "screen_block_pairs",
    "select_block_pairs",
    "select_block_rating",
]
