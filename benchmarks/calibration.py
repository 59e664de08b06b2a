"""Calibration: do the engine's intervals cover what they claim, under information gain and
under random pairs, and is one ADF pass or the model to blame?

Each condition runs one strategy on seeded synthetic worlds (n = 100, reward model corr 0.7,
the label-efficiency suite's world) with `concurrent` raters holding a pair at once, and at
each checkpoint scores two posteriors of the SAME labels against the truth:
  - `adf`: the campaign's posterior as it is served (one ADF pass, plus whatever EP refines
    the condition's campaign runs on its own), and
  - `ep`: EP over every label so far (`Campaign.refine` on a replay), the joint posterior.
Scores (sim.metrics, mean removed): coverage of the central 50 % and 90 % intervals, RMSE
(JOD), Kendall tau, the spread of the posterior mean over the truth's, and the mean squared
standardised error z2 = mean((error / sd)^2) (1 when the sds are right; above 1 over-confident).

Conditions vary one candidate cause at a time against `base` (the simulator's campaign,
`sim.campaigns.build_campaign`): the simulator's earlier, too wide prior (`wide_prior`), the
prior scales at the world's (`prior_matched`), the world's rater noise equal to the engine's
(`noise_matched`), the engine told a noise 1.5x too small (`noise_low`); `Condition` also
takes one rater at a time (no pending pair, so no believer shrink), exact gains for every
pair instead of the screen's best 256, a share of uniformly random picks and empirical-Bayes
refits. Writes benchmarks/results/calibration.{json,md}.

    python -m benchmarks.calibration --reps 3                       # every condition
    python -m benchmarks.calibration --reps 3 --only base --only noise_matched
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine import Campaign, Judgment, PriorScales, SelectionOptions
from engine.adapters import JOD_NOISE_SD
from sim import metrics
from sim.campaigns import WIDE_PRIOR, build_campaign, refit_schedule
from sim.raters import RaterSpec
from sim.report import provenance
from sim.runner import derive_seed
from sim.worlds import SyntheticSpec, SyntheticWorld

RESULTS = Path(__file__).resolve().parent / "results"
N_ITEMS = 100
CHECKPOINTS = (50, 100, 200, 500, 1000, 2000)
# The world's truth in the engine's terms (rm corr 0.7, criteria share 0.9, quality sd 1.5):
# the reward model's implied weights have |w|^2 = 0.7^2 sd^2 over 5 criteria (sd ~0.47 each),
# the residual the reward model misses has sd sqrt(1 - 0.7^2) 1.5 = 1.07.
WORLD_PRIOR = PriorScales(weight_scale=0.47, context_scale=0.25, residual_scale=1.07)


@dataclass(frozen=True)
class Condition:
    """One strategy under one set of assumptions (what differs from the simulator's default).

    Attributes:
        name: label in the table.
        strategy: "information_gain" (the engine's pick) or "random" (uniform pairs).
        noise_spread: sd of log rater noise across the world's raters (0: all equal the
            engine's noise sd).
        prior: the engine's prior scales (None: the simulator's, `sim.campaigns.prior_scales`).
        engine_noise_sd: the rater noise sd the engine assumes.
        n_refine: pairs the screen keeps for exact scoring (4950 = every pair at n = 100).
        concurrent: raters holding a pair at once (1: nothing is ever pending).
        explore_share: share of information-gain picks replaced by a uniformly random pair.
        refit_prior: refit the prior scales by empirical Bayes at 2n, 4n, 8n, ... labels.
    """

    name: str
    strategy: str
    noise_spread: float = 0.2
    prior: PriorScales | None = None
    engine_noise_sd: float = JOD_NOISE_SD
    n_refine: int = 256
    concurrent: int = 4
    explore_share: float = 0.0
    refit_prior: bool = False


def conditions() -> list[Condition]:
    """Each candidate cause, for information gain and (where the design could matter) random."""
    out = []
    for strategy in ("information_gain", "random"):
        out += [
            Condition("base", strategy),
            Condition("wide_prior", strategy, prior=WIDE_PRIOR),
            Condition("prior_matched", strategy, prior=WORLD_PRIOR),
        ]
    out += [
        Condition("noise_matched", "information_gain", noise_spread=0.0),
        Condition("noise_low", "information_gain", engine_noise_sd=JOD_NOISE_SD / 1.5),
    ]
    return out


def _score(campaign: Campaign, truth: np.ndarray) -> dict[str, float]:
    posterior = campaign.posterior
    mean = posterior.item_mean.numpy()
    cov = posterior.item_cov.numpy()
    centred_mean = mean - mean.mean()
    centred_truth = truth - truth.mean()
    row = cov.mean(axis=1)
    sd = np.sqrt(np.clip(np.diag(cov) - 2 * row + cov.mean(), 1e-300, None))
    return {
        "coverage50": metrics.coverage(mean, cov, truth, None, level=0.5),
        "coverage90": metrics.coverage(mean, cov, truth, None, level=0.9),
        "rmse": metrics.rmse(mean, truth, None),
        "kendall_tau": metrics.kendall_tau(mean, truth, None),
        "spread": float(centred_mean.std() / centred_truth.std()),
        "z2": float(np.mean(((centred_mean - centred_truth) / sd) ** 2)),
    }


def run(condition: Condition, rep: int, seed: int) -> list[dict[str, object]]:
    """One condition on the rep's world: a record per checkpoint and posterior."""
    world_seed = derive_seed(seed, "calibration", rep)
    raters = RaterSpec(noise_spread=condition.noise_spread, concurrent=condition.concurrent)
    world = SyntheticWorld(
        SyntheticSpec(n_items=N_ITEMS, rm_correlation=0.7, raters=raters), seed=world_seed
    )
    problem = world.problem
    campaign = build_campaign(
        problem,
        reward_model=True,
        selection=SelectionOptions(n_refine=condition.n_refine),
        prior=condition.prior,
        noise_sd=condition.engine_noise_sd,
        refit_prior_at=refit_schedule(N_ITEMS) if condition.refit_prior else (),
    )
    rng = np.random.default_rng(derive_seed(world_seed, condition.strategy, "answers"))
    generator = torch.Generator().manual_seed(derive_seed(world_seed, condition.strategy))
    outstanding: deque[tuple[int, int, int, int | None]] = deque()
    busy: set[int] = set()
    records: list[dict[str, object]] = []
    checkpoints = deque(CHECKPOINTS)
    budget = CHECKPOINTS[-1]

    def hand_out() -> None:
        idle = [r for r in range(raters.n_raters) if r not in busy]
        rater = int(idle[rng.integers(len(idle))])
        explore = condition.explore_share > 0 and rng.random() < condition.explore_share
        if condition.strategy == "random" or explore:
            i, j = problem.candidates[rng.integers(len(problem.candidates))]
            outstanding.append((rater, int(i), int(j), None))
        else:
            task = campaign.next_pairs(None, repeat_pairs=True, generator=generator)[0]
            outstanding.append((rater, task.first, task.second, task.id))
        busy.add(rater)

    for _ in range(condition.concurrent):
        hand_out()
    labels, started = 0, time.perf_counter()
    while checkpoints:
        rater, first, second, task_id = outstanding.popleft()
        busy.discard(rater)
        outcome, _ = world.answer_pair(first, second, rater, rng)
        campaign.observe(
            [Judgment.pair(None, first, second, outcome)], [] if task_id is None else [task_id]
        )
        labels += 1
        if labels + len(outstanding) < budget:
            hand_out()
        if labels == checkpoints[0]:
            checkpoints.popleft()
            joint = campaign.replay()
            joint.refine()
            for estimator, scored in (("adf", campaign), ("ep", joint)):
                records.append(
                    {
                        "condition": condition.name,
                        "strategy": condition.strategy,
                        "rep": rep,
                        "labels": labels,
                        "labels_per_clip": labels / N_ITEMS,
                        "estimator": estimator,
                        **_score(scored, world.quality),
                        "seconds": time.perf_counter() - started,
                    }
                )
    return records


METRICS = ("coverage50", "coverage90", "rmse", "kendall_tau", "spread", "z2")


def table(records: Sequence[dict[str, object]]) -> list[str]:
    """Markdown rows: condition x strategy x estimator x checkpoint, means over reps."""
    keys = sorted(
        {(r["condition"], r["strategy"], r["estimator"], r["labels"]) for r in records},
        key=lambda k: (k[1], k[0] != "base", k[0], k[2], k[3]),
    )
    lines = [
        "| strategy | condition | posterior | labels/clip | cov 50 % | cov 90 % | RMSE | "
        "Kendall tau | spread | z2 | reps |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for condition, strategy, estimator, labels in keys:
        rows = [
            r
            for r in records
            if (r["condition"], r["strategy"], r["estimator"], r["labels"])
            == (condition, strategy, estimator, labels)
        ]
        means = {m: float(np.mean([r[m] for r in rows])) for m in METRICS}
        lines.append(
            f"| {strategy} | {condition} | {estimator} | {labels / N_ITEMS:g} | "
            f"{means['coverage50']:.2f} | {means['coverage90']:.2f} | {means['rmse']:.3f} | "
            f"{means['kendall_tau']:.3f} | {means['spread']:.2f} | {means['z2']:.2f} | "
            f"{len(rows)} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", action="append", help="condition names to run (repeatable)")
    parser.add_argument("--strategy", action="append", help="strategies to run (repeatable)")
    parser.add_argument("--out", default=str(RESULTS / "calibration"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    chosen = [
        c
        for c in conditions()
        if (not args.only or c.name in args.only)
        and (not args.strategy or c.strategy in args.strategy)
    ]
    records = []
    for condition in chosen:
        for rep in range(args.reps):
            records += run(condition, rep, args.seed)
            print(f"{condition.strategy} {condition.name} rep {rep} done", flush=True)
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks.calibration", *given])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "provenance": provenance(args.seed),
        "command": command,
        "conditions": [asdict(c) for c in chosen],
        "records": records,
    }
    out.with_suffix(".json").write_text(json.dumps(document, indent=1) + "\n")
    lines = [
        "# Calibration of the engine's posterior: ADF as served vs EP over the same labels",
        "",
        f"Command: `{command}` (seed {args.seed}, git {document['provenance']['git_sha']})",
        "",
        "n = 100, reward model corr 0.7, 4 raters at once unless the condition says otherwise; "
        "means over reps. spread = sd(posterior mean) / sd(truth); z2 = mean squared "
        "standardised error (1 if the sds are right, > 1 over-confident).",
        "",
        *table(records),
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
