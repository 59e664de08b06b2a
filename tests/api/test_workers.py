"""Several real server processes on one database: PostgreSQL shares each campaign between them
(one owner at a time, requests routed to it, takeover after the owner is killed), and SQLite
refuses a second server on the same file."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from api.app import create_app
from api.db import make_engine
from tests.api.conftest import ADMIN, ADMIN_KEY, clip_batch, make_settings

SEED = 0
OWNER_LEASE_S = 2.0
# the survivor takes a killed owner's campaign once its lease lapses, then replays the log
TAKEOVER_BOUND_S = OWNER_LEASE_S + 6.0
ATOL = 1e-9
REFIT_WAIT_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Worker:
    url: str
    process: subprocess.Popen[str]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def _start(db_url: str, tmp_path: Path, *, wait: bool = True) -> Worker:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "RATINGPARTY_ADMIN_KEY": ADMIN_KEY,
        "RATINGPARTY_DEVICE": "cpu",
        "RATINGPARTY_OWNER_LEASE_S": str(OWNER_LEASE_S),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "api", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = Worker(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 90
    while wait:
        if not worker.alive:
            pytest.fail(f"a server exited at start: {process.stderr.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{worker.url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("a server did not start")
        time.sleep(0.2)
    return worker


def _stop(worker: Worker) -> None:
    if worker.alive:
        worker.process.send_signal(signal.SIGINT)
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


@dataclass
class Tally:
    """What the raters saw: acknowledged answers, assignments handed out, timings."""

    acknowledged: dict[int, int] = field(default_factory=dict)  # assignment id -> rater
    lock: threading.Lock = field(default_factory=threading.Lock)
    killed_at: float | None = None
    first_after_kill: float | None = None
    problems: list[str] = field(default_factory=list)


def _call(workers: list[Worker], method: str, path: str, **kw: object) -> httpx.Response | None:
    """One request to a live worker picked at random; None when it did not answer."""
    live = [w for w in workers if w.alive]
    worker = random.choice(live)
    try:
        return httpx.request(method, worker.url + path, timeout=30, **kw)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None


def _rate(
    workers: list[Worker], cid: int, token: str, rater: int, tally: Tally, stop: threading.Event
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        offer = _call(workers, "POST", f"/v1/campaigns/{cid}/assignments", headers=headers)
        if offer is None or offer.status_code == 503:
            time.sleep(0.1)
            continue
        if offer.status_code != 201:
            tally.problems.append(f"assignment: {offer.status_code} {offer.text}")
            return
        assignment = offer.json()["assignment"]
        if assignment is None:
            return
        if tally.killed_at is not None and tally.first_after_kill is None:
            tally.first_after_kill = time.monotonic()
        body = {"choice": random.choice(["left", "right"])}
        while True:  # an answer is retried until it is acknowledged (it is idempotent)
            judged = _call(
                workers,
                "POST",
                f"/v1/assignments/{assignment['id']}/judgment",
                headers=headers,
                json=body,
            )
            if judged is None or judged.status_code == 503:
                time.sleep(0.1)
                continue
            if judged.status_code not in (200, 201):
                tally.problems.append(f"judgment: {judged.status_code} {judged.text}")
                return
            with tally.lock:
                tally.acknowledged[assignment["id"]] = rater
            break


def _owner_pid(db_url: str, cid: int) -> int:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            owner = connection.execute(
                text("SELECT owner FROM campaign_owner WHERE campaign_id = :c"), {"c": cid}
            ).scalar_one()
    finally:
        engine.dispose()
    return int(owner.split(":")[1])


def _rows(db_url: str, sql: str, **params: object) -> list[tuple]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("n_workers", [2, 4])
def test_workers_share_a_campaign_and_take_over_a_killed_owner(
    db_url: str, tmp_path: Path, n_workers: int
) -> None:
    random.seed(SEED)
    workers = [_start(db_url, tmp_path)]
    workers += [_start(db_url, tmp_path) for _ in range(n_workers - 1)]
    try:
        created = _call(
            workers,
            "POST",
            "/v1/campaigns",
            json={"name": "c", "criteria": ["a", "b"]},
            headers=ADMIN,
        )
        assert created is not None and created.status_code == 201, created
        cid = created.json()["id"]
        added = _call(
            workers,
            "POST",
            f"/v1/campaigns/{cid}/clips",
            json={"clips": clip_batch(14, groups=1)},
            headers=ADMIN,
        )
        assert added is not None and added.status_code == 201, added
        tokens = []
        for r in range(4):  # registered through whichever worker: all of them know the token
            made = _call(
                workers,
                "POST",
                f"/v1/campaigns/{cid}/raters",
                json={"name": f"r{r}"},
                headers=ADMIN,
            )
            assert made is not None and made.status_code == 201, made
            tokens.append(made.json()["token"])

        # each worker answers for the campaign, whichever runs its engine (routed to the owner)
        for worker in workers:
            seen = httpx.get(f"{worker.url}/v1/campaigns/{cid}", headers=ADMIN, timeout=30)
            assert seen.status_code == 200, seen.text
            assert seen.json()["n_raters"] == len(tokens)

        tally, stop = Tally(), threading.Event()
        threads = [
            threading.Thread(target=_rate, args=(workers, cid, token, r, tally, stop), daemon=True)
            for r, token in enumerate(tokens)
        ]
        for thread in threads:
            thread.start()
        time.sleep(4)
        owner = next(w for w in workers if w.process.pid == _owner_pid(db_url, cid))
        before_kill = len(tally.acknowledged)
        owner.process.kill()  # SIGKILL: no lease given back, no write finished
        owner.process.wait()
        tally.killed_at = time.monotonic()
        deadline = tally.killed_at + TAKEOVER_BOUND_S + 10
        while tally.first_after_kill is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert not tally.problems, tally.problems
        assert before_kill > 0 and len(tally.acknowledged) > before_kill
        assert tally.first_after_kill is not None
        took = tally.first_after_kill - tally.killed_at
        assert took < TAKEOVER_BOUND_S, f"takeover took {took:.1f} s"

        # every acknowledged answer is one label in the database, and nothing else is
        labels = _rows(
            db_url,
            "SELECT assignment_id, seq FROM judgment WHERE campaign_id = :c AND seq IS NOT NULL",
            c=cid,
        )
        assert sorted(a for a, _ in labels) == sorted(tally.acknowledged)
        assert len({seq for _, seq in labels}) == len(labels)
        # no rater was handed the same pair twice
        handed = _rows(
            db_url,
            'SELECT rater_id, LEAST("first", "second"), GREATEST("first", "second") '
            "FROM assignment WHERE campaign_id = :c",
            c=cid,
        )
        assert max(Counter(handed).values()) == 1

        # the served board once no prior refit is on its way (one landing later moves the
        # posterior without a label; the replay below would hold it)
        deadline = time.monotonic() + REFIT_WAIT_S
        while True:
            board = _call(workers, "GET", f"/v1/campaigns/{cid}/leaderboard", headers=ADMIN)
            assert board is not None and board.status_code == 200
            if not board.json()["prior"]["refitting"]:
                break
            assert time.monotonic() < deadline, "a prior refit did not land"
            time.sleep(0.2)
        assert board.json()["n_judgments"] == len(tally.acknowledged)
    finally:
        for worker in workers:
            _stop(worker)
    # the leaderboard the workers served equals a replay of the database
    with TestClient(app=create_app(make_settings(db_url))) as client:
        replayed = client.get(f"/v1/campaigns/{cid}/leaderboard", headers=ADMIN).json()
    served = {c["id"]: c for c in board.json()["clips"]}
    for clip in replayed["clips"]:
        assert clip["mean"] == pytest.approx(served[clip["id"]]["mean"], abs=ATOL)
        assert clip["sd"] == pytest.approx(served[clip["id"]]["sd"], abs=ATOL)


def test_sqlite_refuses_a_second_server_on_the_same_file(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'ratingparty.db'}"
    first = _start(db_url, tmp_path)
    try:
        second = _start(db_url, tmp_path, wait=False)
        try:
            code = second.process.wait(timeout=120)
        finally:
            _stop(second)
        message = second.process.stderr.read()  # type: ignore[union-attr]
        assert code == 2
        assert message.startswith("ratingparty: cannot start: another ratingparty server (pid ")
        assert len(message.strip().splitlines()) == 1
        assert httpx.get(f"{first.url}/healthz", timeout=5).status_code == 200
    finally:
        _stop(first)
    third = _start(db_url, tmp_path)  # the file is free once the first server stopped
    _stop(third)
