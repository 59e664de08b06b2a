"""The prior refitted in the background at 2n, 4n, ... labels (api/refits.py): the requests go
on meanwhile, the served posterior changes when the refit lands, a restart serves the same,
and a fit that fails leaves the service serving."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import pickle
import threading
import time
import types
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from litestar.testing import TestClient

import engine.campaign as campaign_module
from api import refits
from api.app import create_app
from api.settings import Settings
from engine import Campaign, CampaignConfig, Judgment, Outcome, RefitResult
from engine.campaign import pack_entries
from engine.history import Refit
from engine.state import quality_prior
from tests.api.conftest import ADMIN, Party, assert_close_structures, make_party, run_sql

N_CLIPS = 6  # the schedule's first points: 12 and 24 labels
WAIT_S = 60.0


def _answer(client: TestClient, party: Party, step: int) -> None:
    """Rater `step % 3` asks for an assignment and answers it."""
    rater = step % 3
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code == 201, response.text
    shown = response.json()["assignment"]
    body = {"choice": ("left", "right", "tie", "left", "right")[step % 5]}
    judged = client.post(
        f"/v1/assignments/{shown['id']}/judgment", json=body, headers=party.rater(rater)
    )
    assert judged.status_code == 201, judged.text


def _board(client: TestClient, cid: int) -> dict[str, Any]:
    response = client.get(f"/v1/campaigns/{cid}/leaderboard", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def _wait_for_refits(client: TestClient, cid: int, count: int) -> dict[str, Any]:
    """The leaderboard once `count` refits landed (reads apply the labels waiting)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        board = _board(client, cid)
        if board["prior"]["refits"] >= count:
            return board
        if time.monotonic() > deadline:
            pytest.fail(f"no refit landed in {WAIT_S} s: {board['prior']}")
        time.sleep(0.05)


def _stated_prior() -> tuple[float, float, float]:
    prior = quality_prior(2)
    return prior.weight_scale, prior.context_scale, prior.residual_scale


def _fit_started(client: TestClient) -> tuple[Party, Any]:
    """A refitting campaign given 2n labels, and its runtime once its fit is in flight."""
    party = make_party(client, n_clips=N_CLIPS, n_raters=3, groups=1, prior_refit="split")
    for step in range(2 * N_CLIPS):
        _answer(client, party, step)
    runtime = client.app.state.service.loaded_runtime(party.id)
    deadline = time.monotonic() + WAIT_S
    while not runtime.refits.in_flight:
        assert time.monotonic() < deadline, "no fit started"
        _board(client, party.id)  # applies the labels waiting
        time.sleep(0.01)
    return party, runtime


def _scales(board: dict[str, Any]) -> tuple[float, float, float]:
    prior = board["prior"]
    return prior["weight_scale"], prior["context_scale"], prior["residual_scale"]


@pytest.mark.parametrize("engine_process", [True, False], ids=["process", "thread"])
def test_the_refit_lands_and_a_restart_serves_the_same(
    settings: Settings, engine_process: bool
) -> None:
    settings = replace(settings, engine_process=engine_process)
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=N_CLIPS, n_raters=3, groups=1, prior_refit="split")
        start = _board(client, party.id)
        assert start["prior"]["refits"] == 0
        assert _scales(start) == pytest.approx(_stated_prior(), rel=1e-12)
        for step in range(2 * N_CLIPS):
            _answer(client, party, step)
        landed = _wait_for_refits(client, party.id, 1)
        assert landed["prior"]["refits"] == 1
        # the split moved the criteria's share: the weight scale changed, the total did not
        assert abs(_scales(landed)[0] - _stated_prior()[0]) > 1e-3
        for step in range(2 * N_CLIPS, 2 * N_CLIPS + 4):  # labels after the refit's snapshot
            _answer(client, party, step)
        before = _board(client, party.id)
        weights = client.get(f"/v1/campaigns/{party.id}/weights", headers=ADMIN).json()
        assert before["n_judgments"] == 2 * N_CLIPS + 4

    with TestClient(app=create_app(settings)) as client:
        after = _board(client, party.id)
        assert_close_structures(before, after)
        assert_close_structures(
            weights, client.get(f"/v1/campaigns/{party.id}/weights", headers=ADMIN).json()
        )
        campaign = client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()
        assert campaign["prior_refit"] == "split"


@pytest.mark.parametrize("snapshot_every", [0, 5], ids=["snapshots-off", "snapshots-on"])
def test_a_replay_of_the_log_adopts_the_refits_where_the_service_did(
    settings: Settings, snapshot_every: int
) -> None:
    """A restart adopts each stored refit where the service adopted it (snapshots off: from
    the whole log), or finds it in the snapshot and passes over its row: either way it serves
    the same posterior, prior and refit count, to 1e-9. Without the rows a full replay has
    no refit."""
    settings = replace(settings, snapshot_every=snapshot_every)
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=N_CLIPS, n_raters=3, groups=1, prior_refit="split")
        for step in range(2 * N_CLIPS):
            _answer(client, party, step)
        _wait_for_refits(client, party.id, 1)
        for step in range(2 * N_CLIPS, 4 * N_CLIPS):
            _answer(client, party, step)
        _wait_for_refits(client, party.id, 2)
        for step in range(4 * N_CLIPS, 4 * N_CLIPS + 5):  # labels after the second refit
            _answer(client, party, step)
        served = _board(client, party.id)
        weights = client.get(f"/v1/campaigns/{party.id}/weights", headers=ADMIN).json()
    assert served["prior"]["refits"] == 2
    rows = run_sql(
        settings,
        "SELECT ordinal FROM campaign_refit WHERE campaign_id = :c ORDER BY id",
        c=party.id,
    )
    assert rows == [(1,), (2,)]

    with TestClient(app=create_app(settings)) as client:
        after = _board(client, party.id)
        assert after["prior"]["refits"] == 2
        assert_close_structures(served, after)
        assert_close_structures(
            weights, client.get(f"/v1/campaigns/{party.id}/weights", headers=ADMIN).json()
        )
    # a row that does not read is left out of a full replay, and its row goes (the refit
    # the schedule starts again takes its ordinal)
    full = replace(settings, snapshot_every=0)
    unread = "SELECT count(*) FROM campaign_refit WHERE campaign_id = :c AND refit = 'x'"
    run_sql(settings, "UPDATE campaign_refit SET refit = 'x' WHERE ordinal = 2")
    assert run_sql(settings, unread, c=party.id) == [(1,)]
    with TestClient(app=create_app(full)) as client:
        assert _board(client, party.id)["prior"]["refits"] == 1
    assert run_sql(settings, unread, c=party.id) == [(0,)]
    run_sql(settings, "DELETE FROM campaign_refit WHERE campaign_id = :c", c=party.id)
    with TestClient(app=create_app(full)) as client:
        without = _board(client, party.id)
    assert without["prior"]["refits"] == 0
    assert abs(without["clips"][0]["mean"] - served["clips"][0]["mean"]) > 1e-6


@pytest.mark.parametrize("catch_up", [False, True], ids=["adopt", "catch-up"])
def test_requests_are_answered_while_the_fit_runs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, catch_up: bool
) -> None:
    """The fit (on a thread here) is held until the test has been served meanwhile. With a
    catch-up, the fitted copy applies the labels answered during the fit (in runs of two or
    more) before the engine adopts it and re-applies the rest."""
    settings = replace(settings, engine_process=False)
    if catch_up:
        monkeypatch.setattr(refits, "CATCH_UP_TAIL", 0)
        monkeypatch.setattr(campaign_module, "REAPPLY_LABELS", 2)
    gate = threading.Event()
    fit = refits.fit_copy

    def held_fit(data: bytes, max_evaluations: int = refits.MAX_EVALUATIONS) -> bytes:
        assert gate.wait(WAIT_S)
        return fit(data, max_evaluations)

    monkeypatch.setattr(refits, "fit_copy", held_fit)
    with TestClient(app=create_app(settings)) as client:
        party, runtime = _fit_started(client)
        for step in range(2 * N_CLIPS, 2 * N_CLIPS + 5):
            _answer(client, party, step)
        during = _board(client, party.id)
        assert during["n_judgments"] == 2 * N_CLIPS + 5
        assert during["prior"]["refits"] == 0 and runtime.refits.in_flight
        gate.set()
        landed = _wait_for_refits(client, party.id, 1)
        assert _scales(landed) != pytest.approx(_stated_prior(), rel=1e-6)
        # the labels answered during the fit are in the posterior under the refit
        assert landed["n_judgments"] == 2 * N_CLIPS + 5
        assert sum(clip["labels"] for clip in landed["clips"]) == 2 * (2 * N_CLIPS + 5)
        # with a catch-up, the copy applied them but an open run (below two labels: the
        # engine's batches of them depend on timing), the adoption the rest
        rounds, left = runtime.refits.caught_up
        assert (rounds > 0 and left < 2) if catch_up else (rounds, left) == (0, 5)
        # the state is the refit applied at the copy, then the labels since (replay)
        campaign = runtime.engine.local.campaign
        replayed = campaign.replay()
        for ours, theirs in [(campaign.posterior, replayed.posterior)]:
            torch.testing.assert_close(ours.mean, theirs.mean, rtol=0, atol=1e-12)
            torch.testing.assert_close(ours.cov, theirs.cov, rtol=0, atol=1e-12)
        entries = campaign.history_since(0)
        refit_at = max(k for k, entry in enumerate(entries) if isinstance(entry, Refit))
        assert sum(len(entry) for entry in entries[refit_at + 1 :]) == 5


def test_a_failing_fit_is_skipped_and_the_service_keeps_serving(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = replace(settings, engine_process=False)
    fit = refits.fit_copy

    def failing_fit(data: bytes, max_evaluations: int = refits.MAX_EVALUATIONS) -> bytes:
        raise RuntimeError("the fit broke")

    monkeypatch.setattr(refits, "fit_copy", failing_fit)
    with (
        caplog.at_level(logging.WARNING, logger="ratingparty.api"),
        TestClient(app=create_app(settings)) as client,
    ):
        party = make_party(client, n_clips=N_CLIPS, n_raters=3, groups=1, prior_refit="split")
        runtime = client.app.state.service.loaded_runtime(party.id)
        for step in range(2 * N_CLIPS):
            _answer(client, party, step)
        deadline = time.monotonic() + WAIT_S
        while "the fit broke" not in caplog.text:
            assert time.monotonic() < deadline, "the fit did not fail"
            _board(client, party.id)
            time.sleep(0.01)
        for step in range(2 * N_CLIPS, 4 * N_CLIPS - 1):  # still served, still the stated prior
            _answer(client, party, step)
        board = _board(client, party.id)
        assert board["prior"]["refits"] == 0
        assert _scales(board) == pytest.approx(_stated_prior(), rel=1e-12)
        assert not runtime.refits.in_flight
        # the next point of the schedule (4n labels) tries again
        monkeypatch.setattr(refits, "fit_copy", fit)
        _answer(client, party, 4 * N_CLIPS)
        assert _wait_for_refits(client, party.id, 1)["prior"]["refits"] == 1


def test_a_campaign_with_refits_off_keeps_its_prior(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=N_CLIPS, n_raters=3, groups=1, prior_refit="off")
        for step in range(2 * N_CLIPS + 2):
            _answer(client, party, step)
        board = _board(client, party.id)
        assert board["prior"]["refits"] == 0
        assert _scales(board) == pytest.approx(_stated_prior(), rel=1e-12)
        bad = client.post(
            "/v1/campaigns", json={"name": "x", "prior_refit": "sometimes"}, headers=ADMIN
        )
        assert bad.status_code == 400


def test_closing_the_service_does_not_wait_for_a_fit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit held until after the app stopped: the stop cancels it rather than waiting, and
    its result is never adopted."""
    settings = replace(settings, engine_process=False)
    gate, returned = threading.Event(), threading.Event()
    fit = refits.fit_copy

    def held_fit(data: bytes, max_evaluations: int = refits.MAX_EVALUATIONS) -> bytes:
        gate.wait(WAIT_S)
        try:
            return fit(data, max_evaluations)
        finally:
            returned.set()

    monkeypatch.setattr(refits, "fit_copy", held_fit)
    client = TestClient(app=create_app(settings))
    with client:
        _, runtime = _fit_started(client)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < WAIT_S / 2
    assert not returned.is_set()  # the fit was still held when the app had stopped
    gate.set()
    assert returned.wait(WAIT_S)
    assert runtime.refits.ready is None


def _labels(rng: np.random.Generator, n_items: int, count: int) -> list[Judgment]:
    outcomes = (Outcome.WIN, Outcome.LOSS, Outcome.TIE)
    return [
        Judgment.pair(
            f"r{k % 3}", *map(int, rng.choice(n_items, 2, replace=False)), outcomes[k % 3]
        )
        for k in range(count)
    ]


def test_the_worker_process_runs_at_the_lowest_priority_and_catches_up() -> None:
    """`ProcessFit`: the worker runs at nice 19 (and SCHED_IDLE where there is one), stays up
    after the fit, and its copy caught up with the engine's entries since is what the same
    steps give in this process."""
    rng = np.random.default_rng(5)
    config = CampaignConfig(
        criteria=("c0", "c1"), prior=quality_prior(2), prior_refit="split", tie_margin=0.3
    )
    campaign = Campaign(config, device="cpu")
    campaign.add_clips(rng.normal(size=(N_CLIPS, 2)), count=N_CLIPS, contexts=["x"] * N_CLIPS)
    campaign.observe(_labels(rng, N_CLIPS, 30))
    data = pickle.dumps(campaign)
    held_at_copy = campaign.history_length
    for count in (150, 3):
        campaign.observe(_labels(rng, N_CLIPS, count))
    entries = pickle.dumps(pack_entries(campaign.history_since(held_at_copy)))

    async def in_process() -> tuple[int, int, int, bytes]:
        fit = refits.ProcessFit()
        try:
            held = await fit.fit(data, 10)
            nice = os.getpriority(os.PRIO_PROCESS, fit._process.pid)
            if hasattr(os, "SCHED_IDLE"):
                assert os.sched_getscheduler(fit._process.pid) == os.SCHED_IDLE
            # stopped while requests wait, then going on: it still answers
            fit.pause(True)
            assert _process_state(fit._process.pid, stopped=True)
            fit.pause(False)
            assert not _process_state(fit._process.pid, stopped=False)
            return nice, held, await fit.catch_up(entries), await fit.result()
        finally:
            fit.cancel()

    nice, held, caught_up, result = asyncio.run(in_process())
    assert nice == 19
    local = refits.CopyFit(data, 10)
    assert held == held_at_copy == local.entries
    # the run of 150 labels is settled, the 3 after it may still grow: left to the adoption
    assert caught_up == local.catch_up(entries) == held_at_copy + 1
    theirs = pickle.loads(result)
    assert isinstance(theirs, RefitResult)  # the copy's state, not its labels
    mine = copy.deepcopy(campaign)
    mine.adopt_refit(local.campaign)
    campaign.adopt_refit(theirs)
    for ours, other in [(mine.posterior, campaign.posterior)]:
        torch.testing.assert_close(ours.mean, other.mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(ours.cov, other.cov, rtol=0, atol=1e-12)
    assert campaign.log == mine.log and len(campaign.log) == 183
    assert len(campaign.refits) == 1


def _process_state(pid: int, stopped: bool) -> bool:
    """Whether the process is stopped (state T), once it is as `stopped` says or 5 s passed
    (a signal takes effect a moment after it is sent)."""
    deadline = time.monotonic() + 5
    while True:
        with open(f"/proc/{pid}/stat") as stat:
            is_stopped = stat.read().rsplit(")", 1)[1].split()[0] == "T"
        if is_stopped == stopped or time.monotonic() > deadline:
            return is_stopped
        time.sleep(0.01)


class _FakeFit:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def pause(self, paused: bool) -> None:
        self.calls.append(paused)


def test_the_fit_is_stopped_while_requests_wait_but_not_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`PriorRefits.requests_waiting`: the worker stops while requests wait and goes on once
    none does; under requests that never stop waiting it goes on after PAUSE_MAX_S and runs
    RUN_MIN_S before it may be stopped again."""
    monkeypatch.setattr(refits, "PAUSE_MAX_S", 0.05)
    # RUN_MIN_S is read on a clock of the test's own; the pause's end is the event loop's timer
    clock = [0.0]
    monkeypatch.setattr(
        refits,
        "time",
        types.SimpleNamespace(monotonic=lambda: clock[0], perf_counter=time.perf_counter),
    )

    async def drive() -> list[bool]:
        book = refits.PriorRefits(runtime=None, mode="split")  # type: ignore[arg-type]
        fake = _FakeFit()
        book._fit, book.in_flight = fake, True  # type: ignore[assignment]
        book.requests_waiting(True)
        book.requests_waiting(False)
        assert fake.calls == [True, False]
        book.requests_waiting(True)  # and they keep waiting
        await asyncio.sleep(0.2)
        assert fake.calls == [True, False, True, False]  # went on after PAUSE_MAX_S
        clock[0] += refits.RUN_MIN_S / 2
        book.requests_waiting(True)  # within RUN_MIN_S: not stopped again
        assert fake.calls == [True, False, True, False]
        clock[0] += refits.RUN_MIN_S
        book.requests_waiting(True)
        book.requests_waiting(False)
        book.in_flight = False  # no fit in flight: nothing to stop
        book.requests_waiting(True)
        return fake.calls

    assert asyncio.run(drive()) == [True, False, True, False, True, False]
