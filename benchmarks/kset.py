"""Best-of-K tasks against pairs only: tasks, comparisons and rater hours to Kendall tau 0.9
within prompts of 4, at n = 100 and n = 1,000. The engine picks each task by gain per second
(engine.task_choice) from pairs only, or from pairs and best-of-3/4 K-sets; simulated raters
answer Thurstonian and take the stated rater time (sim.kset.RaterTime), which the engine
learns from the answer timestamps.

    python -m benchmarks.kset --seeds-small 5 --seeds-large 2

Writes benchmarks/results/kset.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sim.kset import KSetScenario, RaterTime, run_kset
from sim.report import provenance
from sim.runner import derive_seed

RESULTS = Path(__file__).resolve().parent / "results"
ARMS = {"pairs only": (2,), "pairs + best-of-3/4": (2, 3, 4)}
# Tau is checked every this many tasks per clip: at n = 1,000 each check scores 250 prompts.
CHECK_EVERY = {100: 0.05, 1000: 0.2}
BUDGET_PER_ITEM = 40.0


def _summary(values: list[float]) -> str:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return "not reached"
    missed = len(values) - len(finite)
    text = f"{np.mean(finite):.0f} [{min(finite):.0f}, {max(finite):.0f}]"
    return text + (f" ({missed} not reached)" if missed else "")


def _hours(values: list[float]) -> str:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return "not reached"
    return f"{np.mean(finite):.2f} [{min(finite):.2f}, {max(finite):.2f}]"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds-small", type=int, default=5, help="seeds at n = 100")
    parser.add_argument("--seeds-large", type=int, default=2, help="seeds at n = 1,000")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks.kset", *given])
    torch.set_num_threads(1)
    rows = []
    base = KSetScenario(max_tasks_per_item=BUDGET_PER_ITEM)
    for n, seeds in ((100, args.seeds_small), (1000, args.seeds_large)):
        for seed in range(seeds):
            for arm, sizes in ARMS.items():
                scenario = replace(
                    base, n_items=n, sizes=sizes, check_every_per_item=CHECK_EVERY[n]
                )
                started = time.perf_counter()
                row = run_kset(scenario, derive_seed(args.seed, "kset", n, seed))
                row.update(n_items=n, arm=arm, wall_seconds=time.perf_counter() - started)
                rows.append(row)
                print(json.dumps(row), flush=True)
    time_model = RaterTime()
    lines = [
        "# Best-of-K tasks vs pairs only: to Kendall tau 0.9 within prompts of 4",
        "",
        f"Command: `{command}` (seed {args.seed}; 1 torch thread, CPU, float64; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)",
        "",
        "Synthetic worlds (sim.kset): prompts of 4 clips, reward model corr "
        f"{base.rm_correlation}, the simulator's raters (Thurstone noise sd "
        f"{base.raters.noise_sd:.2f} JOD, spread {base.raters.noise_spread}), one rater at a "
        "time, the engine's dense posterior. Each task is the engine's choice by gain per "
        "second (engine.task_choice); a K-set is best-of-K (the rater names the best). "
        f"Rater-time model: pair {time_model.pair:g} s, K-set {time_model.kset_base:g} + "
        f"{time_model.kset_per_clip['best']:g} K s (best of 3: "
        f"{time_model.kset_base + 3 * time_model.kset_per_clip['best']:g} s, of 4: "
        f"{time_model.kset_base + 4 * time_model.kset_per_clip['best']:g} s), each times a "
        f"log-normal factor (log-sd {time_model.spread}); the engine starts from the same "
        "figures as its prior and learns them from the answer times. Tau is the posterior "
        "mean's Kendall tau against the truth within prompts, checked every "
        f"{CHECK_EVERY[100]:g} (n = 100) / {CHECK_EVERY[1000]:g} (n = 1,000) tasks per clip "
        f"and interpolated; budget {BUDGET_PER_ITEM:g} tasks per clip. Mean [min, max] over "
        "seeds; the same worlds in both arms.",
        "",
        "| n | arm | seeds | tasks to tau 0.9 | comparisons | rater hours | task mix (sum) |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for n in (100, 1000):
        for arm in ARMS:
            own = [r for r in rows if r["n_items"] == n and r["arm"] == arm]
            if not own:
                continue
            mix: dict[str, int] = {}
            for r in own:
                for kind, count in r["task_mix"].items():
                    mix[kind] = mix.get(kind, 0) + count
            lines.append(
                f"| {n} | {arm} | {len(own)} | "
                f"{_summary([r['tasks_to_target'] for r in own])} | "
                f"{_summary([r['comparisons_to_target'] for r in own])} | "
                f"{_hours([r['hours_to_target'] for r in own])} | "
                + ", ".join(f"{k} {v}" for k, v in sorted(mix.items()))
                + " |"
            )
    walls = []
    for n in (100, 1000):
        for arm in ARMS:
            own = [r["wall_seconds"] for r in rows if r["n_items"] == n and r["arm"] == arm]
            if own:
                walls.append(f"n = {n} {arm}: {np.mean(own):.0f}")
    lines += ["", "Wall time per run (s): " + ", ".join(walls)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "provenance": provenance(args.seed),
        "command": command,
        "rater_time": {
            "pair": time_model.pair,
            "kset_base": time_model.kset_base,
            "kset_per_clip": time_model.kset_per_clip,
            "spread": time_model.spread,
        },
        "rows": rows,
    }
    (RESULTS / "kset.json").write_text(json.dumps(document, indent=1) + "\n")
    (RESULTS / "kset.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
