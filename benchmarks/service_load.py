"""Load on the HTTP service: many concurrent simulated raters against a real server.

For each client count this starts a fresh server process (`python -m api`, uvicorn, SQLite file
in a temporary folder, loopback), creates a campaign of n synthetic clips (`sim.demo`, 5
criteria, prompts of 20 clips, same-prompt pairs, ties allowed), registers one rater per
client, then runs the clients in separate processes (asyncio + aiohttp, one keep-alive
connection per rater). Each simulated rater loops: `POST .../assignments`, answer as a
Thurstone observer of the clips' true quality (noise sd 1.48 JOD, ties inside 0.3 JOD), `POST
.../judgment`. Two kinds of load:

- closed loop (`--rate 0`, the default): no think time, each rater asks again as soon as it
  answered, so the server is saturated. This measures the most judgments per second; the
  latency is then mostly queueing, by Little's law clients / throughput per cycle.
- paced (`--rate R`): the raters together start R assignment-and-judgment cycles per second,
  each rater on a fixed schedule (period clients / R, random phase), as wrk2 paces its
  requests. A cycle that starts late because the last one ran long counts its lateness in its
  assignment latency (measured from the scheduled start, not the actual one), so a slow
  server cannot hide its slowness by slowing the clients down ("coordinated omission"). This
  measures the latency at a given throughput.

Requests of the first `--warmup` seconds are not counted; the run stops after `--duration`
seconds or `--max-requests`.

Reported per client count (JSON rows `{clients, n_clips, judgments_per_s, assign_p50_ms,
assign_p99_ms, judge_p99_ms, errors, ...}`): throughput of judgments and assignments, latency
percentiles, and errors (any non-2xx answer or transport error). After the run it checks that
every acknowledged judgment is in the export (nothing acknowledged was lost).

Each row also records, from the same run, the two ceilings that can bind: the server's HTTP
ceiling (right after the run, the same client processes and connections hammer `GET
/v1/whoami`, the same stack's cheapest authenticated call, closed loop for `--http-seconds`;
requests/s, and cycles/s at two requests per judgment) and the engine's (what one handed-out
task costs the campaign's engine, measured apart in this process); `binds` names the lower
one, or "neither" when a paced run offers less than both.

Past the dense form's limit (`--n-clips 100000`) the campaign is kept in blocks
(`structure="blocks"`, same-prompt pairs), its clips are synthetic (prompts of 20, 5 criteria
correlated with the true quality) and uploaded as JSON lines to `POST
/v1/campaigns/{id}/clips/bulk` in 1 MiB chunks, as benchmarks/bulk_upload.py does.

Outputs `benchmarks/results/service_load.{json,md}` and prints the table. Run from the
repository root:

    python -m benchmarks.service_load                       # n = 1,000; 4, 16, 64 clients
    python -m benchmarks.service_load --clients 8 --n-clips 100 --duration 10
    python -m benchmarks.service_load --clients 16 --refill-batch 1,8,16   # the queue's batch
    python -m benchmarks.service_load --clients 64 --rate 500     # latency at 500 judgments/s
    python -m benchmarks.service_load --clients 16,64 --n-clips 1000,100000 --rate 0,500 --runs 5
    python -m benchmarks.service_load --clients 64 --profile /tmp/load   # the server, cProfiled

Client processes share the machine with the server: on 2 cores they take CPU from it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import multiprocessing
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from api.schemas import CampaignCreate
from api.settings import Settings

# what a campaign created without `prior_refit` does
DEFAULT_PRIOR_REFIT = next(
    f.default for f in msgspec.structs.fields(CampaignCreate) if f.name == "prior_refit"
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
ADMIN_KEY = "benchmark-admin-key-0123456789"
NOISE_SD = 1.4826  # JOD: the engine's default rater noise
TIE_MARGIN = 0.3
GROUP_SIZE = 20
TARGET = {"judgments_per_s": 500.0, "p99_ms": 50.0}
SATURATED_PENDING = 4
APPLY_BATCH: int = Settings.__dataclass_fields__["apply_batch"].default  # type: ignore[assignment]
DEMO_MAX_CLIPS = 5_000  # sim.demo's world lists every pair; past this the clips come from here
CHUNK_BYTES = 1 << 20  # a bulk upload's chunk, as benchmarks/bulk_upload.py sends it
HTTP_WARMUP_S = 0.5  # uncounted start of the HTTP ceiling's hammering


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    database_url: str,
    port: int,
    threads: int | None,
    refill_batch: int | None = None,
    profile: str | None = None,
    snapshot_every: int | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m api` on loopback (under cProfile into `profile` when given: the server
    process, not the campaigns' engine processes); returns once /healthz answers."""
    import httpx

    env = {**os.environ, "RATINGPARTY_ADMIN_KEY": ADMIN_KEY, "DATABASE_URL": database_url}
    if refill_batch is not None:
        env["RATINGPARTY_REFILL_BATCH"] = str(refill_batch)
    env["RATINGPARTY_DEVICE"] = env.get("RATINGPARTY_DEVICE", "cpu")
    if snapshot_every is not None:
        env["RATINGPARTY_SNAPSHOT_EVERY"] = str(snapshot_every)
    if threads:
        env["RATINGPARTY_ENGINE_THREADS"] = str(threads)
    command = [sys.executable, "-m", "api", "--port", str(port), "--log-level", "warning"]
    if profile:
        command[1:1] = ["-m", "cProfile", "-o", profile]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not answer /healthz within 60 s")


def structure_for(n_clips: int) -> str:
    """How the service keeps a campaign of `n_clips`: dense up to the dense form's limit,
    else in blocks (same-prompt pairs, exact)."""
    from engine.forms import FORMS

    limit = FORMS["dense"].max_items
    return "dense" if limit is None or n_clips <= limit else "blocks"


def clip_data(n_clips: int, seed: int) -> Any:
    """The campaign's clips: `sim.demo.demo_clips` (prompts of 20) up to DEMO_MAX_CLIPS,
    `synthetic_clips` past it (sim's world enumerates all n^2 / 2 pairs)."""
    from sim.demo import demo_clips

    if n_clips <= DEMO_MAX_CLIPS:
        return demo_clips(n_clips, n_groups=max(1, n_clips // GROUP_SIZE), seed=seed)
    return synthetic_clips(n_clips, seed)


def synthetic_clips(n_clips: int, seed: int) -> Any:
    """demo_clips' shape without its pair list: prompts of GROUP_SIZE clips, 3 prompt
    categories, true quality N(0, 1) JOD plus a prompt offset, 5 criteria scored on 0-10 with
    correlation 0.7 to the quality, 5 % of the scores missing."""
    from sim.demo import DemoClips, demo_clips

    criteria = demo_clips(2 * GROUP_SIZE, n_groups=2, seed=seed).criteria
    rng = np.random.default_rng(seed)
    group = np.arange(n_clips) // GROUP_SIZE
    quality = rng.normal(0.0, 1.0, n_clips) + rng.normal(0.0, 0.5, group[-1] + 1)[group]
    scores = 5.0 + 1.5 * (
        0.7 * quality[:, None] + np.sqrt(1 - 0.7**2) * rng.normal(size=(n_clips, len(criteria)))
    )
    scores = np.round(scores, 4)
    missing = rng.random(scores.shape) < 0.05
    categories = ("animals", "sports", "landscapes")
    clips = [
        {
            "external_id": f"clip-{i:06d}",
            "uri": f"https://example.org/load/prompt-{g:05d}/clip-{i:06d}.mp4",
            "group": f"prompt-{g:05d}",
            "context": categories[g % len(categories)],
            "scores": {
                name: None if gone else value
                for name, value, gone in zip(criteria, row, holes, strict=True)
            },
        }
        for i, (g, row, holes) in enumerate(
            zip(group.tolist(), scores.tolist(), missing.tolist(), strict=True)
        )
    ]
    truth = {clip["external_id"]: float(q) for clip, q in zip(clips, quality, strict=True)}
    return DemoClips(tuple(criteria), clips, truth)


def setup_campaign(
    base: str,
    n_clips: int,
    n_raters: int,
    seed: int,
    ties: bool = True,
    prior_refit: str | None = None,
) -> dict[str, Any]:
    """Campaign, clips and raters over HTTP; returns ids, tokens and the true qualities. Past
    the dense limit the campaign is kept in blocks and its clips are a bulk upload.
    `prior_refit` None: the service's default."""
    import httpx
    import msgspec

    data = clip_data(n_clips, seed)
    structure = structure_for(n_clips)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base, headers=admin, timeout=600) as client:
        body: dict[str, Any] = {
            "name": "load",
            "criteria": list(data.criteria),
            "ties": ties,
            "lease_seconds": 60,
        }
        if prior_refit is not None:
            body["prior_refit"] = prior_refit
        if structure != "dense":
            body["structure"] = structure
        campaign = client.post("/v1/campaigns", json=body).raise_for_status().json()
        cid = campaign["id"]
        if structure == "dense":
            client.post(f"/v1/campaigns/{cid}/clips", json={"clips": data.clips}).raise_for_status()
        else:
            lines = memoryview(msgspec.json.Encoder().encode_lines(data.clips))
            client.post(
                f"/v1/campaigns/{cid}/clips/bulk",
                params={"format": "jsonl"},
                content=(
                    bytes(lines[at : at + CHUNK_BYTES]) for at in range(0, len(lines), CHUNK_BYTES)
                ),
            ).raise_for_status()
        tokens = [
            client.post(f"/v1/campaigns/{cid}/raters", json={"name": f"r{r}"})
            .raise_for_status()
            .json()["token"]
            for r in range(n_raters)
        ]
        # load the campaign (replay) and choose the first tasks before the clock starts; the
        # campaign's engine process answers 503 while it starts
        deadline = time.monotonic() + 300
        while (answer := client.get(f"/v1/campaigns/{cid}/leaderboard")).status_code == 503:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        answer.raise_for_status()
    return {"campaign_id": cid, "tokens": tokens, "quality": data.quality}


async def _rater(
    base: str,
    cid: int,
    token: str,
    quality: dict[str, float],
    rng: random.Random,
    stop_at: float,
    count_from: float,
    budget: list[int],
    out: dict[str, list[Any]],
    period: float = 0.0,
) -> None:
    """One simulated rater on its own keep-alive connection until `stop_at` or the budget;
    with a `period`, one cycle per period from a random phase (latency from the schedule).

    aiohttp rather than httpx: the clients share the server's 2 cores, and httpx costs
    several times aiohttp's CPU per request.
    """
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    transport_errors = (aiohttp.ClientError, asyncio.TimeoutError)
    async with aiohttp.ClientSession(
        base_url=base,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(limit=1),  # one keep-alive connection per rater
    ) as client:
        scheduled = time.monotonic() + rng.uniform(0, period)
        while time.monotonic() < stop_at and budget[0] > 0:
            budget[0] -= 2
            if period:
                await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
                started, scheduled = scheduled, scheduled + period
            else:
                started = time.monotonic()
            try:
                async with client.post(f"/v1/campaigns/{cid}/assignments") as response:
                    raw = await response.read()
            except transport_errors as error:
                out["errors"].append(f"assign: {type(error).__name__}")
                continue
            took = time.monotonic() - started
            counted = started >= count_from
            if response.status not in (200, 201):
                out["errors"].append(f"assign {response.status}: {_text(raw)}")
                continue
            assignment = json.loads(raw)["assignment"]
            if counted:
                out["assign"].append(took)
            if assignment is None:
                await asyncio.sleep(0.05)
                continue
            body = json.dumps(_answer(assignment, quality, rng))
            started = time.monotonic()
            try:
                async with client.post(
                    f"/v1/assignments/{assignment['id']}/judgment",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    raw = await response.read()
            except transport_errors as error:
                out["errors"].append(f"judge: {type(error).__name__}")
                continue
            took = time.monotonic() - started
            if response.status not in (200, 201):
                out["errors"].append(f"judge {response.status}: {_text(raw)}")
                continue
            out["acknowledged"].append(json.loads(raw)["judgment_id"])
            if started >= count_from:
                out["judge"].append(took)


async def _whoami(
    base: str, token: str, stop_at: float, count_from: float, out: dict[str, list[Any]]
) -> None:
    """One rater's keep-alive connection asking `GET /v1/whoami` until `stop_at`, no think
    time; each answer's latency after `count_from` in out["http"]."""
    import aiohttp

    async with aiohttp.ClientSession(
        base_url=base,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(limit=1),
    ) as client:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                async with client.get("/v1/whoami") as response:
                    await response.read()
            except (TimeoutError, aiohttp.ClientError) as error:
                out["errors"].append(f"whoami: {type(error).__name__}")
                continue
            if response.status != 200:
                out["errors"].append(f"whoami {response.status}")
            elif started >= count_from:
                out["http"].append(time.monotonic() - started)


def _whoami_process(args: tuple[Any, ...]) -> dict[str, list[Any]]:
    base, tokens, stop_at_wall, count_from_wall = args
    out: dict[str, list[Any]] = {"http": [], "errors": []}
    offset = time.monotonic() - time.time()
    stop_at, count_from = stop_at_wall + offset, count_from_wall + offset

    async def main() -> None:
        await asyncio.gather(*(_whoami(base, t, stop_at, count_from, out) for t in tokens))

    asyncio.run(main())
    return out


def http_ceiling(pool: Any, base: str, chunks: list[list[str]], seconds: float) -> dict[str, Any]:
    """The server's HTTP ceiling: the load's client processes (`pool`, one per chunk of
    tokens, one connection per rater) ask the cheapest authenticated call, `GET /v1/whoami`
    (token check, no database, no engine), closed loop for `seconds` after HTTP_WARMUP_S.
    Requests per second, and judgment cycles per second (2 requests each)."""
    start = time.time() + 0.2
    count_from, stop_at = start + HTTP_WARMUP_S, start + HTTP_WARMUP_S + seconds
    results = pool.map(_whoami_process, [(base, chunk, stop_at, count_from) for chunk in chunks])
    latencies = np.array([t for r in results for t in r["http"]]) * 1000
    per_s = latencies.size / seconds
    return {
        "http_requests_per_s": round(per_s, 1),
        "http_cycles_per_s": round(per_s / 2, 1),
        "http_p99_ms": round(float(np.percentile(latencies, 99)), 2) if latencies.size else None,
        "http_errors": sum(len(r["errors"]) for r in results),
    }


def binds(row: dict[str, Any]) -> str:
    """Which ceiling is lower, engine or http; "neither" when the run offered less than both
    (a paced run); "?" when a ceiling is missing."""
    engine, http = row.get("engine_ceiling_per_s"), row.get("http_cycles_per_s")
    if not engine or not http:
        return "?"
    offered = row.get("offered_per_s")
    if offered and offered < min(engine, http):
        return "neither"
    return "engine" if engine <= http else "http"


def _text(raw: bytes) -> str:
    """The start of an error response's body, for the error samples."""
    return raw.decode(errors="replace")[:200]


def _answer(assignment: dict[str, Any], quality: dict[str, float], rng: random.Random) -> dict:
    """A Thurstone observer's answer to a pair, or an emoji level (5 levels) to a clip."""
    left = quality[assignment["left"]["external_id"]]
    if assignment["kind"] == "rating":
        perceived = left + rng.gauss(0, NOISE_SD)
        return {"level": int(np.clip(np.searchsorted([-1.5, -0.5, 0.5, 1.5], perceived), 0, 4))}
    right = quality[assignment["right"]["external_id"]]
    difference = left - right + rng.gauss(0, NOISE_SD)
    if abs(difference) < TIE_MARGIN and "tie" in assignment["choices"]:
        return {"choice": "tie"}
    return {"choice": "left" if difference > 0 else "right"}


def _client_process(args: tuple[Any, ...]) -> dict[str, list[Any]]:
    base, cid, tokens, quality, seed, stop_at_wall, count_from_wall, budget, period = args
    out: dict[str, list[Any]] = {"assign": [], "judge": [], "errors": [], "acknowledged": []}
    # monotonic clocks differ across processes: deadlines travel as wall-clock times
    offset = time.monotonic() - time.time()
    stop_at, count_from = stop_at_wall + offset, count_from_wall + offset
    shared = [budget]

    async def main() -> None:
        await asyncio.gather(
            *(
                _rater(
                    base,
                    cid,
                    t,
                    quality,
                    random.Random(seed * 1000 + i),
                    stop_at,
                    count_from,
                    shared,
                    out,
                    period,
                )
                for i, t in enumerate(tokens)
            )
        )

    asyncio.run(main())
    return out


def run_load(
    clients: int,
    n_clips: int,
    duration: float,
    warmup: float,
    max_requests: int,
    processes: int,
    seed: int,
    threads: int | None,
    ties: bool = True,
    refill_batch: int = 1,
    rate: float = 0.0,
    http_seconds: float = 0.0,
    profile: str | None = None,
    prior_refit: str | None = None,
    snapshot_every: int | None = None,
) -> dict[str, Any]:
    """One server, one campaign, `clients` raters for `warmup + duration` seconds, closed
    loop or (`rate` > 0) paced at `rate` cycles per second in all; then, with
    `http_seconds`, the server's HTTP ceiling from the same client processes."""
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(
            f"sqlite:///{folder}/load.db", port, threads, refill_batch, profile, snapshot_every
        )
        try:
            setup = setup_campaign(base, n_clips, clients, seed, ties, prior_refit)
            cid, tokens = setup["campaign_id"], setup["tokens"]
            n_processes = max(1, min(processes, clients))
            chunks = [tokens[p::n_processes] for p in range(n_processes)]
            start = time.time() + 1.0  # let the client processes start
            count_from, stop_at = start + warmup, start + warmup + duration
            budget = max_requests // n_processes
            period = clients / rate if rate > 0 else 0.0
            with multiprocessing.get_context("spawn").Pool(n_processes) as pool:
                results = pool.map(
                    _client_process,
                    [
                        (
                            base,
                            cid,
                            chunk,
                            setup["quality"],
                            seed + p,
                            stop_at,
                            count_from,
                            budget,
                            period,
                        )
                        for p, chunk in enumerate(chunks)
                    ],
                )
                ended = min(time.time(), stop_at)
                ceiling = http_ceiling(pool, base, chunks, http_seconds) if http_seconds else {}
            elapsed = max(1e-9, ended - count_from)
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            exported = httpx.get(
                f"{base}/v1/campaigns/{cid}/export?format=jsonl", headers=admin, timeout=120
            ).text
        finally:
            if profile:
                server.send_signal(signal.SIGINT)  # a clean exit writes the profile
            else:
                server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    assign = np.array([t for r in results for t in r["assign"]]) * 1000
    judge = np.array([t for r in results for t in r["judge"]]) * 1000
    errors = [e for r in results for e in r["errors"]]
    acknowledged = {j for r in results for j in r["acknowledged"]}
    stored = {json.loads(line)["judgment_id"] for line in exported.splitlines() if line}

    def pct(values: np.ndarray, q: float) -> float | None:
        return None if values.size == 0 else round(float(np.percentile(values, q)), 2)

    return {
        "clients": clients,
        "n_clips": n_clips,
        "ties": ties,
        "refill_batch": refill_batch,
        "prior_refit": prior_refit or DEFAULT_PRIOR_REFIT,
        "snapshot_every": Settings.snapshot_every if snapshot_every is None else snapshot_every,
        "offered_per_s": rate if rate > 0 else None,
        "judgments_per_s": round(judge.size / elapsed, 1),
        "assignments_per_s": round(assign.size / elapsed, 1),
        "assign_p50_ms": pct(assign, 50),
        "assign_p99_ms": pct(assign, 99),
        "judge_p50_ms": pct(judge, 50),
        "judge_p99_ms": pct(judge, 99),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "acknowledged": len(acknowledged),
        "lost": len(acknowledged - stored),
        "measured_s": round(elapsed, 2),
        "client_processes": n_processes,
        "structure": structure_for(n_clips),
        **ceiling,
    }


def engine_costs(
    n_clips: int,
    pending: int,
    seed: int,
    ties: bool = True,
    repeats: int = 15,
    refill_batch: int = 1,
) -> dict[str, float]:
    """What one label costs the campaign's engine, measured in this process like the server runs
    it (the service's campaign config, its exposure floor included; 1 torch thread): choosing
    tasks ahead with `pending` tasks held, as the queue's refill does (`next_tasks(None,
    refill_batch)`; the cost per task), and applying labels in batches of `apply_batch` (the
    service's default)."""
    import torch

    from api.campaigns import build_config, engine_config
    from api.schemas import DEFAULT_MIN_LABELS
    from engine import Campaign, Judgment, Outcome

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = clip_data(n_clips, seed)
        # the campaign as the service creates it for setup_campaign's request
        stored = engine_config(data.criteria, "group", ties, None)
        stored["structure"] = structure_for(n_clips)
        stored["min_labels"] = DEFAULT_MIN_LABELS
        config = build_config(stored)
        campaign = Campaign(config, device="cpu")
        campaign.add_clips(
            [[clip["scores"].get(name) for name in data.criteria] for clip in data.clips],
            contexts=[clip["context"] for clip in data.clips],
            groups=[clip["group"] for clip in data.clips],
        )
        rng = random.Random(seed)
        held = [campaign.next_task(None, hold=True) for _ in range(pending)]
        select, apply = [], []
        for step in range(repeats):
            started = time.perf_counter()
            chosen = campaign.next_tasks(None, refill_batch)
            select.append((time.perf_counter() - started) / len(chosen))
            held += chosen
            while len(held) >= pending + APPLY_BATCH:
                batch, held = held[:APPLY_BATCH], held[APPLY_BATCH:]
                judgments = [
                    Judgment.pair(
                        step % 16,
                        t.first,
                        t.second,
                        rng.choice(list(Outcome))
                        if ties
                        else rng.choice([Outcome.WIN, Outcome.LOSS]),
                    )
                    for t in batch
                ]
                started = time.perf_counter()
                campaign.observe(judgments, task_ids=[t.id for t in batch])
                apply.append((time.perf_counter() - started) / len(batch))
    finally:
        torch.set_num_threads(threads)
    select_ms = 1000 * float(np.median(select))
    apply_ms = 1000 * float(np.median(apply)) if apply else float("nan")
    return {
        "engine_select_ms": round(select_ms, 2),
        "engine_apply_ms_per_label": round(apply_ms, 2),
        "engine_ceiling_per_s": round(1000 / (select_ms + apply_ms), 1),
    }


def metadata(seed: int, threads: int | None) -> dict[str, Any]:
    """Provenance written with every row."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        sha = "unknown"
    return {
        "seed": seed,
        "git_sha": sha,
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "database": "sqlite (WAL, synchronous=NORMAL)",
        "client": "aiohttp",
        "engine_device": os.environ.get("RATINGPARTY_DEVICE", "cpu"),
        "python": platform.python_version(),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a table, with the target."""
    lines = [
        "# Service load",
        "",
        "Concurrent simulated raters against `python -m api` on loopback, SQLite file: closed "
        "loop (offered 'max': no think time, the server saturated) or paced at the offered rate "
        "(latency from each cycle's scheduled start). Produced by "
        "`python -m benchmarks.service_load` "
        f"(git {', '.join(dict.fromkeys(str(r.get('git_sha', '?')) for r in rows))}, "
        f"{rows[0].get('cpus', '?')} CPUs, "
        f"engine on {rows[0].get('engine_device', 'cpu')}).",
        "",
        "| clients | n clips | ties | refill batch | prior refit | snapshot every | offered/s "
        "| run | judgments/s "
        "| assignments/s | assign p50 (ms) | assign p99 (ms) | judge p50 (ms) | judge p99 (ms) "
        "| errors | lost | engine ms/task | engine ceiling (labels/s) "
        "| ms/task, all clients holding one | http ceiling (requests/s) "
        "| http ceiling (judgments/s) | binds | load before |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
        "|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        n_clips = f"{row['n_clips']:,}" + (" (blocks)" if row.get("structure") == "blocks" else "")
        lines.append(
            f"| {row['clients']} | {n_clips} | {'yes' if row['ties'] else 'no'} "
            f"| {row.get('refill_batch', 1)} | {row.get('prior_refit', '-')} "
            f"| {row.get('snapshot_every', '-')} | {row.get('offered_per_s') or 'max'} "
            f"| {row.get('run', 1)} | {row['judgments_per_s']} "
            f"| {row['assignments_per_s']} | {row['assign_p50_ms']} | {row['assign_p99_ms']} "
            f"| {row['judge_p50_ms']} | {row['judge_p99_ms']} | {row['errors']} | {row['lost']} "
            f"| {row['engine_select_ms'] + row['engine_apply_ms_per_label']:.2f} "
            f"| {row['engine_ceiling_per_s']} | {row['engine_select_ms_all_holding']} "
            f"| {row.get('http_requests_per_s', '-')} | {row.get('http_cycles_per_s', '-')} "
            f"| {binds(row) if 'http_cycles_per_s' in row else '-'} "
            f"| {row.get('load_average_before', float('nan')):.2f} |"
        )
    lines += [
        "",
        "engine ms/task: what one handed-out task costs the campaign's engine, measured "
        f"apart in the benchmark process (1 torch thread, {SATURATED_PENDING} tasks pending, as "
        "under these saturating clients): its share of one refill of the queue "
        "(`next_tasks(None, refill batch)`) plus its share of a batch of "
        f"{APPLY_BATCH} labels. The engine ceiling is its inverse: one campaign's engine (one "
        "process, one core since git 9c046b7; a thread sharing the GIL before) hands out no "
        "more tasks per second than that, whatever the HTTP and database layers do. The last "
        "column is the choice alone when every client holds a task (real raters who think "
        "for seconds): the pending-task shrink makes each choice dearer. http ceiling: right "
        "after the row's run, the same client processes and connections ask `GET /v1/whoami` "
        "(the cheapest authenticated call: the token check, no database, no engine) with no "
        "think time; requests/s, and judgments/s at two requests (assignment and judgment) "
        "per judgment. binds: the lower of the two ceilings, or 'neither' when a paced run "
        "offered less than both. The two are measured apart: under load the engine's process, "
        "the server's event loop and the clients share the same cores, so the service tops "
        "out below the lower one. run: the repeat, back to back, of the same configuration "
        "(`--runs`). n clips '(blocks)': past the dense form's limit the campaign is kept in "
        "blocks and its clips are a bulk upload. lost: acknowledged judgments missing from "
        "the export afterwards. prior refit: the campaign's background prior refit setting "
        "('-': the service's default at the row's commit); while a fit runs, its process "
        "shares the cores with the requests (nice 19 does not shield them from it). snapshot "
        "every: labels between the engine's snapshots. load before: the machine's 1-minute "
        "load average when the "
        "row's run started (other work on the machine). '-': a row from before the column.",
        "",
        "Load generator: "
        + "; ".join(
            f"git {sha}: {client}"
            for sha, client in dict.fromkeys(
                (str(r.get("git_sha", "?")), str(r.get("client", "httpx"))) for r in rows
            )
        )
        + " (aiohttp costs ~0.33 ms CPU per request, httpx ~1.1 ms, on the same 2 cores).",
        "",
        f"Target (2 cores, SQLite): >= {TARGET['judgments_per_s']:.0f} judgments/s with p99 < "
        f"{TARGET['p99_ms']:.0f} ms and zero errors.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Parse options, run each client count, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="4,16,64", help="comma-separated client counts")
    parser.add_argument("--n-clips", default="1000", help="comma-separated campaign sizes")
    parser.add_argument(
        "--no-ties", action="store_true", help="forced choice (the engine's cheaper gain)"
    )
    parser.add_argument(
        "--append", action="store_true", help="add the rows to the existing results"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="uncounted seconds first")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=None, help="server torch threads (def. 1)")
    parser.add_argument(
        "--refill-batch",
        default=str(Settings.__dataclass_fields__["refill_batch"].default),
        help="comma-separated refill batches (RATINGPARTY_REFILL_BATCH; default: the service's)",
    )
    parser.add_argument(
        "--rate",
        default="0",
        help="comma-separated offered cycles (judgments) per second, all raters together; "
        "0 = closed loop, no think time (default)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=15.0,
        help="seconds to wait before each run: the last one's disk writes and load settle",
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="runs of each configuration, back to back"
    )
    parser.add_argument(
        "--http-seconds",
        type=float,
        default=3.0,
        help="seconds of GET /v1/whoami after each run: the server's HTTP ceiling (0: none)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="cProfile each run's server into PROFILE-<n clips>-<clients>-<rate>-<run>.prof",
    )
    parser.add_argument(
        "--prior-refit",
        default=DEFAULT_PRIOR_REFIT,
        help="comma-separated campaign prior_refit settings (split, scales, off; default: the "
        "service's): a background refit's fit shares the cores with the requests",
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=Settings.snapshot_every,
        help="RATINGPARTY_SNAPSHOT_EVERY (labels; 0: no snapshots)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    meta = metadata(args.seed, args.threads)
    json_path = args.out / "service_load.json"
    rows = json.loads(json_path.read_text()) if args.append and json_path.exists() else []
    ties = not args.no_ties
    for n_clips in (int(n) for n in args.n_clips.split(",")):
        for clients in (int(c) for c in args.clients.split(",")):
            for refit, batch, rate, run in itertools.product(
                args.prior_refit.split(","),
                (int(b) for b in args.refill_batch.split(",")),
                (float(r) for r in args.rate.split(",")),
                range(1, args.runs + 1),
            ):
                # back to back, a run meets the last one's disk writeback, and its p99 would
                # measure the disk rather than the server
                time.sleep(args.settle)
                load_before = os.getloadavg()[0]  # other work on the machine, for the record
                row = run_load(
                    clients,
                    n_clips,
                    args.duration,
                    args.warmup,
                    args.max_requests,
                    args.processes,
                    args.seed,
                    args.threads,
                    ties=ties,
                    refill_batch=batch,
                    rate=rate,
                    http_seconds=args.http_seconds,
                    profile=args.profile
                    and f"{args.profile}-{n_clips}-{clients}-{rate:g}-{run}.prof",
                    prior_refit=refit,
                    snapshot_every=args.snapshot_every,
                )
                # saturated clients answer at once, so few tasks are pending while the engine
                # chooses (the queue's 2 and the odd one in flight); real raters thinking for
                # seconds each hold one, and then every choice is dearer
                costs = dict(seed=args.seed, ties=ties, refill_batch=batch)
                row |= engine_costs(n_clips, SATURATED_PENDING, **costs)
                held = engine_costs(n_clips, clients + SATURATED_PENDING, **costs)
                row["engine_select_ms_all_holding"] = held["engine_select_ms"]
                row["run"] = run
                row["binds"] = binds(row)
                rows.append({**row, **meta, "load_average_before": load_before})
                print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    (args.out / "service_load.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
