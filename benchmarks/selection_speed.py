"""Speed of one pair selection and one label update, as the number of clips n grows.

For each n this builds a `Campaign` (default `CampaignConfig`: five criteria, seeded random
scores, four prompt categories, float64 on `engine.device.default_device()`), applies a warm-up
of random forced-choice labels (simulated from a seeded ground truth, so the posterior is no
longer the prior), then times

- **selection**: `Campaign.next_pairs(rater, count=1, hold=False)`, one full selection: screen
  all n(n-1)/2 pairs, refine the best ones exactly, pick one (the rater has judged some pairs,
  so the judged-pair exclusion is exercised too);
- **update**: `Campaign.observe_pair(i, j, outcome)` on a random pair, one ADF update (a
  rank-1 update of the (n+q) x (n+q) covariance, plus the copy `engine.update.update` makes).

Each op runs a few untimed warm-up calls, then `repeats` timed calls (`time.perf_counter`,
with `torch.cuda.synchronize()` around each call on CUDA); median and p99 are reported (with
few repeats p99 is close to the maximum). Peak memory: on CUDA `torch.cuda.max_memory_allocated`
(reset for every n); on the CPU every n runs in a fresh subprocess and its peak resident set
size (`ru_maxrss`, which includes the ~hundreds of MB of the Python + torch import) is reported.

Outputs (the folder is created if missing):

- `benchmarks/results/selection_speed.json`: a list of rows `{n, device, select_ms_p50,
  select_ms_p99, update_ms_p50, update_ms_p99, peak_mem_mb, ...}`, each with the run's
  metadata (seed, dtype, torch version, git sha, threads, timestamp). Rows of another device
  type already in the file are kept (so a CPU run and a CUDA run end up side by side) unless
  `--no-merge` is given.
- `benchmarks/results/selection_speed.md`: the same as a markdown table, plus the targets
  (2 CPU cores: n = 1,000 selection < 10 ms and update < 5 ms; one H100: n = 10,000
  selection < 50 ms) marked met / not met. The table is printed too.

Run from the repository root (`make bench` does the first):

    python -m benchmarks.selection_speed
    python -m benchmarks.selection_speed --sizes 100,1000 --repeats 10

Timings on a shared machine are noisy: compare medians, and rerun before trusting a p99.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.campaign import Campaign, CampaignConfig, Judgment
from engine.device import default_device
from engine.likelihoods import Outcome

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
CPU_SIZES = "100,1000,5000"
CUDA_SIZES = "100,1000,5000,10000,20000"
CONTEXTS = ("animals", "landscapes", "people", "abstract")
N_RATERS = 20
LABEL_BATCH = 100  # warm-up labels per `Campaign.observe` call (one covariance copy per call)
UNTIMED_CALLS = 3
# One label costs O(P^2): keep labels * n^2 under this on the CPU (3,000 labels at n = 1,000).
CPU_WARMUP_BUDGET = 3e9
MIN_WARMUP_LABELS = 200


@dataclass(frozen=True)
class Target:
    """A speed goal: `metric` below `limit_ms` at `n` on a device of type `device_type`."""

    description: str
    device_type: str
    n: int
    metric: str
    limit_ms: float


TARGETS = (
    Target("2 CPU cores, n = 1,000: selection < 10 ms", "cpu", 1000, "select_ms_p50", 10.0),
    Target("2 CPU cores, n = 1,000: update < 5 ms", "cpu", 1000, "update_ms_p50", 5.0),
    Target("one H100, n = 10,000: selection < 50 ms", "cuda", 10000, "select_ms_p50", 50.0),
)


def default_repeats(n: int) -> int:
    """Timed calls per op: many for small n, fewer where one call takes long."""
    if n <= 1000:
        return 30
    if n <= 5000:
        return 10
    return 5


def default_warmup_labels(n: int, device: torch.device) -> int:
    """min(3n, 3000) labels; on the CPU fewer for large n (one label is O(n^2) there)."""
    labels = min(3 * n, 3000)
    if device.type != "cuda":
        labels = min(labels, max(MIN_WARMUP_LABELS, int(CPU_WARMUP_BUDGET / n**2)))
    return labels


def describe_device(device: torch.device) -> str:
    """'NVIDIA H100 ...' on CUDA; 'cpu (T threads, model)' on the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return f"cpu ({torch.get_num_threads()} threads, {model})"


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_sha() -> str:
    """HEAD's sha ('+dirty' when engine/ differs from it), or 'uncommitted' without a HEAD."""
    sha = _git("rev-parse", "HEAD")
    if not sha:
        return "uncommitted"
    return sha + "+dirty" if _git("status", "--porcelain", "--", "engine") else sha


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[int], object], repeats: int, device: torch.device) -> list[float]:
    """Milliseconds of `repeats` calls `call(k)`, after UNTIMED_CALLS untimed ones."""
    for k in range(UNTIMED_CALLS):
        call(k)
    _sync(device)
    times = []
    for k in range(UNTIMED_CALLS, UNTIMED_CALLS + repeats):
        _sync(device)
        start = time.perf_counter()
        call(k)
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _random_pairs(rng: np.random.Generator, n: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    first = rng.integers(0, n, count)
    second = (first + rng.integers(1, n, count)) % n  # never equal to first
    return first, second


def build_campaign(
    n: int, warmup_labels: int, seed: int, device: torch.device
) -> tuple[Campaign, Callable[[int, int], Outcome]]:
    """A campaign of n clips after `warmup_labels` simulated labels from N_RATERS raters.

    Returns the campaign and the simulated rater (pair -> outcome) used for later labels.
    """
    rng = np.random.default_rng(seed)
    config = CampaignConfig()
    n_criteria = len(config.criteria)
    scores = rng.normal(size=(n, n_criteria))
    contexts = [CONTEXTS[c] for c in rng.integers(0, len(CONTEXTS), n)]
    # Ground truth: quality = scores . w + residual; a rater sees it with N(0, 1) noise.
    quality = scores @ rng.normal(0.0, 0.5, n_criteria) + rng.normal(0.0, 1.0, n)

    def outcome(i: int, j: int) -> Outcome:
        better = quality[i] - quality[j] + rng.normal() > 0
        return Outcome.WIN if better else Outcome.LOSS

    campaign = Campaign(config, device=device)
    campaign.add_clips(torch.from_numpy(scores), contexts=contexts)
    first, second = _random_pairs(rng, n, warmup_labels)
    judgments = [
        Judgment.pair(f"rater{b % N_RATERS}", int(i), int(j), outcome(int(i), int(j)))
        for b, (i, j) in enumerate(zip(first, second, strict=True))
    ]
    for start in range(0, len(judgments), LABEL_BATCH):
        campaign.observe(judgments[start : start + LABEL_BATCH])
    _sync(device)
    return campaign, outcome


@dataclass(frozen=True)
class _CpuClock:
    """A reading of machine-wide busy CPU seconds, this process's CPU seconds and wall time."""

    machine_busy: float | None
    own: float
    wall: float

    def other_cores(self, later: _CpuClock) -> float | None:
        """Mean number of cores other processes kept busy between this reading and `later`."""
        if self.machine_busy is None or later.machine_busy is None:
            return None
        wall = later.wall - self.wall
        other = (later.machine_busy - self.machine_busy) - (later.own - self.own)
        return max(other, 0.0) / wall if wall > 0 else None


def _cpu_busy_seconds() -> _CpuClock:
    """Busy CPU seconds of the whole machine (Linux /proc/stat; None elsewhere) and our own."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    own = usage.ru_utime + usage.ru_stime
    machine: float | None = None
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
        machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        machine = None
    return _CpuClock(machine, own, time.perf_counter())


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def measure(
    n: int,
    *,
    repeats: int,
    seed: int,
    warmup_labels: int | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """One row of the table: time selection and update at n clips on `device`."""
    device = device or default_device()
    labels = default_warmup_labels(n, device) if warmup_labels is None else warmup_labels
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    baseline_mb = _peak_rss_mb()
    setup_start = time.perf_counter()
    campaign, outcome = build_campaign(n, labels, seed, device)
    setup_s = time.perf_counter() - setup_start

    busy_before = _cpu_busy_seconds()
    rater = "rater0"  # has judged ~labels / N_RATERS pairs: those are excluded
    select_ms = time_calls(
        lambda _: campaign.next_pairs(rater, count=1, hold=False), repeats, device
    )
    rng = np.random.default_rng(seed + 1)
    first, second = _random_pairs(rng, n, repeats + UNTIMED_CALLS)

    def one_update(k: int) -> None:
        i, j = int(first[k]), int(second[k])
        campaign.observe_pair(i, j, outcome(i, j), rater="updater")

    update_ms = time_calls(one_update, repeats, device)

    other_cores = busy_before.other_cores(_cpu_busy_seconds())
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "torch.cuda.max_memory_allocated"
    else:
        peak_mb = _peak_rss_mb()
        peak_kind = "process peak RSS (ru_maxrss)"
    return {
        "n": n,
        "device": describe_device(device),
        "select_ms_p50": float(np.median(select_ms)),
        "select_ms_p99": float(np.percentile(select_ms, 99)),
        "update_ms_p50": float(np.median(update_ms)),
        "update_ms_p99": float(np.percentile(update_ms, 99)),
        "peak_mem_mb": round(float(peak_mb), 1),
        "peak_mem_kind": peak_kind,
        "baseline_rss_mb": round(baseline_mb, 1),
        "device_type": device.type,
        "repeats": repeats,
        "warmup_labels": labels,
        "setup_s": round(setup_s, 2),
        # Mean CPU use (in cores) of other processes while timing: when it leaves fewer cores
        # than torch has threads, multi-threaded CPU ops can be many times slower.
        "other_cpu_cores": None if other_cores is None else round(other_cores, 2),
        "cpu_count": os.cpu_count(),
        "n_params": campaign.posterior.mean.numel(),
        "seed": seed,
        "dtype": str(campaign.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def run_worker(
    n: int, repeats: int, seed: int, warmup_labels: int | None, threads: int | None
) -> dict[str, Any]:
    """Measure n in a fresh interpreter (so its peak RSS is this n's alone)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.selection_speed",
        "--worker-n",
        str(n),
        "--repeats",
        str(repeats),
        "--seed",
        str(seed),
    ]
    if warmup_labels is not None:
        command += ["--warmup-labels", str(warmup_labels)]
    if threads is not None:
        command += ["--threads", str(threads)]
    result = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"worker for n = {n} failed with exit status {result.returncode}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fmt(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _fmt_cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def target_status(target: Target, rows: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """('met' | 'not met' | 'not measured', the measured value or why not)."""
    matches = [r for r in rows if r["device_type"] == target.device_type and r["n"] == target.n]
    if not matches:
        return "not measured", f"no {target.device_type} row at n = {target.n}"
    row = matches[-1]
    value = float(row[target.metric])
    status = "met" if value < target.limit_ms else "not met"
    detail = f"{target.metric} = {_fmt(value)} ms on {row['device']}"
    if row.get("other_cpu_cores") is not None:
        detail += f"; other CPU use {_fmt_cores(row['other_cpu_cores'])} cores"
    return status, detail


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a markdown table, plus the targets marked met / not met."""
    lines = [
        "# Selection and update speed",
        "",
        "Written by `python -m benchmarks.selection_speed`. Selection = one "
        "`Campaign.next_pairs(count=1)` over all pairs; update = one `Campaign.observe_pair`. "
        "Times in ms (median and p99 of `repeats` calls); peak memory in MB (CPU: the "
        "process's peak RSS, including the Python + torch import; CUDA: "
        "`torch.cuda.max_memory_allocated`). Timings on a shared machine are noisy: 'other CPU' "
        "is the mean number of cores other processes kept busy while timing (when fewer cores "
        "than torch threads are left, multi-threaded CPU ops can be many times slower).",
        "",
        "| n | device | select p50 | select p99 | update p50 | update p99 | peak MB "
        "| repeats | warm-up labels | other CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['device']} | {_fmt(r['select_ms_p50'])} "
            f"| {_fmt(r['select_ms_p99'])} | {_fmt(r['update_ms_p50'])} "
            f"| {_fmt(r['update_ms_p99'])} | {r['peak_mem_mb']:.0f} | {r['repeats']} "
            f"| {r['warmup_labels']:,} | {_fmt_cores(r.get('other_cpu_cores'))} |"
        )
    lines += ["", "## Targets", "", "| target | status | measured |", "|---|---|---|"]
    for target in TARGETS:
        status, detail = target_status(target, rows)
        lines.append(f"| {target.description} | **{status}** | {detail} |")
    meta = rows[-1] if rows else {}
    lines += [
        "",
        f"dtype {meta.get('dtype', '?')}, torch {meta.get('torch', '?')}, "
        f"git {meta.get('git_sha', '?')}, seed {meta.get('seed', '?')}, "
        f"run {meta.get('timestamp', '?')}.",
        "",
    ]
    return "\n".join(lines)


def _existing_rows(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.selection_speed",
        description="Time one pair selection and one label update for several campaign sizes.",
    )
    parser.add_argument(
        "--sizes",
        default=None,
        help=f"comma-separated n (default {CPU_SIZES} on the CPU, {CUDA_SIZES} on CUDA)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls per op (default 30 for n <= 1000, 10 for n <= 5000, else 5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of scores and labels")
    parser.add_argument(
        "--warmup-labels",
        type=int,
        default=None,
        help="labels applied before timing (default min(3n, 3000); fewer for large n on CPU)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument(
        "--no-merge",
        action="store_true",
        help="drop rows of other device types already in the output file",
    )
    parser.add_argument("--worker-n", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = default_device()
    if args.worker_n is not None:  # child process: one n, one JSON row on stdout
        n = args.worker_n
        repeats = args.repeats or default_repeats(n)
        row = measure(n, repeats=repeats, seed=args.seed, warmup_labels=args.warmup_labels)
        print(json.dumps(row), flush=True)
        return [row]

    sizes_text = args.sizes or (CUDA_SIZES if device.type == "cuda" else CPU_SIZES)
    sizes = [int(s) for s in sizes_text.split(",") if s.strip()]
    if any(n < 2 for n in sizes):
        raise SystemExit("every size must be >= 2")
    shared = {
        "git_sha": git_sha(),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    rows = []
    for n in sizes:
        repeats = args.repeats or default_repeats(n)
        print(f"n = {n:,}: {repeats} repeats ...", file=sys.stderr, flush=True)
        if device.type == "cuda":
            row = measure(n, repeats=repeats, seed=args.seed, warmup_labels=args.warmup_labels)
        else:
            row = run_worker(n, repeats, args.seed, args.warmup_labels, args.threads)
        row.update(shared)
        rows.append(row)
        print(
            f"  select p50 {_fmt(row['select_ms_p50'])} ms, update p50 "
            f"{_fmt(row['update_ms_p50'])} ms, peak {row['peak_mem_mb']:.0f} MB "
            f"(setup {row['setup_s']} s)",
            file=sys.stderr,
            flush=True,
        )

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "selection_speed.json"
    kept = [] if args.no_merge else _existing_rows(json_path)
    kept = [r for r in kept if r.get("device_type") not in {device.type, None}]
    all_rows = sorted(kept, key=lambda r: (r["device_type"], r["n"])) + rows
    json_path.write_text(json.dumps(all_rows, indent=2) + "\n")
    table = markdown(all_rows)
    (args.out / "selection_speed.md").write_text(table)
    print(table)
    return all_rows


if __name__ == "__main__":
    main()
