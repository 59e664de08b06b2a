"""What a background prior refit costs the engine's request loop (api/refits.py), at the engine
host: n = 1,000 clips in prompts of 20, ~4,000 labels.

A `ProcessEngine` (the service's engine process) holds the campaign, built from the service's
own stored settings (five criteria, ties, rater lapses and noise learned, the "split" refit).
A probe asks it for one assignment's task (`choose`, then `release`) every `--probe-every`
seconds, and a trickle of new labels arrives (`--trickle` labels a second, applied in small
batches), as in the service; the probe's latency is what an assignment request that needs the
engine waits. First a window without a refit, then a refit as the service runs it: the
engine's copy (`refit_copy_to`: a child forked from the engine's process pickles the campaign
into a file), the fit in a worker process at nice 19 (`ProcessFit`), the copy's catch-up in
rounds with the labels that arrived meanwhile (`catch_up`, the engine's `refit_entries`), the
engine's adoption of the refitted state (the copy's state without its history's labels,
written to a file that `receive_refit` reads and unpickles, then `adopt_refit`: only the
labels left after the catch-up applied again). Reported: the fit's seconds, the catch-up's
rounds and seconds, the copy's, the fetches', the receipt's and the adoption's engine seconds
(each call's round trip from this process: what a request queued behind it waits), the
probe's latency p50 / p90 / max without and during the refit, and, for comparison, what
adopting the refit inline would stall the engine for (`Campaign.apply_refit` on the copy:
one ADF pass over every label, timed here in this process).

    python -m benchmarks.refit_stall --trickle 100
    python -m benchmarks.refit_stall --n-items 200 --labels 800   # a quick look

Writes `benchmarks/results/refit_stall.{json,md}` and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import pickle
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from api.campaign_config import build_config, engine_config
from api.engine_host import ClipBatch, ProcessEngine
from api.refits import CATCH_UP_FETCH, MAX_EVALUATIONS, ProcessFit, catch_up
from api.restore import read_when_whole
from benchmarks.concurrent import command_line, write_results
from benchmarks.selection_speed import git_sha
from engine import DEFAULT_CRITERIA, Judgment, Outcome

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
PROMPT_SIZE = 20
N_RATERS = 20
TIE_Z = 0.3  # |z| under which a simulated rater says "same"


class World:
    """Clips in prompts of PROMPT_SIZE with reward-model scores, a true quality each, and
    raters who answer random pairs within a prompt (one in ten of them noisy)."""

    def __init__(self, n_items: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        k = len(DEFAULT_CRITERIA)
        self.scores = self.rng.normal(size=(n_items, k))
        self.truth = self.scores @ (0.5 * self.rng.normal(size=k)) + self.rng.normal(size=n_items)
        self.groups = [f"p{i // PROMPT_SIZE}" for i in range(n_items)]

    def labels(self, count: int) -> list[Judgment]:
        out = []
        n_prompts = len(self.truth) // PROMPT_SIZE
        for _ in range(count):
            rater = int(self.rng.integers(N_RATERS))
            start = PROMPT_SIZE * int(self.rng.integers(n_prompts))
            i, j = start + self.rng.choice(PROMPT_SIZE, 2, replace=False)
            noise = 3.0 if rater % 10 == 0 else 0.8
            z = self.truth[i] - self.truth[j] + noise * self.rng.normal()
            outcome = Outcome.TIE if abs(z) < TIE_Z else (Outcome.WIN if z > 0 else Outcome.LOSS)
            out.append(Judgment.pair(rater, int(i), int(j), outcome))
        return out


async def probe(
    host: ProcessEngine, world: World, every: float, trickle: float, stop: asyncio.Event
) -> list[tuple[float, float]]:
    """(sent at, latency) of each `choose` until `stop`; labels arrive at `trickle` a second."""
    out = []
    owed = 0.0
    while not stop.is_set():
        sent = time.perf_counter()
        tasks = await host.call("choose", int(world.rng.integers(N_RATERS)), 1)
        out.append((sent, time.perf_counter() - sent))
        await host.call("release", [task.id for task in tasks])
        owed += trickle * every
        if owed >= 1:
            count, owed = int(owed), owed - int(owed)
            await host.call("observe", world.labels(count), [], False)
        await asyncio.sleep(every)
    return out


def quantiles(latencies: list[float]) -> dict[str, float]:
    values = np.asarray(latencies) * 1e3
    return {
        "count": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "max_ms": float(values.max()),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    world = World(args.n_items, args.seed)
    stored = engine_config(list(DEFAULT_CRITERIA), "group", True, None)
    stored["prior_refit"] = "split"
    host = ProcessEngine(build_config(stored), "cpu", "refit-stall")
    folder = tempfile.mkdtemp(prefix="ratingparty-refit-stall-")
    await host.start()
    try:
        contexts: list[str | None] = list(world.groups)
        await host.call("add_clips", ClipBatch(world.scores, contexts, list(world.groups), None))
        labels = world.labels(args.labels)
        for start in range(0, len(labels), 50):
            await host.call("observe", labels[start : start + 50], [], False)

        stop = asyncio.Event()
        probing = asyncio.create_task(probe(host, world, args.probe_every, args.trickle, stop))
        await asyncio.sleep(args.baseline_s)
        stop.set()
        baseline = await probing

        stop = asyncio.Event()
        probing = asyncio.create_task(probe(host, world, args.probe_every, args.trickle, stop))
        await asyncio.sleep(1.0)
        began = time.perf_counter()
        path = os.path.join(folder, "copy")
        job_labels = await host.call("refit_copy_to", path)
        copied = time.perf_counter()
        data = await asyncio.to_thread(read_when_whole, path, threading.Event())
        assert data is not None, "the engine wrote no copy"
        written = time.perf_counter()
        fit = ProcessFit()
        held = await fit.fit(data, MAX_EVALUATIONS)
        fitted = time.perf_counter()
        fetches: list[tuple[float, int]] = []  # each round's engine seconds and labels pending

        async def entries_since(since: int) -> tuple[bytes, int]:
            sent = time.perf_counter()
            reply = await host.call("refit_entries", since, CATCH_UP_FETCH)
            fetches.append((time.perf_counter() - sent, reply[1]))
            return reply

        refitted, rounds, left = await catch_up(fit, held, entries_since)
        result_path = os.path.join(folder, "result")
        with open(result_path, "wb") as file:
            file.write(refitted)
        caught_up = time.perf_counter()
        await host.call("receive_refit", result_path)
        received = time.perf_counter()
        await host.call("adopt_refit")
        adopted = time.perf_counter()
        board = await host.call("leaderboard", 0.9)
        await asyncio.sleep(1.0)
        stop.set()
        during = [latency for sent, latency in await probing if sent + latency >= began]
        total_labels = len(await host.call("log"))
    finally:
        await host.close()
        shutil.rmtree(folder, ignore_errors=True)

    # what adopting inline would cost: the refit applied to the copy, one pass over every label
    copy = pickle.loads(data)
    refit = pickle.loads(refitted).refit
    inline_began = time.perf_counter()
    copy.apply_refit(refit)
    inline = time.perf_counter() - inline_began
    return {
        "labels_at_copy": job_labels,
        "labels_after": total_labels,
        "copy_mb": len(data) / 2**20,
        "copy_s": copied - began,
        "copy_written_s": written - began,
        "fit_s": fitted - written,
        "labels_at_fit_end": fetches[0][1] if fetches else 0,
        "catch_up_rounds": rounds,
        "catch_up_s": caught_up - fitted,
        "catch_up_pending": [pending for _, pending in fetches],
        "catch_up_fetch_max_s": max(seconds for seconds, _ in fetches),
        "labels_adopted": left,
        "result_mb": len(refitted) / 2**20,
        "receive_s": received - caught_up,
        "adopt_s": adopted - received,
        "inline_apply_s": inline,
        "prior_after": list(board.prior),
        "baseline": quantiles([latency for _, latency in baseline]),
        "during_refit": quantiles(during),
    }


def markdown(result: dict[str, Any], meta: dict[str, Any]) -> str:
    rows = [
        "| window | probes | p50 ms | p90 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("baseline", "during_refit"):
        q = result[name]
        rows.append(
            f"| {name.replace('_', ' ')} | {q['count']} | {q['p50_ms']:.1f} | "
            f"{q['p90_ms']:.1f} | {q['max_ms']:.1f} |"
        )
    return "\n".join(
        [
            "# A background prior refit and the engine's request loop",
            "",
            f"- command: `{meta['command']}`",
            f"- git {meta['git']}, {meta['date']}, {meta['machine']}, load before "
            f"{meta['load_before']:.2f}",
            f"- {meta['n_items']} clips in prompts of {PROMPT_SIZE}, "
            f"{result['labels_at_copy']} labels at the copy, {result['labels_after']} at the "
            f"end ({meta['trickle']} a second during the windows); the copy "
            f"{result['copy_mb']:.1f} MiB",
            f"- the fit in its worker process (nice 19): {result['fit_s']:.1f} s; the engine's "
            f"copy (`refit_copy_to`, a forked child writes the file) "
            f"{result['copy_s'] * 1e3:.0f} ms, the file whole after "
            f"{result['copy_written_s'] * 1e3:.0f} ms",
            f"- the catch-up: {result['labels_at_fit_end']} labels arrived during the fit; "
            f"{result['catch_up_rounds']} rounds in {result['catch_up_s']:.1f} s, labels "
            f"pending at each fetch {result['catch_up_pending']}, the engine's longest fetch "
            f"(`refit_entries`) {result['catch_up_fetch_max_s'] * 1e3:.0f} ms",
            f"- the engine's receipt of the copy's `refit_result` ({result['result_mb']:.1f} "
            f"MiB, `receive_refit`) {result['receive_s'] * 1e3:.0f} ms, its adoption "
            f"(`adopt_refit`, {result['labels_adopted']} labels applied again) "
            f"{result['adopt_s'] * 1e3:.0f} ms; adopting inline instead (`apply_refit`, "
            f"one ADF pass over every label) {result['inline_apply_s']:.2f} s",
            "",
            "Latency of one `choose` (an assignment's task) sent every "
            f"{meta['probe_every']} s; during the refit is from the copy to a second after "
            "the adoption:",
            "",
            *rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=1000)
    parser.add_argument("--labels", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-every", type=float, default=0.05)
    parser.add_argument("--trickle", type=float, default=5.0)
    parser.add_argument("--baseline-s", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the engine process and the fit's worker take one core each
    load = os.getloadavg()[0]
    result = asyncio.run(measure(args))
    meta = {
        "command": command_line("benchmarks.refit_stall", parser, args),
        "git": git_sha(),
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, 1 thread each",
        "load_before": load,
        "seed": args.seed,
        "dtype": "float64",
        "device": "cpu",
        "n_items": args.n_items,
        "trickle": args.trickle,
        "probe_every": args.probe_every,
    }
    write_results(args.out, "refit_stall", {"meta": meta, "result": result}, markdown(result, meta))


if __name__ == "__main__":
    main()
