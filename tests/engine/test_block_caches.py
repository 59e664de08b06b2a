"""What the block form keeps between calls is dropped exactly when its inputs change: the host
copy of the layout (per-label ints), the kept screen's drift rates (per posterior version) and
the pending tasks' joint kept with their shrink (per pick)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.block_selection import GroupScreen, choose_block_pairs
from engine.forms import BlockForm
from engine.likelihoods import outcome_cuts
from engine.selection import PairRequest, Pending
from engine.structured import block_shrink
from engine.update import interval_events
from tests.engine.worlds import labelled_blocks

layouts = st.tuples(
    st.integers(0, 10_000),  # seed
    st.integers(1, 3),  # criteria
    st.integers(2, 5),  # groups
    st.integers(1, 3),  # contexts
)
WIN = (0.0, math.inf)


def labelled(layout, n_labels: int = 12):
    """A campaign after some labels, with its groups (`labelled_blocks`)."""
    return labelled_blocks(layout, n_labels)


def a_win(first: int, second: int):
    return interval_events([first], [second], [WIN], 1.0, torch.zeros(()))


@settings(max_examples=20, deadline=None)
@given(layouts)
def test_the_host_layout_follows_clips_added_later(layout):
    """Clips added to a new group after labels (the layout tensors replaced): the host copy
    reads their groups, so a pair inside the new group is applied and one across groups is
    refused; a copy keeps reading its own layout."""
    posterior, group, world = labelled(layout)
    twin = posterior.copy()
    new_group = posterior.n_groups
    context = world.group_context[:1]
    scores = world.randn(2, world.n_criteria)
    added = posterior.add_items(
        scores, context.expand(2), torch.tensor([new_group, new_group]), world.prior
    )
    first, second = added.start, added.start + 1
    assert posterior.groups_of([first, second, 0]) == [new_group, new_group, int(group[0])]
    version = posterior.version
    posterior.observe(a_win(first, second))
    assert posterior.version > version
    dense = posterior.to_dense()
    assert float(dense.item_mean[first] - dense.item_mean[second]) > 0.0
    with pytest.raises(ValueError, match="different groups"):
        posterior.observe(a_win(first, 0))
    with pytest.raises(IndexError):
        twin.observe(a_win(first, second))  # the twin has no such clips
    assert twin.n_items == group.numel()


@settings(max_examples=20, deadline=None)
@given(layouts)
def test_the_kept_screen_rates_follow_each_label(layout):
    """The kept screen's rates and typical slack are those of the drift now, after every
    label, not those of the version they were first read at."""
    posterior, group, world = labelled(layout)
    screen = GroupScreen(posterior, 1.0)
    for _ in range(3):
        posterior.observe(world.events(group, 1, lapses=False))
        for _ in range(2):  # read twice per version: the second read is the kept one
            by_mean, by_cov = screen._drift(posterior)
            rates = screen.rates(posterior)
            assert rates == pytest.approx((float(by_cov.max()), float(by_mean.max())), abs=0)
            typical = by_mean * math.sqrt(screen.typical_radius2)
            typical = typical + by_cov * screen.typical_radius2
            assert screen.typical_slack(posterior) == pytest.approx(float(typical.max()), abs=0)


@settings(max_examples=20, deadline=None)
@given(layouts)
def test_the_kept_shrink_and_its_joint_follow_each_label(layout):
    """The form's kept shrink is rebuilt after a label: its pending joint has the moments of a
    joint made afresh, and a pick read through it equals the one from a shrink made afresh."""
    posterior, group, world = labelled(layout)
    form = BlockForm(posterior)
    cuts = outcome_cuts(0.1, posterior.offset)
    members = [torch.nonzero(group == g).flatten().tolist() for g in range(posterior.n_groups)]
    pairs = [m[:2] for m in members if len(m) > 1]
    if not pairs:
        return
    pending = [(task, first, second, 1.0) for task, (first, second) in enumerate(pairs[:3])]
    held = Pending.of([task[1:] for task in pending], posterior.offset)
    request = PairRequest(noise_var=1.0, pair_cuts=cuts)
    candidates = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    for _ in range(3):
        kept = form._shrink(pending, cuts, None)
        assert form._shrink(pending, cuts, None) is kept  # one version: kept
        posterior.observe(world.events(group, 1, lapses=False))
        shrink = form._shrink(pending, cuts, None)
        assert shrink is not kept
        fresh = posterior.joint(held.first, held.second)
        torch.testing.assert_close(shrink.joint.mean, fresh.mean, atol=0, rtol=0)
        torch.testing.assert_close(shrink.joint.var, fresh.var, atol=0, rtol=0)
        from_kept = choose_block_pairs(posterior, *candidates, request, pending=held, shrink=shrink)
        rebuilt = block_shrink(posterior, held, cuts, None)
        from_fresh = choose_block_pairs(
            posterior, *candidates, request, pending=held, shrink=rebuilt
        )
        assert from_kept == from_fresh
