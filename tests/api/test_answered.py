"""What each rater answered (api/answered.py): a rater never gets a pair they judged, whether the
engine applied the label (its record, read after a load from a snapshot) or the label is
committed and still waiting for the engine."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from litestar.testing import TestClient

from api.answered import Answered
from api.app import create_app
from api.settings import Settings
from tests.api.conftest import ADMIN, Party, make_party, run_sql
from tests.api.test_snapshots import _metric

# labels wait for the engine until a read needs them: the longest wait the settings allow, and
# a batch no test reaches
HELD = {"apply_batch": 64, "apply_wait_s": 10.0}


# the book on its own -------------------------------------------------------------------------


def test_a_committed_answer_waits_until_applied_then_is_the_engines() -> None:
    book = Answered()
    book.load({1: [(0, 1)]})
    book.committed(1, (2, 3))
    book.committed(2, (0, 1))
    assert book.waiting(1) == [(2, 3)] and book.waiting(2) == [(0, 1)]
    assert book.has(1, (0, 1)) and book.has(1, (2, 3)) and not book.has(1, (1, 2))
    assert book.keys(1) == {(0, 1), (2, 3)}
    book.applied([(1, (2, 3))])
    assert book.waiting(1) == [] and book.has(1, (2, 3))
    assert book.keys(1) == {(0, 1), (2, 3)} and book.waiting(2) == [(0, 1)]
    assert not book.has(3, (0, 1)) and book.keys(3) == set()


def test_a_load_takes_the_engines_record_and_nothing_waits() -> None:
    book = Answered()
    book.committed(1, (2, 3))
    book.load({1: [(0, 1)], 2: [(4, -1)]})
    assert book.waiting(1) == [] and book.keys(1) == {(0, 1)} and book.has(2, (4, -1))


def test_the_same_task_committed_twice_waits_until_both_are_applied() -> None:
    book = Answered()
    book.committed(1, (0, 1))
    book.committed(1, (0, 1))
    book.applied([(1, (0, 1))])
    assert book.waiting(1) == [(0, 1)]
    book.applied([(1, (0, 1))])
    assert book.waiting(1) == [] and book.has(1, (0, 1))


# through HTTP --------------------------------------------------------------------------------


def _assign(client: TestClient, party: Party, rater: int) -> dict[str, Any]:
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code in (200, 201), response.text
    return response.json()


def _judge_pair(client: TestClient, party: Party, rater: int) -> frozenset[str]:
    """Ask for a task, answer it (a pair); the clips it showed."""
    shown = _assign(client, party, rater)["assignment"]
    assert shown is not None and shown["kind"] == "pair", shown
    judged = client.post(
        f"/v1/assignments/{shown['id']}/judgment",
        json={"choice": "left"},
        headers=party.rater(rater),
    )
    assert judged.status_code == 201, judged.text
    return frozenset((shown["left"]["external_id"], shown["right"]["external_id"]))


def _nothing_left(client: TestClient, party: Party, rater: int) -> None:
    body = _assign(client, party, rater)
    assert body["assignment"] is None, body
    assert "judged every pair" in body["message"]


def test_labels_waiting_for_the_engine_are_never_asked_again(settings: Settings) -> None:
    """With every label still waiting for the engine (which knows none of them), the rater
    gets each pair once and then nothing; another rater still gets a pair; once applied, the
    engine's record keeps them out."""
    with TestClient(app=create_app(replace(settings, **HELD))) as client:
        party = make_party(client, n_clips=3, n_raters=2, groups=1, ties=False)
        runtime = client.app.state.service.loaded_runtime(party.id)
        seen = [_judge_pair(client, party, 0) for _ in range(3)]
        assert len(set(seen)) == 3  # every pair of three clips, once
        assert runtime.n_applied == 0, "the labels were applied: the set-up tests nothing"
        _nothing_left(client, party, 0)
        assert runtime.n_applied == 0
        assert _assign(client, party, 1)["assignment"]["kind"] == "pair"
        # a read applies every committed label
        board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN)
        assert board.status_code == 200
        assert runtime.n_applied == 3
        _nothing_left(client, party, 0)


def test_after_a_restart_from_a_snapshot_judged_pairs_stay_out(settings: Settings) -> None:
    """Labels in the snapshot, one replayed after it (it was still waiting when the service
    stopped) and new ones waiting again: the rater gets each of the six pairs of four clips
    once, across the restart."""
    settings = replace(settings, snapshot_every=2, **HELD)
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=4, n_raters=1, groups=1, ties=False)
        runtime = client.app.state.service.loaded_runtime(party.id)
        before = [_judge_pair(client, party, 0) for _ in range(2)]
        assert client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).is_success
        deadline = time.monotonic() + 30
        query = "SELECT max(labels) FROM campaign_snapshot WHERE campaign_id = :c"
        while (run_sql(settings, query, c=party.id)[0][0] or 0) < 2:
            assert time.monotonic() < deadline, "no snapshot of the first labels was written"
            time.sleep(0.05)
        before.append(_judge_pair(client, party, 0))
        assert runtime.n_applied == 2  # the third waits for the engine as the service stops
    with TestClient(app=create_app(settings)) as client:
        after = [_judge_pair(client, party, 0) for _ in range(3)]
        # loaded by the first request: the snapshot's labels and the one after it
        assert _metric(client, "ratingparty_snapshots_total", event="loaded") == 1
        assert _metric(client, "ratingparty_replayed_labels_total", start="snapshot") == 1
        _nothing_left(client, party, 0)
    assert len(set(before) | set(after)) == 6
