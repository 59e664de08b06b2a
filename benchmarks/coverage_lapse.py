"""Interval coverage under the scoring posterior's lapse model: how much of the learning
scorer's over-coverage is its keep prior.

The label-efficiency suite scores every strategy by the engine posterior that learns each
rater's random-click rate under a Beta keep prior with a 5 % share of pure random clickers
(`sim.campaigns.build_scoring_campaign`). Each label is applied with its rater's keep at the
time, and a new rater's is the prior mean (0.855 under Beta(9, 1)): where the prior expects
more lapses than the raters make, the labels weigh less than they could and the intervals
come out wide. This runs the same worlds and pairs scored under several lapse models
(`sim.campaigns.ScoringOptions`): the earlier default Beta(9, 1), with and without its alpha
refitted by empirical Bayes (`CampaignConfig.refit_keep_prior`, docs/MATH.md §3), the default
(engine.reliability.KEEP_PRIOR), a tighter prior, and no lapse model,
in n = 100 worlds where nobody lapses and where every rater clicks at random 10 % of the
time. Coverage is the share of clips whose true quality lies in the central 50 % / 90 %
interval, mean over worlds with its standard error.

    python -m benchmarks.coverage_lapse --jobs 2
    python -m benchmarks.coverage_lapse --reps 2 --budget 500 --strategy random   # a quick look

Writes `benchmarks/results/coverage_lapse.{json,md}` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.concurrent import command_line, write_results
from benchmarks.label_efficiency import _synthetic
from benchmarks.selection_speed import git_sha
from sim.campaigns import LAPSE_PRIOR, ScoringOptions
from sim.parallel import map_runs
from sim.runner import RunKey, Scenario, run_once

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
SCORINGS = {
    "keep Beta(9, 1)": ScoringOptions(lapse_prior=(9.0, 1.0)),
    "keep Beta(9, 1), refitted": ScoringOptions(lapse_prior=(9.0, 1.0), refit_keep_prior=True),
    f"keep Beta({LAPSE_PRIOR[0]:g}, {LAPSE_PRIOR[1]:g}) (default)": ScoringOptions(),
    "keep Beta(49, 1)": ScoringOptions(lapse_prior=(49.0, 1.0)),
    "no lapse model": ScoringOptions(lapse_prior=None),
}
WORLDS = {
    "n100-rm0.7": {},
    "n100-rm0.7-lapse10": {"lapse_rate": 0.1},
}
CHECKPOINTS = (200, 500, 1000, 2000)  # those within the budget are scored


def _run(key: RunKey) -> list[dict[str, object]]:
    return [r for r in run_once(key) if r["estimator"] == "engine" and r["labels"] in CHECKPOINTS]


def measure(strategy: str, reps: int, budget: int, jobs: int, seed: int) -> list[dict[str, Any]]:
    """One row per (world, scoring, checkpoint): coverage and RMSE, mean and standard error
    over `reps` worlds; every scoring faces the same worlds and pairs."""
    keys, labels = [], []
    for world, raters in WORLDS.items():
        scenario = Scenario(world, _synthetic(100, 0.7, **raters), budget, 100)
        for name, scoring in SCORINGS.items():
            for rep in range(reps):
                keys.append(RunKey(scenario, strategy, rep, seed, scoring=scoring))
                labels.append((world, name))
    results = map_runs(_run, keys, jobs=jobs)
    cells: dict[tuple[str, str, int], list[dict]] = {}
    for (world, name), records in zip(labels, results, strict=True):
        for record in records:
            cells.setdefault((world, name, int(record["labels"])), []).append(record)
    rows = []
    for (world, name, count), records in cells.items():
        row: dict[str, Any] = {"world": world, "scoring": name, "labels": count}
        for metric in ("coverage50", "coverage90", "rmse"):
            values = np.array([r[metric] for r in records], dtype=float)
            row[metric] = float(values.mean())
            row[f"{metric}_se"] = float(values.std(ddof=1) / np.sqrt(values.size))
        row["reps"] = len(records)
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Interval coverage under the scoring posterior's lapse model",
        "",
        f"- command: `{meta['command']}`",
        f"- git {meta['git']}, {meta['date']}, {meta['cpus']} CPU cores, torch "
        f"{meta['torch']}, load before {meta['load_before']:.2f}, {meta['seconds']:.0f} s",
        f"- {meta['strategy']} pairs, n = 100 (reward model corr 0.7), {meta['reps']} worlds "
        "per row, the same worlds and pairs for every scoring; mean (standard error)",
        "",
        "| world | scoring | labels | cov 50 % | cov 90 % | RMSE |",
        "|---|---|---:|---:|---:|---:|",
    ]
    order = {name: k for k, name in enumerate(SCORINGS)}
    for row in sorted(rows, key=lambda r: (r["world"], order[r["scoring"]], r["labels"])):
        cells = [
            f"{row[m]:.3f} ({row[f'{m}_se']:.3f})" for m in ("coverage50", "coverage90", "rmse")
        ]
        lines.append(
            f"| {row['world']} | {row['scoring']} | {row['labels']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategy", default="information_gain")
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser, parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser, args = parse_args(argv)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    rows = measure(args.strategy, args.reps, args.budget, args.jobs, args.seed)
    meta = {
        "command": command_line("benchmarks.coverage_lapse", parser, args),
        "git": git_sha(),
        "date": dt.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "load_before": load,
        "seconds": time.perf_counter() - started,
        "strategy": args.strategy,
        "reps": args.reps,
    }
    write_results(args.out, "coverage_lapse", {"meta": meta, "rows": rows}, markdown(rows, meta))
    return rows


if __name__ == "__main__":
    main()
