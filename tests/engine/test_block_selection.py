"""Selection on the block-form posterior against the dense selection it must equal.

The dense reference is engine.selection on `GroupedPosterior.to_dense()` (the same Gaussian,
tested in test_structured.py), with the same-group scope listed by engine.scope.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine import block_selection
from engine.block_selection import (
    SCREEN_ROUNDING,
    GroupScreen,
    _pair_spread,
    _pair_terms,
    _reaching_rows,
    _score_groups,
    _slot_pairs,
    pair_positions,
    screen_block_pairs,
    select_block_pairs,
    select_block_rating,
)
from engine.likelihoods import level_cuts, outcome_cuts
from engine.objectives import BALD_SCREEN, screening_score
from engine.scope import scope_pairs
from engine.selection import (
    SCORE_OFFSET,
    NoEligibleTaskError,
    PairRequest,
    Pending,
    SelectionOptions,
    believer_shrink,
    select_pair_batch,
    select_rating,
)
from engine.state import Posterior
from engine.structured import block_shrink
from tests.engine.worlds import World, labelled_blocks

ATOL = 1e-9
LEVEL_CUTS = (-0.5, 0.5)

layouts = st.tuples(
    st.integers(0, 10_000),  # seed
    st.integers(0, 3),  # criteria
    st.integers(2, 6),  # groups
    st.integers(1, 3),  # contexts
)


def labelled(layout, n_labels: int = 15):
    """A campaign after some labels, with its groups (`labelled_blocks`)."""
    return labelled_blocks(layout, n_labels)


def pending_tasks(world: World, group: torch.Tensor, count: int) -> Pending:
    """`count` pending tasks: pairs within groups and ratings, each with a rater's noise."""
    events = world.events(group, count, lapses=False)
    tasks = zip(
        events.first.tolist(), events.second.tolist(), events.noise_var.tolist(), strict=True
    )
    return Pending.of(list(tasks), torch.zeros(()))


@given(layouts, st.integers(0, 6))
def test_block_shrink_equals_the_dense_believer_shrink(layout, n_pending):
    """Every group's block and every clip's variance under the pending tasks' believer shrink
    equal the dense `believer_shrink`'s `S - C diag(k) C'`."""
    posterior, group, world = labelled(layout)
    pending = pending_tasks(world, group, n_pending)
    pair_cuts = outcome_cuts(0.3, torch.zeros(()))
    levels = level_cuts(LEVEL_CUTS, torch.zeros(()))
    dense = posterior.to_dense()
    shrink = believer_shrink(dense, pending, pair_cuts, levels)
    expected = dense.item_cov - (shrink.columns * shrink.factor) @ shrink.columns.T
    blocks = block_shrink(posterior, pending, pair_cuts, levels)
    assert (blocks is None) == (n_pending == 0)
    marginals = posterior.group_marginals(shrink=blocks)
    for g in range(posterior.n_groups):
        members = marginals.members[g][marginals.members[g] >= 0]
        size = members.numel()
        torch.testing.assert_close(
            marginals.cov[g, :size, :size], expected[members][:, members], atol=ATOL, rtol=0
        )
    _, var = posterior.item_moments(blocks)
    torch.testing.assert_close(var, torch.diagonal(expected).clamp_min(0), atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [2, 4, 16, block_selection.PAIR_MAP_UP_TO + 3])
def test_the_pair_terms_equal_the_elementwise_sums_and_differences(dtype, size):
    """`_pair_terms` and `_pair_spread` (by the pair maps up to PAIR_MAP_UP_TO slots, by
    gathers past it) are bit for bit the elementwise `x_a - x_b`, `x_a + x_b` and
    `B_aa + B_bb - 2 B_ab` over the slot pairs a < b, across magnitudes from 1e-30 to 1e30
    and with zeros (padding slots)."""
    generator = torch.Generator().manual_seed(size)
    scale = 10.0 ** torch.randint(-30, 31, (64, size), generator=generator).to(dtype)
    x = torch.randn(64, size, generator=generator, dtype=dtype) * scale
    x[::5, -1] = 0.0
    first, second, flat = _slot_pairs(size, torch.device("cpu"))
    assert torch.equal(_pair_terms(x, -1.0), x[:, first] - x[:, second])
    assert torch.equal(_pair_terms(x, 1.0), x[:, first] + x[:, second])
    block = torch.randn(64, size, size, generator=generator, dtype=dtype)
    diagonal = torch.diagonal(block, dim1=1, dim2=2)
    expected = (diagonal[:, first] + diagonal[:, second]) - 2.0 * block[:, first, second]
    assert torch.equal(_pair_spread(block, flat), expected)


@pytest.mark.parametrize("noise_var", [0.3, 1.0, 3.0])
def test_a_groups_bound_spares_every_pair_that_reaches_the_floor(noise_var):
    """`_reaching_rows` keeps every row holding an eligible pair that scores at or above the
    floor, and at a high floor it spares most rows (the bound is not vacuous)."""
    generator = torch.Generator().manual_seed(3)
    mu = 2.0 * torch.randn(4000, 28, generator=generator)
    var = torch.rand(4000, 28, generator=generator) * 3.0
    eligible = torch.rand(4000, 28, generator=generator) > 0.2
    score = (screening_score(mu, var, noise_var) + SCORE_OFFSET) * eligible
    floor = float(torch.quantile(score.amax(-1), 0.97))
    live = _reaching_rows(mu, var, eligible, noise_var, BALD_SCREEN, floor)
    assert live is not None and live.numel() < 2000
    needed = torch.nonzero(score.amax(-1) >= floor).flatten()
    assert set(needed.tolist()) <= set(live.tolist())


@given(layouts, st.floats(0.0, 0.999))
def test_scores_under_a_floor_are_the_full_scores_on_every_reaching_group(layout, quantile):
    """With a floor, `_score_groups` gives every group holding a score at or above it its
    full scores, and only zeros to the groups it spared."""
    posterior, _, _ = labelled(layout)
    full, members = _score_groups(posterior, slice(None), None, 0.7, None, None)
    floor = float(torch.quantile(full.amax(-1), quantile))
    original = block_selection.PRUNE_FROM
    block_selection.PRUNE_FROM = 0
    try:
        floored, same = _score_groups(posterior, slice(None), None, 0.7, None, None, floor=floor)
    finally:
        block_selection.PRUNE_FROM = original
    assert torch.equal(members, same)
    reaching = full.amax(-1) >= floor
    assert torch.equal(floored[reaching], full[reaching])
    spared = (floored == 0).all(-1)
    assert bool((spared | (floored == full).all(-1)).all())


@given(layouts)
def test_the_screen_keeps_every_eligible_pair_by_its_screening_score(layout):
    """Kept wide, the screen lists every same-group pair of allowed clips that is not
    forbidden, in the order of the dense screening score."""
    posterior, group, _ = labelled(layout)
    first, second = scope_pairs(group)
    allowed = torch.ones(posterior.n_items, dtype=torch.bool)
    allowed[0] = False
    forbidden_pairs = torch.stack((first[1::3], second[1::3]), 1)
    kept_first, kept_second = screen_block_pairs(
        posterior,
        None,
        0.7,
        allowed=allowed,
        forbidden=pair_positions(posterior, forbidden_pairs),
        n_keep=10_000,
    )
    eligible = (first != 0) & (second != 0)
    eligible[1::3] = False
    assert sorted(zip(kept_first.tolist(), kept_second.tolist(), strict=True)) == sorted(
        zip(first[eligible].tolist(), second[eligible].tolist(), strict=True)
    )
    mu, var = posterior.pair_moments(kept_first, kept_second)
    score = screening_score(mu, var, 0.7)
    assert bool((score[:-1] >= score[1:] - 1e-12).all())


@given(
    layouts,
    st.integers(0, 5),
    st.integers(1, 4),
    st.sampled_from([0.0, 0.3]),
    st.sampled_from([1.0, 0.8]),
    st.sampled_from([0.0, 0.5]),
)
def test_block_pairs_are_the_dense_selection(layout, n_pending, count, margin, keep, share):
    """With every pair kept by the screen, a batch of `count` pairs (pending tasks, an excluded
    clip, judged pairs, ties, a lapsing rater, a gain aimed partly at the weights) is the dense
    `select_pair_batch`'s: the same pairs, gains and outcome probabilities."""
    posterior, group, world = labelled(layout)
    pending = pending_tasks(world, group, n_pending)
    pair_cuts = outcome_cuts(margin, torch.zeros(()))
    levels = level_cuts(LEVEL_CUTS, torch.zeros(()))
    first, second = scope_pairs(group)
    judged = torch.stack((second[::4], first[::4]), 1)  # either order
    excluded = torch.tensor([int(group.numel()) - 1])
    options = SelectionOptions(n_refine=10_000, weight_share=share)
    arguments = {
        "noise_var": 0.6,
        "pair_cuts": pair_cuts,
        "keep": keep,
        "count": count,
        "excluded_items": excluded,
        "judged_pairs": judged,
        "pending": pending,
        "level_cuts": levels,
        "options": options,
    }
    request = PairRequest(**{k: v for k, v in arguments.items() if k != "pending"})
    try:
        expected, _ = select_pair_batch(
            posterior.to_dense(), candidates=(first, second), **arguments
        )
    except NoEligibleTaskError:
        with pytest.raises(NoEligibleTaskError):
            select_block_pairs(posterior, request, pending=pending)
        return
    chosen = select_block_pairs(posterior, request, pending=pending)
    assert len(chosen) == len(expected)
    for mine, theirs in zip(chosen, expected, strict=True):
        assert mine.gain == pytest.approx(theirs.gain, abs=ATOL)
        if (mine.first, mine.second) != (theirs.first, theirs.second):
            break  # an exact tie (clips no label has told apart): the batch may go either way
        assert mine.probabilities == pytest.approx(theirs.probabilities, abs=ATOL)


@given(layouts, st.integers(0, 5), st.sampled_from([1.0, 0.8]))
def test_block_rating_is_the_dense_rating_choice(layout, n_pending, keep):
    posterior, group, world = labelled(layout)
    pending = pending_tasks(world, group, n_pending)
    pair_cuts = outcome_cuts(0.3, torch.zeros(()))
    levels = level_cuts(LEVEL_CUTS, torch.zeros(()))
    arguments = {
        "noise_var": 0.6,
        "level_cuts": levels,
        "pair_cuts": pair_cuts,
        "keep": keep,
        "excluded_items": torch.tensor([0, 2]),
        "pending": pending,
        "options": SelectionOptions(n_refine=10_000),
    }
    expected = select_rating(posterior.to_dense(), **arguments)
    chosen = select_block_rating(posterior, **arguments)
    assert chosen.item == expected.item
    assert chosen.gain == pytest.approx(expected.gain, abs=ATOL)
    assert chosen.probabilities == pytest.approx(expected.probabilities, abs=ATOL)


def test_nothing_left_is_a_clear_error_and_pending_pairs_come_last():
    posterior, group, _ = labelled((4, 2, 2, 1), n_labels=5)
    first, second = scope_pairs(group)
    pair_cuts = outcome_cuts(0.0, torch.zeros(()))
    everything = torch.stack((first, second), 1)
    with pytest.raises(NoEligibleTaskError, match="no eligible pair"):
        select_block_pairs(posterior, PairRequest(1.0, pair_cuts, judged_pairs=everything))
    # every pair but one judged, that one pending: it is offered again rather than nothing
    last = (int(first[0]), int(second[0]))
    pending = Pending.of([(*last, 1.0)], torch.zeros(()))
    request = PairRequest(1.0, pair_cuts, judged_pairs=everything[1:])
    (choice,) = select_block_pairs(posterior, request, pending=pending)
    assert (choice.first, choice.second) == last
    assert math.isfinite(choice.gain)


def kept_then_labelled(layout, n_pending: int, n_labels: int, refreshed: int = 0):
    """A campaign after labels, a screen kept before `n_labels` more (their groups dirty),
    then pending tasks: the posterior, groups, the kept screen and the pending shrink. With
    `refreshed`, that many labels land between the build and a `refresh` first (their groups
    kept clean at a moved border)."""
    posterior, group, world = labelled(layout)
    kept = GroupScreen(posterior, 0.7)
    if refreshed:
        events = world.events(group, refreshed, lapses=False)
        posterior.observe(events)
        kept.dirty.update(posterior.group[events.first].tolist())
        kept.refresh(posterior)
        assert not kept.dirty and kept.refreshed.numel()
    events = world.events(group, n_labels, lapses=False)
    posterior.observe(events)
    kept.dirty.update(posterior.group[events.first].tolist())
    shrink = block_shrink(
        posterior,
        pending_tasks(world, group, n_pending),
        outcome_cuts(0.3, torch.zeros(())),
        level_cuts(LEVEL_CUTS, torch.zeros(())),
    )
    return posterior, group, kept, shrink


def shrunk_scores(posterior, shrink, first, second, noise_var=0.7):
    """Screening scores of pairs (one group each) under the pending shrink, from the blocks."""
    marginals = posterior.group_marginals(shrink=shrink)
    g, a, b = posterior.group[first], posterior.slot[first], posterior.slot[second]
    cov = marginals.cov
    var = (cov[g, a, a] + cov[g, b, b] - 2 * cov[g, a, b]).clamp_min(0)
    mu = marginals.mean[g, a] - marginals.mean[g, b]
    return screening_score(mu, var, noise_var) + SCORE_OFFSET


@given(layouts, st.integers(1, 6), st.sampled_from([0, 8]))
def test_a_kept_screen_bounds_every_clean_groups_scores(layout, n_pending, refreshed):
    """After labels elsewhere and under pending tasks, no pair of a group that took no label
    since the screen was kept or last refreshed scores above the group's kept best plus its
    slack."""
    posterior, group, kept, shrink = kept_then_labelled(layout, n_pending, 12, refreshed)
    slack = kept.slack(posterior)
    first, second = scope_pairs(group)
    score = shrunk_scores(posterior, shrink, first, second)
    g = posterior.group[first]
    clean = ~torch.isin(g, torch.tensor(sorted(kept.dirty | set(shrink.groups.tolist()))))
    assert bool((score[clean] <= kept.best[g[clean]] + slack[g[clean]] + 1e-12).all())


@given(layouts, st.sampled_from([0, 8]))
def test_a_screen_rebuilt_from_a_stale_one_equals_one_built_afresh(layout, refreshed):
    """A rebuild keeps the stale screen's radii for its clean groups and measures the dirty
    groups' afresh: the same best and radii as a screen built from nothing, while the labelled
    groups' radii did move (the kept ones would be wrong for them)."""
    posterior, _, kept, _ = kept_then_labelled(layout, 0, 12, refreshed)
    dirty = torch.tensor(sorted(kept.dirty), dtype=torch.long)
    rebuilt = GroupScreen(posterior, 0.7, previous=kept)
    afresh = GroupScreen(posterior, 0.7)
    torch.testing.assert_close(rebuilt.best, afresh.best, rtol=0, atol=0)
    torch.testing.assert_close(rebuilt.radius2, afresh.radius2, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(rebuilt.order, afresh.order, rtol=0, atol=0)
    if posterior.n_criteria:  # with no criteria no clip loads on the border: every radius 0
        assert bool((kept.radius2[dirty] != afresh.radius2[dirty]).any())


@given(layouts)
def test_a_refreshed_group_stays_bounded_when_the_border_moves_back(layout):
    """A group refreshed at a moved border keeps that move's slack: with the border set back
    to the one the screen was kept at (so the usual slack is ~0), its scores still stay
    under its kept best (triangle inequality, `GroupScreen.refresh`)."""
    posterior, group, world = labelled(layout)
    kept = GroupScreen(posterior, 0.7)
    events = world.events(group, 12, lapses=False)
    posterior.observe(events)
    kept.dirty.update(posterior.group[events.first].tolist())
    kept.refresh(posterior)
    posterior._set_border(
        Posterior(
            kept.weight_mean.clone(),
            kept.weight_cov.clone(),
            0,
            posterior.n_criteria,
            posterior.n_contexts,
            posterior.extra,
        )
    )
    first, second = scope_pairs(group)
    score = shrunk_scores(posterior, None, first, second)
    g = posterior.group[first]
    assert bool((score <= kept.best[g] + kept.slack(posterior)[g] + 1e-12).all())


@given(layouts)
def test_reaching_lists_every_group_whose_bound_passes(layout):
    """`reaching` reads a prefix of the order kept at the build: it still lists every group
    whose bound (kept best plus slack) passes a threshold after refreshes moved some bests."""
    posterior, _, kept, _ = kept_then_labelled(layout, 0, 6, refreshed=12)
    bounds = kept.best + kept.slack(posterior)
    for threshold in (bounds - 1e-6).tolist():
        listed = set(kept.reaching(posterior, threshold).tolist())
        assert set(torch.nonzero(bounds > threshold).flatten().tolist()) <= listed


@given(layouts, st.integers(0, 5), st.sampled_from([0, 8]))
def test_a_kept_screen_keeps_what_a_full_screen_keeps(layout, n_pending, refreshed):
    """Screening from a kept screen (after labels, some refreshed, under pending tasks, with an
    excluded clip and judged pairs) keeps the same candidates as scoring every group."""
    posterior, group, kept, shrink = kept_then_labelled(layout, n_pending, 6, refreshed)
    first, second = scope_pairs(group)
    allowed = torch.ones(posterior.n_items, dtype=torch.bool)
    allowed[1] = False
    common = {
        "allowed": allowed,
        "forbidden": pair_positions(posterior, torch.stack((first[::5], second[::5]), 1)),
        "n_keep": 4,
    }
    full = screen_block_pairs(posterior, shrink, 0.7, **common)
    narrowed = screen_block_pairs(posterior, shrink, 0.7, kept=kept, **common)
    # the same scores (pairs may differ only where scores tie to the screen's float32
    # rounding: clips no label split, or nearly)
    torch.testing.assert_close(
        shrunk_scores(posterior, shrink, *narrowed),
        shrunk_scores(posterior, shrink, *full),
        atol=SCREEN_ROUNDING,
        rtol=0,
    )
    if bool((shrunk_scores(posterior, shrink, *full).diff().abs() > SCREEN_ROUNDING).all()):
        assert sorted(zip(*(t.tolist() for t in narrowed), strict=True)) == sorted(
            zip(*(t.tolist() for t in full), strict=True)
        )
    # within a tolerance: the best kept is at most that far below the full screen's best
    for tolerance in (0.0, 0.01, 0.2):
        loose = screen_block_pairs(posterior, shrink, 0.7, kept=kept, tolerance=tolerance, **common)
        best_full = float(shrunk_scores(posterior, shrink, *full).max())
        assert (
            best_full <= float(shrunk_scores(posterior, shrink, *loose).max()) + tolerance + 1e-12
        )
