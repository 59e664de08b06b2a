"""Gold questions in the simulator: the operator's gold pairs (clearly apart in the world's
truth) and the race to flag random clickers, with gold mixed in or from ordinary answers only.

The operator marks as gold pairs whose true qualities differ by at least `min_gap` rater-noise
sds (the answer they know is the truth's), and tells the engine so through `gold_margin`
(docs/MATH.md §3, gold paragraph): an honest rater then fails a gold pair with probability
Phi(-min_gap) at most, as the engine assumes. Raters take turns at random, one task at a time;
every task, gold or not, counts towards the same total label budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine import Campaign, Judgment, Outcome
from sim import metrics
from sim.campaigns import LAPSE_PRIOR, build_campaign
from sim.runner import derive_seed
from sim.worlds import SyntheticWorld


def gold_pairs(
    world: SyntheticWorld, count: int, min_gap: float, rng: np.random.Generator
) -> list[tuple[int, int, Outcome]]:
    """Up to `count` pairs in the world's scope whose true qualities differ by at least
    `min_gap` times the raters' median noise sd, each with its true outcome."""
    candidates = world.problem.candidates
    quality = world.quality
    gap = quality[candidates[:, 0]] - quality[candidates[:, 1]]
    apart = np.flatnonzero(np.abs(gap) >= min_gap * world.spec.raters.noise_sd)
    chosen = rng.choice(apart, size=min(count, apart.size), replace=False)
    return [
        (
            int(candidates[k, 0]),
            int(candidates[k, 1]),
            Outcome.WIN if gap[k] > 0 else Outcome.LOSS,
        )
        for k in chosen
    ]


@dataclass(frozen=True)
class FlagRace:
    """One run: per random clicker the campaign's total labels when they were first flagged
    (None: not within the budget) and their own labels then; honest raters flagged at the end;
    Kendall tau of the posterior mean against the truth at the end; gold answers given."""

    flagged_at_total: list[int | None]
    flagged_at_own: list[int | None]
    honest_flagged: int
    kendall_tau: float
    gold_answers: int


def flag_race(
    world: SyntheticWorld,
    *,
    budget: int,
    gold_rate: float,
    n_gold: int,
    min_gap: float,
    seed: int,
) -> FlagRace:
    """Run `budget` labels of the engine's choice (information gain, lapses and rater noise
    learned) with gold questions at `gold_rate` (0: none, reliability from ordinary answers
    only), and record when each random clicker is flagged."""
    campaign: Campaign = build_campaign(
        world.problem,
        reward_model=False,
        lapse_prior=LAPSE_PRIOR,
        learn_rater_noise=True,
        gold_rate=gold_rate,
        gold_margin=min_gap,
        gold_seed=derive_seed(seed, "gold"),
    )
    if gold_rate > 0:
        rng_gold = np.random.default_rng(derive_seed(seed, "gold pairs"))
        for first, second, answer in gold_pairs(world, n_gold, min_gap, rng_gold):
            campaign.add_gold(first, second, answer)
    rng = np.random.default_rng(derive_seed(seed, "answers"))
    generator = torch.Generator().manual_seed(derive_seed(seed, "engine"))
    pool = world.raters
    clickers = np.flatnonzero(pool.is_random).tolist()
    at_total: dict[int, int] = {}
    at_own: dict[int, int] = {}
    own = np.zeros(pool.spec.n_raters, dtype=int)
    gold_answers = 0
    for label in range(1, budget + 1):
        rater = int(rng.integers(pool.spec.n_raters))
        (task,) = campaign.next_tasks(rater, generator=generator)
        outcome, _ = world.answer_pair(task.first, task.second, rater, rng)
        campaign.observe([Judgment(rater, task.question, outcome, gold=task.gold)], [task.id])
        own[rater] += 1
        gold_answers += task.gold is not None
        first_flag = rater in clickers and rater not in at_total
        if first_flag and campaign.rater_reliability()[rater].flagged:
            at_total[rater], at_own[rater] = label, int(own[rater])
    reliability = campaign.rater_reliability()
    honest = [r for r in reliability if r not in clickers]
    mean = campaign.posterior.item_mean.numpy()
    groups = world.problem.groups if world.problem.pair_scope == "group" else None
    return FlagRace(
        flagged_at_total=[at_total.get(r) for r in clickers],
        flagged_at_own=[at_own.get(r) for r in clickers],
        honest_flagged=sum(reliability[r].flagged for r in honest),
        kendall_tau=metrics.kendall_tau(mean, world.quality, groups),
        gold_answers=gold_answers,
    )


__all__ = ["FlagRace", "flag_race", "gold_pairs"]
