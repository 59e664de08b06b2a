"""Position bias (engine.position, docs/MATH.md §7): directions with a border part, the side
blocks in both posterior forms, and the campaign's side offsets."""

from __future__ import annotations

import math

import pytest
import torch

from engine import Campaign, CampaignConfig, Judgment, SideBias
from engine.blocks import border_layout
from engine.ep import ep_refine
from engine.position import SIDE, SIDE_RATERS, refit_rater_sd, side_part
from engine.state import PriorScales, add_contexts, add_items, empty_posterior, grow_block
from engine.update import interval_events, update
from tests.engine.reference import sampled_tilted_moments

SCALES = PriorScales(weight_scale=0.6, context_scale=0.3, residual_scale=1.0)


def _side_prior() -> torch.Tensor:
    """A dense prior over 3 clips, K = 2, one context, b and two rater offsets."""
    posterior = empty_posterior(2, SCALES)
    posterior = add_contexts(posterior, 1, SCALES)
    scores = torch.tensor([[0.5, -1.0], [1.2, 0.3], [-0.7, 0.8]], dtype=torch.float64)
    posterior = add_items(posterior, scores, torch.zeros(3, dtype=torch.long), SCALES)
    posterior = grow_block(posterior, SIDE, torch.tensor([0.25], dtype=torch.float64))
    return grow_block(posterior, SIDE_RATERS, torch.tensor([0.09, 0.09], dtype=torch.float64))


def test_one_step_along_a_direction_with_a_border_part_is_the_tilted_moments() -> None:
    """ADF's one step is the exact Gaussian projection of prior x likelihood: checked
    against importance-sampled moments of the tilted distribution."""
    prior = _side_prior()
    layout = border_layout(2, 1, extra=prior.extra)
    part = side_part(layout, 1, first_left=False)
    lo, hi, noise_sd = 0.0, math.inf, 0.8
    events = interval_events([0], [2], [(lo, hi)], noise_sd, prior.mean, border=[part])
    after = update(prior, events)

    direction = torch.zeros_like(prior.mean)
    direction[0], direction[2] = 1.0, -1.0
    for position, coefficient in zip(*part, strict=True):
        direction[prior.n_items + position] += coefficient
    mean, cov = sampled_tilted_moments(prior.mean, prior.cov, direction, lo, noise_sd, seed=7)
    assert torch.allclose(after.mean, mean, atol=0.01)
    assert torch.allclose(after.cov, cov, atol=0.01)
    # the side coordinates moved: the rater's offset shares in the explanation
    side = prior.n_items + layout[SIDE_RATERS].start + 1
    assert float(after.mean[side]) < -0.01


DEFAULT_SIDE = SideBias()


def _campaign(structure: str, side: SideBias | None = DEFAULT_SIDE) -> Campaign:
    campaign = Campaign(
        CampaignConfig(pair_scope="group", structure=structure, side_bias=side), device="cpu"
    )
    scores = torch.randn(16, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    campaign.add_clips(
        scores.tolist(), groups=[i // 4 for i in range(16)], contexts=[i // 8 for i in range(16)]
    )
    return campaign


def _labels(count: int, seed: int = 0, with_side: bool = True) -> list[Judgment]:
    generator = torch.Generator().manual_seed(seed)
    labels = []
    for _ in range(count):
        group = int(torch.randint(4, (1,), generator=generator))
        a, b = (group * 4 + torch.randperm(4, generator=generator)[:2]).tolist()
        left = a if bool(torch.rand(1, generator=generator) < 0.5) else b
        outcome = "win" if bool(torch.rand(1, generator=generator) < 0.6) else "loss"
        rater = f"r{int(torch.randint(3, (1,), generator=generator))}"
        labels.append(Judgment.pair(rater, a, b, outcome, left=left if with_side else None))
    return labels


def _state(campaign: Campaign) -> torch.Tensor:
    board = campaign.leaderboard()
    offsets = campaign.side_offsets()
    return torch.cat(
        (
            board.mean,
            board.sd,
            torch.tensor([offsets.global_mean, offsets.global_sd]),
            torch.tensor([offsets.rater_mean[r] for r in sorted(offsets.rater_mean)]),
            torch.tensor([offsets.rater_sd[r] for r in sorted(offsets.rater_sd)]),
        )
    )


def test_the_block_form_takes_one_side_label_exactly() -> None:
    """The projected step keeps every clip's and the border's marginal exact."""
    dense, blocks = _campaign("dense"), _campaign("blocks")
    labels = _labels(1)
    dense.observe(labels)
    blocks.observe(labels)
    assert torch.allclose(_state(dense), _state(blocks), atol=1e-9)


def test_the_block_form_stays_close_to_the_dense_posterior_over_many_side_labels() -> None:
    """b is kept exact; the rater offsets' coupling with each prompt is dropped (MATH.md §7):
    the means and sds stay within a few hundredths of the dense posterior's."""
    dense, blocks = _campaign("dense"), _campaign("blocks")
    labels = _labels(120)
    dense.observe(labels)
    blocks.observe(labels)
    difference = (_state(dense) - _state(blocks)).abs()
    assert float(difference.max()) < 0.1
    assert float(difference.max()) > 1e-6  # the approximation is not the exact form


@pytest.mark.parametrize("structure", ["dense", "blocks"])
def test_labels_without_a_side_leave_the_clips_as_without_a_side_bias(structure: str) -> None:
    plain, sided = _campaign(structure, None), _campaign(structure)
    labels = _labels(40, with_side=False)
    plain.observe(labels)
    sided.observe(labels)
    assert torch.allclose(plain.leaderboard().mean, sided.leaderboard().mean, atol=1e-12)
    assert torch.allclose(plain.leaderboard().sd, sided.leaderboard().sd, atol=1e-12)
    assert sided.side_offsets().rater_mean == {}


@pytest.mark.parametrize("structure", ["dense", "blocks"])
def test_side_offsets_are_recovered(structure: str) -> None:
    """Raters with known side offsets on a known world: each posterior offset lies within
    three posterior sds of the truth, and the biggest is told apart from zero."""
    generator = torch.Generator().manual_seed(11)
    campaign = _campaign(structure, SideBias(global_sd=0.5, rater_sd=0.5))
    quality = 1.5 * torch.randn(16, generator=generator, dtype=torch.float64)
    truth = {"r0": 1.0, "r1": -0.5, "r2": 0.3}
    labels = []
    for _ in range(900):
        group = int(torch.randint(4, (1,), generator=generator))
        a, b = (group * 4 + torch.randperm(4, generator=generator)[:2]).tolist()
        rater = f"r{int(torch.randint(3, (1,), generator=generator))}"
        left, right = (a, b) if bool(torch.rand(1, generator=generator) < 0.5) else (b, a)
        seen = quality[left] - quality[right] + truth[rater] + torch.randn(1, generator=generator)
        winner = left if float(seen) > 0 else right
        labels.append(Judgment.pair(rater, a, b, "win" if winner == a else "loss", left=left))
    campaign.observe(labels)
    offsets = campaign.side_offsets()
    for rater, value in truth.items():
        assert abs(offsets.rater_mean[rater] - value) < 3 * offsets.rater_sd[rater]
    assert offsets.rater_mean["r0"] > 2 * offsets.rater_sd["r0"]


@pytest.mark.parametrize("structure", ["dense", "blocks"])
def test_a_side_campaign_replays_bit_for_bit(structure: str) -> None:
    campaign = _campaign(structure)
    labels = _labels(60, seed=5)
    campaign.observe(labels[:30])
    campaign.refine()
    campaign.add_clips(torch.zeros(4, 5).tolist(), groups=[9] * 4, contexts=["new"] * 4)
    campaign.observe([*labels[30:], Judgment.pair("r9", 16, 17, "win", left=17)])
    campaign.fit_prior(max_evaluations=20)
    replayed = campaign.replay()
    assert torch.equal(_state(campaign), _state(replayed))
    assert replayed.side_offsets().rater_mean.keys() == campaign.side_offsets().rater_mean.keys()


def test_adding_a_context_keeps_the_side_blocks_last() -> None:
    campaign = _campaign("blocks")
    campaign.observe(_labels(10))
    campaign.add_clips(torch.zeros(4, 5).tolist(), groups=[9] * 4, contexts=["new"] * 4)
    layout = campaign._form.border()[0]
    assert layout.names[-2:] == (SIDE, SIDE_RATERS)
    assert layout.names[:4] == ("weights", "context:0", "context:1", "context:2")
    dense = _campaign("dense")
    dense.observe(_labels(10))
    dense.add_clips(torch.zeros(4, 5).tolist(), groups=[9] * 4, contexts=["new"] * 4)
    # the new clips' prior comes from the weights alone, in both forms
    assert torch.allclose(
        dense.leaderboard().mean[16:], campaign.leaderboard().mean[16:], atol=0.05
    )


def test_ep_with_side_labels_does_not_depend_on_their_order() -> None:
    campaign = _campaign("dense")
    labels = _labels(40, seed=2)
    campaign.observe(labels)
    events = campaign._events(campaign.log)
    prior = campaign.prior()
    reverse = torch.arange(len(events) - 1, -1, -1)
    forward = ep_refine(prior, events, tolerance=1e-10).posterior
    backward_events = type(events)(
        *(None if value is None else value[reverse] for value in vars(events).values())
    )
    backward = ep_refine(prior, backward_events, tolerance=1e-10).posterior
    assert torch.allclose(forward.mean, backward.mean, atol=1e-7)
    assert torch.allclose(forward.cov, backward.cov, atol=1e-7)


def test_bad_sides_are_refused() -> None:
    campaign = _campaign("dense")
    with pytest.raises(ValueError, match="left must be one of"):
        campaign.observe([Judgment.pair("r0", 0, 1, "win", left=2)])
    with pytest.raises(ValueError, match="left must be one of"):
        campaign.observe(
            [Judgment(rater="r0", question=Judgment.rating(None, 0, 1).question, answer=1, left=0)]
        )
    assert campaign.log == []
    with pytest.raises(ValueError, match="does not model a side bias"):
        _campaign("dense", None).side_offsets()
    with pytest.raises(ValueError, match="global_sd"):
        SideBias(global_sd=0.0)


def test_refit_rater_sd_is_the_em_step_and_needs_a_rater() -> None:
    means = torch.tensor([0.3, -0.4, 0.0], dtype=torch.float64)
    variances = torch.tensor([0.02, 0.05, 0.11], dtype=torch.float64)
    # (0.09 + 0.02 + 0.16 + 0.05 + 0 + 0.11) / 3 = 0.1433...
    assert refit_rater_sd(means, variances) == pytest.approx((0.43 / 3) ** 0.5, abs=1e-12)
    with pytest.raises(ValueError, match="at least one rater"):
        refit_rater_sd(means[:0], variances[:0])
