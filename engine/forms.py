"""How a campaign keeps its posterior: one object that owns it and answers for it.

`DenseForm` keeps every covariance entry (`engine.state.Posterior`): exact for any pairing
scope, O(n^2) memory. `BlockForm` keeps prompt blocks plus the weight border
(`engine.structured.GroupedPosterior`, docs/MATH.md §6): the same Gaussian while questions
stay inside prompts, O(n) memory and O(prompt + weights) per label. `Campaign` talks to either
through the same methods and never reads a covariance itself; `FORMS` is the registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from engine.block_selection import GroupScreen, select_block_pairs, select_block_rating
from engine.blocks import GATE, Layout, border_layout
from engine.criteria import add_criterion_values
from engine.ep import Refinement, ep_refine
from engine.gating import gate_variances
from engine.neighbours import select_neighbour_pairs
from engine.objectives import OBJECTIVES, outcome_probabilities
from engine.scope import GroupBlocks, group_blocks, scope_pairs
from engine.selection import (
    NoEligibleTaskError,
    PairChoice,
    PairRequest,
    Pending,
    RatingChoice,
    RatingRequest,
    SelectionOptions,
    Shrink,
    believer_shrink,
    extend_shrink,
    select_pair_batch,
    select_rating,
)
from engine.state import (
    Posterior,
    PriorScales,
    add_contexts,
    add_items,
    empty_posterior,
    grow_block,
)
from engine.structured import BlockShrink, GroupedPosterior, block_shrink, refine_grouped
from engine.summaries import (
    WeightSummary,
    expected_kendall_tau,
    expected_tau_of_pairs,
    pair_marginal,
    pair_tau_terms,
    sampled_kendall_tau,
    summarise_border,
    summarise_weights,
)
from engine.update import Events, Sites, update_with_evidence

PendingTask = tuple[int, int, int, float]  # (task id, first, second or -1, noise variance)
# Candidates screened from a kept screen may miss pairs scoring at most this much better than
# the best kept (screening-score units, about bits of gain); the kept screen is rebuilt (one
# full pass) once a typical group's scores may have moved as much, or this many groups took
# labels
SCREEN_TOLERANCE = 0.02
SCREEN_DIRTY_LIMIT = 4096
SCREEN_REFRESH_AT = 32  # dirty groups a kept screen refreshes at (GroupScreen.refresh)
KEPT_SCREENS = 4  # rater noises with a kept screen (learned noise gives each rater its own)
# draws x (clips or pairs) per chunk of a sampled Kendall tau: ~32 MiB of float64
TAU_CHUNK_ELEMENTS = 2**22
# pair comparisons (draws x pairs) per slice of groups in a block-form sampled tau: ~8 MiB
TAU_GROUP_ELEMENTS = 2**20


class SiteLog:
    """The Gaussian site of every event a form holds, in the order applied (engine.update.Sites:
    the posterior is the prior times them), so that a label can be scored under its cavity
    (docs/MATH.md §2, eq. (2.2)). Plain float lists: appended label by label at O(1) each."""

    def __init__(self, sites: Sites | None = None) -> None:
        self.precision: list[float] = [] if sites is None else sites.precision.tolist()
        self.shift: list[float] = [] if sites is None else sites.shift.tolist()

    def __len__(self) -> int:
        return len(self.precision)

    def extend(self, sites: Sites) -> None:
        self.precision.extend(sites.precision.tolist())
        self.shift.extend(sites.shift.tolist())

    def take(self, positions: Sequence[int], like: Tensor) -> Sites:
        """The sites of the events at `positions` (0 = the first event applied), in `like`'s
        dtype and device.

        Raises:
            IndexError: a position outside the events held.
        """
        count = len(self.precision)
        if any(not 0 <= p < count for p in positions):
            raise IndexError(f"a site position outside 0..{count - 1}")
        return Sites(
            like.new_tensor([self.precision[p] for p in positions]),
            like.new_tensor([self.shift[p] for p in positions]),
        )


class PosteriorForm(Protocol):
    """What a campaign asks of its posterior, whatever form it is kept in."""

    sites: SiteLog  # the site of each event applied, in order

    @property
    def n_items(self) -> int: ...

    def add(
        self,
        scales: PriorScales,
        n_new_contexts: int,
        scores: Tensor,
        context: Tensor,
        group: Tensor,
        features: Tensor | None = None,
    ) -> None:
        """Append contexts, then clips (standardised scores, context and group indices, and
        feature vectors where the campaign has a feature gate, MATH.md §8)."""
        ...

    def observe(self, events: Events) -> float:
        """Apply labels by ADF (MATH.md §2) and log their sites; returns their log evidence."""
        ...

    def refine(
        self, events: Events, max_sweeps: int, damping: float
    ) -> tuple[PosteriorForm, Refinement]:
        """The EP posterior of this prior and the events (engine.ep), as a form of the same
        kind, and EP's result; this form is unchanged."""
        ...

    def pair_moments(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of `f_i - f_j` (second = -1: of f_i)."""
        ...

    def item_moments(self) -> tuple[Tensor, Tensor]:
        """(n,) every clip's marginal mean and variance: what the leaderboard and an interval
        width target read, in one O(n) pass where the form allows."""
        ...

    def weights(self) -> WeightSummary: ...

    def border_blocks(self) -> Layout:
        """The border's named blocks (engine.blocks, from 0)."""
        ...

    def border(self) -> tuple[Layout, Tensor, Tensor]:
        """The border's named blocks and its mean and covariance."""
        ...

    def grow_block(self, name: str, variances: Tensor, local: bool = False) -> None:
        """Grow the extra border block `name` by independent `N(0, variances)` coordinates
        (engine.state.grow_block); `local`: among every group's local coordinates in block
        form (GroupedPosterior.grow_block), where many questions load on it."""
        ...

    def expected_kendall_tau(self, groups: Tensor | None) -> float: ...

    def kendall_tau_draws(
        self, groups: Tensor | None, n_samples: int, generator: torch.Generator
    ) -> Tensor:
        """(n_samples,) Kendall tau between posterior draws and the posterior mean order, over
        the pairs `expected_kendall_tau` reads (engine.summaries.sampled_kendall_tau)."""
        ...

    def forget_shrink(self) -> None:
        """Pending tasks' noise changed: a kept believer shrink no longer holds."""
        ...

    def select_pairs(
        self,
        pending: Sequence[PendingTask],
        groups: Tensor | None,
        request: PairRequest,
    ) -> list[PairChoice]: ...

    def note_batch(self, before: Sequence[int], ids: Sequence[int]) -> None:
        """The last `select_pairs` batch became tasks `ids`, handed out after `before`."""
        ...

    def select_rating(
        self, pending: Sequence[PendingTask], request: RatingRequest
    ) -> RatingChoice: ...

    def dense(self) -> Posterior:
        """The posterior as an `engine.state.Posterior` (O(n^2) for the block form)."""
        ...


def _pending(tasks: Sequence[PendingTask], like: Tensor) -> Pending | None:
    if not tasks:
        return None
    return Pending.of([(first, second, noise) for _, first, second, noise in tasks], like)


class DenseForm:
    """Every covariance entry of theta = [f | w | contexts] (engine.state).

    Args:
        posterior: the posterior to own.
    """

    # (n + D)^2 float64 entries: 3.2 GB at 20,000 clips, and an update writes a new copy; a
    # 24 GB machine holds that with room for the service, not twice as many clips
    max_items: int | None = 20_000

    def __init__(self, posterior: Posterior, sites: SiteLog | None = None) -> None:
        self.posterior = posterior
        self.sites = SiteLog() if sites is None else sites
        # the pending tasks' believer shrink under the posterior it was built on, by task ids
        self._shrink_cache: tuple[Posterior, tuple[int, ...], Shrink] | None = None
        self._batch_shrink: Shrink | None = None
        self._scope_cache: tuple[int, tuple[Tensor, Tensor] | None, GroupBlocks | None] | None = (
            None
        )

    def __getstate__(self) -> dict[str, object]:
        """The posterior and sites: the pending tasks' shrink is derived (rebuilt on the next
        choice) and as large as the covariance, which a copy (a snapshot, a refit's) would
        otherwise hold twice."""
        state = dict(vars(self))
        state["_shrink_cache"] = None
        state["_batch_shrink"] = None
        return state

    @staticmethod
    def prior(
        n_criteria: int,
        scales: PriorScales,
        n_contexts: int,
        scores: Tensor,
        context: Tensor,
        group: Tensor,
        features: Tensor | None = None,
    ) -> DenseForm:
        """The joint prior over the clips (MATH.md §1); with `features` (n, D), the feature
        gate's vec(W) is made before them (MATH.md §8)."""
        posterior = empty_posterior(n_criteria, scales, device=scores.device, dtype=scores.dtype)
        posterior = add_contexts(posterior, n_contexts, scales)
        if features is not None:
            variances = gate_variances(n_criteria, features.shape[1], scales.gate_sd, scores)
            posterior = grow_block(posterior, GATE, variances)
        return DenseForm(add_items(posterior, scores, context, scales, features))

    @property
    def n_items(self) -> int:
        return self.posterior.n_items

    def add(
        self,
        scales: PriorScales,
        n_new_contexts: int,
        scores: Tensor,
        context: Tensor,
        group: Tensor,
        features: Tensor | None = None,
    ) -> None:
        posterior = add_contexts(self.posterior, n_new_contexts, scales)
        self.posterior = add_items(posterior, scores, context, scales, features)

    def observe(self, events: Events) -> float:
        result = update_with_evidence(self.posterior, events)
        self.posterior = result.posterior
        self.sites.extend(result.sites)
        return result.log_evidence

    def refine(
        self, events: Events, max_sweeps: int, damping: float
    ) -> tuple[DenseForm, Refinement]:
        result = ep_refine(self.posterior, events, max_sweeps=max_sweeps, damping=damping)
        return DenseForm(result.posterior, SiteLog(result.sites)), result

    def pair_moments(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        return pair_marginal(self.posterior, first, second)

    def item_moments(self) -> tuple[Tensor, Tensor]:
        return self.posterior.item_mean, torch.diagonal(self.posterior.item_cov)

    def weights(self) -> WeightSummary:
        return summarise_weights(self.posterior)

    def border_blocks(self) -> Layout:
        posterior = self.posterior
        return border_layout(posterior.n_criteria, posterior.n_contexts, extra=posterior.extra)

    def border(self) -> tuple[Layout, Tensor, Tensor]:
        n = self.posterior.n_items
        return self.border_blocks(), self.posterior.mean[n:], self.posterior.cov[n:, n:]

    def grow_block(self, name: str, variances: Tensor, local: bool = False) -> None:
        self.posterior = grow_block(self.posterior, name, variances)
        self._shrink_cache = None
        self._batch_shrink = None

    def add_criterion_values(
        self, scores: Tensor, columns: Sequence[int], loading: Sequence[float], residual_sd: float
    ) -> None:
        """The last clips' criterion coordinates (engine.criteria.add_criterion_values)."""
        self.posterior = add_criterion_values(self.posterior, scores, columns, loading, residual_sd)
        self._shrink_cache = None
        self._batch_shrink = None

    def expected_kendall_tau(self, groups: Tensor | None) -> float:
        return expected_kendall_tau(self.posterior, groups)

    def kendall_tau_draws(
        self, groups: Tensor | None, n_samples: int, generator: torch.Generator
    ) -> Tensor:
        mean, cov = self.posterior.item_mean, self.posterior.item_cov
        if groups is None:
            first, second = torch.triu_indices(*cov.shape, 1, device=mean.device)
        else:
            first, second = scope_pairs(groups.to(mean.device))
        factor = torch.linalg.cholesky(cov) if mean.numel() else cov

        def sample(count: int) -> Tensor:
            noise = torch.randn(
                count, mean.numel(), generator=generator, dtype=mean.dtype, device=mean.device
            )
            return mean + noise @ factor.T

        return _tau_draws(sample, mean, first, second, n_samples)

    def forget_shrink(self) -> None:
        self._shrink_cache = None

    def pending_shrink(
        self, pending: Sequence[PendingTask], pair_cuts: Tensor, level_cuts: Tensor | None
    ) -> Shrink:
        """The pending tasks' believer shrink `S_ff - V diag(k) V'` (MATH.md §4), kept
        between calls as for the selections."""
        return self._shrink(pending, pair_cuts, level_cuts)

    def _shrink(
        self, pending: Sequence[PendingTask], pair_cuts: Tensor, level_cuts: Tensor | None
    ) -> Shrink:
        """The pending tasks' believer shrink (MATH.md §4), kept between calls: tasks held
        since it was built are added to it (O(n Q) each); it is rebuilt when the posterior
        changed or a task before the newest was released."""
        ids = tuple(task[0] for task in pending)
        cached = self._shrink_cache
        if cached is not None and cached[0] is self.posterior:
            _, built_for, shrink = cached
            if ids[: len(built_for)] == built_for:
                for _, first, second, noise in pending[len(built_for) :]:
                    shrink = extend_shrink(
                        self.posterior, shrink, first, second, noise, pair_cuts, level_cuts
                    )
                self._shrink_cache = (self.posterior, ids, shrink)
                return shrink
            if built_for[: len(ids)] == ids:  # the newest tasks were released
                shrink = Shrink(shrink.columns[:, : len(ids)], shrink.factor[: len(ids)])
                self._shrink_cache = (self.posterior, ids, shrink)
                return shrink
        like = self.posterior.mean
        shrink = believer_shrink(self.posterior, _pending(pending, like), pair_cuts, level_cuts)
        self._shrink_cache = (self.posterior, ids, shrink)
        return shrink

    def _scope_candidates(
        self, groups: Tensor | None
    ) -> tuple[tuple[Tensor, Tensor] | None, GroupBlocks | None]:
        """The same-group scope's pairs as a list when that is under a quarter of all pairs
        (screened as a list, O(pairs in scope)), with their group blocks; None to screen the
        n x n grid."""
        n = self.n_items
        if self._scope_cache is None or self._scope_cache[0] != n:
            listed, blocks = None, None
            if groups is not None:
                first, second = scope_pairs(groups)
                if 4 * first.numel() < n * (n - 1) // 2:
                    listed = (first, second)
                    blocks = group_blocks(groups, first, second)
            self._scope_cache = (n, listed, blocks)
        return self._scope_cache[1], self._scope_cache[2]

    def select_pairs(
        self,
        pending: Sequence[PendingTask],
        groups: Tensor | None,
        request: PairRequest,
    ) -> list[PairChoice]:
        candidates, blocks = self._scope_candidates(groups)
        choices, shrink = select_pair_batch(
            self.posterior,
            **request.keywords(),
            groups=groups,
            candidates=candidates,
            blocks=blocks,
            pending=_pending(pending, self.posterior.mean),
            shrink=self._shrink(pending, request.pair_cuts, request.level_cuts),
        )
        self._batch_shrink = shrink
        return choices

    def note_batch(self, before: Sequence[int], ids: Sequence[int]) -> None:
        # kept for the tasks as pending after the ones before, held now or later in this order
        # (`next_tasks` holds after comparing with a rating); if they never are, the kept
        # shrink is cut back to the tasks before
        if self._batch_shrink is not None:
            self._shrink_cache = (self.posterior, (*before, *ids), self._batch_shrink)
            self._batch_shrink = None

    def select_rating(self, pending: Sequence[PendingTask], request: RatingRequest) -> RatingChoice:
        return select_rating(
            self.posterior,
            **request.keywords(),
            pending=_pending(pending, self.posterior.mean),
            shrink=self._shrink(pending, request.pair_cuts, request.level_cuts),
        )

    def dense(self) -> Posterior:
        return self.posterior


def _same_partition(groups: Tensor, own: Tensor) -> bool:
    """Whether the labels `groups` (n,) split the clips as the posterior's groups `own` (n,) do:
    the same pairs in scope, whatever the labels. O(n), plus a sort of the labels unless they
    are the posterior's own ids."""
    groups = groups.to(own.device)
    if groups.shape != own.shape:
        raise ValueError(f"groups must hold one label per clip ({own.numel()})")
    if torch.equal(groups, own):
        return True
    if own.numel() == 0:
        return True
    # every group's clips share one label ...
    label = groups.new_empty(int(own.max()) + 1).scatter_(0, own, groups)
    if not bool((label[own] == groups).all()):
        return False
    # ... and no two groups share one
    return torch.unique(groups).numel() == torch.unique(own).numel()


def _check_not_empty(posterior: GroupedPosterior) -> None:
    """Raise `NoEligibleTaskError` for a posterior without clips: its border has no context
    block yet for a screen to read.

    Raises:
        NoEligibleTaskError: no clip at all.
    """
    if posterior.n_items == 0:
        raise NoEligibleTaskError("the campaign has no clips yet")


class BlockForm:
    """Prompt blocks plus the weight border (engine.structured, docs/MATH.md §6). Pairs must
    stay inside a prompt group; the campaign checks this before a label is applied.

    Args:
        posterior: the block-form posterior to own.
    """

    max_items: int | None = None  # O(n) memory: bounded by the machine, not the form

    def __init__(self, posterior: GroupedPosterior, sites: SiteLog | None = None) -> None:
        self.posterior = posterior
        self.sites = SiteLog() if sites is None else sites
        # the pending tasks' block shrink under the posterior version it was built for: a
        # rating and a pair batch chosen for one request share it
        self._shrink_cache: tuple[tuple[object, ...], BlockShrink | None] | None = None
        # by rater noise and objective, oldest first
        self._screens: dict[tuple[float, str], GroupScreen] = {}

    def __getstate__(self) -> dict[str, object]:
        """The posterior alone: the kept screens and shrink are derived (rebuilt on the next
        choice), and a snapshot holds no functions (api.snapshots loads only data)."""
        state = dict(vars(self))
        state["_shrink_cache"] = None
        state["_screens"] = {}
        return state

    @classmethod
    def prior(
        cls,
        n_criteria: int,
        scales: PriorScales,
        n_contexts: int,
        scores: Tensor,
        context: Tensor,
        group: Tensor,
        features: Tensor | None = None,
    ) -> BlockForm:
        posterior = GroupedPosterior(n_criteria, scales, device=scores.device, dtype=scores.dtype)
        if features is not None:
            variances = gate_variances(n_criteria, features.shape[1], scales.gate_sd, scores)
            posterior.grow_block(GATE, variances, local=True)
        form = cls(posterior)
        form.add(scales, n_contexts, scores, context, group, features)
        return form

    @property
    def n_items(self) -> int:
        return self.posterior.n_items

    def add(
        self,
        scales: PriorScales,
        n_new_contexts: int,
        scores: Tensor,
        context: Tensor,
        group: Tensor,
        features: Tensor | None = None,
    ) -> None:
        self.posterior.add_contexts(n_new_contexts, scales)
        self.posterior.add_items(scores, context, group, scales, features)
        for screen in self._screens.values():
            screen.dirty.update(group.tolist())

    def observe(self, events: Events) -> float:
        log_evidence, _, sites = self.posterior.observe(events)
        self.sites.extend(sites)
        if self._screens:
            # both clips' groups: a pair across groups (the factorised form) moves both
            clips = events.first.tolist() + [j for j in events.second.tolist() if j >= 0]
            touched = self.posterior.groups_of(clips)
            for screen in self._screens.values():
                screen.dirty.update(touched)
        return log_evidence

    def _screen(self, noise_var: float, options: SelectionOptions) -> GroupScreen:
        """The kept screen at this noise for this objective, rebuilt when stale
        (SCREEN_TOLERANCE, SCREEN_DIRTY_LIMIT) or when the layout changed."""
        key = (noise_var, options.objective)
        screen = self._screens.pop(key, None)
        if (
            screen is None
            or not screen.fits(self.posterior)
            or len(screen.dirty) + screen.refreshed.numel() > SCREEN_DIRTY_LIMIT
            or screen.typical_slack(self.posterior) > SCREEN_TOLERANCE
        ):
            screen = GroupScreen(
                self.posterior, noise_var, OBJECTIVES[options.objective].screen, screen
            )
        elif len(screen.dirty) >= SCREEN_REFRESH_AT:
            # the groups that took labels, scored once now, not again under every pick's
            # shrink; a few are cheaper to score with the pick than apart
            screen.refresh(self.posterior)
        self._screens[key] = screen
        while len(self._screens) > KEPT_SCREENS:
            self._screens.pop(next(iter(self._screens)))
        return screen

    def refine(
        self, events: Events, max_sweeps: int, damping: float
    ) -> tuple[BlockForm, Refinement]:
        posterior, sites, sweeps, change = refine_grouped(
            self.posterior, events, max_sweeps=max_sweeps, damping=damping
        )
        return type(self)(posterior, SiteLog(sites)), Refinement(posterior, sites, sweeps, change)

    def pair_moments(self, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
        return self.posterior.pair_moments(first, second)

    def item_moments(self) -> tuple[Tensor, Tensor]:
        return self.posterior.item_moments()

    def weights(self) -> WeightSummary:
        mean, cov = self.posterior.weight_moments()
        return summarise_border(mean, cov, self.posterior.n_criteria, self.posterior.n_contexts)

    def border_blocks(self) -> Layout:
        return self.posterior.blocks()

    def border(self) -> tuple[Layout, Tensor, Tensor]:
        mean, cov = self.posterior.weight_moments()
        return self.border_blocks(), mean, cov

    def grow_block(self, name: str, variances: Tensor, local: bool = False) -> None:
        self.posterior.grow_block(name, variances, local)

    def expected_kendall_tau(self, groups: Tensor | None) -> float:
        """`E[tau] = mean_pairs |2 Phi(mu / s) - 1|` over the same-group pairs (MATH.md §1).

        When `groups` is the posterior's own grouping (None, or the same partition of the clips
        under other labels), every pair comes from its group's marginal by chunks of groups
        (`GroupedPosterior.group_pair_moments`): O(sum_g m_g^2 K) with no per-pair gathers.
        Any other grouping lists its pairs and reads each one (`pair_moments`)."""
        posterior = self.posterior
        if groups is not None and not _same_partition(groups, posterior.group):
            first, second = scope_pairs(groups)
            mu, var = posterior.pair_moments(first, second)
            return expected_tau_of_pairs(mu, var)
        total = posterior.offset.new_zeros(())
        count = 0
        for chunk in posterior.group_chunks():
            pairs = posterior.group_pair_moments(chunk)
            if pairs is None:
                continue
            terms = pair_tau_terms(pairs.mu, pairs.var)
            total += torch.where(pairs.valid, terms, 0.0).sum()
            count += int(pairs.valid.sum())
        return float(total) / count if count else math.nan

    def kendall_tau_draws(
        self, groups: Tensor | None, n_samples: int, generator: torch.Generator
    ) -> Tensor:
        """Over the posterior's own groups (None, or the same partition under other labels) the
        draws are compared group by group, `_block_tau_draws`; any other grouping lists its
        pairs and gathers both clips of each from every draw."""
        if groups is None or _same_partition(groups, self.posterior.group):
            return _block_tau_draws(self.posterior, n_samples, generator)
        first, second = scope_pairs(groups)
        return self._tau_draws(first, second, n_samples, generator)

    def _tau_draws(
        self, first: Tensor, second: Tensor, n_samples: int, generator: torch.Generator
    ) -> Tensor:
        mean, _ = self.posterior.item_moments()
        return _tau_draws(
            lambda count: self.posterior.sample_items(count, generator),
            mean,
            first,
            second,
            n_samples,
        )

    def forget_shrink(self) -> None:
        self._shrink_cache = None

    def _shrink(
        self,
        pending: Sequence[PendingTask],
        pair_cuts: Tensor,
        level_cuts: Tensor | None,
        held: Pending | None = None,
    ) -> BlockShrink | None:
        """The pending tasks' `block_shrink`, kept while the posterior and the tasks (with
        their raters' noise) stay as they were; `held` is `pending` as a `Pending`, when the
        caller has it."""
        levels = None if level_cuts is None else tuple(level_cuts.tolist())
        key = (self.posterior.version, tuple(pending), tuple(pair_cuts.tolist()), levels)
        if self._shrink_cache is None or self._shrink_cache[0] != key:
            if held is None:
                held = _pending(pending, self.posterior.offset)
            shrink = block_shrink(self.posterior, held, pair_cuts, level_cuts)
            self._shrink_cache = (key, shrink)
        return self._shrink_cache[1]

    def select_pairs(
        self,
        pending: Sequence[PendingTask],
        groups: Tensor | None,
        request: PairRequest,
    ) -> list[PairChoice]:
        _check_not_empty(self.posterior)
        held = _pending(pending, self.posterior.offset)
        return select_block_pairs(
            self.posterior,
            request,
            pending=held,
            kept=self._screen(request.noise_var, request.options),
            tolerance=SCREEN_TOLERANCE,
            shrink=self._shrink(pending, request.pair_cuts, request.level_cuts, held),
        )

    def note_batch(self, before: Sequence[int], ids: Sequence[int]) -> None:
        """Nothing to keep."""

    def select_rating(self, pending: Sequence[PendingTask], request: RatingRequest) -> RatingChoice:
        _check_not_empty(self.posterior)
        return select_block_rating(
            self.posterior,
            **request.keywords(),
            pending=_pending(pending, self.posterior.offset),
            shrink=self._shrink(pending, request.pair_cuts, request.level_cuts),
        )

    def dense(self) -> Posterior:
        return self.posterior.to_dense()


class FactorisedForm(BlockForm):
    """The block form that also takes pairs across prompts, approximately: each prompt's
    block stays independent of the others given the weights (engine.structured,
    `across_groups`; docs/MATH.md §6). For pair_scope="any" past the dense form's limit:
    pairs within a prompt are exact as in `BlockForm`; in any scope the candidates are
    neighbours in posterior-mean order (engine.neighbours).

    Args:
        posterior: the block-form posterior to own (its `across_groups` is switched on).
    """

    def __init__(self, posterior: GroupedPosterior, sites: SiteLog | None = None) -> None:
        super().__init__(posterior, sites)
        posterior.across_groups = True

    def expected_kendall_tau(self, groups: Tensor | None) -> float:
        if groups is not None:
            return super().expected_kendall_tau(groups)
        first, second = sampled_pairs(self.posterior.n_items, self.posterior.group.device)
        mu, var = self.posterior.pair_moments(first, second)
        return expected_tau_of_pairs(mu, var)

    def kendall_tau_draws(
        self, groups: Tensor | None, n_samples: int, generator: torch.Generator
    ) -> Tensor:
        if groups is not None:
            return super().kendall_tau_draws(groups, n_samples, generator)
        first, second = sampled_pairs(self.posterior.n_items, self.posterior.group.device)
        return self._tau_draws(first, second, n_samples, generator)

    def select_pairs(
        self,
        pending: Sequence[PendingTask],
        groups: Tensor | None,
        request: PairRequest,
    ) -> list[PairChoice]:
        if groups is not None:
            return super().select_pairs(pending, groups, request)
        return select_neighbour_pairs(
            self.posterior,
            request,
            pending=_pending(pending, self.posterior.offset),
            shrink=self._shrink(pending, request.pair_cuts, request.level_cuts),
        )


def _tau_draws(
    sample: Callable[[int], Tensor],
    mean: Tensor,
    first: Tensor,
    second: Tensor,
    n_samples: int,
) -> Tensor:
    """(n_samples,) `sampled_kendall_tau` of `sample(count)`'s (count, n) draws, drawn in
    chunks of about TAU_CHUNK_ELEMENTS so memory stays bounded for large campaigns."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    step = max(1, TAU_CHUNK_ELEMENTS // max(mean.numel(), first.numel(), 1))
    taus = [
        sampled_kendall_tau(sample(min(step, n_samples - start)), mean, first, second)
        for start in range(0, n_samples, step)
    ]
    return torch.cat(taus)


def _block_tau_draws(
    posterior: GroupedPosterior, n_samples: int, generator: torch.Generator
) -> Tensor:
    """(n_samples,) `sampled_kendall_tau` over every same-group pair, from the draws of
    `GroupedPosterior.sample_groups`: `tau_s = mean_pairs sign(m_a - m_b) sign(f_sa - f_sb)`.

    The draws are those `_tau_draws` makes of `sample_items` from the same generator (the
    same chunks of draws, so the same normals), and each tau is the same sum of signs, so the
    result is the same. But the Cholesky factors are made once, not once per chunk of draws,
    and no pair is gathered: with slots first and groups last, the pairs (a, a + k) of every
    group are two slices of the draws, `f[:m - k] - f[k:]`, for k = 1 .. m - 1.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    sizes = posterior.group_size
    n_pairs = int((sizes * (sizes - 1) // 2).sum())
    like = posterior.offset
    if n_pairs == 0:
        return like.new_full((n_samples,), math.nan)
    # the chunks of draws `_tau_draws` takes: the same calls on the generator
    step = max(1, TAU_CHUNK_ELEMENTS // max(posterior.n_items, n_pairs, 1))
    width = posterior.members.shape[1]
    mean = like.new_zeros(posterior.n_groups, width)
    mean[posterior.group, posterior.slot] = posterior.item_moments()[0]
    # slices of groups sized so that a chunk of draws compares about TAU_GROUP_ELEMENTS pairs
    # in each, and per slice and offset k the orders sign(m_a - m_{a+k}), (m - k, 1, G), 0
    # where a + k is past the group's size
    per_group = min(step, n_samples) * width * (width - 1) // 2
    group_step = max(1, TAU_GROUP_ELEMENTS // max(per_group, 1))
    slices: list[tuple[slice, int, list[Tensor]]] = []
    for start in range(0, posterior.n_groups, group_step):
        chunk = slice(start, start + group_step)
        size = int(sizes[chunk].max())
        means = mean[chunk, :size].T  # (m, G)
        inside = torch.arange(size, device=like.device)[:, None] < sizes[chunk]  # (m, G)
        orders = [
            (torch.sign(means[: size - k] - means[k:]) * inside[k:])[:, None, :]
            for k in range(1, size)
        ]
        if orders:
            slices.append((chunk, size, orders))
    factors = posterior.draw_factors()
    taus: list[Tensor] = []
    for start in range(0, n_samples, step):
        count = min(step, n_samples - start)
        draws = posterior.sample_groups(count, generator, factors)  # (S, G, M)
        total = like.new_zeros(count)
        for chunk, size, orders in slices:
            by_slot = draws[:, chunk, :size].permute(2, 0, 1).contiguous()  # (m, S, G)
            for k, order in enumerate(orders, start=1):
                signs = torch.sign(by_slot[: size - k] - by_slot[k:])  # (m - k, S, G)
                total += (signs * order).sum((0, 2))
        taus.append(total / n_pairs)
    return torch.cat(taus)


TAU_SAMPLE_PAIRS = 2**20  # past this many pairs in scope, E[tau] is estimated from a sample


def sampled_pairs(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Every pair of n clips (first < second), or a fixed-seed sample of TAU_SAMPLE_PAIRS
    of them when there are more: an unbiased estimate of a mean over all pairs."""
    if n * (n - 1) // 2 <= TAU_SAMPLE_PAIRS:
        first, second = torch.triu_indices(n, n, 1, device=device)
        return first, second
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, n, (TAU_SAMPLE_PAIRS,), generator=generator)
    shift = torch.randint(1, n, (TAU_SAMPLE_PAIRS,), generator=generator)
    second = (first + shift) % n  # uniform over the other n - 1 clips
    return first.to(device), second.to(device)


def predict(form: PosteriorForm, first: Tensor, second: Tensor, noise_var: float, cuts: Tensor):
    """Predictive (loss, [tie,] win) probabilities of `first` vs `second`. MATH.md §3."""
    mu, var = form.pair_moments(first, second)
    return outcome_probabilities(mu, var, noise_var, cuts)


FormFactory = type[DenseForm] | type[BlockForm] | type[FactorisedForm]

FORMS: dict[str, FormFactory] = {
    "dense": DenseForm,
    "blocks": BlockForm,
    "factorised": FactorisedForm,
}

__all__ = [
    "FORMS",
    "BlockForm",
    "DenseForm",
    "FactorisedForm",
    "PendingTask",
    "PosteriorForm",
    "SiteLog",
    "predict",
]
