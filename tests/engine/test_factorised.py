"""Pairs across prompt groups in block form (`GroupedPosterior.across_groups`, the factorised
form): the exact ADF step projected back onto "groups independent given the weights"
(docs/MATH.md §6, pairs across groups), checked against the dense posterior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Campaign, CampaignConfig, Judgment
from engine.likelihoods import level_cuts, outcome_cuts
from engine.neighbours import neighbour_pairs, select_neighbour_pairs
from engine.selection import (
    NoEligibleTaskError,
    PairRequest,
    Pending,
    SelectionOptions,
    believer_shrink,
    select_pair_batch,
)
from engine.structured import GroupedPosterior, block_shrink, grouped_prior
from engine.update import interval_events, update_with_evidence
from tests.engine.worlds import PAIR_INTERVALS, World

ATOL = 1e-9

layouts = st.tuples(
    st.integers(0, 10_000),  # seed
    st.integers(0, 3),  # criteria
    st.integers(2, 5),  # groups
    st.integers(1, 3),  # contexts
)


def factorised(layout, n_labels: int = 12):
    """A block-form campaign that takes pairs across groups, after some labels."""
    seed, n_criteria, n_groups, n_contexts = layout
    world = World(seed, n_criteria, n_groups, n_contexts)
    scores, _, _ = world.clips(3 * n_groups, n_groups)
    group = torch.arange(3 * n_groups) % n_groups  # every group has clips
    context = world.group_context[group]
    posterior = grouped_prior(scores, context, group, n_contexts, world.prior)
    posterior.across_groups = True
    posterior.observe(world.events(group, n_labels, lapses=False))
    return posterior, group, world


def across_events(world: World, group: torch.Tensor, count: int):
    """`count` pairs of clips in two different groups (win, loss or tie), each rater's noise."""
    first, second, intervals = [], [], []
    while len(first) < count:
        i, j = world.randint(group.numel(), 2).tolist()
        if group[i] != group[j]:
            first.append(i)
            second.append(j)
            intervals.append(PAIR_INTERVALS[int(world.randint(3, 1))])
    noise = (0.3 + torch.rand(count, generator=world.generator)).tolist()
    return interval_events(first, second, intervals, noise, torch.zeros(()))


def marginal_positions(posterior: GroupedPosterior, g: int, shared: bool) -> torch.Tensor:
    """theta positions (dense layout) of group g's clips and its weight blocks (all of w when
    `shared`)."""
    clips = torch.nonzero(posterior.group == g).flatten()
    n = posterior.n_items
    if shared:
        weights = torch.arange(posterior.n_weights)
    else:
        weights = posterior.local_index(posterior.group_context[g])[: 2 * posterior.n_criteria]
    return torch.cat((clips, n + weights.unique()))


@settings(deadline=None)
@given(layouts)
def test_a_pair_across_groups_keeps_each_groups_marginal_exact(layout):
    """One label across groups: the border, and each group's clips jointly with its own weight
    blocks (with all of w when both groups share a context), equal the exact dense ADF step;
    only the coupling of the two groups given w differs, and the dense step has some."""
    posterior, group, world = factorised(layout)
    events = across_events(world, group, 1)
    dense = update_with_evidence(posterior.to_dense(), events).posterior
    posterior.observe(events)
    ours = posterior.to_dense()
    i, j = int(events.first[0]), int(events.second[0])
    g, h = int(posterior.group[i]), int(posterior.group[j])
    shared = int(posterior.group_context[g]) == int(posterior.group_context[h])
    for each in (g, h):
        index = marginal_positions(posterior, each, shared)
        torch.testing.assert_close(ours.mean[index], dense.mean[index], atol=ATOL, rtol=0)
        torch.testing.assert_close(
            ours.cov[index][:, index], dense.cov[index][:, index], atol=ATOL, rtol=0
        )
    n = posterior.n_items
    torch.testing.assert_close(ours.cov[n:, n:], dense.cov[n:, n:], atol=ATOL, rtol=0)
    # the dropped coupling: Cov(f_i, f_j) differs by the dense step's conditional term
    assert abs(float(ours.cov[i, j] - dense.cov[i, j])) > 1e-6


@settings(deadline=None)
@given(layouts, st.integers(1, 6))
def test_read_outs_and_joint_moments_are_the_kept_gaussians(layout, n_across):
    """After labels within and across groups, the block read-outs (pair moments across and
    within groups, joint moments of mixed directions, the scalar marginal) are those of the
    Gaussian the form keeps (its `to_dense`), and the believer shrink of pending pairs across
    groups is the dense shrink on each group's block."""
    posterior, group, world = factorised(layout)
    posterior.observe(across_events(world, group, n_across))
    dense = posterior.to_dense()
    events = across_events(world, group, 3)
    within = world.events(group, 3, lapses=False)
    first = torch.cat((events.first, within.first))
    second = torch.cat((events.second, within.second))
    n = posterior.n_items
    a = torch.zeros(first.shape[0], n + posterior.n_weights, dtype=dense.mean.dtype)
    rows = torch.arange(first.shape[0])
    a[rows, first] = 1.0
    pair = second >= 0
    a[rows[pair], second[pair]] -= 1.0
    mean, cov, _ = posterior.joint_moments(first, second)
    torch.testing.assert_close(mean, a @ dense.mean, atol=ATOL, rtol=0)
    torch.testing.assert_close(cov, a @ dense.cov @ a.T, atol=ATOL, rtol=0)
    mu, var = posterior.pair_moments(first, second)
    torch.testing.assert_close(mu, mean, atol=ATOL, rtol=0)
    torch.testing.assert_close(var, torch.diagonal(cov), atol=ATOL, rtol=0)
    assert posterior.marginal(int(first[0]), int(second[0])) == pytest.approx(
        (float(mean[0]), float(cov[0, 0])), abs=ATOL
    )

    tasks = zip(first.tolist(), second.tolist(), [1.0] * first.shape[0], strict=True)
    pending = Pending.of(list(tasks), torch.zeros(()))
    pair_cuts = outcome_cuts(0.3, torch.zeros(()))
    levels = level_cuts((-0.5, 0.5), torch.zeros(()))
    shrink = believer_shrink(dense, pending, pair_cuts, levels)
    expected = dense.item_cov - (shrink.columns * shrink.factor) @ shrink.columns.T
    blocks = block_shrink(posterior, pending, pair_cuts, levels)
    marginals = posterior.group_marginals(shrink=blocks)
    for g in range(posterior.n_groups):
        members = marginals.members[g][marginals.members[g] >= 0]
        size = members.numel()
        torch.testing.assert_close(
            marginals.cov[g, :size, :size], expected[members][:, members], atol=ATOL, rtol=0
        )


def test_an_exact_form_still_refuses_pairs_across_groups():
    posterior, group, world = factorised((3, 2, 3, 2))
    posterior.across_groups = False
    events = across_events(world, group, 1)
    before = posterior.to_dense()
    with pytest.raises(ValueError, match="different groups"):
        posterior.observe(events)
    torch.testing.assert_close(posterior.to_dense().cov, before.cov)


def test_clips_alone_given_the_weights_learn_an_order():
    """Each clip its own group (TrueSkill's factorisation, with shared weights): labels across
    groups move the means the right way and shrink the variances, with no NaN."""
    world = World(5, 2, 40, 1)
    scores, _, _ = world.clips(40, 1)
    group = torch.arange(40)
    posterior = grouped_prior(scores, torch.zeros(40, dtype=torch.long), group, 1, world.prior)
    posterior.across_groups = True
    truth = torch.randn(40, generator=world.generator, dtype=torch.float64) * 2
    first, second, intervals = [], [], []
    for _ in range(600):
        i, j = world.randint(40, 2).tolist()
        if i == j:
            continue
        first.append(i)
        second.append(j)
        win = float(truth[i] - truth[j]) + float(world.randn(1)) > 0
        intervals.append((0.0, math.inf) if win else (-math.inf, 0.0))
    events = interval_events(first, second, intervals, 1.0, torch.zeros((), dtype=torch.float64))
    _, before = posterior.item_moments()
    posterior.observe(events)
    mean, var = posterior.item_moments()
    assert bool(torch.isfinite(mean).all()) and bool((var < before).all())
    order = torch.corrcoef(torch.stack((mean, truth)))[0, 1]
    assert float(order) > 0.9


@settings(deadline=None, max_examples=30)
@given(layouts, st.integers(0, 4), st.integers(1, 3))
def test_neighbours_of_every_rank_are_the_dense_selection(layout, n_pending, count):
    """With labels only inside groups (where the kept Gaussian is the exact one) and a window
    wide enough to hold every pair, the neighbour selection is the dense any-scope
    `select_pair_batch`: the same gains, and the same pairs up to exact ties."""
    posterior, group, world = factorised(layout)
    n = posterior.n_items
    events = world.events(group, n_pending, lapses=False)
    tasks = zip(events.first.tolist(), events.second.tolist(), [0.6] * n_pending, strict=True)
    pending = Pending.of(list(tasks), torch.zeros(()))
    first, second = torch.triu_indices(n, n, 1)
    arguments = {
        "noise_var": 0.6,
        "pair_cuts": outcome_cuts(0.3, torch.zeros(())),
        "count": count,
        "excluded_items": torch.tensor([n - 1]),
        "judged_pairs": torch.stack((second[::5], first[::5]), 1),
        "pending": pending,
        "level_cuts": level_cuts((-0.5, 0.5), torch.zeros(())),
        "options": SelectionOptions(n_refine=10_000),
    }
    expected, _ = select_pair_batch(posterior.to_dense(), candidates=(first, second), **arguments)
    request = PairRequest(**{k: v for k, v in arguments.items() if k != "pending"})
    chosen = select_neighbour_pairs(posterior, request, pending=pending, neighbours=n)
    assert len(chosen) == len(expected)
    for mine, theirs in zip(chosen, expected, strict=True):
        assert mine.gain == pytest.approx(theirs.gain, abs=ATOL)
        if (mine.first, mine.second) != (theirs.first, theirs.second):
            break  # an exact tie: the batch may go either way


def test_candidates_are_neighbours_in_mean_order():
    order = torch.tensor([4, 0, 3, 1, 2])
    first, second = neighbour_pairs(order, range(1, 3))
    assert list(zip(first.tolist(), second.tolist(), strict=True)) == [
        (4, 0),
        (0, 3),
        (3, 1),
        (1, 2),
        (4, 3),
        (0, 1),
        (3, 2),
    ]
    assert neighbour_pairs(order, range(5, 7))[0].numel() == 0


def factorised_campaign(n: int, **changes: object) -> tuple[Campaign, np.ndarray]:
    rng = np.random.default_rng(3)
    settings: dict[str, object] = {
        "criteria": ("a", "b"),
        "structure": "factorised",
        "tie_margin": 0.3,
        "emoji_thresholds": (-1.0, 0.0, 1.0),
    }
    settings.update(changes)
    campaign = Campaign(CampaignConfig(**settings), device="cpu")  # type: ignore[arg-type]
    truth = rng.normal(size=n) * 1.5
    scores = (truth[:, None] * 0.4 + rng.normal(size=(n, 2))).round(3).tolist()
    groups = [f"p{i // 3}" for i in range(n)]
    campaign.add_clips(scores, contexts=[f"c{i // 3 % 2}" for i in range(n)], groups=groups)
    return campaign, truth


def test_a_factorised_campaign_pairs_across_prompts_and_replays():
    """pair_scope="any" in the factorised form: pairs across prompts are asked and applied,
    a refit and an EP refine run on it, and a replay gives the same posterior bit for bit."""
    campaign, truth = factorised_campaign(30)
    rng = np.random.default_rng(4)
    across = 0
    for step in range(40):
        tasks = campaign.next_tasks(f"r{step % 3}", count=2)
        labels = []
        for task in tasks:
            if task.is_pair:
                across += campaign.groups[task.first] != campaign.groups[task.second]
                z = truth[task.first] - truth[task.second] + rng.normal()
                outcome = "tie" if abs(z) < 0.3 else ("win" if z > 0 else "loss")
                labels.append(Judgment.pair(task.rater, task.first, task.second, outcome))
            else:
                level = int(np.searchsorted([-1.0, 0.0, 1.0], truth[task.first] + rng.normal()))
                labels.append(Judgment.rating(task.rater, task.first, level))
        campaign.observe(labels, [t.id for t in tasks])
        if step == 20:
            campaign.fit_prior(max_evaluations=20)
    assert across > 10
    campaign.refine()
    again = campaign.replay()
    assert torch.equal(again.posterior.mean, campaign.posterior.mean)
    assert torch.equal(again.posterior.cov, campaign.posterior.cov)
    board = campaign.leaderboard()
    assert float(np.corrcoef(board.mean.numpy(), truth)[0, 1]) > 0.7


def test_a_factorised_campaign_says_when_nothing_is_left():
    """The window widens until every pair is judged, then a clear error."""
    campaign, _ = factorised_campaign(6, tie_margin=0.0, emoji_thresholds=None)
    for _ in range(15):
        (task,) = campaign.next_pairs("r")
        campaign.observe([Judgment.pair("r", task.first, task.second, "win")], [task.id])
    with pytest.raises(NoEligibleTaskError):
        campaign.next_pairs("r")
    assert len({j.question.key for j in campaign.log}) == 15
