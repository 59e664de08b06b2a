"""Ties that say where the pair stands: "both good" / "both bad" against plain ties.

Three arms on the same worlds (sim.worlds.SyntheticSpec: n clips in prompts of 4, pairs within
a prompt, a reward model of corr 0.7, 20 raters of spread noise, 4 at once, tie margin 0.5
JOD): raters who answer a tie as a tie, and raters who answer it "both good" when the pair's
mean, seen with their noise, is above `--threshold`, "both bad" below minus it, else a tie.
The engine (information gain) takes each arm's answers as they come (`CampaignConfig(
both_threshold=...)` in the second and third); the second scores a pair by win / loss / tie
alone (`SelectionOptions(both_gain=False)`), the third by all five answers (the default).
Each is scored by its own posterior:

- labels to Kendall tau 0.85 and 0.9 within prompts, and to RMSE <= 0.5 JOD (the quality
  centred per prompt, and, with the level events, across prompts: `rmse_all`);
- tau, RMSE and the coverage of 90 % intervals at the budget.

    python -m benchmarks.both_answers
    python -m benchmarks.both_answers --reps 2 --budget 1000   # a quick look

Writes `benchmarks/results/both_answers.{json,md}` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.concurrent import answer_concurrently, command_line, spread, write_results
from benchmarks.selection_speed import git_sha
from engine.selection import SelectionOptions
from sim import metrics
from sim.campaigns import build_campaign
from sim.raters import RaterSpec
from sim.runner import derive_seed, labels_to_target
from sim.strategies import make_strategy
from sim.worlds import SyntheticSpec, SyntheticWorld

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
ARMS = ("plain ties", "both good / both bad, tie-only gain", "both good / both bad, both gain")
TARGETS = {"tau 0.85": ("kendall_tau", 0.85), "tau 0.9": ("kendall_tau", 0.9)}
RMSE_TARGET = 0.5
CONCURRENT = 4
TIE_MARGIN = 0.5


def run(
    arm: str, spec: SyntheticSpec, rep: int, budget: int, every: int, both_gain: bool = True
) -> list[dict]:
    """One arm on one world: a record per checkpoint, scored by the engine's own posterior."""
    world_seed = derive_seed(13, "both_answers", rep)
    world = SyntheticWorld(spec, world_seed)
    strategy = make_strategy("information_gain", world.problem, derive_seed(world_seed, "s"))
    if not both_gain:
        # the same campaign as the strategy's own, its pairs scored by win / loss / tie alone
        strategy.campaign_ = build_campaign(
            world.problem,
            reward_model=True,
            selection=SelectionOptions(both_gain=False),
            both_threshold=world.problem.both_threshold,
        )
    rng = np.random.default_rng(derive_seed(world_seed, "answers"))
    groups = world.problem.groups
    records: list[dict] = []

    def checkpoint(labels: int, seconds: float) -> None:
        posterior = strategy.campaign_.posterior
        mean, cov = posterior.item_mean.numpy(), posterior.item_cov.numpy()
        records.append(
            {
                "arm": arm,
                "rep": rep,
                "labels": labels,
                "kendall_tau": metrics.kendall_tau(mean, world.quality, groups),
                "rmse": metrics.rmse(mean, world.quality, groups),
                "rmse_all": metrics.rmse(mean, world.quality, None),
                "coverage90": metrics.coverage(mean, cov, world.quality, groups),
            }
        )

    answer_concurrently(
        strategy,
        world,
        rng,
        n_raters=spec.raters.n_raters,
        concurrent=CONCURRENT,
        budget=budget,
        every=every,
        checkpoint=checkpoint,
    )
    return records


def summarise(records: list[dict]) -> list[dict[str, Any]]:
    """Per arm: labels to each target per world, and the figures at the budget."""
    rows = []
    for arm in ARMS:
        mine = [r for r in records if r["arm"] == arm]
        per_rep: dict[str, list[float]] = {
            **{name: [] for name in TARGETS},
            "rmse 0.5": [],
            "rmse_all 0.5": [],
            "tau": [],
            "rmse": [],
            "rmse_all": [],
            "coverage90": [],
        }
        for rep in sorted({r["rep"] for r in mine}):
            run_ = sorted((r for r in mine if r["rep"] == rep), key=lambda r: r["labels"])
            labels = [r["labels"] for r in run_]
            for name, (metric, target) in TARGETS.items():
                values = [r[metric] for r in run_]
                per_rep[name].append(labels_to_target(labels, values, ">=", target))
            for metric in ("rmse", "rmse_all"):
                values = [r[metric] for r in run_]
                per_rep[f"{metric} 0.5"].append(labels_to_target(labels, values, "<=", RMSE_TARGET))
            per_rep["tau"].append(run_[-1]["kendall_tau"])
            per_rep["rmse"].append(run_[-1]["rmse"])
            per_rep["rmse_all"].append(run_[-1]["rmse_all"])
            per_rep["coverage90"].append(run_[-1]["coverage90"])
        rows.append({"arm": arm, **per_rep})
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        '# "Both good" / "both bad" against plain ties',
        "",
        f"`{meta['command']}` at {meta['git']}, {meta['date']}; {meta['machine']}, load "
        f"before {meta['load_before']:.2f}. n = {meta['n_items']} clips in prompts of 4, pairs "
        f"within a prompt, K = 5, reward model corr 0.7, 20 raters (4 at once), tie margin "
        f"{TIE_MARGIN} JOD, both threshold {meta['threshold']} JOD; {meta['reps']} worlds, "
        f"{meta['budget']} labels each. Mean [min, max] over worlds; labels to a target "
        "interpolated between checkpoints; RMSE centred per prompt, and across prompts "
        "(`all`).",
        "",
        "| arm | labels to tau 0.85 | labels to tau 0.9 | labels to RMSE <= 0.5 | "
        "labels to RMSE all <= 0.5 | tau at budget | RMSE at budget | RMSE all at budget | "
        "90 % coverage at budget |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['arm']} | {spread(row['tau 0.85'])} | {spread(row['tau 0.9'])} | "
            f"{spread(row['rmse 0.5'])} | {spread(row['rmse_all 0.5'])} | "
            f"{spread(row['tau'], 3)} | {spread(row['rmse'], 3)} | {spread(row['rmse_all'], 3)} | "
            f"{spread(row['coverage90'], 3)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=100)
    parser.add_argument("--budget", type=int, default=2500)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    plain = SyntheticSpec(
        n_items=args.n_items,
        n_groups=args.n_items // 4,
        n_contexts=3,
        rm_correlation=0.7,
        pair_scope="group",
        raters=RaterSpec(tie_margin=TIE_MARGIN),
    )
    both = replace(plain, raters=replace(plain.raters, both_threshold=args.threshold))
    load = os.getloadavg()[0]
    records: list[dict] = []
    arms = ((plain, True), (both, False), (both, True))
    for rep in range(args.reps):
        for arm, (spec, both_gain) in zip(ARMS, arms, strict=True):
            records += run(arm, spec, rep, args.budget, args.every, both_gain)
            last = records[-1]
            print(f"{arm} rep {rep}: tau {last['kendall_tau']:.3f}, rmse {last['rmse']:.3f}")
    rows = summarise(records)
    meta = {
        "command": command_line("benchmarks.both_answers", parser, args),
        "git": git_sha(),
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, 1 thread",
        "load_before": load,
        "n_items": args.n_items,
        "budget": args.budget,
        "reps": args.reps,
        "threshold": args.threshold,
    }
    payload = {"meta": meta, "rows": rows, "records": records}
    write_results(args.out, "both_answers", payload, markdown(rows, meta))


if __name__ == "__main__":
    main()
