"""Headline figures from records: labels needed, ratios to random, censoring, curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.report import (
    MIN_REPS_FOR_INTERVAL,
    at_per_clip,
    coverage_gaps,
    curves,
    format_labels,
    labels_needed,
    mean_interval,
)


def _records(strategy: str, rep: int, taus: list[float], estimator: str = "fixed") -> list[dict]:
    return [
        {
            "scenario": "s",
            "strategy": strategy,
            "estimator": estimator,
            "rep": rep,
            "labels": 100 * k,
            "kendall_tau": tau,
            "rmse": 1.0 - tau,  # reaches 0.5 when tau reaches 0.5
        }
        for k, tau in enumerate(taus)
    ]


def _row(rows: list[dict], strategy: str, target: str = "kendall_tau >= 0.9") -> dict:
    return next(r for r in rows if r["strategy"] == strategy and r["target"] == target)


def test_labels_needed_interpolates_averages_and_divides_by_random() -> None:
    records = [
        *_records("random", 0, [0.0, 0.5, 0.8, 1.0]),  # 0.9 at 250
        *_records("random", 1, [0.0, 0.6, 0.9, 0.95]),  # 0.9 at 200
        *_records("smart", 0, [0.0, 0.7, 0.95, 1.0]),  # 0.9 at 180
        *_records("smart", 1, [0.0, 0.9, 0.95, 1.0]),  # 0.9 at 100
    ]
    rows = labels_needed(records)
    random, smart = _row(rows, "random"), _row(rows, "smart")
    assert random["labels_mean"] == pytest.approx(225.0)
    assert smart["labels_mean"] == pytest.approx(140.0)
    assert smart["ratio_to_random"] == pytest.approx(140.0 / 225.0)
    assert smart["ratio_paired_mean"] == pytest.approx((180 / 250 + 100 / 200) / 2)
    # two repetitions are too few for an interval: none is given, and the table says so
    assert math.isnan(smart["labels_ci_low"]) and math.isnan(smart["labels_ci_high"])
    assert format_labels(smart) == "140 [n/a]"
    assert smart["censored"] == 0 and random["ratio_to_random"] == pytest.approx(1.0)


def test_intervals_stay_inside_the_range_of_the_values() -> None:
    # skewed label counts: the Student-t interval of these runs far below zero
    values = [40.0, 60.0, 5000.0]
    mean, low, high = mean_interval(values)
    assert mean == pytest.approx(1700.0)
    assert min(values) <= low < mean < high <= max(values)
    assert mean_interval(values) == (mean, low, high)  # the same records, the same table
    assert all(math.isnan(v) for v in mean_interval(values[: MIN_REPS_FOR_INTERVAL - 1])[1:])


def test_the_interval_covers_the_mean_of_a_normal_sample_about_as_often_as_it_says() -> None:
    generator = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        sample = generator.normal(100.0, 10.0, size=20)
        _, low, high = mean_interval(sample)
        hits += low <= 100.0 <= high
    assert 0.88 <= hits / 400 <= 0.98  # the percentile bootstrap runs a little narrow at n = 20


def test_a_repetition_that_never_reaches_counts_at_its_budget_and_is_flagged() -> None:
    records = [
        *_records("random", 0, [0.0, 0.5, 0.9]),
        *_records("stuck", 0, [0.0, 0.5, 0.6]),
    ]
    stuck = _row(labels_needed(records), "stuck")
    assert stuck["labels_mean"] == 200.0
    assert stuck["censored"] == 1
    assert format_labels(stuck).startswith(">=200")


def test_no_random_baseline_gives_nan_ratios() -> None:
    row = _row(labels_needed(_records("smart", 0, [0.0, 0.95])), "smart")
    assert math.isnan(row["ratio_to_random"]) and math.isnan(row["ratio_paired_mean"])


def test_curves_carry_a_stopped_run_forward() -> None:
    records = [
        *_records("smart", 0, [0.0, 0.5, 0.9, 0.95]),
        *_records("smart", 1, [0.0, 0.7]),  # stopped after 100 labels
        *_records("smart", 2, [0.0, 0.6, 0.9, 1.0]),
    ]
    curve = curves(records, "kendall_tau")[("s", "smart", "fixed")]
    assert curve["labels"].tolist() == [0, 100, 200, 300]
    assert curve["mean"].tolist() == pytest.approx([0.0, 0.6, 0.8333333, 0.8833333])
    assert np.all(curve["low"] <= curve["mean"]) and np.all(curve["mean"] <= curve["high"])
    assert curve["high"].max() <= 1.0  # a band never promises a tau above 1


def _scored(strategy: str, rep: int, rows: list[tuple[int, float, float]]) -> list[dict]:
    """Records of one run at (labels, 50 % coverage, 90 % coverage), 10 clips."""
    return [
        {
            "scenario": "s",
            "strategy": strategy,
            "estimator": "engine",
            "rep": rep,
            "labels": labels,
            "kendall_tau": labels / 100,
            "rmse": 1 - labels / 100,
            "coverage50": c50,
            "coverage90": c90,
        }
        for labels, c50, c90 in rows
    ]


def test_metrics_at_labels_per_clip_average_the_repetitions_scored_there() -> None:
    records = [
        *_scored("smart", 0, [(3, 0.4, 0.8), (5, 0.5, 0.9), (10, 0.6, 1.0), (50, 0.5, 0.9)]),
        *_scored("smart", 1, [(3, 0.6, 1.0), (5, 0.5, 0.9), (10, 0.4, 0.8)]),
    ]
    rows = at_per_clip(records, {"s": 10}, ["coverage50", "coverage90", "kendall_tau"])
    # 10 clips: 0.25 and 0.5 per clip are labels 2 (round half to even) and 5; 2 never scored
    assert [(r["per_clip"], r["labels"], r["n_reps"]) for r in rows] == [
        (0.5, 5, 2),
        (1.0, 10, 2),
        (5.0, 50, 1),
    ]
    assert rows[1]["coverage90"] == pytest.approx(0.9)
    assert rows[1]["coverage50"] == pytest.approx(0.5)
    assert rows[2]["kendall_tau"] == pytest.approx(0.5)


def test_coverage_gaps_take_the_worst_checkpoint_every_repetition_reached() -> None:
    records = [
        *_scored("smart", 0, [(10, 0.9, 0.2), (20, 0.55, 0.8), (30, 0.5, 0.95), (40, 0.0, 0.0)]),
        *_scored("smart", 1, [(10, 0.9, 0.2), (20, 0.45, 0.8), (30, 0.5, 0.95)]),
    ]
    (gap,) = coverage_gaps(records, {"s": 10}, from_per_clip=2.0)
    # labels 10 (1 per clip) is before the window; 40 was scored in one repetition of two
    assert gap["coverage50_gap"] == pytest.approx(0.0) and gap["coverage50_at"] == 30
    assert gap["coverage90_gap"] == pytest.approx(-0.1) and gap["coverage90_at"] == 20
    # the standard error of the two repetitions' mean where each gap is
    assert gap["coverage50_se"] == pytest.approx(0.0)
    assert gap["coverage90_se"] == pytest.approx(0.0)
    records[1]["coverage90"] = 0.7  # repetition 0 at 20 labels: 0.7 and 0.8
    (gap,) = coverage_gaps(records, {"s": 10}, from_per_clip=2.0)
    assert gap["coverage90_gap"] == pytest.approx(-0.15)
    assert gap["coverage90_se"] == pytest.approx(0.05)
