"""Per-criterion questions: what asking "which is better aligned (safer, ...)?" buys.

A synthetic world (sim.worlds.SyntheticSpec) of n clips in prompts of 4, pairs within a
prompt, K = 5 true criteria that all count positively toward quality, a reward model of
correlation 0.7 and 20 raters who answer overall questions with their quality noise and
criterion questions on the clips' true criterion values with their own criterion noise
(`--criterion-noise`, on the criteria's unit scale). The engine asks one rater at a time,
whatever `Campaign.next_tasks` chooses by gain per second (6 s for either kind). Four arms on
the same worlds (drawn from `--seed`):

- `pairs`: no criterion questions (the campaign as before);
- `criteria_quality`: criterion questions allowed, their gain what they say about the two
  clips' qualities (the default, docs/MATH.md §9);
- `criteria_loaded`: as `criteria_quality`, with a stated loading of 0.6 per criterion (the
  default loading is the weights' prior sd, 0.42, and leaves most of a clip's residual to
  its own r_i);
- `criteria_all`: criterion questions allowed, their gain counting the criterion values too.

Reports labels to Kendall tau 0.9 within prompts (interpolated between checkpoints), tau at
the budget, the share of criterion questions asked, how well the per-context weights are
recovered (cosine and RMSE against the world's weights of the standardised scores) and, for
the arms with criterion questions, the criterion values' correlation with the truth.

    python -m benchmarks.criteria
    python -m benchmarks.criteria --reps 2 --budget 400   # a quick look

Writes `benchmarks/results/<name>.{json,md}` (default criteria) and prints the table.
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
from engine import CriterionQuestions, Judgment
from engine.adapters import JOD_NOISE_SD
from sim import metrics
from sim.campaigns import build_campaign
from sim.raters import RaterSpec
from sim.runner import derive_seed, labels_to_target
from sim.worlds import SyntheticSpec, SyntheticWorld

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
ARMS = ("pairs", "criteria_quality", "criteria_loaded", "criteria_all")
# the loading an operator who believes the criteria explain most of quality would state (the
# world's weights are about 0.6 per criterion): 0.78 of the clip residual's prior variance
LOADED = 0.6
TAU_TARGET = 0.9


def _weights(campaign, world: SyntheticWorld) -> np.ndarray:
    """(C, K) the posterior mean of w + w_c per world context."""
    by_name = dict(zip(campaign.context_names, campaign.weights().context_mean, strict=True))
    return np.stack([by_name[c].numpy() for c in range(len(world.true_weights))])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def run(
    arm: str, spec: SyntheticSpec, rep: int, budget: int, every: int, seed: int = 13
) -> dict[str, Any]:
    """One arm on world `rep` of `seed`: a record per checkpoint."""
    world_seed = derive_seed(seed, "criteria", rep)
    world = SyntheticWorld(spec, world_seed)
    questions = None
    if arm != "pairs":
        noise = spec.raters.criterion_noise_sd or 1.0
        n_criteria = len(world.problem.criteria)
        questions = CriterionQuestions(
            world.problem.criteria,
            residual_sd=0.7,  # the truth given a score of correlation lam: sd sqrt(1 - lam^2)
            loading=(LOADED,) * n_criteria if arm == "criteria_loaded" else None,
            gain="all" if arm == "criteria_all" else "quality",
            noise_scale=noise / JOD_NOISE_SD,
        )
    campaign = build_campaign(world.problem, reward_model=True, criterion_questions=questions)
    rng = np.random.default_rng(derive_seed(world_seed, "answers"))
    groups = world.problem.groups
    records: list[dict[str, Any]] = []
    asked = 0
    started = time.perf_counter()
    for label in range(1, budget + 1):
        rater = int(rng.integers(spec.raters.n_raters))
        (task,) = campaign.next_tasks(rater)
        question = task.question
        if question.kind == "criterion":
            asked += 1
            outcome, _ = world.answer_criterion(
                question.first,
                question.second,
                question.criterion,  # type: ignore[attr-defined]
                rater,
                rng,
            )
        else:
            outcome, _ = world.answer_pair(question.first, question.second, rater, rng)  # type: ignore[attr-defined]
        campaign.observe([Judgment(rater, question, outcome)], [task.id])
        if label % every == 0 or label == budget:
            posterior = campaign.posterior
            weights = _weights(campaign, world)
            truth = world.true_weights
            record = {
                "arm": arm,
                "rep": rep,
                "labels": label,
                "kendall_tau": metrics.kendall_tau(
                    posterior.item_mean.numpy(), world.quality, groups
                ),
                "criterion_share": asked / label,
                "weight_cosine": _cosine(weights, truth),
                "weight_rmse": metrics.weight_rmse(weights, truth),
                "seconds": time.perf_counter() - started,
            }
            if questions is not None:
                values, _ = campaign.criterion_values()
                record["criterion_corr"] = float(
                    np.corrcoef(values.numpy().ravel(), world.criterion_values.ravel())[0, 1]
                )
            records.append(record)
    return {"records": records}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm: labels to tau 0.9 per world, and the metrics at the budget."""
    rows = []
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        row: dict[str, Any] = {"arm": arm, "labels_to_tau": []}
        for key in (
            "kendall_tau",
            "criterion_share",
            "weight_cosine",
            "weight_rmse",
            "criterion_corr",
            "seconds",
        ):
            row[key] = [r["records"][-1].get(key, float("nan")) for r in mine]
        for run_ in mine:
            records = run_["records"]
            row["labels_to_tau"].append(
                labels_to_target(
                    [r["labels"] for r in records],
                    [r["kendall_tau"] for r in records],
                    ">=",
                    TAU_TARGET,
                )
            )
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Per-criterion questions: allowed or not",
        "",
        f"`{meta['command']}` at {meta['git']}, {meta['date']}; {meta['machine']}, "
        f"load before {meta['load_before']:.2f}. n = {meta['n_items']} clips in prompts of 4, "
        "pairs within a prompt, K = 5 criteria with positive true weights, reward model corr "
        f"0.7, 20 raters (one at a time), criterion noise sd {meta['criterion_noise']} on the "
        f"criteria's unit scale; {meta['reps']} worlds, {meta['budget']} labels each. "
        "Mean [min, max] over worlds. Kendall tau within prompts against the truth; weights "
        "w + w_c per context against the world's weights of the standardised scores.",
        "",
        f"| arm | labels to tau {TAU_TARGET} | tau at budget | criterion questions | "
        "weight cosine | weight RMSE | corr(criterion values, truth) | seconds per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['arm']} | {spread(row['labels_to_tau'])} | "
            f"{spread(row['kendall_tau'], 3)} | {spread(row['criterion_share'], 2)} | "
            f"{spread(row['weight_cosine'], 3)} | {spread(row['weight_rmse'], 3)} | "
            f"{spread(row['criterion_corr'], 3)} | {spread(row['seconds'], 0)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=48)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--criterion-noise", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", default="criteria", help="results file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = SyntheticSpec(
        n_items=args.n_items,
        n_groups=args.n_items // 4,
        n_contexts=3,
        rm_correlation=0.7,
        pair_scope="group",
        positive_weights=True,
        raters=RaterSpec(criterion_noise_sd=args.criterion_noise),
    )
    load = os.getloadavg()[0]
    runs = []
    for rep in range(args.reps):
        for arm in ARMS:
            result = run(arm, spec, rep, args.budget, args.every, args.seed)
            runs.append({"arm": arm, "rep": rep, **result})
            last = result["records"][-1]
            print(
                f"{arm} rep {rep}: tau {last['kendall_tau']:.3f}, criterion share "
                f"{last['criterion_share']:.2f}, {last['seconds']:.0f} s"
            )
    rows = summarise(runs)
    meta = {
        "command": command_line("benchmarks.criteria", parser, args),
        "git": git_sha(),
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, 1 thread",
        "load_before": load,
        "n_items": args.n_items,
        "budget": args.budget,
        "reps": args.reps,
        "criterion_noise": args.criterion_noise,
        "seed": args.seed,
        "dtype": "float64",
        "device": "cpu",
    }
    payload = {"meta": meta, "rows": rows, "runs": runs}
    write_results(args.out, args.name, payload, markdown(rows, meta))


if __name__ == "__main__":
    main()
