"""Speed and memory of the block-form posterior (`engine.structured`) at 1e4 to 1e6 clips.

For each n and prompt size m (clips per group) this builds `grouped_prior` over n clips in
n / m prompts, K = 5 criteria, 10 contexts (one per prompt, round robin), seeded random scores
with 5 % missing, float64 on `engine.device.default_device()`, applies a warm-up of forced-choice
labels on random same-prompt pairs (outcomes from a seeded truth), then times

- **add**: building the prior over all n clips (`grouped_prior`), once;
- **update**: one label, `GroupedPosterior.observe` of one event;
- **select**: `engine.block_selection.select_block_pairs(count=1)` from scratch with
  PENDING tasks held by other raters (their believer shrink, exact): every same-prompt pair's
  moments, screened, the best 256 re-scored exactly;
- **leaderboard**: every clip's mean and variance (`item_moments`).

Each (n, m) runs in a fresh subprocess, whose peak resident set size (`ru_maxrss`, including
the Python + torch import) is the memory figure; on CUDA `torch.cuda.max_memory_allocated`.
The machine's load (1-minute load average) before each run is recorded.

    python -m benchmarks.structured_speed
    python -m benchmarks.structured_speed --sizes 10000,100000 --prompt-sizes 4 --repeats 50

Writes `benchmarks/results/structured_speed.{json,md}` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.selection_speed import _peak_rss_mb, _sync, describe_device, git_sha, time_calls
from engine.block_selection import select_block_pairs
from engine.device import default_device
from engine.likelihoods import outcome_cuts
from engine.selection import Pending
from engine.state import PriorScales
from engine.structured import grouped_prior
from engine.update import interval_events

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
N_CRITERIA = 5
N_CONTEXTS = 10
WARMUP_LABELS = 2_000
MISSING_SHARE = 0.05
PENDING = 20  # tasks handed out to other raters while one rater asks
TARGETS = (  # (metric, limit, where): the targets on 2 CPU cores at every n
    ("update_ms_p50", 1.0, "every n"),
    ("select_ms_p50", 100.0, "n = 1e6"),
    ("peak_mb", 2048.0, "n = 1e6"),
    ("add_s", 10.0, "n = 1e6"),
)


def _labels(n: int, m: int, count: int, rng: np.random.Generator, truth: np.ndarray):
    """`count` forced-choice labels on random same-prompt pairs, outcomes from the truth."""
    group = rng.integers(0, n // m, count)
    a, b = rng.integers(0, m, count), rng.integers(0, m - 1, count)
    b = b + (b >= a)
    first, second = group * m + a, group * m + b
    win = truth[first] - truth[second] + rng.normal(size=count) > 0
    return (
        first.tolist(),
        second.tolist(),
        [(0.0, math.inf) if w else (-math.inf, 0.0) for w in win],
    )


def measure(n: int, m: int, repeats: int, seed: int) -> dict[str, Any]:
    """One (n, m) row, in this process."""
    device = default_device()
    dtype = torch.float64
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, N_CRITERIA, generator=generator, dtype=dtype)
    scores[torch.rand(n, N_CRITERIA, generator=generator) < MISSING_SHARE] = math.nan
    group = torch.arange(n) // m
    context = group % N_CONTEXTS
    like = torch.zeros((), dtype=dtype, device=device)
    scores, group, context = scores.to(device), group.to(device), context.to(device)
    _sync(device)
    start = time.perf_counter()
    posterior = grouped_prior(
        scores, context, group, N_CONTEXTS, PriorScales(), device=device, dtype=dtype
    )
    _sync(device)
    add_s = time.perf_counter() - start
    truth = rng.normal(size=n)
    first, second, intervals = _labels(n, m, WARMUP_LABELS, rng, truth)
    posterior.observe(interval_events(first, second, intervals, 1.0, like))
    first, second, intervals = _labels(n, m, repeats + 3, rng, truth)
    events = [
        interval_events([f], [s], [iv], 1.0, like)
        for f, s, iv in zip(first, second, intervals, strict=True)
    ]
    update = time_calls(lambda k: posterior.observe(events[k]), repeats, device)
    cuts = outcome_cuts(0.0, like)
    select_repeats = max(3, repeats // 10)
    first, second, _ = _labels(n, m, PENDING, rng, truth)
    pending = Pending.of([(f, s, 1.0) for f, s in zip(first, second, strict=True)], like)

    def select(_: int) -> object:
        return select_block_pairs(posterior, noise_var=1.0, pair_cuts=cuts, pending=pending)

    select = time_calls(select, select_repeats, device)
    board = time_calls(lambda _: posterior.item_moments(), select_repeats, device)
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mb()
    )
    return {
        "n": n,
        "prompt_size": m,
        "device": describe_device(device),
        "add_s": add_s,
        "update_ms_p50": float(np.percentile(update, 50)),
        "update_ms_p99": float(np.percentile(update, 99)),
        "select_ms_p50": float(np.percentile(select, 50)),
        "select_ms_max": float(max(select)),
        "leaderboard_ms_p50": float(np.percentile(board, 50)),
        "peak_mb": peak,
        "repeats": repeats,
        "select_repeats": select_repeats,
        "warmup_labels": WARMUP_LABELS,
    }


def _row_in_subprocess(n: int, m: int, repeats: int, seed: int, threads: int | None) -> dict:
    command = [sys.executable, "-m", "benchmarks.structured_speed", "--worker", f"{n},{m}"]
    command += ["--repeats", str(repeats), "--seed", str(seed)]
    if threads:
        command += ["--threads", str(threads)]
    load = os.getloadavg()[0]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["load_before"] = load
    return row


def markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Block-form posterior: speed and memory",
        "",
        "Written by `python -m benchmarks.structured_speed`. K = 5 criteria, 10 contexts, "
        f"{WARMUP_LABELS:,} warm-up labels, float64. add = building the prior over all n clips "
        f"(s); update = one label (ms); select = `select_block_pairs` with {PENDING} tasks "
        "pending, every same-prompt pair screened and the best 256 re-scored exactly, from "
        "scratch (ms); leaderboard = every "
        "clip's mean and sd (ms); peak = the worker process's peak RSS (MB, including the "
        "Python + torch import). load = the 1-minute load average before the run.",
        "",
        "| n | prompt | device | add s | update p50 | update p99 | select p50 | select max "
        "| leaderboard p50 | peak MB | load |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['prompt_size']} | {r['device']} | {r['add_s']:.2f} | "
            f"{r['update_ms_p50']:.3f} | {r['update_ms_p99']:.3f} | {r['select_ms_p50']:.1f} | "
            f"{r['select_ms_max']:.1f} | {r['leaderboard_ms_p50']:.1f} | {r['peak_mb']:.0f} | "
            f"{r['load_before']:.2f} |"
        )
    lines += ["", "## Targets (2 CPU cores)", "", "| target | status | measured |", "|---|---|---|"]
    largest = max((r["n"] for r in rows), default=0)
    for metric, limit, where in TARGETS:
        chosen = [r for r in rows if where == "every n" or r["n"] == largest]
        if not chosen or (where != "every n" and largest < 1_000_000):
            continue
        worst = max(r[metric] for r in chosen)
        status = "**met**" if worst <= limit else "**not met**"
        lines.append(f"| {metric} <= {limit:g} at {where} | {status} | worst {worst:.3g} |")
    lines += [
        "",
        f"git {meta['git']}, seed {meta['seed']}, torch {meta['torch']}, run {meta['timestamp']}.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="clip counts n")
    parser.add_argument("--prompt-sizes", default="4,16", help="clips per prompt m")
    parser.add_argument("--repeats", type=int, default=200, help="timed updates per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        n, m = (int(v) for v in args.worker.split(","))
        print(json.dumps(measure(n, m, args.repeats, args.seed)))
        return []
    rows = [
        _row_in_subprocess(n, m, args.repeats, args.seed, args.threads)
        for m in (int(v) for v in args.prompt_sizes.split(","))
        for n in (int(v) for v in args.sizes.split(","))
    ]
    meta = {
        "git": git_sha(),
        "seed": args.seed,
        "torch": torch.__version__,
        "dtype": "float64",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "structured_speed.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    text = markdown(rows, meta)
    (args.out / "structured_speed.md").write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
