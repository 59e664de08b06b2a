"""The answers "both good" and "both bad" over HTTP: created with a both_threshold, offered,
stored, exported, imported, replayed after a restart and from a snapshot; refused where the
campaign does not take them."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from engine.questions import BOTH_ANSWERS
from tests.api.conftest import ADMIN, inspect, make_party, run_sql
from tests.api.test_snapshots import _metric

TAU = 0.5
N_LABELS = 12
SNAPSHOT_EVERY = 5
CHOICES = ("both_good", "left", "both_bad", "tie", "right", "both_good")


def _assign(client: TestClient, party, rater: int) -> dict:
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code == 201, response.text
    return response.json()["assignment"]


def _judge(client: TestClient, party, assignment_id: int, choice: str, rater: int = 0):
    return client.post(
        f"/v1/assignments/{assignment_id}/judgment",
        json={"choice": choice},
        headers=party.rater(rater),
    )


def _export(client: TestClient, cid: int) -> list[dict]:
    text = client.get(f"/v1/campaigns/{cid}/export", params={"format": "jsonl"}, headers=ADMIN).text
    return [json.loads(line) for line in text.splitlines()]


def _board(client: TestClient, cid: int) -> list[tuple[int, float, float]]:
    clips = client.get(f"/v1/campaigns/{cid}/leaderboard", headers=ADMIN).json()["clips"]
    return sorted((c["id"], c["mean"], c["sd"]) for c in clips)


def _count_campaigns(client: TestClient) -> int:
    return len(client.get("/v1/campaigns", headers=ADMIN).json()["campaigns"])


def _rate(client: TestClient, party, n_labels: int) -> list[str]:
    """`n_labels` pair answers cycling through CHOICES; the choices given."""
    given = []
    for step in range(n_labels):
        rater = step % len(party.raters)
        shown = _assign(client, party, rater)
        assert shown["kind"] == "pair"
        choice = CHOICES[step % len(CHOICES)]
        judged = _judge(client, party, shown["id"], choice, rater)
        assert judged.status_code == 201, judged.text
        assert judged.json()["choice"] == choice
        given.append(choice)
    return given


def test_both_answers_are_offered_stored_and_exported(client: TestClient) -> None:
    party = make_party(client, n_clips=6, n_raters=2, both_threshold=TAU)
    campaign = client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()
    assert campaign["both_threshold"] == TAU
    # fixed at creation (it changes how every label is read): no setting to change
    patched = client.patch(f"/v1/campaigns/{party.id}", json={"both_threshold": 1.0}, headers=ADMIN)
    assert patched.status_code == 400 and "both_threshold" in patched.text
    shown = _assign(client, party, 0)
    assert shown["choices"] == ["left", "right", "tie", "both_good", "both_bad", "skip"]
    before = _board(client, party.id)
    judged = _judge(client, party, shown["id"], "both_good")
    assert judged.status_code == 201, judged.text
    again = _judge(client, party, shown["id"], "both_good")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    changed = _judge(client, party, shown["id"], "both_bad")
    assert changed.status_code == 409
    after = _board(client, party.id)
    # "both good" lifts both clips of the pair: the sum event moves their means up
    state = client.app.state.service.loaded_runtime(party.id).assignments[shown["id"]]
    moved = {party.clip_ids[state.first], party.clip_ids[state.second]}
    means_before = {clip: mean for clip, mean, _ in before}
    for clip, mean, _ in after:
        if clip in moved:
            assert mean > means_before[clip] + 0.01
    rows = _export(client, party.id)
    assert [r["choice"] for r in rows] == ["both_good"]
    assert rows[0]["chosen"] is None and rows[0]["rejected"] is None
    log = inspect(client, client.app.state.service.loaded_runtime(party.id), "log")
    assert [j.answer for j in log] == ["both_good"]


def test_a_campaign_without_a_threshold_refuses_both_and_writes_nothing(
    client: TestClient,
) -> None:
    party = make_party(client, n_clips=4, n_raters=1)
    shown = _assign(client, party, 0)
    assert "both_good" not in shown["choices"] and "both_bad" not in shown["choices"]
    for choice in BOTH_ANSWERS:
        refused = _judge(client, party, shown["id"], choice)
        assert refused.status_code == 400
        assert "does not take" in refused.json()["detail"]
    assert client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()["n_judgments"] == 0
    assert _export(client, party.id) == []
    # the assignment is still open and takes an allowed answer
    assert _judge(client, party, shown["id"], "tie").status_code == 201
    csv = "rater,left,right,choice\nr0,e0,e1,both_bad\n"
    imported = client.post(
        f"/v1/campaigns/{party.id}/imports",
        json={"key": "k", "format": "csv", "data": csv},
        headers=ADMIN,
    )
    assert imported.status_code == 400 and "does not take 'both_bad'" in imported.text
    assert [r["choice"] for r in _export(client, party.id)] == ["tie"]


@pytest.mark.parametrize(
    "body",
    [
        {"both_threshold": -0.1},
        {"both_threshold": 0.5, "ties": False},
        {"both_threshold": "0.5"},
        {"both_threshold": 1e9},
    ],
    ids=["negative", "no-ties", "text", "huge"],
)
def test_a_bad_threshold_is_400_and_creates_nothing(client: TestClient, body: dict) -> None:
    before = _count_campaigns(client)
    response = client.post("/v1/campaigns", json={"name": "x", **body}, headers=ADMIN)
    assert response.status_code == 400, response.text
    assert "both_threshold" in response.text
    assert _count_campaigns(client) == before


def test_a_nan_threshold_is_400_and_creates_nothing(client: TestClient) -> None:
    before = _count_campaigns(client)
    response = client.post(
        "/v1/campaigns",
        content=b'{"name": "x", "both_threshold": NaN}',
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert _count_campaigns(client) == before


def test_imported_both_answers_are_labels(client: TestClient) -> None:
    party = make_party(client, n_clips=4, n_raters=1, both_threshold=TAU)
    lines = [
        {"rater": "r0", "left": "e0", "right": "e1", "choice": "both_good"},
        {"rater": "r0", "left": "e2", "right": "e3", "choice": "both_bad"},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines)
    imported = client.post(
        f"/v1/campaigns/{party.id}/imports",
        json={"key": "k", "format": "jsonl", "data": data},
        headers=ADMIN,
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["imported"] == 2
    board = {c["external_id"]: c["mean"] for c in _leaderboard(client, party.id)}
    assert min(board["e0"], board["e1"]) > max(board["e2"], board["e3"])
    assert [r["choice"] for r in _export(client, party.id)] == ["both_good", "both_bad"]


def _leaderboard(client: TestClient, cid: int) -> list[dict]:
    return client.get(f"/v1/campaigns/{cid}/leaderboard", headers=ADMIN).json()["clips"]


@pytest.mark.slow
def test_both_answers_replay_after_a_restart_and_from_a_snapshot(settings: Settings) -> None:
    settings = replace(settings, snapshot_every=SNAPSHOT_EVERY)
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=6, n_raters=3, groups=2, both_threshold=TAU)
        given = _rate(client, party, N_LABELS)
        before = _board(client, party.id)
        old_log = inspect(client, client.app.state.service.loaded_runtime(party.id), "log")
        assert [j.answer for j in old_log if j.answer in BOTH_ANSWERS] == [
            c for c in given if c in BOTH_ANSWERS
        ]
        # labels applied in one micro-batch cross several multiples of SNAPSHOT_EVERY at
        # once and take one snapshot: wait for one that holds labels, not for a count
        deadline = time.monotonic() + 30  # a loaded machine writes it late
        query = "SELECT max(labels) FROM campaign_snapshot WHERE campaign_id = :c"
        while (run_sql(settings, query, c=party.id)[0][0] or 0) < SNAPSHOT_EVERY:
            assert time.monotonic() < deadline, "no snapshot with labels was written"
            time.sleep(0.05)
    ((in_snapshot,),) = run_sql(
        settings, "SELECT labels FROM campaign_snapshot WHERE campaign_id = :c", c=party.id
    )
    assert in_snapshot >= SNAPSHOT_EVERY

    with TestClient(app=create_app(settings)) as client:
        from_snapshot = _board(client, party.id)
        assert _metric(client, "ratingparty_snapshots_total", event="loaded") == 1
        assert inspect(client, client.app.state.service.loaded_runtime(party.id), "log") == old_log
        # an answer given before the restart is still idempotent
        assert [r["choice"] for r in _export(client, party.id)] == given

    with TestClient(app=create_app(replace(settings, snapshot_every=0))) as client:
        full = _board(client, party.id)
        assert _metric(client, "ratingparty_replayed_labels_total", start="log") == N_LABELS
    # bit for bit: the same float64 operations in the same order
    assert from_snapshot == before
    assert full == before


def test_a_both_answer_to_a_gold_task_is_scored_as_its_tie(client: TestClient) -> None:
    party = make_party(client, n_clips=4, n_raters=1, groups=1, both_threshold=TAU, gold_rate=1.0)
    gold = {"pairs": [{"first": "e0", "second": "e1", "answer": "tie"}]}
    assert (
        client.post(f"/v1/campaigns/{party.id}/gold", json=gold, headers=ADMIN).status_code == 201
    )
    before = _board(client, party.id)
    shown = _assign(client, party, 0)
    assert {shown["left"]["external_id"], shown["right"]["external_id"]} == {"e0", "e1"}
    assert "both_good" in shown["choices"]  # a gold task looks like any other
    assert _judge(client, party, shown["id"], "both_good").status_code == 201
    assert _board(client, party.id) == before  # a gold answer moves no clip
    rows = _export(client, party.id)
    assert [(r["choice"], r["gold"]) for r in rows] == [("both_good", True)]
    (judgment,) = inspect(client, client.app.state.service.loaded_runtime(party.id), "log")
    assert judgment.answer == "tie" and judgment.gold is not None
