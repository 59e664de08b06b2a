"""The runner: checkpoints, determinism, replays that run out, early stopping, interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.raters import RaterSpec
from sim.runner import (
    ESTIMATORS,
    TARGETS,
    ReplaySpec,
    RunKey,
    Scenario,
    default_replay_path,
    labels_to_target,
    per_clip_labels,
    run_once,
)
from sim.worlds import SyntheticSpec

SEED = 0
TINY = Scenario(
    name="tiny",
    world=SyntheticSpec(n_items=12, n_groups=2, n_contexts=2, rm_correlation=0.7),
    budget=60,
    every=20,
)
pytestmark = pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
METRICS = (
    "kendall_tau",
    "spearman",
    "rmse",
    "top_k",
    "log_loss",
    "weight_rmse",
    "coverage50",
    "coverage90",
)


def _comparable(records: list[dict[str, object]]) -> list[dict[str, object]]:
    """Records without the wall-clock field, NaN made comparable (NaN != NaN)."""
    out = []
    for record in records:
        row = {k: v for k, v in record.items() if k != "strategy_seconds"}
        out.append(
            {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        )
    return out


@pytest.fixture(scope="module", params=["random", "information_gain"])
def tiny_run(request: pytest.FixtureRequest) -> tuple[RunKey, list[dict[str, object]]]:
    key = RunKey(TINY, request.param, rep=0, seed=SEED)
    return key, run_once(key)


def test_checkpoint_records(tiny_run: tuple[RunKey, list[dict[str, object]]]) -> None:
    key, records = tiny_run
    assert TINY.checkpoints() == [0, 20, 40, 60]
    # and at 0.25, 0.5, 1, 2 and 5 labels per clip of the 12 clips
    assert per_clip_labels(12, TINY.budget) == [3, 6, 12, 24, 60]
    assert [(r["labels"], r["estimator"]) for r in records] == [
        (labels, estimator) for labels in (0, 3, 6, 12, 20, 24, 40, 60) for estimator in ESTIMATORS
    ]
    for record in records:
        assert record["scenario"] == "tiny" and record["strategy"] == key.strategy
        assert record["rep"] == 0 and record["seed"] == SEED
        for metric in METRICS:
            assert metric in record
        assert -1 <= record["kendall_tau"] <= 1 and 0 <= record["coverage90"] <= 1
        # the 50 % interval lies inside the 90 % one: it never covers more clips
        assert 0 <= record["coverage50"] <= record["coverage90"]
        assert record["rmse"] >= 0 and record["log_loss"] > 0
        assert record["strategy_seconds"] >= 0
        # only the engine recovers the reward model's weights
        assert math.isnan(record["weight_rmse"]) == (record["estimator"] == "fixed")
    fixed_at_zero = records[0]
    assert fixed_at_zero["estimator"] == "fixed" and fixed_at_zero["log_loss"] == pytest.approx(
        math.log(2)
    )  # no labels: the fixed fit is the prior, a coin flip on every held-out pair
    # labels help the fixed estimator rank
    fixed = [r for r in records if r["estimator"] == "fixed"]
    assert fixed[-1]["kendall_tau"] > fixed[0]["kendall_tau"]


def test_same_key_same_records(tiny_run: tuple[RunKey, list[dict[str, object]]]) -> None:
    key, records = tiny_run
    assert _comparable(run_once(key)) == _comparable(records)


def test_other_seed_other_records(tiny_run: tuple[RunKey, list[dict[str, object]]]) -> None:
    key, records = tiny_run
    other = run_once(RunKey(TINY, key.strategy, rep=0, seed=SEED + 1))
    assert _comparable(other) != _comparable(records)
    other_rep = run_once(RunKey(TINY, key.strategy, rep=1, seed=SEED))
    assert _comparable(other_rep) != _comparable(records)


def test_labels_to_target_by_hand() -> None:
    labels = [0, 20, 40, 60]
    # reached at the first checkpoint
    assert labels_to_target(labels, [0.95, 0.5, 0.97, 0.99], ">=", 0.9) == 0.0
    # between 20 (0.7) and 40 (0.95): 20 + (0.9 - 0.7) / 0.25 * 20 = 36
    assert labels_to_target(labels, [0.5, 0.7, 0.95, 0.97], ">=", 0.9) == pytest.approx(36.0)
    # the first crossing counts, not a later one
    assert labels_to_target(labels, [0.5, 0.9, 0.8, 0.97], ">=", 0.9) == pytest.approx(20.0)
    # "<=": rmse 2, 1, 0.4: 20 + (0.5 - 1) / (0.4 - 1) * 20 = 36.67
    assert labels_to_target(labels, [2.0, 1.0, 0.4, 0.3], "<=", 0.5) == pytest.approx(20 + 50 / 3)
    assert labels_to_target(labels, [2.0, 1.0, 0.4, 0.3], "<=", 0.3) == pytest.approx(60.0)
    # never
    assert math.isnan(labels_to_target(labels, [0.1, 0.2, 0.3, 0.4], ">=", 0.9))
    assert math.isnan(labels_to_target(labels, [2.0, 1.0, 0.9, 0.8], "<=", 0.5))


def test_replay_stops_at_the_end_of_the_log() -> None:
    scenario = Scenario(
        name="tmo", world=ReplaySpec(path=str(default_replay_path())), budget=5000, every=2500
    )
    records = run_once(RunKey(scenario, "random", rep=0, seed=SEED))
    assert sorted({r["labels"] for r in records}) == [0, *per_clip_labels(35, 1213), 1213]
    final = [r for r in records if r["labels"] == 1213]
    assert [r["estimator"] for r in final] == list(ESTIMATORS)
    fixed = final[0]
    # the truth is the fit of this same log (kendall's tau-b is 1 up to rounding in scipy)
    assert fixed["kendall_tau"] == pytest.approx(1.0, abs=1e-12)
    assert fixed["spearman"] == pytest.approx(1.0, abs=1e-12)
    assert fixed["rmse"] < 1e-6
    assert fixed["top_k"] == 1.0


def test_stop_at_targets() -> None:
    spec = SyntheticSpec(
        n_items=6,
        n_groups=1,
        n_contexts=1,
        rm_correlation=0.9,
        quality_sd=3.0,
        raters=RaterSpec(noise_spread=0.0),
    )
    scenario = Scenario(name="easy", world=spec, budget=400, every=20)
    full = run_once(RunKey(scenario, "random", rep=0, seed=SEED))
    stopped = run_once(RunKey(scenario, "random", rep=0, seed=SEED, stop_at_targets=True))
    # where every estimator has reached every target at some checkpoint so far, and the
    # run has been scored at 5 labels per clip
    reached: dict[str, set[str]] = {e: set() for e in ESTIMATORS}
    scored_through = max(per_clip_labels(6, scenario.budget))
    stop = None
    for record in full:
        for metric, (direction, value) in TARGETS.items():
            v = record[metric]
            if (v >= value) if direction == ">=" else (v <= value):
                reached[record["estimator"]].add(metric)
        if (
            record["estimator"] == ESTIMATORS[-1]
            and record["labels"] >= scored_through
            and all(reached[e] == set(TARGETS) for e in ESTIMATORS)
        ):
            stop = record["labels"]
            break
    assert stop is not None and 0 < stop < scenario.budget, "pick an easier world"
    assert max(r["labels"] for r in stopped) == stop
    assert _comparable(stopped) == _comparable([r for r in full if r["labels"] <= stop])
    assert max(r["labels"] for r in full) == scenario.budget


def test_checkpoints_include_the_budget() -> None:
    scenario = Scenario(name="s", world=SyntheticSpec(), budget=55, every=20)
    assert scenario.checkpoints() == [0, 20, 40, 55]
    with pytest.raises(ValueError):
        Scenario(name="s", world=SyntheticSpec(), budget=0, every=20)
    assert np.all(np.diff(scenario.checkpoints()) > 0)
