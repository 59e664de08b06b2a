"""The engine hosts (api/engine_host.py): a campaign's engine in a process of its own or on a
thread gives the same answers; errors come back to the caller; a killed engine process
stops the campaign's runtime, and the service rebuilds it from the database with nothing lost.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from litestar.testing import TestClient

from api.app import create_app
from api.campaigns import build_config, engine_config
from api.engine_host import (
    CampaignEngine,
    ClipBatch,
    EngineStopped,
    ProcessEngine,
    ThreadEngine,
)
from api.restore import read_when_whole
from api.settings import Settings
from engine import Judgment, Outcome
from tests.api.conftest import ADMIN, answer, make_party

WAIT_S = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config() -> Any:
    return build_config(engine_config(["a", "b"], "any", True, None))


CLIPS = ClipBatch(
    scores=[[float(i % 3) - 1.0, None if i % 4 == 3 else float(i % 5) - 2.0] for i in range(8)],
    contexts=["x" if i % 2 else "y" for i in range(8)],
    groups=[None] * 8,
)


async def _session(host: Any) -> dict[str, Any]:
    """The same calls on a host: replay, choices, labels, releases, reads."""
    await host.start()
    try:
        await host.call("replay", [CLIPS, [Judgment.pair(1, 0, 1, Outcome.WIN)]])
        tasks = await host.call("choose", None, 3)
        chosen = [(t.first, t.second) for t in tasks]
        labels = [Judgment.pair(2, t.first, t.second, Outcome.LOSS) for t in tasks[:2]]
        tau = await host.call("observe", labels, [t.id for t in tasks], True)
        await host.call("release", [tasks[2].id, 12345])
        mine = await host.call("choose", 2, 2, [chosen[0]], [])
        board = await host.call("leaderboard", 0.9)
        weights = await host.call("weights", 0.8)
        stats = await host.call("rater_stats", [1, 2, 3])
        pending = await host.call("pending")
        with pytest.raises(AttributeError):
            await host.call("no_such_call")
        with pytest.raises(IndexError, match="clip 99"):  # the engine's error, in the caller
            await host.call("replay", [[Judgment.pair(1, 0, 99, Outcome.WIN)]])
        after_error = await host.call("leaderboard", 0.9)
        return {
            "chosen": chosen,
            "tau": tau,
            "mine": [(t.first, t.second, t.gain) for t in mine],
            "board": board,
            "weights": weights,
            "stats": stats,
            "pending": [(t.first, t.second) for t in pending],
            "after_error": after_error,
            "log": await host.call("log"),
        }
    finally:
        await host.close()


@pytest.mark.anyio
async def test_process_and_thread_hosts_give_the_same_answers() -> None:
    in_process = ProcessEngine(_config(), "cpu", "test-campaign")
    on_thread = ThreadEngine(_config(), "cpu", "test-campaign")
    a = await _session(in_process)
    b = await _session(on_thread)
    assert a == b  # float64 on the CPU, the same code: equal to the last bit
    assert len(a["chosen"]) == 3 and len(a["log"]) == 3 and a["tau"] is not None
    assert a["pending"] == [(f, s) for f, s, _ in a["mine"]]
    assert a["after_error"] == a["board"]  # a failed call changes nothing
    # closed: the process is gone and calls say so
    assert in_process.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(in_process.pid, 0)
    with pytest.raises(EngineStopped, match="closed"):
        await in_process.call("pending")


@pytest.mark.anyio
@pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])
async def test_a_snapshot_file_holds_the_state_when_it_was_asked_for(
    process: bool, tmp_path: Path
) -> None:
    """In a process of its own the engine forks a child that writes the snapshot and answers
    the next calls at once (labels applied meanwhile are not in the file); on a thread it
    writes the file in line. Either way the file loads to the state of the call's moment."""
    host = ProcessEngine(_config(), "cpu", "c") if process else ThreadEngine(_config(), "cpu", "c")
    await host.start()
    try:
        await host.call("replay", [CLIPS, [Judgment.pair(1, 0, 1, Outcome.WIN)]])
        expected = await host.call("leaderboard", 0.9)
        path = tmp_path / "snapshot"
        forked = await host.call("snapshot_to", str(path))
        assert forked is process
        await host.call("replay", [[Judgment.pair(2, 2, 3, Outcome.LOSS)]])  # after it
        later = await host.call("leaderboard", 0.9)
        deadline = time.monotonic() + WAIT_S
        while not path.exists():
            assert time.monotonic() < deadline, "the snapshot file did not appear"
            await asyncio.sleep(0.01)
        assert not path.with_name("snapshot.part").exists()
        assert await host.call("restore", path.read_bytes()) is None
        assert await host.call("leaderboard", 0.9) == expected != later
    finally:
        await host.close()


@pytest.mark.anyio
@pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])
async def test_a_refit_copy_file_holds_the_campaign_when_it_was_asked_for(
    process: bool, tmp_path: Path
) -> None:
    """A refit's copy is written as a snapshot is (a forked child in a process of its own, in
    line on a thread): the file, once whole, is the campaign of the call's moment, pickled,
    and the call answers the labels it holds."""
    host = ProcessEngine(_config(), "cpu", "c") if process else ThreadEngine(_config(), "cpu", "c")
    first = [CLIPS, [Judgment.pair(1, 0, 1, Outcome.WIN), Judgment.pair(2, 4, 5, Outcome.TIE)]]
    await host.start()
    try:
        await host.call("replay", first)
        path = tmp_path / "copy"
        assert await host.call("refit_copy_to", str(path)) == 2
        await host.call("replay", [[Judgment.pair(2, 2, 3, Outcome.LOSS)]])  # after it
        data = read_when_whole(str(path), threading.Event())
        log = await host.call("log")
    finally:
        await host.close()
    assert data is not None and not path.exists()
    assert not path.with_name("copy.part").exists()
    copy = pickle.loads(data)
    local = CampaignEngine(_config(), "cpu")
    local.replay(first)
    assert copy.log == local.campaign.log == log[:2] and len(log) == 3
    assert torch.equal(copy.posterior.mean, local.campaign.posterior.mean)
    assert torch.equal(copy.posterior.cov, local.campaign.posterior.cov)


@pytest.mark.anyio
async def test_a_killed_engine_process_fails_its_calls() -> None:
    host = ProcessEngine(_config(), "cpu", "test-campaign")
    await host.start()
    try:
        await host.call("replay", [CLIPS])
        assert host.pid is not None
        os.kill(host.pid, signal.SIGKILL)
        with pytest.raises(EngineStopped, match="exit"):
            await asyncio.wait_for(host.call("choose", None, 2), WAIT_S)
    finally:
        await host.close()


def _reads(client: TestClient, cid: int) -> tuple[list[tuple[str, float, float]], int]:
    board = client.get(f"/v1/campaigns/{cid}/leaderboard", headers=ADMIN)
    assert board.status_code == 200, board.text
    body = board.json()
    return [(c["external_id"], c["mean"], c["sd"]) for c in body["clips"]], body["n_judgments"]


def _retrying(call: Any) -> Any:
    """`call()` until it is not a 503 (the one that finds the engine stopped)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        response = call()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        assert "engine stopped" in response.json()["detail"], response.text


def test_a_killed_engine_process_is_rebuilt_from_the_database(settings: Settings) -> None:
    """Kill a campaign's engine process mid-campaign: requests that meet it get a 503 that
    says why, the next ones are served by a runtime replayed from the database, with the same
    posterior and every acknowledged label; the campaign goes on."""
    settings = replace(settings, engine_process=True)
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=6, n_raters=3, groups=1)
        for step in range(9):
            answer(client, party, step % 3, ("left", "right", "tie")[step % 3])
        before, labels = _reads(client, party.id)
        service = client.app.state.service
        runtime = service.loaded_runtime(party.id)
        pid = runtime.engine.pid
        os.kill(pid, signal.SIGKILL)
        # a label committed after the kill: acknowledged, so it must survive the rebuild
        shown = _retrying(
            lambda: client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0))
        )
        assert shown.status_code == 201, shown.text
        assignment = shown.json()["assignment"]
        judged = _retrying(
            lambda: client.post(
                f"/v1/assignments/{assignment['id']}/judgment",
                json={"choice": "left"},
                headers=party.rater(0),
            )
        )
        assert judged.status_code in (200, 201), judged.text
        late = _retrying(lambda: client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN))
        assert late.status_code == 200, late.text
        rebuilt = service.loaded_runtime(party.id)
        assert rebuilt is not runtime and rebuilt.engine.pid != pid and runtime.failed
        assert late.json()["n_judgments"] == labels + 1
        for step in range(3):  # the campaign goes on
            answer(client, party, step % 3)
        after, n_after = _reads(client, party.id)
        assert n_after == labels + 4
        exported = client.get(f"/v1/campaigns/{party.id}/export?format=jsonl", headers=ADMIN)
        assert len(exported.text.splitlines()) == labels + 4

    # a restart replays the same log: the rebuilt runtime's posterior was the replayed one
    with TestClient(app=create_app(settings)) as client:
        again, n_again = _reads(client, party.id)
    assert n_again == n_after
    for (a_id, a_mean, a_sd), (b_id, b_mean, b_sd) in zip(after, again, strict=True):
        assert a_id == b_id
        assert a_mean == pytest.approx(b_mean, abs=1e-9) and a_sd == pytest.approx(b_sd, abs=1e-9)
    assert len(before) == len(after)


def test_large_messages_on_uvloop() -> None:
    """The service runs on uvloop (uvicorn's choice), which makes a polled descriptor
    non-blocking: messages and replies larger than a socket's buffer must still arrive
    whole (blocking pipe reads and writes failed there, half-done, as a stopped engine)."""
    import uvloop

    n = 400
    big = ClipBatch(
        scores=[[float(i % 7) - 3.0, float(i % 11) / 5.0] for i in range(n)],
        contexts=[f"context-{i % 3}" for i in range(n)],
        # long prompt names: a clip batch of ~2 MB
        groups=[f"prompt-{i // 20}-" + "x" * 5000 for i in range(n)],
    )

    async def session(host: Any) -> tuple[Any, Any]:
        await host.start()
        try:
            await host.call("replay", [big])
            tasks = await host.call("choose", None, 4)
            labels = [Judgment.pair(1, t.first, t.second, Outcome.WIN) for t in tasks]
            # 12,000 judgments: a message, and a log in reply, of ~0.4 MB each
            await host.call("observe", labels * 3000, [t.id for t in tasks], False)
            return await host.call("leaderboard", 0.9), await host.call("log")
        finally:
            await host.close()

    async def both() -> tuple[Any, Any]:
        config = build_config(engine_config(["a", "b"], "group", True, None))
        return (
            await session(ProcessEngine(config, "cpu", "big")),
            await session(ThreadEngine(config, "cpu", "big")),
        )

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        (board, log), (board_thread, log_thread) = runner.run(both())
    assert len(board.mean) == n and len(log) == 12000
    assert board == board_thread and log == log_thread
