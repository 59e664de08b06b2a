"""Clips arriving in waves (sim.waves): arrivals, per-wave records, the floor of labels."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sim.waves import WaveScenario, run_waves

SEED = 0
SMALL = WaveScenario(n_items=48, labels_per_item=3.0, every_per_item=0.25, after_arrival=(5,))


def test_waves_arrive_on_schedule_and_are_scored_once_arrived() -> None:
    result = run_waves(SMALL, SEED)
    budget = SMALL.budget
    assert result["arrivals"] == [0, budget // 3, 2 * budget // 3]
    assert result["labels"] == budget
    for record in result["records"]:
        assert record["labels"] >= result["arrivals"][record["wave"]]
    last = [r for r in result["records"] if r["labels"] == budget]
    assert sorted(r["wave"] for r in last) == [0, 1, 2]
    # a checkpoint 5 labels after each arrival, besides the regular ones
    for arrival in result["arrivals"]:
        assert any(r["labels"] == arrival + 5 for r in result["records"])
    for record in last:
        assert 0 <= record["coverage50"] <= record["coverage90"] <= 1
        assert record["median_labels"] >= record["min_labels"] >= 2


def test_the_same_seed_gives_the_same_records() -> None:
    assert run_waves(SMALL, SEED) == run_waves(SMALL, SEED)


def test_a_new_wave_reaches_the_floor_soon_after_it_arrives() -> None:
    """With the floor at 2, every clip of a 16-clip wave has 2 answered labels 24 labels after
    it arrived: 16 pairs at the least (a pair within a prompt pays two of its clips), plus
    the 4 tasks out when it arrived and 4 out when its last owed clip was served. Without
    the floor, the gain has not reached every clip of some wave twice by then."""
    at = 16 + 4 + 4

    def fewest(min_labels: int) -> list[int]:
        scenario = WaveScenario(
            n_items=48,
            labels_per_item=3.0,
            every_per_item=1.0,
            after_arrival=(at,),
            min_labels=min_labels,
        )
        result = run_waves(scenario, SEED)
        return [
            r["min_labels"]
            for r in result["records"]
            if r["labels"] == result["arrivals"][r["wave"]] + at
        ]

    assert fewest(2) == [2, 2, 2]
    assert min(fewest(0)) < 2


def test_a_scenario_rejects_waves_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="multiple"):
        WaveScenario(n_items=50, group_size=4)
    with pytest.raises(ValueError, match="n_waves"):
        WaveScenario(n_items=8, group_size=4, n_waves=3)


def test_waves_pair_across_prompts_in_any_scope() -> None:
    """In any scope (a new wave's clips may be paired with old ones) every wave still ends
    with the floor's labels."""
    result = run_waves(replace(SMALL, pair_scope="any"), SEED)
    last = [r for r in result["records"] if r["labels"] == result["labels"]]
    assert sorted(r["wave"] for r in last) == [0, 1, 2]
    assert all(r["min_labels"] >= 2 for r in last)
