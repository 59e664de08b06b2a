"""The label-efficiency tables: coverage gaps flagged past the tolerance, and values worse
than random pairs' at the same labels per clip marked."""

from __future__ import annotations

from benchmarks.label_efficiency import coverage_table, points_table


def _point(strategy: str, tau: float, rmse: float, c50: float, c90: float) -> dict:
    return {
        "scenario": "s",
        "strategy": strategy,
        "estimator": "engine",
        "per_clip": 2.0,
        "labels": 200,
        "n_reps": 3,
        "kendall_tau": tau,
        "rmse": rmse,
        "coverage50": c50,
        "coverage90": c90,
    }


DOCUMENT = {
    "scenarios": [{"name": "s", "n_items": 100}],
    "per_clip": [
        _point("random", 0.70, 0.60, 0.50, 0.88),
        # better tau, worse RMSE, 50 % as close to nominal, 90 % further than random's
        _point("smart", 0.75, 0.65, 0.50, 0.95),
    ],
    "coverage": [
        {
            "scenario": "s",
            "strategy": "smart",
            "estimator": "engine",
            "coverage50_gap": 0.04,
            "coverage50_at": 200,
            "coverage90_gap": -0.06,
            "coverage90_at": 300,
        }
    ],
}


def test_points_table_marks_what_random_pairs_do_better() -> None:
    lines = points_table(DOCUMENT, "s")
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lines[5:]}
    assert "0.750 |" in rows[("smart", "tau")] and "*" not in rows[("smart", "tau")]
    assert "0.650* |" in rows[("smart", "RMSE")]
    assert "*" not in rows[("smart", "cov 50 %")]
    assert "0.950* |" in rows[("smart", "cov 90 %")]
    assert not any("*" in rows[("random", m)] for m in ("tau", "RMSE", "cov 50 %", "cov 90 %"))


def test_coverage_table_flags_gaps_past_the_tolerance() -> None:
    table = coverage_table(DOCUMENT)
    assert "| smart | +0.04 / -0.06* |" in table
    with_errors = {**DOCUMENT["coverage"][0], "coverage50_se": 0.012, "coverage90_se": 0.02}
    table = coverage_table({**DOCUMENT, "coverage": [with_errors]})
    assert "| smart | +0.04 (0.01) / -0.06* (0.02) |" in table
