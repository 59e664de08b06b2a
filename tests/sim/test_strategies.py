"""Every registered strategy proposes only eligible pairs, with answers pending, on a synthetic
world and on a replay whose log leaves some in-group pairs unrecorded."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest

from sim.raters import RaterSpec
from sim.strategies import STRATEGIES, make_strategy
from sim.worlds import (
    GatedSpec,
    GatedWorld,
    ReplayWorld,
    SyntheticSpec,
    SyntheticWorld,
    World,
    load_comparisons,
)

SEED = 0
ROUNDS = 40
PENDING = 3

# Two prompts. In p1 the pairs (a, d) and (b, c) were never recorded; in p2 (x, z) was not.
REPLAY_CSV = """who,left,right,pick,prompt
r1,a,b,A,p1
r2,b,a,B,p1
r1,a,c,tie,p1
r3,b,d,A,p1
r2,c,d,B,p1
r3,d,c,A,p1
r1,x,y,A,p2
r2,y,z,tie,p2
r3,z,y,A,p2
r1,a,b,B,p1
"""


# The same log with the missing in-group pairs recorded once each: every in-scope pair is a
# candidate, as in the shipped TMO log (all 21 pairs of each scene).
COMPLETE_CSV = REPLAY_CSV + "r2,a,d,A,p1\nr3,b,c,B,p1\nr1,z,x,A,p2\n"


def _synthetic() -> SyntheticWorld:
    spec = SyntheticSpec(
        n_items=16,
        n_groups=4,
        n_contexts=2,
        rm_correlation=0.5,
        pair_scope="group",
        raters=RaterSpec(n_raters=6, concurrent=PENDING, tie_margin=0.3),
    )
    return SyntheticWorld(spec, SEED)


def _replay(tmp_path: Path, text: str = REPLAY_CSV) -> ReplayWorld:
    path = tmp_path / "log.csv"
    path.write_text(text)
    data = load_comparisons(
        path, rater="who", first="left", second="right", choice="pick", group="prompt"
    )
    return ReplayWorld(data, SEED, name="tiny")


def _drive(world: World, name: str) -> int:
    """Run ROUNDS answer rounds with up to PENDING assignments out; returns labels answered.

    Asserts that every proposal is a candidate pair (within a group under the group scope)
    that the world's availability mask allows at the time it is proposed.
    """
    problem = world.problem
    if getattr(STRATEGIES[name], "feature_gate", False) and problem.features is None:
        pytest.skip("a feature-gated strategy needs the problem's features (a gated world)")
    strategy = make_strategy(name, problem, SEED)
    slot = {(int(i), int(j)): p for p, (i, j) in enumerate(problem.candidates)}
    pending = np.zeros(len(problem.candidates), dtype=np.int64)
    outstanding: deque[tuple[int, int, int]] = deque()
    rng = np.random.default_rng(SEED)
    labels = 0
    for round_ in range(ROUNDS):
        while len(outstanding) < PENDING:
            available = world.available(pending)
            if available is not None and not available.any():
                break
            rater = (round_ + len(outstanding)) % PENDING
            first, second = strategy.propose(rater, available)
            assert first != second, (name, first, second)
            key = (min(first, second), max(first, second))
            assert key in slot, f"{name} proposed a non-candidate pair {key}"
            if problem.pair_scope == "group":
                assert problem.groups[first] == problem.groups[second]
            assert available is None or available[slot[key]], f"{name} proposed masked {key}"
            pending[slot[key]] += 1
            outstanding.append((rater, first, second))
        if not outstanding:
            break
        rater, first, second = outstanding.popleft()
        pending[slot[(min(first, second), max(first, second))]] -= 1
        outcome, who = world.answer_pair(first, second, rater, rng)  # a replay may raise here
        strategy.observe(first, second, outcome, who)
        labels += 1
    return labels


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_synthetic_group_scope(name: str) -> None:
    world = _synthetic()
    assert world.available(np.zeros(len(world.problem.candidates), dtype=np.int64)) is None
    assert _drive(world, name) == ROUNDS


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_replay_partial_log(name: str, tmp_path: Path) -> None:
    world = _replay(tmp_path)
    assert world.problem.pair_scope == "group"
    assert len(world.problem.candidates) == 6  # of the 6 + 3 in-group pairs
    labels = _drive(world, name)
    # the strategy had no reason to stop before the log was used up
    assert labels == world.n_comparisons == 10
    assert not world.remaining_.any()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_replay_complete_log(name: str, tmp_path: Path) -> None:
    world = _replay(tmp_path, COMPLETE_CSV)
    assert len(world.problem.candidates) == 9
    labels = _drive(world, name)
    assert labels == world.n_comparisons == 13
    assert not world.remaining_.any()


@pytest.mark.parametrize("name", ["information_gain", "information_gain_gated"])
def test_gated_world(name: str) -> None:
    spec = GatedSpec(
        n_prompts=4,
        n_held_out=2,
        clips_per_prompt=4,
        n_clusters=2,
        raters=RaterSpec(n_raters=6, concurrent=PENDING, tie_margin=0.3),
    )
    assert _drive(GatedWorld(spec, SEED), name) == ROUNDS


def test_unknown_strategy_lists_known_names() -> None:
    problem = _synthetic().problem
    with pytest.raises(KeyError) as info:
        make_strategy("no_such_strategy", problem, SEED)
    message = str(info.value)
    assert "no_such_strategy" in message
    for name in STRATEGIES:
        assert name in message


def test_the_block_form_strategy_makes_the_engines_choices() -> None:
    """Fed the same answers, `information_gain_blocks` proposes what `information_gain` does,
    pair for pair, with answers pending (its label efficiency is the engine's)."""
    world = _synthetic()
    dense = make_strategy("information_gain", world.problem, SEED)
    blocks = make_strategy("information_gain_blocks", world.problem, SEED)
    rng = np.random.default_rng(SEED)
    outstanding: deque[tuple[int, int, int]] = deque()
    for step in range(60):
        rater = step % 6
        proposed = dense.propose(rater, None)
        assert blocks.propose(rater, None) == proposed, step
        outstanding.append((rater, *proposed))
        if len(outstanding) > PENDING:
            rater, first, second = outstanding.popleft()
            outcome, who = world.answer_pair(first, second, rater, rng)
            for strategy in (dense, blocks):
                strategy.observe(first, second, outcome, who)
