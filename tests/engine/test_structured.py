"""The block-form posterior against the dense one it must equal (docs/MATH.md §6).

The reference is independent of engine.structured: `engine.state`'s dense prior, `engine.update`
and `engine.ep` on the full covariance, the form the rest of the engine was checked in.
"""

from __future__ import annotations

import math
from unittest.mock import patch

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine.ep import ep_refine
from engine.forms import TAU_CHUNK_ELEMENTS, TAU_GROUP_ELEMENTS, BlockForm
from engine.scope import scope_pairs
from engine.state import Posterior, add_contexts, add_items
from engine.structured import (
    GroupedPosterior,
    grouped_prior,
    refine_grouped,
)
from engine.summaries import expected_kendall_tau, expected_tau_of_pairs, sampled_kendall_tau
from engine.update import interval_events, update_with_evidence
from tests.engine.worlds import World, dense_prior

ATOL = 1e-9


def assert_same(structured: GroupedPosterior, dense: Posterior, atol: float = ATOL) -> None:
    other = structured.to_dense()
    assert other.n_items == dense.n_items and other.n_contexts == dense.n_contexts
    torch.testing.assert_close(other.mean, dense.mean, atol=atol, rtol=0)
    torch.testing.assert_close(other.cov, dense.cov, atol=atol, rtol=0)


layouts = st.tuples(
    st.integers(0, 10_000),  # seed
    st.integers(0, 4),  # criteria
    st.integers(1, 6),  # groups
    st.integers(1, 3),  # contexts
)


@given(layouts, st.booleans())
def test_adf_equals_the_dense_posterior_with_clips_added_mid_campaign(layout, lapses):
    """Prior, ADF batches (pairs, ties, levels, per-label noise, lapses) and clips added between
    them in new and existing groups and a new context: the same mean and covariance as the
    dense posterior to 1e-9, the same log evidence and per-event model log Z."""
    seed, n_criteria, n_groups, n_contexts = layout
    world = World(seed, n_criteria, n_groups + 2, n_contexts + 1)
    world.n_contexts = n_contexts
    world.group_context[:n_groups] %= n_contexts
    world.group_context[n_groups:] = n_contexts  # the two groups of the context added later
    scores, context, group = world.clips(3 * n_groups + 2, n_groups)
    dense = dense_prior(world, scores, context)
    structured = grouped_prior(scores, context, group, n_contexts, world.prior)
    assert_same(structured, dense)
    all_groups = group
    for step in range(3):
        events = world.events(all_groups, 12, lapses=lapses)
        result = update_with_evidence(dense, events)
        log_evidence, model_log_z, sites = structured.observe(events)
        dense = result.posterior
        assert_same(structured, dense)
        assert log_evidence == pytest.approx(result.log_evidence, abs=1e-9)
        torch.testing.assert_close(model_log_z, result.model_log_z, atol=1e-9, rtol=0)
        torch.testing.assert_close(sites.precision, result.sites.precision, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(sites.shift, result.sites.shift, atol=1e-9, rtol=1e-9)
        if step == 0:  # a new context and a new group for it, and clips for old groups
            world.n_contexts += 1
            dense = add_contexts(dense, 1, world.prior)
            structured.add_contexts(1, world.prior)
        new_scores, new_context, new_group = world.clips(4, n_groups + 2)
        dense = add_items(dense, new_scores, new_context, world.prior)
        structured.add_items(new_scores, new_context, new_group, world.prior)
        all_groups = torch.cat((all_groups, new_group))
        assert_same(structured, dense)


@given(layouts)
def test_ep_equals_the_dense_ep(layout):
    """`refine_grouped` reaches the dense `ep_refine`'s posterior to 1e-9, in as many sweeps."""
    seed, n_criteria, n_groups, n_contexts = layout
    world = World(seed, n_criteria, n_groups, n_contexts)
    scores, context, group = world.clips(3 * n_groups + 1, n_groups)
    events = world.events(group, 25, lapses=False)
    prior = grouped_prior(scores, context, group, n_contexts, world.prior)
    before = prior.to_dense()
    reference = ep_refine(dense_prior(world, scores, context), events)
    refined, sites, sweeps, _ = refine_grouped(prior, events)
    assert_same(refined, reference.posterior)
    assert sweeps == reference.sweeps
    torch.testing.assert_close(sites.precision, reference.sites.precision, atol=1e-9, rtol=0)
    assert_same(prior, before, atol=0)  # the prior is left alone


@given(layouts)
def test_read_outs_equal_the_dense_marginals(layout):
    """Every clip's mean and variance, listed pairs' moments, ratings' moments and each group's
    block equal the dense posterior's after labels."""
    seed, n_criteria, n_groups, n_contexts = layout
    world = World(seed, n_criteria, n_groups, n_contexts)
    scores, context, group = world.clips(4 * n_groups, n_groups)
    structured = grouped_prior(scores, context, group, n_contexts, world.prior)
    structured.observe(world.events(group, 20, lapses=True))
    dense = structured.to_dense()
    mean, var = structured.item_moments()
    torch.testing.assert_close(mean, dense.item_mean, atol=ATOL, rtol=0)
    torch.testing.assert_close(var, torch.diagonal(dense.item_cov), atol=ATOL, rtol=0)

    marginals = structured.group_marginals()
    first, second = scope_pairs(group)
    cov = dense.item_cov
    expected = cov[first, first] + cov[second, second] - 2 * cov[first, second]
    where, a, b = structured.group[first], structured.slot[first], structured.slot[second]
    block = marginals.cov
    block_var = block[where, a, a] + block[where, b, b] - 2 * block[where, a, b]
    torch.testing.assert_close(block_var, expected, atol=ATOL, rtol=0)
    present = marginals.members >= 0
    torch.testing.assert_close(
        marginals.mean[present], dense.item_mean[marginals.members[present]], atol=ATOL, rtol=0
    )

    single = torch.arange(structured.n_items)
    listed_first = torch.cat((first, single))
    listed_second = torch.cat((second, torch.full_like(single, -1)))
    mu, pair_var = structured.pair_moments(listed_first, listed_second)
    torch.testing.assert_close(
        mu, torch.cat((dense.item_mean[first] - dense.item_mean[second], dense.item_mean))
    )
    torch.testing.assert_close(pair_var, torch.cat((expected, torch.diagonal(cov))))
    for k in torch.linspace(0, listed_first.numel() - 1, 6).long().tolist():
        i, j = int(listed_first[k]), int(listed_second[k])
        assert structured.marginal(i, j) == pytest.approx(
            (float(mu[k]), float(pair_var[k])), abs=ATOL
        )


@given(layouts)
def test_a_label_never_widens_its_own_direction(layout):
    """An interval event without lapses never grows `Var(a.theta)` (MATH.md §2)."""
    seed, n_criteria, n_groups, n_contexts = layout
    world = World(seed, n_criteria, n_groups, n_contexts)
    scores, context, group = world.clips(3 * n_groups + 1, n_groups)
    structured = grouped_prior(scores, context, group, n_contexts, world.prior)
    events = world.events(group, 15, lapses=False)
    for b in range(len(events)):
        i, j = int(events.first[b]), int(events.second[b])
        _, before = structured.marginal(i, j)
        structured.observe(
            interval_events(
                [i],
                [j],
                [(float(events.lo[b]), float(events.hi[b]))],
                float(events.noise_var[b]) ** 0.5,
                torch.zeros(()),
            )
        )
        assert structured.marginal(i, j)[1] <= before + 1e-12


def small_campaign() -> tuple[GroupedPosterior, World]:
    world = World(3, 2, 3, 2)
    scores = world.randn(6, 2)
    group = torch.tensor([0, 0, 1, 1, 2, 2])
    context = world.group_context[group]
    return grouped_prior(scores, context, group, 2, world.prior), world


def test_a_pair_across_groups_is_refused_and_nothing_is_applied():
    structured, _ = small_campaign()
    before = structured.to_dense()
    events = interval_events(
        [0, 0], [1, 2], [(0.0, math.inf), (0.0, math.inf)], 1.0, torch.zeros(())
    )
    with pytest.raises(ValueError, match="different groups"):
        structured.observe(events)
    assert_same(structured, before, atol=0)
    with pytest.raises(IndexError):
        structured.observe(interval_events([0], [9], [(0.0, math.inf)], 1.0, torch.zeros(())))


def test_a_group_keeps_one_context_and_bad_clips_add_nothing():
    structured, world = small_campaign()
    before = structured.to_dense()
    other = 1 - int(structured.group_context[0])
    with pytest.raises(ValueError, match="group's context"):
        structured.add_items(
            world.randn(1, 2), torch.tensor([other]), torch.tensor([0]), world.prior
        )
    with pytest.raises(ValueError, match="group's context"):  # two contexts in one new group
        structured.add_items(
            world.randn(2, 2), torch.tensor([0, 1]), torch.tensor([7, 7]), world.prior
        )
    with pytest.raises(ValueError, match="context"):
        structured.add_items(world.randn(1, 2), torch.tensor([5]), torch.tensor([3]), world.prior)
    with pytest.raises(ValueError, match="scores must be"):
        structured.add_items(world.randn(1, 3), torch.tensor([0]), torch.tensor([3]), world.prior)
    assert_same(structured, before, atol=0)
    assert structured.n_groups == 3


def test_groups_wider_than_the_padding_widen_it():
    """A group that grows past the padded width (clips added one at a time) keeps every
    clip's conditional: equal to the dense posterior."""
    world = World(5, 3, 2, 1)
    scores, context, group = world.clips(4, 2)
    dense = dense_prior(world, scores, context)
    structured = grouped_prior(scores, context, group, 1, world.prior)
    for _ in range(9):
        new = world.randn(1, 3)
        dense = add_items(dense, new, torch.tensor([0]), world.prior)
        structured.add_items(new, torch.tensor([0]), torch.tensor([0]), world.prior)
        events = world.events(
            torch.cat((group, torch.zeros(structured.n_items - 4).long())), 3, lapses=False
        )
        dense = update_with_evidence(dense, events).posterior
        structured.observe(events)
    assert_same(structured, dense)
    assert structured.members.shape[1] >= int(structured.group_size.max())


def test_named_blocks_cover_the_border():
    structured, world = small_campaign()
    structured.observe(world.events(structured.group, 8, lapses=False))
    blocks = structured.blocks()
    assert blocks.names == ("weights", "context:0", "context:1")
    assert blocks["context:1"].index == slice(4, 6) and blocks.size == structured.n_weights == 6
    with pytest.raises(KeyError, match="no block 'context:2'"):
        blocks["context:2"]
    # the same names address the same parameters in the dense form
    dense = structured.to_dense()
    assert dense.layout.names == ("quality", *blocks.names)
    for block in blocks:
        mean, cov = dense.block(block.name)
        torch.testing.assert_close(mean, structured.weight_mean[block.index], atol=ATOL, rtol=0)
        torch.testing.assert_close(
            cov, structured.weight_cov[block.index, block.index], atol=ATOL, rtol=0
        )
    mean, cov = dense.block("quality")
    assert mean.shape == (structured.n_items,) and cov.shape == (6, 6)


def test_float32_smoke():
    world = World(1, 3, 3, 2)
    scores, context, group = world.clips(9, 3)
    structured = grouped_prior(scores.float(), context, group, 2, world.prior, dtype=torch.float32)
    events = world.events(group, 10, lapses=False)
    events = interval_events(
        events.first.tolist(),
        events.second.tolist(),
        list(zip(events.lo.tolist(), events.hi.tolist(), strict=True)),
        events.noise_var.sqrt().tolist(),
        torch.zeros((), dtype=torch.float32),
    )
    structured.observe(events)
    mean, var = structured.item_moments()
    assert mean.dtype == torch.float32 and bool(torch.isfinite(var).all())
    assert bool((var > 0).all())


SAMPLE_DRAWS = 50_000


@pytest.mark.parametrize("n_criteria", [0, 2])
def test_draws_have_the_dense_moments(n_criteria):
    """`sample_items` draws from the same Gaussian as `to_dense` (mean and covariance within
    Monte Carlo error), groups of unequal size included."""
    world = World(3, n_criteria, 3, 2)
    scores, context, group = world.clips(10, 3)
    structured = grouped_prior(scores, context, group, 2, world.prior)
    structured.observe(world.events(group, 20, lapses=False))
    dense = structured.to_dense()
    draws = structured.sample_items(SAMPLE_DRAWS, torch.Generator().manual_seed(0))
    assert draws.shape == (SAMPLE_DRAWS, structured.n_items)
    sd = torch.diagonal(dense.item_cov).sqrt()
    assert torch.all((draws.mean(0) - dense.item_mean).abs() < 5 * sd / math.sqrt(SAMPLE_DRAWS))
    # covariance entries: Monte Carlo sd is at most sd_i sd_j sqrt(2 / N)
    bound = 5 * torch.outer(sd, sd) * math.sqrt(2 / SAMPLE_DRAWS)
    assert torch.all((torch.cov(draws.T) - dense.item_cov).abs() < bound)
    again = structured.sample_items(SAMPLE_DRAWS, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


@pytest.mark.parametrize("groups_per_clip", [2, 8])
def test_marginals_by_context_equal_those_gathered_per_group(groups_per_clip):
    """A slice of groups smaller than their local coordinates (M < L) takes one product per
    context over that context's groups; listed by index, a map per group: both give the
    same marginals, after new clips in new groups (a new layout) too."""
    world = World(5, 4, 40, 3)  # L = 8 local coordinates
    scores, context, group = world.clips(40 * groups_per_clip // 4, 40)
    structured = grouped_prior(scores, context, group, 3, world.prior)
    structured.observe(world.events(group, 30, lapses=True))

    def check() -> None:
        for part in (slice(None), slice(3, 17), slice(structured.n_groups - 5, None)):
            index = torch.arange(structured.n_groups)[part]
            # the two orders round differently: in single precision a near-cancelled entry
            # keeps only about 1e-7 of its terms' scale (1) exactly
            for dtype, atol in ((None, 1e-12), (torch.float32, 1e-6)):
                by_slice = structured.group_marginals(part, dtype=dtype)
                by_index = structured.group_marginals(index, dtype=dtype)
                torch.testing.assert_close(by_slice.cov, by_index.cov, atol=atol, rtol=1e-6)
                torch.testing.assert_close(by_slice.mean, by_index.mean, atol=atol, rtol=1e-6)

    check()
    more_scores, _, _ = world.clips(6, 3)
    new_groups = torch.tensor([40, 40, 41, 41, 42, 42])
    new_context = torch.tensor([0, 0, 2, 2, 1, 1])
    structured.add_items(more_scores, new_context, new_groups, world.prior)
    check()


def test_the_single_precision_copy_keeps_in_step():
    """Screens read `single()`: after steps, a copy's own steps, new clips and a local
    block it equals the state rounded to float32, and group marginals in float32 match."""

    def check(posterior: GroupedPosterior) -> None:
        load, offset, within = posterior.single()
        assert torch.equal(load, posterior.load.float())
        assert torch.equal(offset, posterior.offset.float())
        assert torch.equal(within, posterior.within.float())
        single = posterior.group_marginals(dtype=torch.float32)
        exact = posterior.group_marginals()
        torch.testing.assert_close(single.cov.double(), exact.cov, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(single.mean.double(), exact.mean, atol=1e-5, rtol=1e-5)

    structured, _ = small_campaign()
    structured.single()  # made before the steps: they must carry it along
    events = interval_events([0, 2, 5], [1, 3, 4], [(0.0, math.inf)] * 3, 1.0, torch.zeros(()))
    structured.observe(events)
    check(structured)
    twin = structured.copy()
    twin.observe(interval_events([1], [0], [(0.0, math.inf)], 1.0, torch.zeros(())))
    check(twin)
    check(structured)
    assert not torch.equal(twin.single()[2], structured.single()[2])
    structured.add_items(
        torch.zeros(1, 2),
        torch.tensor([structured.group_context[0]]),
        torch.tensor([0]),
        small_campaign()[1].prior,
    )
    check(structured)
    structured.grow_block("side", torch.tensor([0.25]), local=True)
    side = structured.blocks()["side"].start
    structured.observe(
        interval_events([0], [6], [(0.0, math.inf)], 1.0, torch.zeros(()), border=[([side], [1.0])])
    )
    check(structured)


# block entries per chunk: one group a chunk, a few, all
@given(layouts, st.sampled_from([1, 50, 200, 2**18]))
def test_the_expected_tau_from_group_blocks_is_every_pairs_read(layout, chunk):
    """The block form's E[tau] (MATH.md §1), read from each group's marginal by chunks of
    groups, equals the per-pair read (`pair_moments`) and the dense posterior's to 1e-10:
    unequal groups, an empty and a one-clip group, missing scores, clips and a context added
    after labels, chunks of any size, and the scope given as the posterior's groups, as
    other labels of the same groups, or as another grouping (read pair by pair)."""
    seed, n_criteria, n_groups, n_contexts = layout
    world = World(seed, n_criteria, n_groups + 3, n_contexts + 1)
    world.n_contexts = n_contexts
    world.group_context[: n_groups + 2] %= n_contexts
    world.group_context[n_groups + 2] = n_contexts  # a group of the context added later
    scores, context, group = world.clips(3 * n_groups + 2, n_groups)
    structured = grouped_prior(scores, context, group, n_contexts, world.prior)
    structured.observe(world.events(structured.group, 15, lapses=True))
    world.n_contexts += 1
    structured.add_contexts(1, world.prior)
    new_scores, _, new_group = world.clips(5, n_groups + 1)
    # one clip alone in the last group; the group before it stays empty
    new_group[0] = n_groups + 2
    structured.add_items(new_scores, world.group_context[new_group], new_group, world.prior)
    structured.observe(world.events(structured.group, 10, lapses=False))
    assert int((structured.group_size == 0).sum()) >= 1
    assert int((structured.group_size == 1).sum()) >= 1

    form = BlockForm(structured)
    own = structured.group
    first, second = scope_pairs(own)
    by_pairs = expected_tau_of_pairs(*structured.pair_moments(first, second))
    dense = structured.to_dense()
    reference = expected_kendall_tau(dense, own)
    with patch("engine.structured.CHUNK_ELEMENTS", chunk):
        blocks = form.expected_kendall_tau(None)
        relabelled = form.expected_kendall_tau(100 - 3 * own)
        merged = form.expected_kendall_tau(own // 2)
    assert math.isfinite(blocks) == (first.numel() > 0)
    if first.numel():
        assert blocks == pytest.approx(by_pairs, abs=1e-10)
        assert blocks == pytest.approx(reference, abs=1e-10)
        assert relabelled == pytest.approx(blocks, abs=1e-10)
    assert merged == pytest.approx(expected_kendall_tau(dense, own // 2), abs=1e-10, nan_ok=True)


def test_group_pair_moments_are_the_dense_pairs():
    """Each valid slot pair of `group_pair_moments` is the dense `f_a - f_b` of its clips, and
    the valid pairs are the scope's, each once."""
    world = World(4, 3, 5, 2)
    scores, context, group = world.clips(17, 5)
    structured = grouped_prior(scores, context, group, 2, world.prior)
    structured.observe(world.events(group, 12, lapses=False))
    assert int(structured.group_size.max()) > int(structured.group_size.min())
    dense = structured.to_dense()
    pairs = structured.group_pair_moments(slice(None))
    assert pairs is not None
    where = torch.nonzero(pairs.valid)  # (P, 2): pair index, group
    i = structured.members[where[:, 1], pairs.first[where[:, 0]]]
    j = structured.members[where[:, 1], pairs.second[where[:, 0]]]
    cov, mean = dense.item_cov, dense.item_mean
    mu, var = pairs.mu[pairs.valid], pairs.var[pairs.valid]
    torch.testing.assert_close(mu, mean[i] - mean[j], atol=1e-12, rtol=0)
    torch.testing.assert_close(var, cov[i, i] + cov[j, j] - 2 * cov[i, j], atol=1e-12, rtol=0)
    listed = set(zip(*(t.tolist() for t in scope_pairs(structured.group)), strict=True))
    found = {(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist(), strict=True)}
    assert found == listed and len(found) == i.numel()


def test_draws_by_group_are_the_draws_by_clip():
    """`sample_groups` makes `sample_items`' draws from the same generator state, laid out by
    group and slot, with factors made once or per call."""
    world = World(6, 3, 6, 2)
    scores, context, group = world.clips(17, 6)
    group[group == 2] = 3  # group 2 stays empty
    context = world.group_context[group]
    structured = grouped_prior(scores, context, group, 2, world.prior)
    structured.observe(world.events(group, 15, lapses=False))
    by_clip = structured.sample_items(7, torch.Generator().manual_seed(1))
    for factors in (None, structured.draw_factors()):
        by_group = structured.sample_groups(7, torch.Generator().manual_seed(1), factors)
        assert torch.equal(by_group[:, structured.group, structured.slot], by_clip)


@pytest.mark.parametrize("chunks", ["default", "one draw, one group"])
def test_sampled_tau_by_group_is_the_sampled_tau_of_every_pair(chunks):
    """The block form's sampled taus (compared group by group) are `sampled_kendall_tau` of
    `sample_items`' draws from the same generator, over the scope's pairs: for its own groups,
    other labels of them, and another grouping; in one chunk of draws or one draw at a time
    (the generator then read in the same pieces), over all groups or one at a time."""
    world = World(8, 3, 7, 2)
    scores, context, group = world.clips(25, 7)
    scores[0] = scores[1]  # two clips with the same scores: a pair of equal means
    context[0], group[0] = context[1], group[1]
    structured = grouped_prior(scores, context, group, 2, world.prior)
    structured.observe(world.events(group, 20, lapses=False))
    structured.add_items(world.randn(3, 3), context[:3], group[:3], world.prior)
    form = BlockForm(structured)
    mean = structured.item_moments()[0]
    n_draws = 9
    one_at_a_time = chunks != "default"
    for groups in (None, 3 * structured.group + 1, structured.group // 3):
        scope = structured.group if groups is None else groups
        first, second = scope_pairs(scope)
        generator = torch.Generator().manual_seed(2)
        if one_at_a_time:
            draws = torch.cat([structured.sample_items(1, generator) for _ in range(n_draws)])
        else:
            draws = structured.sample_items(n_draws, generator)
        expected = sampled_kendall_tau(draws, mean, first, second)
        with (
            patch("engine.forms.TAU_CHUNK_ELEMENTS", 1 if one_at_a_time else TAU_CHUNK_ELEMENTS),
            patch("engine.forms.TAU_GROUP_ELEMENTS", 1 if one_at_a_time else TAU_GROUP_ELEMENTS),
        ):
            taus = form.kendall_tau_draws(groups, n_draws, torch.Generator().manual_seed(2))
        torch.testing.assert_close(taus, expected, atol=1e-12, rtol=0)
