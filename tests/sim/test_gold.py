"""The simulator's gold questions: the operator's gold pairs, and the race to flag clickers."""

from __future__ import annotations

import numpy as np
import torch

from engine import Outcome
from sim.gold import flag_race, gold_pairs
from sim.raters import RaterSpec
from sim.worlds import SyntheticSpec, SyntheticWorld

SEED = 3
SPEC = SyntheticSpec(
    n_items=24,
    n_groups=3,
    n_criteria=0,
    raters=RaterSpec(n_raters=6, concurrent=1, random_fraction=1 / 3),
)


def test_gold_pairs_are_apart_in_the_truth_with_the_true_answer() -> None:
    world = SyntheticWorld(SPEC, SEED)
    pairs = gold_pairs(world, 30, 2.0, np.random.default_rng(SEED))
    assert len(pairs) == len({(f, s) for f, s, _ in pairs}) == 30
    for first, second, answer in pairs:
        gap = world.quality[first] - world.quality[second]
        assert abs(gap) >= 2.0 * SPEC.raters.noise_sd
        assert answer == (Outcome.WIN if gap > 0 else Outcome.LOSS)


def test_gold_flags_every_clicker_sooner_at_the_same_budget() -> None:
    """At gold rate 0.5 both random clickers are flagged within the budget, each after fewer
    total labels than without gold (where a clicker never flagged counts as past the budget);
    no honest rater is flagged, and half the tasks or so are gold."""
    torch.set_num_threads(1)
    budget = 240
    runs = {
        rate: flag_race(
            SyntheticWorld(SPEC, SEED),
            budget=budget,
            gold_rate=rate,
            n_gold=60,
            min_gap=2.0,
            seed=SEED,
        )
        for rate in (0.0, 0.5)
    }
    with_gold, without = runs[0.5], runs[0.0]
    assert len(with_gold.flagged_at_total) == 2
    assert all(at is not None for at in with_gold.flagged_at_total)
    for gold_at, plain_at in zip(with_gold.flagged_at_total, without.flagged_at_total, strict=True):
        assert gold_at < (budget + 1 if plain_at is None else plain_at)
    assert with_gold.honest_flagged == 0
    assert without.gold_answers == 0
    assert 0.35 * budget < with_gold.gold_answers < 0.65 * budget
