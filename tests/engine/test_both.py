""" "Both good" and "both bad" (engine.questions.answer_specs, docs/MATH.md §2): a tie on the
difference plus a level event on the pair's sum, in both posterior forms, EP and replay."""

from __future__ import annotations

import math

import pytest
import torch

from engine import Campaign, CampaignConfig, Judgment, Outcome
from engine.ep import ep_refine
from engine.questions import BOTH_BAD, BOTH_GOOD, Pair, answer_specs
from engine.state import PriorScales, add_contexts, add_items, empty_posterior
from engine.update import interval_events, update
from tests.engine.reference import sampled_tilted_moments

SCALES = PriorScales(weight_scale=0.6, context_scale=0.3, residual_scale=1.0)
TAU = 0.5


def test_a_both_answer_is_a_tie_and_the_pairs_sum() -> None:
    good = answer_specs(Pair(3, 5), BOTH_GOOD, 0.3, None, TAU)
    assert [(e.first, e.second, e.lo, e.hi, e.sign) for e in good] == [
        (3, 5, -0.3, 0.3, -1.0),
        (3, 5, 2 * TAU, math.inf, 1.0),
    ]
    assert good[1].noise_scale == pytest.approx(math.sqrt(2))
    bad = answer_specs(Pair(3, 5), BOTH_BAD, 0.3, None, TAU)
    assert (bad[1].lo, bad[1].hi) == (-math.inf, -2 * TAU)
    with pytest.raises(ValueError, match="does not take"):
        answer_specs(Pair(3, 5), BOTH_GOOD, 0.3, None, None)


def test_one_step_on_the_pairs_sum_is_the_tilted_moments() -> None:
    """ADF's step on z = f_i + f_j is the exact Gaussian projection of prior x likelihood:
    checked against importance-sampled moments."""
    posterior = empty_posterior(2, SCALES)
    posterior = add_contexts(posterior, 1, SCALES)
    scores = torch.tensor([[0.5, -1.0], [1.2, 0.3], [-0.7, 0.8]], dtype=torch.float64)
    prior = add_items(posterior, scores, torch.zeros(3, dtype=torch.long), SCALES)
    noise_sd = 0.8 * math.sqrt(2)
    events = interval_events(
        [0], [2], [(2 * TAU, math.inf)], noise_sd, prior.mean, second_sign=[1.0]
    )
    after = update(prior, events)
    direction = torch.zeros_like(prior.mean)
    direction[0] = direction[2] = 1.0
    mean, cov = sampled_tilted_moments(prior.mean, prior.cov, direction, 2 * TAU, noise_sd, seed=3)
    assert torch.allclose(after.mean, mean, atol=0.01)
    assert torch.allclose(after.cov, cov, atol=0.01)
    assert float(after.mean[0] - prior.mean[0]) > 0.05  # both clips move up
    assert float(after.mean[2] - prior.mean[2]) > 0.05


def _campaign(structure: str, **config: object) -> Campaign:
    campaign = Campaign(
        CampaignConfig(
            pair_scope="group",
            structure=structure,
            tie_margin=0.3,
            both_threshold=TAU,
            **config,  # type: ignore[arg-type]
        ),
        device="cpu",
    )
    scores = torch.randn(12, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    campaign.add_clips(
        scores.tolist(), groups=[i // 4 for i in range(12)], contexts=[i // 8 for i in range(12)]
    )
    return campaign


def _labels(count: int, seed: int = 0) -> list[Judgment]:
    generator = torch.Generator().manual_seed(seed)
    answers = [Outcome.WIN, Outcome.LOSS, Outcome.TIE, BOTH_GOOD, BOTH_BAD]
    labels = []
    for _ in range(count):
        group = int(torch.randint(3, (1,), generator=generator))
        a, b = (group * 4 + torch.randperm(4, generator=generator)[:2]).tolist()
        answer = answers[int(torch.randint(len(answers), (1,), generator=generator))]
        labels.append(Judgment.pair(f"r{a % 3}", a, b, answer))
    return labels


def test_the_block_form_equals_the_dense_posterior_with_both_answers() -> None:
    dense, blocks = _campaign("dense"), _campaign("blocks")
    labels = _labels(60)
    for campaign in (dense, blocks):
        campaign.observe(labels[:30])
        campaign.observe(labels[30:])
    assert torch.allclose(dense.leaderboard().mean, blocks.leaderboard().mean, atol=1e-9)
    assert torch.allclose(dense.leaderboard().sd, blocks.leaderboard().sd, atol=1e-9)
    for campaign in (dense, blocks):
        campaign.refine()
    assert torch.allclose(dense.leaderboard().mean, blocks.leaderboard().mean, atol=1e-9)


def test_ep_with_both_answers_does_not_depend_on_their_order() -> None:
    campaign = _campaign("dense")
    campaign.observe(_labels(40, seed=2))
    events = campaign._events(campaign.log)
    assert events.second_sign is not None and bool((events.second_sign > 0).any())
    prior = campaign.prior()
    reverse = torch.arange(len(events) - 1, -1, -1)
    backward = type(events)(
        *(None if value is None else value[reverse] for value in vars(events).values())
    )
    forward = ep_refine(prior, events, tolerance=1e-10).posterior
    again = ep_refine(prior, backward, tolerance=1e-10).posterior
    assert torch.allclose(forward.mean, again.mean, atol=1e-7)
    assert torch.allclose(forward.cov, again.cov, atol=1e-7)


def test_a_sums_moments_for_rater_reliability_are_the_posteriors() -> None:
    """The (E z, Var z) a rater's grid scores a sum event under are the posterior's own."""
    campaign = _campaign("blocks")
    campaign.observe(_labels(20, seed=5))
    events = campaign._events([Judgment.pair("r0", 0, 2, BOTH_GOOD, noise_sd=1.0)])
    mu, var = campaign._event_moments(campaign._form, events)
    dense = campaign.posterior
    a = torch.zeros_like(dense.mean)
    a[0] = a[2] = 1.0
    assert float(mu[1]) == pytest.approx(float(a @ dense.mean), abs=1e-9)
    assert float(var[1]) == pytest.approx(float(a @ dense.cov @ a), abs=1e-9)


@pytest.mark.parametrize("structure", ["dense", "blocks"])
def test_a_campaign_with_both_answers_replays_bit_for_bit(structure: str) -> None:
    campaign = _campaign(
        structure, lapse_prior=(9.0, 1.0), learn_rater_noise=True, refit_prior_at=(30,)
    )
    labels = _labels(50, seed=7)
    campaign.observe(labels[:25])
    campaign.observe(labels[25:])
    replayed = campaign.replay()
    assert torch.equal(campaign.leaderboard().mean, replayed.leaderboard().mean)
    assert torch.equal(campaign.leaderboard().sd, replayed.leaderboard().sd)


def test_bad_both_answers_are_refused() -> None:
    with pytest.raises(ValueError, match="tie_margin"):
        CampaignConfig(both_threshold=TAU)
    with pytest.raises(ValueError, match="both_threshold"):
        CampaignConfig(tie_margin=0.3, both_threshold=-1.0)
    plain = Campaign(CampaignConfig(criteria=(), tie_margin=0.3), device="cpu")
    plain.add_clips(count=3)
    with pytest.raises(ValueError, match="does not take"):
        plain.observe([Judgment.pair(None, 0, 1, BOTH_GOOD)])
    campaign = _campaign("dense")
    with pytest.raises(ValueError):
        campaign.observe([Judgment(None, Judgment.rating(None, 0, 1).question, BOTH_GOOD)])
    assert plain.log == [] and campaign.log == []
