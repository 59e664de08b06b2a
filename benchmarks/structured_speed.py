"""Speed and memory of a campaign kept in prompt blocks (`CampaignConfig(structure="blocks")`,
engine.structured / engine.block_selection) at 1e4 to 1e6 clips, as the service drives it.

For each n and prompt size m (clips per prompt) this builds an `engine.Campaign` over n clips in
n / m prompts, K = 5 criteria, 10 contexts (one per prompt, round robin), seeded random scores
with 5 % missing, float64 on `engine.device.default_device()`, applies WARMUP_LABELS
forced-choice labels on random same-prompt pairs (outcomes from a seeded truth, batches of 100),
holds PENDING tasks for other raters, then times

- **add**: `Campaign.add_clips` of all n clips (the prior over them), once;
- **update**: `Campaign.observe` of one label;
- **next**: the next pair for a rater right after one new label, `next_pairs(count=1)`, as the
  service asks: from the campaign's kept screen (`engine.block_selection.GroupScreen`, rebuilt
  when stale; the rebuilds land in these timings);
- **scratch**: one selection from scratch with the same pending tasks, every same-prompt pair
  screened (`select_block_pairs` without a kept screen), the best 256 re-scored exactly;
- **leaderboard**: `Campaign.leaderboard()`, every clip's mean and sd;
- **tau**: `Campaign.expected_kendall_tau()`, over every same-prompt pair (what a progress
  check with a Kendall tau target reads).

Each (n, m) runs in a fresh subprocess, whose peak resident set size (`ru_maxrss`, including
the Python + torch import) is the memory figure; on CUDA `torch.cuda.max_memory_allocated`.
The machine's 1-minute load average before each run is recorded.

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
from engine import Campaign, CampaignConfig, Judgment, Outcome
from engine.block_selection import select_block_pairs
from engine.device import default_device
from engine.selection import PairRequest, Pending

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
N_CRITERIA = 5
N_CONTEXTS = 10
WARMUP_LABELS = 20_000
MISSING_SHARE = 0.05
PENDING = 20  # tasks handed out to other raters while one rater asks
TARGETS = (  # (metric, limit, where): the targets on 2 CPU cores
    ("update_ms_p50", 1.0, "every n"),
    ("next_ms_p50", 5.0, "n = 1e6"),
    ("scratch_ms_p50", 100.0, "n = 1e6"),
    ("peak_mb", 2048.0, "n = 1e6"),
    ("add_s", 10.0, "n = 1e6"),
)


def _labels(
    n: int, m: int, count: int, rng: np.random.Generator, truth: np.ndarray, rater: str
) -> list[Judgment]:
    """`count` forced-choice labels on random same-prompt pairs, outcomes from the truth."""
    group = rng.integers(0, n // m, count)
    a, b = rng.integers(0, m, count), rng.integers(0, m - 1, count)
    b = b + (b >= a)
    first, second = group * m + a, group * m + b
    win = truth[first] - truth[second] + rng.normal(size=count) > 0
    return [
        Judgment.pair(rater, int(i), int(j), Outcome.WIN if w else Outcome.LOSS)
        for i, j, w in zip(first, second, win, strict=True)
    ]


def measure(n: int, m: int, repeats: int, seed: int) -> dict[str, Any]:
    """One (n, m) row, in this process."""
    device = default_device()
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, N_CRITERIA))
    scores[rng.random((n, N_CRITERIA)) < MISSING_SHARE] = math.nan
    prompt = np.arange(n) // m
    contexts = [f"context-{p % N_CONTEXTS}" for p in prompt.tolist()]
    campaign = Campaign(CampaignConfig(pair_scope="group", structure="blocks"), device=device)
    _sync(device)
    start = time.perf_counter()
    campaign.add_clips(torch.from_numpy(scores), contexts=contexts, groups=prompt.tolist())
    _sync(device)
    add_s = time.perf_counter() - start
    truth = rng.normal(size=n)
    for batch in range(0, WARMUP_LABELS, 100):
        campaign.observe(_labels(n, m, 100, rng, truth, f"rater-{batch // 100 % 50}"))
    for k in range(PENDING):
        campaign.next_pairs(f"holder-{k}")
    fresh = _labels(n, m, 2 * repeats + 6, rng, truth, "asker")
    update = time_calls(lambda k: campaign.observe([fresh[k]]), repeats, device)

    def next_after_label(k: int) -> object:
        campaign.observe([fresh[repeats + 3 + k]])
        return campaign.next_pairs("asker", hold=False)

    # the label's own cost is small (update above); timed together, as the service sees it
    next_pair = time_calls(next_after_label, repeats, device)
    form = campaign._form  # the block form: `select_block_pairs` on its posterior, unkept
    scratch_repeats = max(3, repeats // 20)

    held = Pending.of([task[1:] for task in campaign._pending_tasks()], campaign._like)

    def scratch(_: int) -> object:
        request = PairRequest(noise_var=1.0, pair_cuts=campaign.pair_cuts)
        return select_block_pairs(form.posterior, request, pending=held)

    from_scratch = time_calls(scratch, scratch_repeats, device)
    board = time_calls(lambda _: campaign.leaderboard(), scratch_repeats, device)
    tau = time_calls(lambda _: campaign.expected_kendall_tau(), scratch_repeats, device)
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
        "next_ms_p50": float(np.percentile(next_pair, 50)),
        "next_ms_p99": float(np.percentile(next_pair, 99)),
        "scratch_ms_p50": float(np.percentile(from_scratch, 50)),
        "leaderboard_ms_p50": float(np.percentile(board, 50)),
        "tau_ms_p50": float(np.percentile(tau, 50)),
        "peak_mb": peak,
        "repeats": repeats,
        "warmup_labels": WARMUP_LABELS,
        "pending": PENDING,
        "min_labels": campaign.config.min_labels,
    }


def _row_in_subprocess(
    n: int, m: int, repeats: int, seed: int, threads: int | None, settle: float
) -> dict:
    command = [sys.executable, "-m", "benchmarks.structured_speed", "--worker", f"{n},{m}"]
    command += ["--repeats", str(repeats), "--seed", str(seed)]
    if threads:
        command += ["--threads", str(threads)]
    time.sleep(settle)  # the last run's memory and writeback settle before this one is timed
    load = os.getloadavg()[0]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["load_before"] = load
    return row


def markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Block-form posterior: speed and memory",
        "",
        "Written by `python -m benchmarks.structured_speed`: an `engine.Campaign` with "
        '`structure="blocks"`, K = 5 criteria, 10 contexts, '
        f"{WARMUP_LABELS:,} warm-up labels, {PENDING} tasks pending, float64, the floor of "
        "labels per clip at its default (`min_labels` 2: at these counts most clips are "
        "owed, so every pick holds one, engine.exposure). add = "
        "`add_clips` of all n clips (s); update = `observe` of one label (ms); next = one "
        "label then `next_pairs` for a rater, from the kept screen, rebuilds included (ms); "
        "scratch = one selection screening every same-prompt pair (ms); leaderboard = every "
        "clip's mean and sd (ms); tau = the expected Kendall tau over every same-prompt "
        "pair (ms); peak = the worker process's peak RSS (MB, including the "
        "Python + torch import). load = the 1-minute load average before the run.",
        "",
        "| n | prompt | device | add s | update p50 | update p99 | next p50 | next p99 "
        "| scratch p50 | leaderboard p50 | tau p50 | peak MB | load |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['prompt_size']} | {r['device']} | {r['add_s']:.2f} | "
            f"{r['update_ms_p50']:.3f} | {r['update_ms_p99']:.3f} | {r['next_ms_p50']:.1f} | "
            f"{r['next_ms_p99']:.1f} | {r['scratch_ms_p50']:.1f} | "
            f"{r['leaderboard_ms_p50']:.1f} | {r['tau_ms_p50']:.1f} | {r['peak_mb']:.0f} | "
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
        lines.append(
            f"| {metric} <= {limit:g} at {where} | {status} | worst of {len(chosen)} rows "
            f"{worst:.3g} |"
        )
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
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per row")
    parser.add_argument("--runs", type=int, default=1, help="runs of each (n, m), for spread")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds idle before each run")
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
        _row_in_subprocess(n, m, args.repeats, args.seed + run, args.threads, args.settle)
        for m in (int(v) for v in args.prompt_sizes.split(","))
        for n in (int(v) for v in args.sizes.split(","))
        for run in range(args.runs)
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
