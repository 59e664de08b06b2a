"""The raters' side-offset prior sd refitted by EM in fit_prior (engine.position.refit_rater_sd,
MATH.md §7): in simulated worlds whose raters' offsets spread wider than the prior says, the
refit brings the sd near the drawn spread and the offsets' 90 % intervals near 90 % coverage;
a replay repeats it bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import Campaign, Judgment, SideBias
from sim.campaigns import build_campaign
from sim.raters import RaterSpec
from sim.worlds import SyntheticSpec, SyntheticWorld

SEEDS = (0, 1)
N_LABELS = 1000
PRIOR_RATER_SD = 0.3  # the default prior, narrower than the worlds' spread of 0.5
Z90 = 1.6448536269514722


def _rated(seed: int) -> tuple[Campaign, SyntheticWorld]:
    spec = SyntheticSpec(
        n_items=40,
        n_groups=10,
        n_contexts=3,
        rm_correlation=0.7,
        pair_scope="group",
        raters=RaterSpec(n_raters=24, tie_margin=0.5, side_bias=0.5, side_spread=0.5),
    )
    world = SyntheticWorld(spec, seed)
    rng = np.random.default_rng(seed)
    campaign = build_campaign(world.problem, reward_model=True, side_bias=SideBias())
    pairs = world.problem.candidates
    labels = []
    for _ in range(N_LABELS):
        first, second = (int(x) for x in pairs[rng.integers(len(pairs))])
        rater = int(rng.integers(spec.raters.n_raters))
        left = world.shown_left(first, second, rng)
        outcome, _ = world.answer_pair(first, second, rater, rng, left)
        labels.append(Judgment.pair(rater, first, second, outcome, left=left))
    for start in range(0, N_LABELS, 250):
        campaign.observe(labels[start : start + 250])
    return campaign, world


def _coverage(campaign: Campaign, world: SyntheticWorld) -> float:
    offsets = campaign.side_offsets()
    raters = sorted(offsets.rater_mean)
    estimate = np.array([offsets.rater_mean[r] for r in raters])
    sd = np.array([offsets.rater_sd[r] for r in raters])
    return float(np.mean(np.abs(estimate - world.raters.side_offset[raters]) <= Z90 * sd))


@pytest.mark.slow
def test_refitted_rater_sd_restores_the_offsets_coverage() -> None:
    before, after = [], []
    for seed in SEEDS:
        campaign, world = _rated(seed)
        assert campaign.config.side_bias is not None
        assert campaign.config.side_bias.rater_sd == PRIOR_RATER_SD
        before.append(_coverage(campaign, world))
        campaign.fit_prior(max_evaluations=2)  # the scales' fit is not what is tested here
        after.append(_coverage(campaign, world))
        fitted = campaign.config.side_bias.rater_sd
        drawn = float(np.std(world.raters.side_offset))
        assert abs(fitted - drawn) < 0.15, (fitted, drawn)
        if seed == SEEDS[0]:
            replayed = campaign.replay()
            assert replayed.config.side_bias == campaign.config.side_bias
            assert torch.equal(replayed.leaderboard().mean, campaign.leaderboard().mean)
    # seen: 0.71 -> 0.83 and 0.58 -> 0.83
    assert np.mean(after) >= 0.8
    assert np.mean(after) > np.mean(before) + 0.1
