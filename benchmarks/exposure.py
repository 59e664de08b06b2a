"""Clips arriving in waves, with and without the exposure rule (engine.exposure).

A synthetic world (sim.waves.WaveScenario) of n clips in prompts of 4, pairs within a prompt,
a reward model of correlation 0.5 and 20 raters of spread noise, 4 at once. Its prompts join
the campaign in three waves, at 0, 1/3 and 2/3 of the label budget. The engine chooses every
pair, with the floor of labels per clip off (`min_labels=0`) or on (`min_labels=2`, the
default); both arms face the same worlds. Each wave is scored apart by the engine's posterior:
Kendall tau and RMSE within prompts, the coverage of central 50 % and 90 % intervals, and the
fewest and the median labels a clip of the wave took, a quarter and a half of a wave's window
after it arrived (about once and twice as many labels as it has clips) and at the budget.

    python -m benchmarks.exposure
    python -m benchmarks.exposure --scope any --name exposure_any   # pairs across prompts
    python -m benchmarks.exposure --reps 2 --n-items 60   # a quick look

Writes `benchmarks/results/<name>.{json,md}` (default exposure) and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.concurrent import command_line, spread, write_results
from benchmarks.selection_speed import git_sha
from sim.waves import WaveScenario, run_waves

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
ARMS = (0, 2)  # min_labels: the rule off, and the default floor
METRICS = ("kendall_tau", "rmse", "coverage50", "coverage90", "min_labels", "median_labels")
DIGITS = {"min_labels": 1, "median_labels": 1}


def summarise(
    runs: list[dict[str, Any]], n_waves: int, offsets: tuple[int, ...]
) -> dict[str, list[dict[str, Any]]]:
    """Per moment ("budget": the last checkpoint; "+d": d labels after each wave arrived, d
    in `offsets`), arm and wave: each metric's values over the worlds."""
    moments: dict[str, list[dict[str, Any]]] = {f"+{d}": [] for d in offsets}
    moments["budget"] = []
    for minimum in ARMS:
        mine = [r for r in runs if r["min_labels"] == minimum]
        for wave in range(n_waves):
            for moment, rows in moments.items():
                values: dict[str, list[float]] = {m: [] for m in METRICS}
                for run_ in mine:
                    at = (
                        run_["labels"]
                        if moment == "budget"
                        else run_["arrivals"][wave] + int(moment[1:])
                    )
                    (record,) = [
                        r for r in run_["records"] if r["labels"] == at and r["wave"] == wave
                    ]
                    for metric in METRICS:
                        values[metric].append(record[metric])
                rows.append({"floor": minimum, "wave": wave, **values})
    return moments


def markdown(moments: dict[str, list[dict[str, Any]]], meta: dict[str, Any]) -> str:
    lines = [
        "# Clips arriving in waves: with and without a floor of labels per clip",
        "",
        f"`{meta['command']}` at {meta['git']}, {meta['date']}; {meta['machine']}, "
        f"load before {meta['load_before']:.2f}. n = {meta['n_items']} clips in prompts of 4, "
        f"{'pairs within a prompt' if meta['pair_scope'] == 'group' else 'any two clips paired'}, "
        f"K = 5, reward model corr {meta['rm_correlation']}, 20 raters "
        f"(4 at once); prompts arrive in {meta['n_waves']} waves at labels "
        f"{', '.join(str(a) for a in meta['arrivals'])} of {meta['budget']}; "
        f"{meta['reps']} worlds, the same for both arms. Mean [min, max] over worlds; each wave "
        "scored apart by the engine's posterior (tau and RMSE within prompts, RMSE in JOD).",
        "",
    ]
    for moment, rows in moments.items():
        heading = (
            f"At the budget ({meta['budget']} labels):"
            if moment == "budget"
            else f"{moment[1:]} labels after each wave arrived:"
        )
        lines += [
            heading,
            "",
            "| min_labels | wave | Kendall tau | RMSE | 50 % coverage | 90 % coverage | "
            "fewest labels | median labels |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            cells = " | ".join(spread(row[m], DIGITS.get(m, 3)) for m in METRICS)
            lines.append(f"| {row['floor']} | {row['wave']} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=240)
    parser.add_argument("--labels-per-item", type=float, default=4.0)
    parser.add_argument("--rm-corr", type=float, default=0.5)
    parser.add_argument("--scope", choices=("group", "any"), default="group")
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", default="exposure", help="results file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n_waves = 3
    window = round(args.labels_per_item * args.n_items) // n_waves
    # a quarter and a half of a wave's window: a new wave has had about once and twice as
    # many labels as it has clips (a pair pays two of them a label)
    offsets = (window // 4, window // 2)
    load = os.getloadavg()[0]
    runs = []
    for rep in range(args.reps):
        for minimum in ARMS:
            scenario = WaveScenario(
                n_items=args.n_items,
                n_waves=n_waves,
                labels_per_item=args.labels_per_item,
                after_arrival=offsets,
                rm_correlation=args.rm_corr,
                min_labels=minimum,
                pair_scope=args.scope,
            )
            started = time.perf_counter()
            result = run_waves(scenario, args.seed + rep)
            result["seconds"] = time.perf_counter() - started
            runs.append(result)
            last = [r for r in result["records"] if r["labels"] == result["labels"]]
            taus = ", ".join(f"{r['kendall_tau']:.3f}" for r in last)
            print(f"min_labels {minimum} rep {rep}: tau by wave {taus}, {result['seconds']:.0f} s")
    arrivals = runs[0]["arrivals"]
    budget = runs[0]["labels"]
    moments = summarise(runs, n_waves, offsets)
    meta = {
        "command": command_line("benchmarks.exposure", parser, args),
        "git": git_sha(),
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, 1 thread",
        "load_before": load,
        "seed": args.seed,
        "dtype": "float64",
        "device": "cpu",
        "n_items": args.n_items,
        "rm_correlation": args.rm_corr,
        "pair_scope": args.scope,
        "n_waves": n_waves,
        "arrivals": arrivals,
        "budget": budget,
        "after_arrival": offsets,
        "reps": args.reps,
        "seconds": float(np.sum([r["seconds"] for r in runs])),
    }
    payload = {"meta": meta, "moments": moments, "runs": runs}
    write_results(args.out, args.name, payload, markdown(moments, meta))


if __name__ == "__main__":
    main()
