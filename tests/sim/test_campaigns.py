"""The simulator's campaigns: the prior's total scale, information gain's intervals covering
on a seeded world under it (the too-wide earlier prior does not), and the scoring campaign's
refits and flagged clickers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine import Judgment, PriorScales
from sim import metrics
from sim.campaigns import (
    QUALITY_SD,
    WIDE_PRIOR,
    build_campaign,
    build_scoring_campaign,
    prior_scales,
)
from sim.raters import RaterSpec
from sim.worlds import SyntheticSpec, SyntheticWorld

SEED = 0
N_ITEMS = 40
LABELS = 600  # 15 per clip: where the wide prior's over-confidence is plain


def _quality_sd(scales: PriorScales, n_criteria: int) -> float:
    """Prior sd of a clip's quality for standardised scores: sqrt(K (w^2 + c^2) + r^2)."""
    weights = n_criteria * (scales.weight_scale**2 + scales.context_scale**2)
    return math.sqrt(weights + scales.residual_scale**2)


@pytest.mark.parametrize("n_criteria", [0, 1, 5])
def test_prior_gives_quality_the_intended_sd(n_criteria: int) -> None:
    assert math.isclose(_quality_sd(prior_scales(n_criteria), n_criteria), QUALITY_SD)


def _standardised_errors(prior: PriorScales | None, seed: int) -> tuple[float, float]:
    """90 % coverage and mean squared standardised error of the engine's posterior after
    `LABELS` information-gain picks on a seeded world."""
    world = SyntheticWorld(SyntheticSpec(n_items=N_ITEMS, n_groups=4, rm_correlation=0.7), seed)
    campaign = build_campaign(world.problem, reward_model=True, prior=prior)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(LABELS):
        task = campaign.next_pairs(repeat_pairs=True, generator=generator)[0]
        outcome, _ = world.answer_pair(task.first, task.second, int(rng.integers(20)), rng)
        campaign.observe([Judgment.pair(None, task.first, task.second, outcome)], [task.id])
    posterior = campaign.posterior
    mean, cov = posterior.item_mean.numpy(), posterior.item_cov.numpy()
    coverage = metrics.coverage(mean, cov, world.quality, None)
    centred = np.eye(N_ITEMS) - 1.0 / N_ITEMS
    sd = np.sqrt(np.diag(centred @ cov @ centred))
    error = centred @ (mean - world.quality)
    return coverage, float(np.mean((error / sd) ** 2))


def test_information_gain_intervals_cover_under_the_sim_prior() -> None:
    """Over three seeded worlds the sds fit the errors (z2 near 1) under the sim's prior, and
    the earlier wide prior's do not (the check can fail)."""
    default = [_standardised_errors(None, seed) for seed in range(3)]
    wide = [_standardised_errors(WIDE_PRIOR, seed) for seed in range(3)]
    coverage, z2 = np.mean(default, axis=0)
    wide_coverage, wide_z2 = np.mean(wide, axis=0)
    assert coverage >= 0.8 and z2 < 1.5, (coverage, z2)
    assert wide_z2 > 1.5 * z2, (wide_coverage, wide_z2)


def test_the_scoring_campaign_learns_the_split_and_who_clicks_at_random() -> None:
    # a useless reward model and one random clicker in four raters; random pairs
    spec = SyntheticSpec(
        n_items=N_ITEMS,
        n_groups=4,
        rm_correlation=0.0,
        raters=RaterSpec(n_raters=4, concurrent=1, random_fraction=0.25),
    )
    world = SyntheticWorld(spec, SEED)
    campaign = build_scoring_campaign(world.problem)
    start = campaign.config.prior
    rng = np.random.default_rng(SEED)
    for _ in range(8 * N_ITEMS):
        i, j = world.problem.candidates[rng.integers(len(world.problem.candidates))]
        outcome, who = world.answer_pair(int(i), int(j), int(rng.integers(4)), rng)
        campaign.observe([Judgment.pair(who, int(i), int(j), outcome)])
    # refitted at 2n, 4n and 8n labels: the total kept, nearly all of it given to the residual
    prior = campaign.config.prior
    assert _quality_sd(prior, 5) == pytest.approx(_quality_sd(start, 5), rel=1e-9)
    assert prior.residual_scale > 0.9 * QUALITY_SD
    # each rater known by who answered: the clicker's labels count least. With noise learned
    # too, random clicks are explained as well by a huge noise as by lapses: measured keep
    # 0.84 against 0.87-0.97, noise sd 6.7 against 0.4-1.7
    reliability = campaign.rater_reliability()
    keep = {r: x.keep for r, x in reliability.items()}
    clicker = int(np.flatnonzero(world.raters.is_random)[0])
    assert min(keep, key=keep.__getitem__) == clicker
    others = [x.noise_sd for r, x in reliability.items() if r != clicker]
    assert reliability[clicker].noise_sd > 3 * max(others)
