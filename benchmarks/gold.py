"""Gold questions: how soon are random clickers flagged with gold pairs mixed in, against
reliability learned from ordinary answers only, at the same total label budget?

Synthetic worlds (n clips, no reward model, "any" scope) with a rater population of which a
share clicks at random; raters take turns at random; the engine chooses every task
(information gain, lapses and rater noise learned). Arms: gold rate 0 (no gold pairs) and the
rates given, with the operator's gold pairs clearly apart in the truth (sim/gold.py). Per
random clicker: the campaign's total labels when first flagged (censored at the budget when
never), and their own labels then. Also honest raters flagged and the final Kendall tau (what
the gold share costs the ranking).

    python -m benchmarks.gold --seeds 6

Writes benchmarks/results/gold.{json,md}. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sim.gold import flag_race
from sim.raters import RaterSpec
from sim.report import provenance
from sim.runner import derive_seed
from sim.worlds import SyntheticSpec, SyntheticWorld

RESULTS = Path(__file__).resolve().parent / "results"
N_ITEMS = 40
N_RATERS = 10
RANDOM_FRACTION = 0.2  # two of ten raters click at random
BUDGET = 1000
N_GOLD = 60
MIN_GAP = 2.0  # gold pairs' true gap, in rater-noise sds; the engine's gold_margin


def _spread(values: list[float]) -> str:
    """Median [quartiles]; a value past the budget (never flagged) shows as ">budget"."""
    array = np.asarray(values, dtype=float)
    return (
        f"{np.median(array):.0f} [{np.percentile(array, 25):.0f}, {np.percentile(array, 75):.0f}]"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.2])
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks.gold", *given])
    torch.set_num_threads(1)
    spec = SyntheticSpec(
        n_items=N_ITEMS,
        n_groups=4,
        n_criteria=0,
        raters=RaterSpec(n_raters=N_RATERS, concurrent=1, random_fraction=RANDOM_FRACTION),
    )
    rows = []
    started = time.perf_counter()
    for world_index in range(args.seeds):
        seed = derive_seed(args.seed, "gold", world_index)
        for rate in [0.0, *args.rates]:
            world = SyntheticWorld(spec, seed)
            race = flag_race(
                world, budget=BUDGET, gold_rate=rate, n_gold=N_GOLD, min_gap=MIN_GAP, seed=seed
            )
            row = {"world": world_index, "gold_rate": rate, **asdict(race)}
            rows.append(row)
            print(row, flush=True)
    seconds = time.perf_counter() - started
    lines = [
        "# Gold questions: labels until a random clicker is flagged",
        "",
        f"Command: `{command}` (seed {args.seed}; {seconds:.0f} s on 1 torch thread)",
        "",
        f"n = {N_ITEMS} clips (no reward model, any pair), {N_RATERS} raters taking turns at "
        f"random, {RANDOM_FRACTION:.0%} of them random clickers, {BUDGET} labels in all per "
        f"run (gold answers included), {args.seeds} worlds, the same worlds and raters in "
        f"every arm. Gold pairs: {N_GOLD} pairs at least {MIN_GAP:g} rater-noise sds apart "
        f"in the truth (gold_margin {MIN_GAP:g}). Flag: P(keep < 1/2) > 1/2. Labels to flag: "
        "median [quartiles] over every clicker, a clicker never flagged counted as past the "
        "budget (own labels: past their last).",
        "",
        "| gold rate | clickers flagged | total labels to flag | clicker's own labels to "
        "flag | honest raters flagged | gold answers | Kendall tau at the end |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in [0.0, *args.rates]:
        own = [r for r in rows if r["gold_rate"] == rate]
        never = BUDGET + 1
        total = [never if v is None else v for r in own for v in r["flagged_at_total"]]
        mine = [never if v is None else v for r in own for v in r["flagged_at_own"]]
        flagged = sum(v is not None for r in own for v in r["flagged_at_total"])
        clickers = sum(len(r["flagged_at_total"]) for r in own)
        honest = sum(r["honest_flagged"] for r in own)
        taus = [r["kendall_tau"] for r in own]
        lines.append(
            f"| {rate:g} | {flagged} / {clickers} | {_spread(total)} | {_spread(mine)} | "
            f"{honest} / {len(own) * N_RATERS - clickers} | "
            f"{np.mean([r['gold_answers'] for r in own]):.0f} | "
            f"{np.mean(taus):.3f} ({np.min(taus):.3f}-{np.max(taus):.3f}) |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "provenance": provenance(args.seed),
        "command": command,
        "seconds": seconds,
        "setup": {
            "n_items": N_ITEMS,
            "n_raters": N_RATERS,
            "random_fraction": RANDOM_FRACTION,
            "budget": BUDGET,
            "n_gold": N_GOLD,
            "min_gap": MIN_GAP,
        },
        "rows": rows,
    }
    (RESULTS / "gold.json").write_text(json.dumps(document, indent=1) + "\n")
    (RESULTS / "gold.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
