"""The gated world (sim.worlds.GatedWorld): weights that vary with prompt features, prompts
never rated, clustered contexts; and the gating benchmark's record for one world."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from benchmarks.gating import run
from sim.raters import RaterSpec
from sim.worlds import GatedSpec, GatedWorld, cluster_features, nearest_centre

SEED = 0
SMALL = GatedSpec(
    n_prompts=12, n_held_out=6, clips_per_prompt=4, feature_dim=3, n_clusters=3, raters=RaterSpec()
)


def test_the_same_seed_draws_the_same_world() -> None:
    one, two = GatedWorld(SMALL, SEED), GatedWorld(SMALL, SEED)
    assert np.array_equal(one.quality, two.quality)
    assert np.array_equal(one.problem.scores, two.problem.scores)
    assert np.array_equal(one.held_out.quality, two.held_out.quality)
    assert not np.array_equal(one.quality, GatedWorld(SMALL, SEED + 1).quality)


def test_rated_and_held_out_prompts_are_apart() -> None:
    world = GatedWorld(SMALL, SEED)
    problem, held = world.problem, world.held_out
    assert problem.n_items == 12 * 4 and len(held.quality) == 6 * 4
    assert set(problem.groups.tolist()).isdisjoint(held.groups.tolist())
    assert problem.features is not None
    # a prompt's clips share its features and its cluster
    for group in range(12):
        rows = problem.features[problem.groups == group]
        assert np.array_equal(rows, np.repeat(rows[:1], len(rows), 0))
        assert len(set(problem.contexts[problem.groups == group].tolist())) == 1
    assert np.array_equal(held.features[0], world.prompt_features[held.groups[0]])
    assert set(problem.candidates[:, 0] // 4) == set(range(12))  # pairs within prompts only
    assert np.all(
        problem.groups[problem.candidates[:, 0]] == problem.groups[problem.candidates[:, 1]]
    )


def test_weights_vary_with_features_only_when_spread() -> None:
    flat = GatedWorld(replace(SMALL, spread=0.0), SEED)
    first = flat.prompt_weights[0]
    assert np.allclose(flat.prompt_weights, first)
    turned = GatedWorld(SMALL, SEED).prompt_weights
    cosines = turned @ turned[0] / (np.linalg.norm(turned, axis=1) * np.linalg.norm(turned[0]))
    assert cosines.min() < 0.9


def test_the_ceiling_uses_the_true_weights() -> None:
    """`rm_quality` ranks the never-rated clips about as well as the reward model can: its
    correlation with the truth is near rm_correlation (0.8) over many clips."""
    spec = replace(SMALL, n_held_out=400)
    held = GatedWorld(spec, SEED).held_out
    correlation = np.corrcoef(held.rm_quality, held.quality)[0, 1]
    assert 0.7 < correlation < 0.9


def test_clusters_are_nearest_centres() -> None:
    rng = np.random.default_rng(SEED)
    points = np.concatenate((rng.normal(-5, 0.1, (10, 2)), rng.normal(5, 0.1, (10, 2))))
    centres = cluster_features(points, 2, np.random.default_rng(SEED))
    label = nearest_centre(points, centres)
    assert len(set(label[:10].tolist())) == 1 and len(set(label[10:].tolist())) == 1
    assert label[0] != label[-1]


@pytest.mark.parametrize("arm", ["gate", "clusters", "none"])
def test_a_benchmark_run_is_repeatable(arm: str) -> None:
    one = run(arm, SMALL, SEED, 0, budget=60)
    two = run(arm, SMALL, SEED, 0, budget=60)
    one.pop("seconds"), two.pop("seconds")
    assert one == two
    assert -1 <= one["held_out_tau"] <= 1 and -1 <= one["held_out_cosine"] <= 1
