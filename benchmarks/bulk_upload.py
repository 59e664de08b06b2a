"""Bulk clip uploads end to end: clips per second from the first byte sent to the answer.

For each database, clip count and run this starts a fresh server process (`python -m api`,
uvicorn, loopback; an SQLite file in a temporary folder, or a fresh schema of the PostgreSQL
server), creates a campaign kept in blocks (`structure="blocks"`, same-prompt pairs, 5
criteria), and streams n synthetic clips in prompts of 4 as JSON lines
(`POST /v1/campaigns/{id}/clips/bulk`, chunked, 1 MiB a chunk; the body is made before the
clock starts). The answer comes once every clip is checked, in the database and in the
campaign's engine. Each row also records, as ceilings, the rates of the upload's stages
alone on the same clips in this process (reading the body, storing the clips, the engine's
add with one torch thread), and the machine's load average just before the run (other work
on a shared machine slows a run down).

Appends its rows to `benchmarks/results/bulk_upload.json` (the rows of earlier runs stay),
writes all of them to `bulk_upload.md` and prints the table. From the repository root:

    python -m benchmarks.bulk_upload                          # 1e5 and 1e6 clips, 3 runs each
    python -m benchmarks.bulk_upload --n-clips 100000 --runs 1 --databases sqlite
    python -m benchmarks.bulk_upload --profile /tmp/bulk.prof # the server under cProfile
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import torch

from benchmarks.service_load import ADMIN_KEY, REPO_ROOT, free_port

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CRITERIA = ("alignment", "safety", "fineness", "coherence", "bias")
PROMPT_SIZE = 4
CHUNK_BYTES = 1 << 20
TARGET_CLIPS_PER_S = 50_000.0


def clip_body(n_clips: int, seed: int) -> tuple[bytes, np.ndarray, list[str]]:
    """The upload (JSON lines), and its scores (NaN where missing) and prompts for the
    engine's ceiling."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_clips, len(CRITERIA))).round(4)
    scores[rng.random(scores.shape) < 0.05] = np.nan  # a missing score now and then
    prompts = [f"prompt-{i // PROMPT_SIZE}" for i in range(n_clips)]
    rows = [
        {
            "external_id": f"clip-{i}",
            "uri": f"https://media.example.org/clips/{i}.mp4",
            "group": prompts[i],
            "scores": dict(zip(CRITERIA, row, strict=True)),
        }
        for i, row in enumerate(scores.tolist())
    ]
    return msgspec.json.Encoder().encode_lines(rows), scores, prompts  # NaN is written null


def stage_rates(body: bytes, database_url: str) -> tuple[float, float]:
    """Clips per second of two stages of the upload alone, in this process: reading the
    body (`ClipReader`, 1 MiB chunks) and storing the clips (`store.insert_clip_columns`
    into an empty campaign of a fresh database of the same kind, one transaction)."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from api import store
    from api.bulk import ClipReader
    from api.db import make_engine, migrate

    gc.disable()  # as the service reads and stores an upload (api/service.py)
    start = time.perf_counter()
    reader = ClipReader("jsonl", CRITERIA, len(body))
    for offset in range(0, len(body), CHUNK_BYTES):
        reader.feed(body[offset : offset + CHUNK_BYTES])
    columns = reader.finish()
    parse = len(columns) / (time.perf_counter() - start)
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.begin() as connection:
            campaign = connection.execute(
                insert(store.campaign_table).returning(store.campaign_table.c.id),
                {
                    "name": "stage",
                    "criteria": json.dumps(list(CRITERIA)),
                    "pair_scope": "group",
                    "ties": True,
                    "lease_seconds": 60.0,
                    "engine_config": "{}",
                    "created_at": datetime.now(UTC),
                },
            ).scalar_one()
        start = time.perf_counter()
        with engine.begin() as connection:
            store.insert_clip_columns(campaign, columns, 0, 1, 0)(connection)
        write = len(columns) / (time.perf_counter() - start)
    finally:
        engine.dispose()
        gc.enable()
    return parse, write


def engine_rate(scores: np.ndarray, prompts: list[str]) -> float:
    """Clips per second of the engine's add alone, into an empty campaign kept in blocks."""
    from api.campaigns import build_config, engine_config

    stored = engine_config(list(CRITERIA), "group", True, None)
    stored["structure"] = "blocks"
    from engine import Campaign

    campaign = Campaign(build_config(stored))
    start = time.perf_counter()
    campaign.add_clips(torch.from_numpy(scores), contexts=[None] * len(prompts), groups=prompts)
    return len(prompts) / (time.perf_counter() - start)


@contextmanager
def database(kind: str, postgres_url: str) -> Iterator[str]:
    """A database URL with nothing in it, removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bulk-") as folder:
            yield f"sqlite:///{Path(folder) / 'ratingparty.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    schema = f"bulk_{uuid.uuid4().hex[:12]}"
    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def server(database_url: str, profile: str | None) -> Iterator[str]:
    """`python -m api` (under cProfile when `profile` names a file) until the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "RATINGPARTY_ADMIN_KEY": ADMIN_KEY,
        "DATABASE_URL": database_url,
        "RATINGPARTY_DEVICE": "cpu",
        "RATINGPARTY_ENGINE_THREADS": "1",
    }
    command = [sys.executable, "-m", "api", "--port", str(port), "--log-level", "warning"]
    if profile:
        command[1:1] = ["-m", "cProfile", "-o", profile]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError("server exited (its log is above)")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /healthz within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(2)  # SIGINT: a clean exit writes the profile
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def upload(url: str, body: bytes) -> tuple[float, dict[str, Any]]:
    """Seconds from the first byte sent to the answer, and the answer."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
        created = http.post(
            "/v1/campaigns",
            json={
                "name": "bulk",
                "criteria": list(CRITERIA),
                "pair_scope": "group",
                "structure": "blocks",
            },
        )
        created.raise_for_status()
        cid = created.json()["id"]
        # the campaign's engine process starts on its first request: not part of the upload
        while http.get(f"/v1/campaigns/{cid}/leaderboard").status_code == 503:
            time.sleep(0.5)
        view = memoryview(body)

        def chunks() -> Iterator[bytes]:
            for offset in range(0, len(view), CHUNK_BYTES):
                yield bytes(view[offset : offset + CHUNK_BYTES])

        start = time.perf_counter()
        answer = http.post(f"/v1/campaigns/{cid}/clips/bulk", content=chunks())
        seconds = time.perf_counter() - start
        answer.raise_for_status()
        return seconds, answer.json()


def metadata(seed: int) -> dict[str, Any]:
    """Provenance written with every row."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "seed": seed,
        "git_sha": sha or "unknown",
        "cpus": os.cpu_count(),
        "torch_threads": 1,
        "python": platform.python_version(),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a table, with the target."""
    lines = [
        "# Bulk clip upload",
        "",
        "`python -m benchmarks.bulk_upload` (benchmarks/bulk_upload.py): n clips in prompts "
        "of 4 streamed as JSON lines to `POST /v1/campaigns/{id}/clips/bulk` of a fresh "
        "`python -m api` on loopback, into a campaign kept in blocks; clips per second from "
        "the first byte sent to the answer (every clip checked, in the database and in the "
        f"engine). Target: {TARGET_CLIPS_PER_S:,.0f} clips/s. The last three rate columns "
        "are the stages alone on the same clips, in the same run, each a ceiling: reading "
        "the body (`ClipReader`), storing the clips (`store.insert_clip_columns`, one "
        "transaction into a fresh database of the same kind) and the engine's add "
        "(`Campaign.add_clips`, one torch thread). Up to git ec33134 the upload ran them one "
        "after the other, so its time was about the sum of theirs, plus the HTTP transfer and "
        "the service's clip states; since then, on PostgreSQL, the clips are stored while "
        "the body is read (api/clip_stream.py), so reading and storing overlap, while "
        "SQLite still stores them after the read. The machine is shared (2 cores, other "
        "work on it): `load` is the 1-minute load average just before the run, and figures "
        "under load are indicative only.",
        "",
        "| database | clips | run | clips/s | seconds | read clips/s | store clips/s "
        "| engine add clips/s | load | git |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['database']} | {r['n_clips']:,} | {r['run']} | {r['clips_per_s']:,.0f} | "
            f"{r['seconds']:.2f} | {r['read_clips_per_s']:,.0f} | "
            f"{r['database_clips_per_s']:,.0f} | {r['engine_clips_per_s']:,.0f} | "
            f"{r['load_before']:.2f} | {r['git_sha']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-clips", default="100000,1000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default=None, help="cProfile the server into this file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for n_clips in (int(n) for n in args.n_clips.split(",")):
        body, scores, prompts = clip_body(n_clips, args.seed)
        for kind in args.databases.split(","):
            for run in range(1, args.runs + 1):
                with database(kind, args.postgres_url) as url, server(url, args.profile) as base:
                    load_before = os.getloadavg()[0]
                    seconds, answer = upload(base, body)
                assert answer["added"] == n_clips, answer
                with database(kind, args.postgres_url) as url:
                    parse_rate, database_rate = stage_rates(body, url)
                row = {
                    "database": kind,
                    "n_clips": n_clips,
                    "run": run,
                    "seconds": seconds,
                    "clips_per_s": n_clips / seconds,
                    "engine_clips_per_s": engine_rate(scores, prompts),
                    "read_clips_per_s": parse_rate,
                    "database_clips_per_s": database_rate,
                    "body_bytes": len(body),
                    "load_before": load_before,
                    **metadata(args.seed),
                }
                rows.append(row)
                print(json.dumps({k: row[k] for k in list(row)[:8]}), flush=True)
    if args.profile:
        return  # a profiling run is not a measurement to keep
    args.out.mkdir(parents=True, exist_ok=True)
    stored = args.out / "bulk_upload.json"
    rows = (json.loads(stored.read_text()) if stored.exists() else []) + rows
    stored.write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    (args.out / "bulk_upload.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
