"""Withheld clips at the engine's door (api/engine_host.CampaignEngine): a clip barred for
everyone, or excluded for the rater who reported it, is in no task any choice makes, for
pairs and for emoji ratings; its labels stay in the log and the posterior, and a replay of
that log gives the same posterior."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from api.campaigns import build_config, engine_config
from api.engine_host import CampaignEngine, ClipBatch
from engine import Judgment, Outcome

SEED = 0
N_CLIPS = 10
N_CHOICES = 6  # choices per drawn case, each observed before the next
ATOL = 1e-12


def _clips() -> ClipBatch:
    return ClipBatch(
        scores=[[float(i % 3) - 1.0, float(i % 5) - 2.0] for i in range(N_CLIPS)],
        contexts=["x"] * N_CLIPS,
        groups=[None] * N_CLIPS,
    )


def _labels(rng: random.Random, n: int) -> list[Judgment]:
    out = []
    for _ in range(n):
        i, j = rng.sample(range(N_CLIPS), 2)
        out.append(Judgment.pair(rng.randrange(3), i, j, rng.choice(list(Outcome))))
    return out


def _engine(levels: int | None) -> CampaignEngine:
    return CampaignEngine(build_config(engine_config(["a", "b"], "any", True, levels)), "cpu")


@settings(max_examples=10, deadline=None)
@given(
    withheld=st.sets(st.integers(0, N_CLIPS - 1), min_size=1, max_size=N_CLIPS - 3),
    reported=st.sets(st.integers(0, N_CLIPS - 1), max_size=2),
    levels=st.sampled_from([None, 5]),
    seed=st.integers(0, 2**16),
)
def test_a_withheld_clip_is_in_no_choice_and_its_labels_stay(
    withheld: set[int], reported: set[int], levels: int | None, seed: int
) -> None:
    rng = random.Random(seed)
    engine = _engine(levels)
    history = _labels(rng, 12)
    engine.replay([_clips(), history])
    before = engine.leaderboard(0.9)
    engine.bar(sorted(withheld), [], [], levels is not None)
    after = engine.leaderboard(0.9)
    # withholding changes what is asked, never what was learnt
    assert np.array_equal(after.mean, before.mean) and np.array_equal(after.sd, before.sd)
    applied, batches = list(history), []
    for step in range(N_CHOICES):
        rater = step % 3
        # the reporter's own exclusions come on top of the bars
        tasks = engine.choose(rater, 4, [], [], sorted(reported) if rater == 0 else [])
        tasks += engine.choose(None, 4)
        for task in tasks:
            shown = {task.first, task.second} - {-1}
            assert not shown & withheld
            if task.rater == 0:
                assert not shown & reported
        pairs = [t for t in tasks if t.second >= 0][:2]
        labels = [Judgment.pair(rater, t.first, t.second, Outcome.WIN) for t in pairs]
        engine.observe(labels, [t.id for t in tasks], False)
        applied += labels
        batches.append(labels)

    # every label is in the log, those of the withheld clips included
    def asked(judgments: list[Judgment]) -> list[tuple]:
        return [(j.rater, j.question, j.answer) for j in judgments]

    assert asked(engine.log()) == asked(applied)
    # a replay of the log, in its batches, gives the same posterior (bars are not part of it)
    again = _engine(levels)
    again.replay([_clips(), history, *batches])
    rebuilt, live = again.leaderboard(0.9), engine.leaderboard(0.9)
    for a, b in ((rebuilt.mean, live.mean), (rebuilt.sd, live.sd)):
        assert np.abs(a - b).max() < ATOL


def test_a_withheld_clip_keeps_what_its_labels_taught() -> None:
    """Its posterior sd stays below the prior's: the labels it had are still applied."""
    engine = _engine(None)
    engine.replay([_clips(), []])
    prior_sd = engine.leaderboard(0.9).sd[0]
    labels = [Judgment.pair(r, 0, j, Outcome.WIN) for r in range(3) for j in range(1, 4)]
    engine.observe(labels, [], False)
    taught = engine.leaderboard(0.9)
    engine.bar([0], [], [], False)
    for _ in range(5):
        tasks = engine.choose(None, 5)
        assert all(0 not in (t.first, t.second) for t in tasks)
        engine.observe(
            [Judgment.pair(1, t.first, t.second, Outcome.LOSS) for t in tasks], [], False
        )
    now = engine.leaderboard(0.9)
    assert now.sd[0] < prior_sd
    assert now.mean[0] > 0 and taught.mean[0] > 0  # it won all its comparisons
