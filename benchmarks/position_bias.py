"""Raters who favour a side: what learning their side offsets buys (engine.position).

A synthetic world (sim.worlds.SyntheticSpec) of n clips in prompts of 4, pairs within a
prompt, a reward model of correlation 0.7 and 20 raters of spread noise, 4 at once, whose
side offsets are drawn per rater (mean `--side-bias`, sd `--side-spread`, JOD; positive
favours the left clip). The page draws each pair's side at random. Three strategies on the
same worlds, each scored by its own posterior at every checkpoint:

- `information_gain`: the engine without a side block (it is told the side and ignores it);
- `information_gain_side`: the engine with the side block (a global and a per-rater offset);
- `random`: random pairs within prompts, scored by the same posterior as the engine without
  a side block (the ceiling's other end: what a label is worth with no choosing).

Reports labels to Kendall tau 0.85 and 0.9 (interpolated between checkpoints), tau and the
coverage of 90 % intervals at the budget, and, for the side block, how well it recovers the
offsets: the correlation and RMSE of the raters' posterior offsets against their true ones,
the share of true offsets inside their 90 % intervals, and the global offset against the
raters' mean.

    python -m benchmarks.position_bias
    python -m benchmarks.position_bias --side-bias 1.0 --side-spread 0.5 --name position_bias_strong
    python -m benchmarks.position_bias --reps 2 --budget 1500   # a quick look

Writes `benchmarks/results/<name>.{json,md}` (default position_bias) and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.concurrent import answer_concurrently, command_line, spread, write_results
from benchmarks.selection_speed import git_sha
from engine import Judgment, Outcome
from sim import metrics
from sim.campaigns import build_campaign
from sim.raters import RaterSpec
from sim.runner import derive_seed, labels_to_target
from sim.strategies import make_strategy
from sim.worlds import SyntheticSpec, SyntheticWorld

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
STRATEGIES = ("information_gain", "information_gain_side", "random")
TAU_TARGETS = (0.85, 0.9)
CONCURRENT = 4
Z90 = 1.6448536269514722


def run(name: str, spec: SyntheticSpec, rep: int, budget: int, every: int) -> dict[str, Any]:
    """One strategy on one world: a record per checkpoint, and the side offsets at the end."""
    world_seed = derive_seed(11, "position_bias", rep)
    world = SyntheticWorld(spec, world_seed)
    strategy = make_strategy(name, world.problem, derive_seed(world_seed, "strategy"))
    # random pairs have no posterior of their own: the engine's, without a side block
    scorer = build_campaign(world.problem, reward_model=True) if name == "random" else None
    rng = np.random.default_rng(derive_seed(world_seed, "answers"))
    records: list[dict[str, Any]] = []
    groups = world.problem.groups

    def checkpoint(labels: int, seconds: float) -> None:
        posterior = (scorer or strategy.campaign_).posterior
        mean, cov = posterior.item_mean.numpy(), posterior.item_cov.numpy()
        records.append(
            {
                "strategy": name,
                "rep": rep,
                "labels": labels,
                "kendall_tau": metrics.kendall_tau(mean, world.quality, groups),
                "coverage90": metrics.coverage(mean, cov, world.quality, groups),
                "seconds": seconds,
            }
        )

    def also(first: int, second: int, outcome: Outcome, rater: int, left: int | None) -> None:
        if scorer is not None:
            scorer.observe([Judgment.pair(None, first, second, outcome)])

    answer_concurrently(
        strategy,
        world,
        rng,
        n_raters=spec.raters.n_raters,
        concurrent=CONCURRENT,
        budget=budget,
        every=every,
        checkpoint=checkpoint,
        also=also,
    )
    result: dict[str, Any] = {"records": records}
    if name == "information_gain_side":
        offsets = strategy.campaign_.side_offsets()
        truth = world.raters.side_offset
        seen = sorted(offsets.rater_mean)
        estimate = np.array([offsets.rater_mean[r] for r in seen])
        sd = np.array([offsets.rater_sd[r] for r in seen])
        true = truth[seen]
        result["offsets"] = {
            "raters": len(seen),
            "correlation": float(np.corrcoef(estimate, true)[0, 1]),
            "rmse": float(np.sqrt(np.mean((estimate - true) ** 2))),
            "coverage90": float(np.mean(np.abs(estimate - true) <= Z90 * sd)),
            "global_mean": offsets.global_mean,
            "global_sd": offsets.global_sd,
            "true_mean": float(truth.mean()),
        }
    return result


def summarise(runs: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """Per strategy: labels to each tau target per rep, tau and coverage at the budget."""
    rows = []
    for name in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == name]
        to_target: dict[float, list[float]] = {t: [] for t in TAU_TARGETS}
        final_tau, final_cov, seconds = [], [], []
        for run_ in mine:
            records = sorted(run_["records"], key=lambda r: r["labels"])
            labels = [r["labels"] for r in records]
            tau = [r["kendall_tau"] for r in records]
            for target in TAU_TARGETS:
                to_target[target].append(labels_to_target(labels, tau, ">=", target))
            final_tau.append(tau[-1])
            final_cov.append(records[-1]["coverage90"])
            seconds.append(records[-1]["seconds"])
        row: dict[str, Any] = {
            "strategy": name,
            **{f"labels_to_tau_{t}": to_target[t] for t in TAU_TARGETS},
            "tau_at_budget": final_tau,
            "coverage90_at_budget": final_cov,
            "seconds": seconds,
        }
        offsets = [r["offsets"] for r in mine if "offsets" in r]
        if offsets:
            row["offsets"] = {k: [o[k] for o in offsets] for k in offsets[0]}
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Raters who favour a side: with and without the side block",
        "",
        f"`{meta['command']}` at {meta['git']}, {meta['date']}; {meta['machine']}, "
        f"load before {meta['load_before']:.2f}. n = {meta['n_items']} clips in prompts of 4, "
        f"pairs within a prompt, K = 5, reward model corr 0.7, 20 raters (4 at once) with side "
        f"offsets ~ N({meta['side_bias']}, {meta['side_spread']}^2) JOD, sides drawn at random; "
        f"{meta['reps']} worlds, {meta['budget']} labels each. Mean [min, max] over worlds; "
        "Kendall tau within prompts against the truth, each strategy scored by its own "
        "posterior (random pairs by the engine's posterior without a side block).",
        "",
        "| strategy | labels to tau 0.85 | labels to tau 0.9 | tau at budget | "
        "90 % coverage at budget | seconds per run |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['strategy']} | {spread(row['labels_to_tau_0.85'])} | "
            f"{spread(row['labels_to_tau_0.9'])} | {spread(row['tau_at_budget'], 3)} | "
            f"{spread(row['coverage90_at_budget'], 3)} | {spread(row['seconds'], 0)} |"
        )
    side = next((row["offsets"] for row in rows if "offsets" in row), None)
    if side:
        lines += [
            "",
            "Offsets recovered by the side block at the budget (per world, then mean [min, max]):",
            "",
            "| raters | corr(posterior, true) | RMSE (JOD) | true offset in its 90 % interval | "
            "global offset | raters' true mean |",
            "|---|---|---|---|---|---|",
            f"| {spread(side['raters'])} | {spread(side['correlation'], 3)} | "
            f"{spread(side['rmse'], 3)} | {spread(side['coverage90'], 2)} | "
            f"{spread(side['global_mean'], 3)} | {spread(side['true_mean'], 3)} |",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=100)
    parser.add_argument("--budget", type=int, default=2500)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--side-bias", type=float, default=0.5)
    parser.add_argument("--side-spread", type=float, default=0.4)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", default="position_bias", help="results file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = SyntheticSpec(
        n_items=args.n_items,
        n_groups=args.n_items // 4,
        n_contexts=3,
        rm_correlation=0.7,
        pair_scope="group",
        raters=RaterSpec(side_bias=args.side_bias, side_spread=args.side_spread),
    )
    load = os.getloadavg()[0]
    runs = []
    for rep in range(args.reps):
        for name in STRATEGIES:
            result = run(name, spec, rep, args.budget, args.every)
            runs.append({"strategy": name, "rep": rep, **result})
            last = result["records"][-1]
            print(f"{name} rep {rep}: tau {last['kendall_tau']:.3f}, {last['seconds']:.0f} s")
    rows = summarise(runs, args.budget)
    meta = {
        "command": command_line("benchmarks.position_bias", parser, args),
        "git": git_sha(),
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, 1 thread",
        "load_before": load,
        "n_items": args.n_items,
        "budget": args.budget,
        "reps": args.reps,
        "side_bias": args.side_bias,
        "side_spread": args.side_spread,
    }
    payload = {"meta": meta, "rows": rows, "runs": runs}
    write_results(args.out, args.name, payload, markdown(rows, meta))


if __name__ == "__main__":
    main()
