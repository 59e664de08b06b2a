"""What the factorised form costs against the dense posterior in any scope (n = 1,000).

`CampaignConfig(structure="factorised")` is the approximation that takes pair_scope="any"
past the dense form's limit (docs/MATH.md §6, pairs across groups; engine.neighbours). Here
both forms run the same synthetic world (sim.worlds.SyntheticSpec: n clips in prompts of 4,
any scope, a reward model of correlation 0.7, 20 raters of spread noise, 4 at once), each
choosing its own pairs by information gain with the same answers' randomness, and each is
scored by its own posterior at every checkpoint:

- Kendall tau of its posterior-mean order against the truth, and the labels at which it
  first reaches 0.85 and 0.9 (interpolated between checkpoints);
- the coverage of its central 90 % intervals (the share of clips whose true quality, centred,
  lies inside; sim.metrics.coverage);
- seconds spent choosing and updating.

    python -m benchmarks.factorised_cost
    python -m benchmarks.factorised_cost --n-items 300 --budget 3000 --reps 2   # a quick look
    python -m benchmarks.factorised_cost --render   # the table again from the saved JSON

Writes `benchmarks/results/factorised_cost.{json,md}` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.concurrent import answer_concurrently, command_line, spread, write_results
from benchmarks.selection_speed import git_sha
from sim import metrics
from sim.runner import derive_seed, labels_to_target
from sim.strategies import make_strategy
from sim.worlds import SyntheticSpec, SyntheticWorld

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
FORMS = {"dense": "information_gain", "factorised": "information_gain_factorised"}
TAU_TARGETS = (0.85, 0.9)
CONCURRENT = 4


def run(form: str, spec: SyntheticSpec, rep: int, budget: int, every: int) -> list[dict]:
    """One form on one world: a record per checkpoint, scored by the form's own posterior."""
    world_seed = derive_seed(7, "factorised_cost", rep)
    world = SyntheticWorld(spec, world_seed)
    strategy = make_strategy(FORMS[form], world.problem, derive_seed(world_seed, "strategy"))
    rng = np.random.default_rng(derive_seed(world_seed, "answers"))
    records: list[dict] = []

    def checkpoint(labels: int, seconds: float) -> None:
        posterior = strategy.campaign_.posterior
        mean, cov = posterior.item_mean.numpy(), posterior.item_cov.numpy()
        records.append(
            {
                "form": form,
                "rep": rep,
                "labels": labels,
                "kendall_tau": metrics.kendall_tau(mean, world.quality, None),
                "coverage90": metrics.coverage(mean, cov, world.quality, None),
                "seconds": seconds,
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


def summarise(records: list[dict], budget: int) -> list[dict[str, Any]]:
    """Per form: labels to tau 0.9 per rep, and tau and coverage at a few label counts."""
    rows = []
    for form in FORMS:
        mine = [r for r in records if r["form"] == form]
        reps = sorted({r["rep"] for r in mine})
        to_target: dict[float, list[float]] = {t: [] for t in TAU_TARGETS}
        final_tau, final_cov, cov_at_target, seconds = [], [], [], []
        for rep in reps:
            run_ = sorted((r for r in mine if r["rep"] == rep), key=lambda r: r["labels"])
            labels = [r["labels"] for r in run_]
            tau = [r["kendall_tau"] for r in run_]
            for target in TAU_TARGETS:
                to_target[target].append(labels_to_target(labels, tau, ">=", target))
            final_tau.append(tau[-1])
            final_cov.append(run_[-1]["coverage90"])
            half = min(run_, key=lambda r: abs(r["labels"] - budget // 2))
            cov_at_target.append(half["coverage90"])
            seconds.append(run_[-1]["seconds"])
        rows.append(
            {
                "form": form,
                **{f"labels_to_tau_{t}": to_target[t] for t in TAU_TARGETS},
                "tau_at_budget": final_tau,
                "coverage90_at_half_budget": cov_at_target,
                "coverage90_at_budget": final_cov,
                "seconds": seconds,
            }
        )
    return rows


def markdown(rows: list[dict], meta: dict[str, Any]) -> str:
    lines = [
        "# The factorised form against the dense posterior, any scope",
        "",
        f"`{meta['command']}` at {meta['git']}, {meta['date']}; {meta['machine']}, "
        f"load before {meta['load_before']:.2f}. n = {meta['n_items']} clips in prompts of 4, "
        f"K = 5, reward model corr 0.7, {meta['reps']} worlds, {meta['budget']} labels each; "
        "each form scored by its own posterior. Mean [min, max] over worlds.",
        "",
        "| form | labels to tau 0.85 | labels to tau 0.9 | tau at budget | "
        "90 % coverage, half budget | 90 % coverage at budget | seconds per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['form']} | {spread(row['labels_to_tau_0.85'])} | "
            f"{spread(row['labels_to_tau_0.9'])} | "
            f"{spread(row['tau_at_budget'], 3)} | "
            f"{spread(row['coverage90_at_half_budget'], 3)} | "
            f"{spread(row['coverage90_at_budget'], 3)} | {spread(row['seconds'], 0)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=16_000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--render", action="store_true", help="rewrite the table from the JSON")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads((args.out / "factorised_cost.json").read_text())
        meta = saved["meta"]
        rows = summarise(saved["records"], meta["budget"])
        payload = {"meta": meta, "rows": rows, "records": saved["records"]}
        write_results(args.out, "factorised_cost", payload, markdown(rows, meta))
        return
    torch.set_num_threads(2)
    spec = SyntheticSpec(
        n_items=args.n_items,
        n_groups=args.n_items // 4,
        n_contexts=10,
        rm_correlation=0.7,
        pair_scope="any",
    )
    load = os.getloadavg()[0]
    records = []
    for rep in range(args.reps):
        for form in FORMS:
            records += run(form, spec, rep, args.budget, args.every)
            last = records[-1]
            print(f"{form} rep {rep}: tau {last['kendall_tau']:.3f}, {last['seconds']:.0f} s")
    rows = summarise(records, args.budget)
    meta = {
        "command": command_line("benchmarks.factorised_cost", parser, args),
        "git": git_sha(),
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, 2 threads",
        "load_before": load,
        "n_items": args.n_items,
        "budget": args.budget,
        "reps": args.reps,
    }
    payload = {"meta": meta, "rows": rows, "records": records}
    write_results(args.out, "factorised_cost", payload, markdown(rows, meta))


if __name__ == "__main__":
    main()
