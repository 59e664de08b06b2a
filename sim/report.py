"""From metric records to what a reader wants: labels needed per target, curves, a results file.

The headline figure: for each scenario, strategy and estimator, the labels needed to
reach each target in `sim.runner.TARGETS`, mean and 95 % interval over repetitions, and its
ratio to what random pairs scored by the fixed estimator need (what a classic study spends).
Repetitions share their world across strategies (same seed), so ratios are also given paired,
per repetition.

Intervals are percentile-bootstrap intervals of the mean, so they stay inside the range the
values can take (a label count is never negative, a Kendall tau never above 1), and are NaN
(printed "n/a") below `MIN_REPS_FOR_INTERVAL` repetitions, where no interval is worth showing.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from sim.runner import PER_CLIP, TARGETS, labels_to_target

BASELINE = ("random", "fixed")  # (strategy, estimator) every ratio divides by
SHORT_METRICS = {"kendall_tau": "tau"}
INTERVAL_LEVEL = 0.95
# From two values the bootstrap has three distinct means and a Student-t interval is +-9 sd
# wide, well below zero labels: neither says anything a reader can use.
MIN_REPS_FOR_INTERVAL = 3
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0  # fixed, so the same records always give the same table


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % percentile-bootstrap interval of the mean.

    `[q_2.5, q_97.5]` of the means of `BOOTSTRAP_RESAMPLES` resamples drawn with replacement.
    Every resampled mean lies in `[min(values), max(values)]`, so the interval never leaves the
    range the values can take. NaN interval below `MIN_REPS_FOR_INTERVAL` values.
    """
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if array.size < MIN_REPS_FOR_INTERVAL:
        return mean, math.nan, math.nan
    generator = np.random.default_rng(BOOTSTRAP_SEED)
    picks = generator.integers(array.size, size=(BOOTSTRAP_RESAMPLES, array.size))
    means = array[picks].mean(axis=1)
    tail = (1 - INTERVAL_LEVEL) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return mean, float(low), float(high)


def _series(records: Iterable[dict]) -> dict[tuple, list[dict]]:
    """Records grouped by (scenario, strategy, estimator, rep), sorted by labels."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for row in records:
        grouped[(row["scenario"], row["strategy"], row["estimator"], row["rep"])].append(row)
    return {k: sorted(v, key=lambda r: r["labels"]) for k, v in grouped.items()}


def _labels_per_rep(records: Iterable[dict]) -> dict[tuple, dict[int, tuple[float, bool]]]:
    """(scenario, strategy, estimator, target) -> rep -> (labels to reach it, censored)."""
    per_rep: dict[tuple, dict[int, tuple[float, bool]]] = defaultdict(dict)
    for (scenario, strategy, estimator, rep), rows in _series(records).items():
        labels = [r["labels"] for r in rows]
        for metric, (direction, value) in TARGETS.items():
            needed = labels_to_target(labels, [r[metric] for r in rows], direction, value)
            censored = math.isnan(needed)
            target = f"{metric} {direction} {value}"
            per_rep[(scenario, strategy, estimator, target)][rep] = (
                float(labels[-1]) if censored else needed,
                censored,
            )
    return per_rep


def labels_needed(records: Iterable[dict]) -> list[dict[str, object]]:
    """Per (scenario, strategy, estimator, target): labels to reach it in each repetition.

    A repetition that never reaches the target within its budget counts at its last label
    count and is reported as censored (the mean is then a lower bound).
    """
    per_rep = _labels_per_rep(records)
    rows = []
    for (scenario, strategy, estimator, target), reps in sorted(per_rep.items()):
        baseline = per_rep.get((scenario, *BASELINE, target), {})
        values = [reps[r][0] for r in sorted(reps)]
        mean, low, high = mean_interval(values)
        base_mean = np.mean([v for v, _ in baseline.values()]) if baseline else math.nan
        paired = [reps[r][0] / baseline[r][0] for r in sorted(reps) if r in baseline]
        ratio_mean, ratio_low, ratio_high = mean_interval(paired) if paired else (math.nan,) * 3
        rows.append(
            {
                "scenario": scenario,
                "strategy": strategy,
                "estimator": estimator,
                "target": target,
                "labels_mean": mean,
                "labels_ci_low": low,
                "labels_ci_high": high,
                "ratio_to_random": mean / base_mean if base_mean else math.nan,
                "ratio_paired_mean": ratio_mean,
                "ratio_paired_ci_low": ratio_low,
                "ratio_paired_ci_high": ratio_high,
                "n_reps": len(values),
                "censored": sum(c for _, c in reps.values()),
                "baseline_censored": sum(c for _, c in baseline.values()),
            }
        )
    return rows


def paired_ratio(
    records: Iterable[dict],
    scenario: str,
    strategy: str,
    reference: str,
    target: str = "kendall_tau >= 0.9",
    estimator: str = "fixed",
) -> dict[str, object]:
    """Labels `strategy` needs over labels `reference` needs, per repetition (the same world),
    mean and 95 % interval; censored counts of each side. NaN when they share no repetition."""
    per_rep = _labels_per_rep(records)
    mine = per_rep.get((scenario, strategy, estimator, target), {})
    theirs = per_rep.get((scenario, reference, estimator, target), {})
    shared = sorted(set(mine) & set(theirs))
    ratios = [mine[r][0] / theirs[r][0] for r in shared]
    mean, low, high = mean_interval(ratios) if ratios else (math.nan,) * 3
    return {
        "scenario": scenario,
        "strategy": strategy,
        "reference": reference,
        "target": target,
        "estimator": estimator,
        "ratio_mean": mean,
        "ratio_ci_low": low,
        "ratio_ci_high": high,
        "n_reps": len(shared),
        "censored": sum(mine[r][1] for r in shared),
        "reference_censored": sum(theirs[r][1] for r in shared),
    }


def curves(records: Iterable[dict], metric: str) -> dict[tuple, dict[str, np.ndarray]]:
    """Per (scenario, strategy, estimator): labels, mean and 95 % band of `metric` over reps.

    A run that stopped early (its targets reached, or a replay's log used up) keeps its last
    value at later label counts, so every point averages all repetitions.
    """
    series: dict[tuple, dict[int, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in records:
        key = (row["scenario"], row["strategy"], row["estimator"])
        series[key][row["rep"]].append((row["labels"], float(row[metric])))
    result = {}
    for key, reps in series.items():
        runs = [sorted(points) for points in reps.values()]
        labels = sorted({label for run in runs for label, _ in run})
        values = np.empty((len(runs), len(labels)))
        for r, run in enumerate(runs):
            at = np.array([label for label, _ in run])
            last = np.searchsorted(at, labels, side="right") - 1
            values[r] = np.array([value for _, value in run])[np.maximum(last, 0)]
        stats = np.array([mean_interval(values[:, k]) for k in range(len(labels))]).reshape(-1, 3)
        result[key] = {
            "labels": np.array(labels),
            "mean": stats[:, 0],
            "low": stats[:, 1],
            "high": stats[:, 2],
        }
    return result


def at_per_clip(
    records: Iterable[dict], n_items: dict[str, int], metrics: Sequence[str]
) -> list[dict[str, object]]:
    """Per (scenario, strategy, estimator) and each of `PER_CLIP` labels per clip: the mean and
    95 % interval of each metric over the repetitions scored there (every run is, unless its
    world ran out of answers first); `n_items` gives each scenario's clip count."""
    at: dict[tuple, list[dict]] = defaultdict(list)
    for row in records:
        at[(row["scenario"], row["strategy"], row["estimator"], row["labels"])].append(row)
    rows = []
    keys = dict.fromkeys((r["scenario"], r["strategy"], r["estimator"]) for r in records)
    for scenario, strategy, estimator in keys:
        n = n_items[scenario]
        for per_clip in PER_CLIP:
            scored = at.get((scenario, strategy, estimator, round(per_clip * n)), [])
            if not scored:
                continue
            row: dict[str, object] = {
                "scenario": scenario,
                "strategy": strategy,
                "estimator": estimator,
                "per_clip": per_clip,
                "labels": round(per_clip * n),
                "n_reps": len(scored),
            }
            for metric in metrics:
                mean, low, high = mean_interval([float(r[metric]) for r in scored])
                row.update({metric: mean, f"{metric}_low": low, f"{metric}_high": high})
            rows.append(row)
    return rows


def coverage_gaps(
    records: Iterable[dict], n_items: dict[str, int], from_per_clip: float = 2.0
) -> list[dict[str, object]]:
    """Per (scenario, strategy, estimator): the largest distance of the mean 50 % and 90 %
    interval coverage (over the repetitions scored at a checkpoint) from nominal, over every
    checkpoint from `from_per_clip` labels per clip on where every repetition was scored (runs
    stop once their targets are reached), the checkpoint where it is, and the standard error
    of that mean over the repetitions (a gap of a few worlds' mean is partly their spread)."""
    records = list(records)
    reps: dict[tuple, set[int]] = defaultdict(set)
    at: dict[tuple, list[dict]] = defaultdict(list)
    for row in records:
        reps[(row["scenario"], row["strategy"], row["estimator"])].add(row["rep"])
        if row["labels"] >= from_per_clip * n_items[row["scenario"]]:
            at[(row["scenario"], row["strategy"], row["estimator"], row["labels"])].append(row)
    worst: dict[tuple, dict[str, object]] = {}
    for (scenario, strategy, estimator, labels), scored in sorted(at.items()):
        if len(scored) < len(reps[(scenario, strategy, estimator)]):
            continue
        entry = worst.setdefault(
            (scenario, strategy, estimator),
            {"scenario": scenario, "strategy": strategy, "estimator": estimator},
        )
        for metric, nominal in (("coverage50", 0.5), ("coverage90", 0.9)):
            values = np.array([r[metric] for r in scored], dtype=float)
            gap = float(values.mean()) - nominal
            if abs(gap) >= abs(float(entry.get(f"{metric}_gap", 0.0))):  # type: ignore[arg-type]
                entry[f"{metric}_gap"] = gap
                entry[f"{metric}_at"] = labels
                spread = float(values.std(ddof=1)) if values.size > 1 else float("nan")
                entry[f"{metric}_se"] = spread / math.sqrt(values.size)
    return list(worst.values())


def provenance(seed: int) -> dict[str, object]:
    """Seed, dtype, device and code version, for every results file."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "unknown", False
    return {
        "seed": seed,
        "dtype": "float64",
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "git_sha": sha,
        "git_dirty": dirty,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_results(
    path: Path,
    *,
    seed: int,
    scenarios: Sequence[dict[str, object]],
    strategies: Sequence[str],
    records: list[dict],
    extra: dict[str, object] | None = None,
) -> dict[str, object]:
    """Write `{provenance, scenarios, strategies, targets, summary, records}` as JSON."""
    document = {
        "provenance": provenance(seed),
        **(extra or {}),
        "scenarios": list(scenarios),
        "strategies": list(strategies),
        "targets": {k: f"{d} {v}" for k, (d, v) in TARGETS.items()},
        "summary": labels_needed(records),
        "records": records,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, allow_nan=True) + "\n")
    return document


def read_results(path: Path) -> dict[str, object]:
    """A results file written by `write_results`.

    Raises:
        ValueError: the file is not a results file.
    """
    document = json.loads(Path(path).read_text())
    if not isinstance(document, dict) or "records" not in document:
        raise ValueError(f"{path} is not a sim results file (no 'records')")
    return document


def format_labels(row: dict[str, object]) -> str:
    """'1234 [1100, 1370]', with '>=' when some repetitions never reached the target and
    '[n/a]' when there were too few repetitions for an interval."""
    mean, low, high = row["labels_mean"], row["labels_ci_low"], row["labels_ci_high"]
    prefix = ">=" if row["censored"] else ""
    band = " [n/a]" if math.isnan(low) else f" [{low:.0f}, {high:.0f}]"
    return f"{prefix}{mean:.0f}{band}"


def short_target(target: str) -> str:
    """A target as a narrow table shows it: 'kendall_tau >= 0.9' -> 'tau >= 0.9'."""
    metric, _, rest = target.partition(" ")
    return f"{SHORT_METRICS.get(metric, metric)} {rest}"


__all__ = [
    "BASELINE",
    "MIN_REPS_FOR_INTERVAL",
    "at_per_clip",
    "coverage_gaps",
    "curves",
    "format_labels",
    "labels_needed",
    "mean_interval",
    "paired_ratio",
    "provenance",
    "read_results",
    "short_target",
    "write_results",
]
