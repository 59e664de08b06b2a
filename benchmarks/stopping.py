"""Does the stopping rule keep its promise? Campaigns with a Kendall tau target run information
gain until `CampaignDone`; the realised Kendall tau against the truth should meet the target
in >= 90 % of seeded worlds. Two rules: the expected tau reaching the target, and the
posterior probability of tau >= target reaching 0.9 (`Targets(confidence=0.9)`). Reports
that share and the labels used against a fixed budget, under the simulator's prior and under
its earlier, too wide one.

    python -m benchmarks.stopping --worlds 10

Writes benchmarks/results/stopping.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engine import CampaignDone, Judgment, PriorScales, Targets
from sim import metrics
from sim.campaigns import WIDE_PRIOR, build_campaign
from sim.report import provenance
from sim.runner import derive_seed
from sim.worlds import SyntheticSpec, SyntheticWorld

RESULTS = Path(__file__).resolve().parent / "results"
N_ITEMS = 40
TARGET = 0.8
BUDGET = 30 * N_ITEMS  # the fixed budget a campaign without the rule would spend
CONFIDENCE = 0.9
PRIORS: dict[str, PriorScales | None] = {"sim": None, "wide": WIDE_PRIOR}
RULES = {
    "E[tau] >= target": Targets(kendall_tau=TARGET),
    f"P(tau >= target) >= {CONFIDENCE}": Targets(kendall_tau=TARGET, confidence=CONFIDENCE),
}


def run(prior: PriorScales | None, targets: Targets, world_seed: int) -> dict[str, float]:
    """One world: labels until the rule fires (or the budget), realised and expected tau."""
    world = SyntheticWorld(
        SyntheticSpec(n_items=N_ITEMS, n_groups=4, rm_correlation=0.7), world_seed
    )
    campaign = build_campaign(world.problem, reward_model=True, prior=prior)
    campaign.set_targets(targets)
    rng = np.random.default_rng(derive_seed(world_seed, "answers"))
    generator = torch.Generator().manual_seed(derive_seed(world_seed, "engine"))
    labels, fired = 0, False
    while labels < BUDGET:
        try:
            task = campaign.next_pairs(repeat_pairs=True, generator=generator)[0]
        except CampaignDone:
            fired = True
            break
        outcome, _ = world.answer_pair(task.first, task.second, int(rng.integers(20)), rng)
        campaign.observe([Judgment.pair(None, task.first, task.second, outcome)], [task.id])
        labels += 1
    mean = campaign.posterior.item_mean.numpy()
    groups = world.problem.groups if world.problem.pair_scope == "group" else None
    return {
        "labels": labels,
        "fired": fired,
        "expected_tau": campaign.expected_kendall_tau(),
        "realised_tau": metrics.kendall_tau(mean, world.quality, groups),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks.stopping", *given])
    torch.set_num_threads(1)
    rows = []
    for name, prior in PRIORS.items():
        for rule, targets in RULES.items():
            for world in range(args.worlds):
                row = run(prior, targets, derive_seed(args.seed, "stopping", world))
                rows.append({"prior": name, "rule": rule, "world": world, **row})
                print(name, rule, world, row, flush=True)
    lines = [
        "# Stopping rule: Kendall tau targets vs the realised tau",
        "",
        f"Command: `{command}` (seed {args.seed})",
        "",
        f"n = {N_ITEMS} clips, reward model corr 0.7, information gain one pair at a time, "
        f"target tau {TARGET}, fixed budget {BUDGET} labels. The same worlds for every row.",
        "",
        "| prior | rule | worlds | rule fired | realised tau >= target | mean realised tau | "
        "mean labels at stop | labels saved vs budget |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rule in ((name, rule) for name in PRIORS for rule in RULES):
        own = [r for r in rows if r["prior"] == name and r["rule"] == rule]
        fired = [r for r in own if r["fired"]]
        met = np.mean([r["realised_tau"] >= TARGET for r in fired]) if fired else float("nan")
        labels = float(np.mean([r["labels"] for r in own]))
        lines.append(
            f"| {name} | {rule} | {len(own)} | {len(fired)} | {met:.2f} | "
            f"{np.mean([r['realised_tau'] for r in own]):.3f} | {labels:.0f} | "
            f"{1 - labels / BUDGET:.0%} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"provenance": provenance(args.seed), "command": command, "rows": rows}
    (RESULTS / "stopping.json").write_text(json.dumps(document, indent=1) + "\n")
    (RESULTS / "stopping.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
