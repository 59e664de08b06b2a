"""Learning curves with bands: one column per scenario, one row per estimator."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI

import matplotlib.pyplot as plt

from sim.report import BASELINE, curves
from sim.runner import ESTIMATORS, TARGETS

MAX_COLUMNS = 4
ESTIMATOR_TITLES = {
    "fixed": "scored by the fixed MAP Thurstone fit",
    "engine": "scored by the engine posterior (reward-model prior)",
}


def plot_curves(
    records: Iterable[dict],
    path: Path,
    metric: str = "kendall_tau",
    reference: float | None = None,
    dpi: int = 110,
) -> Path:
    """Mean of `metric` against labels with its 95 % band over repetitions, per strategy; a
    dotted line at its target (`sim.runner.TARGETS`) or at `reference` (a nominal coverage).

    Raises:
        ValueError: no records, or `metric` is not in them.
    """
    records = list(records)
    if not records:
        raise ValueError("no records to plot")
    if metric not in records[0]:
        raise ValueError(f"unknown metric {metric!r}; records have {sorted(records[0])}")
    data = curves(records, metric)
    scenarios = list(dict.fromkeys(r["scenario"] for r in records))
    strategies = list(dict.fromkeys(r["strategy"] for r in records))
    colours = {s: plt.get_cmap("tab10")(k % 10) for k, s in enumerate(strategies)}
    n_columns = min(len(scenarios), MAX_COLUMNS)
    n_rows = len(ESTIMATORS) * math.ceil(len(scenarios) / n_columns)
    figure, axes = plt.subplots(
        n_rows, n_columns, figsize=(4.2 * n_columns, 3.3 * n_rows), squeeze=False
    )
    for index in range(len(scenarios), n_rows // len(ESTIMATORS) * n_columns):
        block, column = divmod(index, n_columns)
        for offset in range(len(ESTIMATORS)):
            axes[block * len(ESTIMATORS) + offset][column].set_visible(False)
    for index, scenario in enumerate(scenarios):
        block, column = divmod(index, n_columns)
        # show the range random pairs need (where the comparison happens), not a long tail
        baseline = data.get((scenario, *BASELINE))
        right = 1.3 * baseline["labels"][-1] if baseline is not None else None
        for offset, estimator in enumerate(ESTIMATORS):
            axis = axes[block * len(ESTIMATORS) + offset][column]
            for strategy in strategies:
                curve = data.get((scenario, strategy, estimator))
                if curve is None or not curve["labels"].size:
                    continue
                colour = colours[strategy]
                axis.plot(curve["labels"], curve["mean"], color=colour, label=strategy, lw=1.3)
                axis.fill_between(
                    curve["labels"], curve["low"], curve["high"], color=colour, alpha=0.15, lw=0
                )
            line = TARGETS[metric][1] if metric in TARGETS else reference
            if line is not None:
                axis.axhline(line, color="grey", lw=0.8, ls=":")
            if right:
                axis.set_xlim(0, right)
            axis.set_title(f"{scenario}\n{ESTIMATOR_TITLES[estimator]}", fontsize=8)
            axis.set_xlabel("labels", fontsize=8)
            axis.set_ylabel(metric, fontsize=8)
            axis.tick_params(labelsize=7)
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


__all__ = ["plot_curves"]
