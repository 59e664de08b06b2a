"""K-sets through the service: rater time to a within-prompt Kendall tau, pairs only against
campaigns created with `kset` (best-of-4, best-and-worst-of-4), over HTTP (the app in
process, SQLite).

The service's engine chooses every task (a pair, or a K-set when it teaches more per second,
engine.task_choice); simulated raters (sim.worlds, one at a time) answer from the world's
truth and take the stated rater time (sim.kset.RaterTime), which the page's `shown_at` and
`answered_at` carry to the service, so the campaign learns seconds per task kind as it would
from a real page. Tau is the service leaderboard's mean against the truth within prompts.

    python -m benchmarks.kset_service --seeds 3

Writes benchmarks/results/kset_service.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from engine import Outcome
from sim import metrics
from sim.kset import RaterTime
from sim.raters import RaterSpec
from sim.report import provenance
from sim.runner import derive_seed
from sim.service import _clips
from sim.worlds import SyntheticSpec, SyntheticWorld

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN_KEY = "benchmark-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ARMS: dict[str, dict[str, Any] | None] = {
    "pairs only": None,
    "pairs + best-of-4": {"size": 4, "mode": "best"},
    "pairs + best-and-worst-of-4": {"size": 4, "mode": "best_worst"},
}
N_ITEMS = 100
GROUP_SIZE = 4
BUDGET_SECONDS_PER_ITEM = 40.0  # rater seconds per clip the run may spend
CHECKS = 10  # tau is read this many times over the budget
TARGET_TAU = 0.8
CHOICE = {Outcome.WIN: "left", Outcome.LOSS: "right", Outcome.TIE: "tie"}
START = datetime(2026, 1, 1, tzinfo=UTC)


def _run(kset: dict[str, Any] | None, seed: int, folder: Path) -> dict[str, Any]:
    """One seeded party against a fresh service: tau at each check, the task mix."""
    spec = SyntheticSpec(
        n_items=N_ITEMS,
        n_groups=N_ITEMS // GROUP_SIZE,
        n_contexts=3,
        rm_correlation=0.5,
        pair_scope="group",
        raters=RaterSpec(concurrent=1),
    )
    world = SyntheticWorld(spec, derive_seed(seed, "world"))
    problem = world.problem
    rng = np.random.default_rng(derive_seed(seed, "answers"))
    timing = RaterTime()
    settings = Settings(
        database_url=f"sqlite:///{folder / 'service.db'}",
        admin_key=ADMIN_KEY,
        seed=seed,
        engine_device="cpu",
        engine_process=False,
        load_wait_s=60.0,
    )
    with TestClient(app=create_app(settings)) as http:
        body: dict[str, Any] = {
            "name": "kset benchmark",
            "criteria": list(problem.criteria),
            "pair_scope": "group",
            "ties": problem.tie_margin > 0,
            "lease_seconds": 3600,
        }
        if kset is not None:
            body["kset"] = kset
        campaign = http.post("/v1/campaigns", json=body, headers=ADMIN).json()
        clips = [
            {
                "external_id": c.external_id,
                "uri": c.uri,
                "group": c.group,
                "context": c.context,
                "scores": c.scores,
            }
            for c in _clips(world, "kset")
        ]
        added = http.post(
            f"/v1/campaigns/{campaign['id']}/clips", json={"clips": clips}, headers=ADMIN
        ).json()
        index_of = {ref["id"]: k for k, ref in enumerate(added["clips"])}
        raters = [
            http.post(
                f"/v1/campaigns/{campaign['id']}/raters", json={"name": f"r{r}"}, headers=ADMIN
            ).json()["token"]
            for r in range(spec.raters.n_raters)
        ]

        def tau() -> float:
            board = http.get(
                f"/v1/campaigns/{campaign['id']}/leaderboard",
                params={"limit": 10_000},
                headers=ADMIN,
            ).json()
            mean = np.empty(N_ITEMS)
            for clip in board["clips"]:
                mean[index_of[clip["id"]]] = clip["mean"]
            return metrics.kendall_tau(mean, world.quality, problem.groups)

        budget = BUDGET_SECONDS_PER_ITEM * N_ITEMS
        checks = [budget * (k + 1) / CHECKS for k in range(CHECKS)]
        now, tasks, mix = 0.0, 0, {}
        points = [(0.0, 0, tau())]
        while checks:
            rater = int(rng.integers(len(raters)))
            headers = {"Authorization": f"Bearer {raters[rater]}"}
            shown = http.post(f"/v1/campaigns/{campaign['id']}/assignments", headers=headers)
            task = shown.json()["assignment"]
            if task is None:
                break
            if task["kind"] == "kset":
                items = tuple(index_of[c["id"]] for c in task["clips"])
                answer, _ = world.answer_kset(items, task["mode"], rater, rng)
                clip_id = {index_of[c["id"]]: c["id"] for c in task["clips"]}
                reply: dict[str, Any] = {"ranking": [clip_id[p] for p in answer]}
                took = timing.kset_base + timing.kset_per_clip[task["mode"]] * len(items)
            else:
                left, right = index_of[task["left"]["id"]], index_of[task["right"]["id"]]
                outcome, _ = world.answer_pair(left, right, rater, rng)
                reply = {"choice": CHOICE[outcome]}
                took = timing.pair
            took *= float(np.exp(timing.spread * rng.standard_normal() - timing.spread**2 / 2))
            reply["shown_at"] = (START + timedelta(seconds=now)).isoformat()
            reply["answered_at"] = (START + timedelta(seconds=now + took)).isoformat()
            judged = http.post(
                f"/v1/assignments/{task['id']}/judgment", json=reply, headers=headers
            )
            if judged.status_code != 201:
                raise RuntimeError(f"the service refused an answer: {judged.text}")
            now += took
            tasks += 1
            mix[task["kind"]] = mix.get(task["kind"], 0) + 1
            while checks and now >= checks[0]:
                checks.pop(0)
                points.append((now, tasks, tau()))
    hours = [p[0] / 3600 for p in points]
    taus = [p[2] for p in points]
    return {
        "seed": seed,
        "tasks": tasks,
        "task_mix": mix,
        "hours": hours,
        "taus": taus,
        "hours_to_target": _first_crossing(hours, taus, TARGET_TAU),
    }


def _first_crossing(hours: Sequence[float], taus: Sequence[float], target: float) -> float:
    """Rater hours when tau first reaches `target`, interpolated between checks (NaN: never)."""
    for k in range(1, len(taus)):
        if taus[k] >= target:
            h0, h1, t0, t1 = hours[k - 1], hours[k], taus[k - 1], taus[k]
            return h1 if t1 == t0 else h0 + (h1 - h0) * (target - t0) / (t1 - t0)
    return float("nan")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python -m benchmarks.kset_service", *given])
    torch.set_num_threads(1)
    rows = []
    for seed in range(args.seeds):
        for arm, kset in ARMS.items():
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                row = _run(kset, derive_seed(args.seed, "kset-service", seed), Path(folder))
            row.update(arm=arm, wall_seconds=time.perf_counter() - started)
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        f"# K-sets through the service: rater time to Kendall tau {TARGET_TAU} within prompts",
        "",
        f"Command: `{command}` (seed {args.seed}; the app in process over HTTP, SQLite, the "
        f"engine in a thread, 1 torch thread; load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)",
        "",
        f"{N_ITEMS} clips in prompts of {GROUP_SIZE}, reward model corr 0.5, the simulator's "
        "raters one at a time; every task is the service's choice. Rater time as "
        "benchmarks/kset.md (pair 6 s, best-of-4 14 s, best-and-worst-of-4 16 s, log-normal "
        "factor), sent as shown_at "
        "and answered_at; the campaign learns it. Budget "
        f"{BUDGET_SECONDS_PER_ITEM:g} rater seconds per clip; tau read {CHECKS} times and "
        "interpolated. Mean [min, max] over seeds; the same worlds in every arm.",
        "",
        "| arm | seeds | rater hours to tau 0.8 | tau at the budget | tasks | task mix (sum) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for arm in ARMS:
        own = [r for r in rows if r["arm"] == arm]
        reached = [r["hours_to_target"] for r in own if np.isfinite(r["hours_to_target"])]
        hours = (
            f"{np.mean(reached):.2f} [{min(reached):.2f}, {max(reached):.2f}]"
            + (f" ({len(own) - len(reached)} not reached)" if len(reached) < len(own) else "")
            if reached
            else "not reached"
        )
        final = [r["taus"][-1] for r in own]
        mix: dict[str, int] = {}
        for r in own:
            for kind, count in r["task_mix"].items():
                mix[kind] = mix.get(kind, 0) + count
        lines.append(
            f"| {arm} | {len(own)} | {hours} | {np.mean(final):.3f} "
            f"[{min(final):.3f}, {max(final):.3f}] | {np.mean([r['tasks'] for r in own]):.0f} | "
            + ", ".join(f"{k} {v}" for k, v in sorted(mix.items()))
            + " |"
        )
    walls = ", ".join(
        f"{arm}: {np.mean([r['wall_seconds'] for r in rows if r['arm'] == arm]):.0f}"
        for arm in ARMS
    )
    lines += ["", f"Wall time per run (s): {walls}"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"provenance": provenance(args.seed), "command": command, "rows": rows}
    (RESULTS / "kset_service.json").write_text(json.dumps(document, indent=1) + "\n")
    (RESULTS / "kset_service.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
