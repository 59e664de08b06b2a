"""Weights that vary with the prompt: the feature gate against discrete contexts (engine.gating).

A gated world (sim.worlds.GatedSpec): prompts with D features, true weights a smooth,
non-linear function of them (`w(p) = a (b + spread tanh(B p))`), clips in prompts of 4, pairs
within a prompt, 20 raters, 4 at once. Three engine campaigns on the same worlds, each
choosing its own pairs by information gain:

- `gate`: the weights gated by the features, `w(p) = w + W p` (MATH.md §8), one context;
- `clusters`: one context per k-means cluster of the features (the discrete stand-in);
- `none`: one set of weights for every prompt.

At the budget each reports Kendall tau within the rated prompts, and then, for prompts no
rater saw (added after the labels, predicted from the reward model and the weights alone):
Kendall tau within each against the truth, and the cosine between the weights it would use
for the prompt and the true ones (also over the rated prompts). `oracle` is the tau of the
reward model scored with the true weights: the ceiling for prompts never rated.

    python -m benchmarks.gating
    python -m benchmarks.gating --spread 0 --name gating_flat   # weights the same everywhere
    python -m benchmarks.gating --budget 400 --name gating_400  # 1 label per clip
    python -m benchmarks.gating --reps 1 --budget 240           # a quick look

Writes `benchmarks/results/<name>.{json,md}` (default gating) and prints the table.
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
from engine import Campaign
from sim import metrics
from sim.campaigns import add_clips
from sim.raters import RaterSpec
from sim.runner import derive_seed
from sim.strategies import make_strategy
from sim.worlds import GatedSpec, GatedWorld

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
# arm -> the sim strategy that runs it
ARMS = {
    "gate": "information_gain_gated",
    "clusters": "information_gain",
    "none": "information_gain_global",
}
CONCURRENT = 4


def cosine(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(G,) the cosine between matching rows."""
    norms = np.linalg.norm(estimate, axis=1) * np.linalg.norm(truth, axis=1)
    return (estimate * truth).sum(1) / np.maximum(norms, 1e-12)


def prompt_weights(
    arm: str, campaign: Campaign, features: np.ndarray, clusters: np.ndarray
) -> np.ndarray:
    """(G, K) the posterior mean weights the arm's campaign uses for prompts of these features
    and clusters: the gate's w(p) (and the default context's offsets), a cluster's weights,
    or the one set of weights."""
    if arm == "gate":
        mean, _ = campaign.gate_weights(torch.from_numpy(features), contexts=[None] * len(features))
        return mean.numpy()
    summary = campaign.weights()
    context_mean = summary.context_mean.numpy()
    if arm == "none":
        return np.repeat(context_mean[:1], len(features), axis=0)
    names = {name: c for c, name in enumerate(campaign.context_names)}
    return np.stack(
        [context_mean[names[int(c)]] if int(c) in names else summary.mean.numpy() for c in clusters]
    )


def run(arm: str, spec: GatedSpec, seed: int, rep: int, budget: int) -> dict[str, Any]:
    """One arm on one world: tau in the rated prompts at the budget, then the never-rated
    prompts' tau and every prompt's weight cosine."""
    world_seed = derive_seed(seed, "gating", rep)
    world = GatedWorld(spec, world_seed)
    strategy = make_strategy(ARMS[arm], world.problem, derive_seed(world_seed, "strategy"))
    rng = np.random.default_rng(derive_seed(world_seed, "answers"))
    seconds = answer_concurrently(
        strategy,
        world,
        rng,
        n_raters=spec.raters.n_raters,
        concurrent=CONCURRENT,
        budget=budget,
        every=budget,
        checkpoint=lambda labels, seconds: None,
    )
    campaign: Campaign = strategy.campaign_  # type: ignore[attr-defined]
    problem, held = world.problem, world.held_out
    rated_tau = metrics.kendall_tau(
        campaign.leaderboard().mean.numpy(), world.quality, problem.groups
    )
    new = add_clips(
        campaign,
        held.scores,
        held.contexts,
        held.groups,
        held.features,
        feature_gate=arm == "gate",
        contexts=arm == "clusters",
    )
    predicted = campaign.leaderboard().mean.numpy()[new.start : new.stop]
    n_rated = spec.n_prompts
    prompt_cluster = np.empty(len(world.prompt_features), dtype=np.int64)
    prompt_cluster[problem.groups] = problem.contexts
    prompt_cluster[held.groups] = held.contexts
    estimate = prompt_weights(arm, campaign, world.prompt_features, prompt_cluster)
    cosines = cosine(estimate, world.prompt_weights)
    return {
        "arm": arm,
        "rep": rep,
        "world_seed": world_seed,
        "labels": budget,
        "rated_tau": rated_tau,
        "held_out_tau": metrics.kendall_tau(predicted, held.quality, held.groups),
        "oracle_tau": metrics.kendall_tau(held.rm_quality, held.quality, held.groups),
        "rated_cosine": float(cosines[:n_rated].mean()),
        "held_out_cosine": float(cosines[n_rated:].mean()),
        "seconds": seconds,
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm, each figure over the worlds."""
    keys = ("rated_tau", "held_out_tau", "rated_cosine", "held_out_cosine", "seconds")
    rows = []
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        rows.append({"arm": arm, **{k: [r[k] for r in mine] for k in keys}})
    oracle = [r["oracle_tau"] for r in runs if r["arm"] == next(iter(ARMS))]
    rows.append({"arm": "oracle", "held_out_tau": oracle})
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    spec = meta["spec"]
    lines = [
        "# Weights that vary with the prompt: the feature gate against discrete contexts",
        "",
        f"`{meta['command']}` at {meta['git']}, {meta['date']}; {meta['machine']}, "
        f"load before {meta['load_before']:.2f}. {spec['n_prompts']} rated prompts and "
        f"{spec['n_held_out']} never rated, {spec['clips_per_prompt']} clips each, "
        f"K = {spec['n_criteria']}, D = {spec['feature_dim']} features, weight spread "
        f"{spec['spread']}, reward model corr {spec['rm_correlation']}, {spec['n_clusters']} "
        f"clusters; pairs within a prompt by information gain, {meta['budget']} labels, "
        f"{meta['reps']} worlds (seed {meta['seed']}). Mean [min, max] over worlds. Tau: "
        "Kendall tau within prompts against the truth; never-rated prompts are predicted from "
        "the reward model and the learned weights alone. Cosine: the weights the campaign "
        "would use for a prompt against its true weights, averaged over prompts.",
        "",
        "| arm | tau, rated prompts | tau, never rated | weight cosine, rated | "
        "weight cosine, never rated | seconds per run |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["arm"] == "oracle":
            lines.append(f"| oracle (true weights) | | {spread(row['held_out_tau'], 3)} | | | |")
            continue
        lines.append(
            f"| {row['arm']} | {spread(row['rated_tau'], 3)} | {spread(row['held_out_tau'], 3)} | "
            f"{spread(row['rated_cosine'], 3)} | {spread(row['held_out_cosine'], 3)} | "
            f"{spread(row['seconds'], 1)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--held-out", type=int, default=50)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--budget", type=int, default=1600)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", default="gating", help="results file name")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = GatedSpec(
        n_prompts=args.prompts,
        n_held_out=args.held_out,
        feature_dim=args.features,
        n_clusters=args.clusters,
        spread=args.spread,
        raters=RaterSpec(),
    )
    load = os.getloadavg()[0]
    runs = []
    for rep in range(args.reps):
        for arm in ARMS:
            result = run(arm, spec, args.seed, rep, args.budget)
            runs.append(result)
            print(
                f"{arm} rep {rep}: tau {result['rated_tau']:.3f}, never rated "
                f"{result['held_out_tau']:.3f}, cosine {result['held_out_cosine']:.3f}, "
                f"{result['seconds']:.0f} s"
            )
    rows = summarise(runs)
    meta = {
        "command": command_line("benchmarks.gating", parser, args),
        "git": git_sha(),
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, 1 thread, float64",
        "load_before": load,
        "seed": args.seed,
        "budget": args.budget,
        "reps": args.reps,
        "spec": spec.to_dict(),
    }
    payload = {"meta": meta, "rows": rows, "runs": runs}
    write_results(args.out, args.name, payload, markdown(rows, meta))


if __name__ == "__main__":
    main()
