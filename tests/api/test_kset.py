"""K-sets over HTTP: the assignment shows K clips of one prompt in a drawn order, the answer
is a ranking of clip ids checked against what was shown (bad input is a 400 and writes
nothing), answer times teach the engine, and a restart (full replay or snapshot) rebuilds the
same state."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from engine.questions import KSet
from tests.api.conftest import ADMIN, Party, inspect, make_party

SHOWN = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _party(client: TestClient, mode: str = "best", size: int = 4) -> Party:
    # raters stated to be quick at K-sets: the engine hands one out first in every mode
    return make_party(
        client,
        n_clips=12,
        n_raters=3,
        groups=2,
        kset={"size": size, "mode": mode, "seconds": 3.0},
    )


def _assignment(client: TestClient, party: Party, rater: int) -> dict:
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code == 201, response.text
    return response.json()["assignment"]


def _judge(client: TestClient, party: Party, rater: int, assignment_id: int, body: dict):
    return client.post(
        f"/v1/assignments/{assignment_id}/judgment", json=body, headers=party.rater(rater)
    )


def _timed(ranking: list[int], seconds: float = 9.0) -> dict:
    return {
        "ranking": ranking,
        "shown_at": SHOWN.isoformat(),
        "answered_at": (SHOWN + timedelta(seconds=seconds)).isoformat(),
    }


def _n_judgments(client: TestClient, party: Party) -> int:
    return client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()["n_judgments"]


def _answer_all(client: TestClient, party: Party, rounds: int) -> list[tuple[int, dict]]:
    """Each rater in turn takes a task and answers it: a K-set with its clips as shown (the
    first shown is best), a pair with left."""
    answered = []
    for step in range(rounds):
        rater = step % len(party.raters)
        shown = _assignment(client, party, rater)
        if shown["kind"] == "kset":
            ids = [clip["id"] for clip in shown["clips"]]
            size = {"best": 1, "best_worst": 2, "rank": len(ids)}[shown["mode"]]
            body = _timed(ids[:1] + ids[-1:] if size == 2 else ids[:size], 5.0 + step)
        else:
            body = {"choice": "left", "shown_at": SHOWN.isoformat()}
        response = _judge(client, party, rater, shown["id"], body)
        assert response.status_code == 201, response.text
        answered.append((rater, shown))
    return answered


@pytest.mark.parametrize("mode", ["best", "best_worst", "rank"])
def test_a_kset_is_shown_and_answered(client: TestClient, mode: str) -> None:
    party = _party(client, mode, size=4 if mode != "rank" else 5)
    campaign = client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()
    assert campaign["kset"] == {"size": 4 if mode != "rank" else 5, "mode": mode, "seconds": 3.0}
    shown = _assignment(client, party, 0)
    assert shown["kind"] == "kset" and shown["mode"] == mode
    clips = shown["clips"]
    assert len(clips) == campaign["kset"]["size"]
    assert len({clip["id"] for clip in clips}) == len(clips)
    assert len({clip["group"] for clip in clips}) == 1  # one prompt
    assert shown["left"] == clips[0] and shown["right"] is None
    assert shown["choices"] == ["skip"]
    ids = [clip["id"] for clip in clips]
    ranking = {"best": ids[1:2], "best_worst": [ids[1], ids[0]], "rank": ids[::-1]}[mode]
    response = _judge(client, party, 0, shown["id"], _timed(ranking))
    assert response.status_code == 201, response.text
    assert response.json()["ranking"] == ranking and not response.json()["duplicate"]
    # the same answer again is one label; another answer is a conflict
    again = _judge(client, party, 0, shown["id"], _timed(ranking))
    assert again.status_code == 200 and again.json()["duplicate"]
    other = list(reversed(ranking)) if len(ranking) > 1 else ids[2:3]
    assert _judge(client, party, 0, shown["id"], _timed(other)).status_code == 409
    assert _n_judgments(client, party) == 1
    # the engine took it as the K-set of those clips with the rater's answer and its time
    runtime = client.app.state.service.loaded_runtime(party.id)
    (label,) = inspect(client, runtime, "log")
    positions = {clip_id: k for k, clip_id in enumerate(party.clip_ids)}
    assert label.question == KSet(tuple(sorted(positions[i] for i in ids)), mode)
    assert label.answer == tuple(positions[i] for i in ranking)
    assert label.seconds == pytest.approx(9.0)
    # the campaign's expected seconds per task kind moved toward the answer's 9 s
    seconds = client.get(f"/v1/campaigns/{party.id}/progress", headers=ADMIN).json()
    kind = f"kset:{mode}:{len(ids)}"
    assert seconds["task_seconds"][kind] == pytest.approx((5 * 3.0 + 9.0) / 6)
    assert seconds["task_seconds"]["pair"] == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("mode", "body", "message"),
    [
        ("best", lambda ids, other: {"ranking": [other]}, "not shown"),
        ("best", lambda ids, other: {"ranking": [ids[0], ids[1]]}, "best clip"),
        ("best_worst", lambda ids, other: {"ranking": [ids[0], ids[0]]}, "each clip once"),
        ("best_worst", lambda ids, other: {"ranking": [ids[0]]}, "best and the worst"),
        ("rank", lambda ids, other: {"ranking": [*ids[:-1], ids[0]]}, "each clip once"),
        ("rank", lambda ids, other: {"ranking": ids[:-1]}, "best first"),
        ("best", lambda ids, other: {"choice": "left"}, "send 'ranking'"),
        ("best", lambda ids, other: {"level": 1}, "send 'ranking'"),
        ("best", lambda ids, other: {}, "send 'ranking'"),
        ("best", lambda ids, other: {"choice": "skip", "ranking": ids[:1]}, "not both"),
        (
            "best",
            lambda ids, other: {
                "ranking": ids[:1],
                "shown_at": SHOWN.isoformat(),
                "answered_at": (SHOWN - timedelta(seconds=1)).isoformat(),
            },
            "after the answer",
        ),
        (
            "best",
            lambda ids, other: {"ranking": ids[:1], "shown_at": "2026-01-01T12:00:00"},
            "time zone",
        ),
    ],
)
def test_bad_kset_answers_are_a_400_and_write_nothing(
    client: TestClient, mode: str, body, message: str
) -> None:
    party = _party(client, mode, size=4 if mode != "rank" else 5)
    shown = _assignment(client, party, 0)
    assert shown["kind"] == "kset"
    ids = [clip["id"] for clip in shown["clips"]]
    other = next(i for i in party.clip_ids if i not in ids)
    response = _judge(client, party, 0, shown["id"], body(ids, other))
    assert response.status_code == 400, response.text
    assert message in response.text
    assert _n_judgments(client, party) == 0
    # the assignment is still open: a good answer goes through afterwards
    size = {"best": 1, "best_worst": 2, "rank": len(ids)}[mode]
    good = _judge(client, party, 0, shown["id"], {"ranking": ids[:size]})
    assert good.status_code == 201, good.text
    assert _n_judgments(client, party) == 1


def test_a_ranking_for_a_pair_is_refused(client: TestClient) -> None:
    party = make_party(client, n_clips=6, n_raters=1, groups=2)
    shown = _assignment(client, party, 0)
    assert shown["kind"] == "pair"
    ids = [shown["left"]["id"]]
    response = _judge(client, party, 0, shown["id"], {"choice": "left", "ranking": ids})
    assert response.status_code == 400 and "not a K-set" in response.text
    assert _n_judgments(client, party) == 0


def test_blocks_with_ksets_are_refused_at_creation(client: TestClient) -> None:
    body = {
        "name": "big",
        "criteria": ["a"],
        "structure": "blocks",
        "kset": {"size": 4, "mode": "best"},
    }
    response = client.post("/v1/campaigns", json=body, headers=ADMIN)
    assert response.status_code == 400, response.text
    assert 'structure=\\"dense\\"' in response.text or 'structure="dense"' in response.text
    bad_size = {"name": "x", "kset": {"size": 7}}
    assert client.post("/v1/campaigns", json=bad_size, headers=ADMIN).status_code == 400


@pytest.mark.slow
@pytest.mark.parametrize("snapshot_every", [0, 4], ids=["replay", "snapshot"])
def test_a_restart_rebuilds_kset_answers_and_their_times(
    settings: Settings, snapshot_every: int
) -> None:
    settings = replace(settings, snapshot_every=snapshot_every)
    with TestClient(app=create_app(settings)) as client:
        party = _party(client, "best_worst")
        answered = _answer_all(client, party, 9)
        assert any(shown["kind"] == "kset" for _, shown in answered)
        board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
        runtime = client.app.state.service.loaded_runtime(party.id)
        log = inspect(client, runtime, "log")
        assert sum(label.seconds is not None for label in log) == len(answered)
    with TestClient(app=create_app(settings)) as client:
        after = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
        for one, two in zip(board["clips"], after["clips"], strict=True):
            assert one["id"] == two["id"]
            assert one["mean"] == pytest.approx(two["mean"], abs=1e-9)
            assert one["sd"] == pytest.approx(two["sd"], abs=1e-9)
            assert one["labels"] == two["labels"]
        runtime = client.app.state.service.loaded_runtime(party.id)
        if snapshot_every == 0:
            assert inspect(client, runtime, "log") == log
        # no rater is handed a K-set they answered before the restart
        more = _answer_all(client, party, 3)
        asked = [
            (rater, tuple(sorted(clip["id"] for clip in shown["clips"])))
            for rater, shown in [*answered, *more]
            if shown["kind"] == "kset"
        ]
        assert len(set(asked)) == len(asked)
        assert _n_judgments(client, party) == len(answered) + len(more)


def _export(client: TestClient, party: Party, kind: str, fmt: str = "jsonl") -> str:
    response = client.get(
        f"/v1/campaigns/{party.id}/export", params={"kind": kind, "format": fmt}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    return response.text


def test_the_export_shows_where_each_clip_was_and_the_pairs_a_kset_gives(
    client: TestClient,
) -> None:
    party = _party(client, "best_worst")
    external = {clip_id: f"e{k}" for k, clip_id in enumerate(party.clip_ids)}
    shown = _assignment(client, party, 0)
    assert shown["kind"] == "kset"
    ids = [clip["id"] for clip in shown["clips"]]
    best, worst = ids[2], ids[0]
    assert _judge(client, party, 0, shown["id"], _timed([best, worst], 7.5)).status_code == 201
    skipped = _assignment(client, party, 1)
    assert _judge(client, party, 1, skipped["id"], {"choice": "skip"}).status_code == 201

    rows = [json.loads(line) for line in _export(client, party, "judgments").splitlines()]
    assert [row["kind"] for row in rows] == ["kset", skipped["kind"]]
    row = rows[0]
    assert row["kset_mode"] == "best_worst"
    assert row["shown"] == [external[i] for i in ids]  # what was shown where
    assert row["left_external_id"] == external[ids[0]] and row["right_external_id"] is None
    assert row["ranking"] == [external[best], external[worst]]
    assert row["seconds"] == pytest.approx(7.5)
    assert row["prompt"] == shown["clips"][0]["group"]

    pairs = [json.loads(line) for line in _export(client, party, "preferences").splitlines()]
    others = [i for i in ids if i not in (best, worst)]
    # best and worst of 4: the best over each other clip, each of the other two over the worst
    expected = {(best, i) for i in ids if i != best} | {(i, worst) for i in others}
    assert {(p["chosen"], p["rejected"]) for p in pairs} == {
        (external[winner], external[loser]) for winner, loser in expected
    }
    assert len(pairs) == 2 * len(ids) - 3
    assert {p["kind"] for p in pairs} == {"kset"}
    assert all(
        p["prompt"] == row["prompt"] and p["judgment_id"] == row["judgment_id"] for p in pairs
    )

    # CSV: the lists are one JSON cell each, the pairs as many rows
    table = list(csv.DictReader(io.StringIO(_export(client, party, "judgments", "csv"))))
    assert json.loads(table[0]["shown"]) == row["shown"]
    assert json.loads(table[0]["ranking"]) == row["ranking"]
    pair_rows = list(csv.DictReader(io.StringIO(_export(client, party, "preferences", "csv"))))
    assert len(pair_rows) == len(pairs)


def test_a_kset_skipped_by_enough_raters_is_withdrawn_for_everyone(client: TestClient) -> None:
    party = make_party(
        client,
        n_clips=8,
        n_raters=2,
        groups=2,
        skip_limit=1,
        kset={"size": 4, "mode": "best", "seconds": 3.0},
    )
    shown = _assignment(client, party, 0)
    assert shown["kind"] == "kset"
    skipped = sorted(clip["id"] for clip in shown["clips"])
    assert _judge(client, party, 0, shown["id"], {"choice": "skip"}).status_code == 201
    flags = client.get(f"/v1/campaigns/{party.id}/skipped", headers=ADMIN).json()
    (task,) = flags["tasks"]
    assert sorted(clip["id"] for clip in task["clips"]) == skipped and task["raters"] == 1
    # neither rater is handed that set again
    for step in range(6):
        rater = step % 2
        other = _assignment(client, party, rater)
        if other["kind"] == "kset":
            assert sorted(clip["id"] for clip in other["clips"]) != skipped
        body = {"choice": "skip"} if other["kind"] != "kset" else {"ranking": [other["left"]["id"]]}
        assert _judge(client, party, rater, other["id"], body).status_code == 201


@pytest.mark.slow
def test_an_open_kset_survives_a_restart(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = _party(client, "rank", size=4)
        shown = _assignment(client, party, 0)
        assert shown["kind"] == "kset"
    with TestClient(app=create_app(settings)) as client:
        ids = [clip["id"] for clip in shown["clips"]]
        response = _judge(client, party, 0, shown["id"], _timed(ids[::-1]))
        assert response.status_code == 201, response.text
        runtime = client.app.state.service.loaded_runtime(party.id)
        (label,) = inspect(client, runtime, "log")
        assert isinstance(label.question, KSet) and label.question.mode == "rank"


def test_an_exported_kset_row_is_not_imported(client: TestClient) -> None:
    party = _party(client, "best")
    shown = _assignment(client, party, 0)
    assert shown["kind"] == "kset"
    judged = _judge(client, party, 0, shown["id"], {"ranking": [shown["left"]["id"]]})
    assert judged.status_code == 201
    exported = _export(client, party, "judgments")
    body = {"key": "again", "format": "jsonl", "data": exported}
    response = client.post(f"/v1/campaigns/{party.id}/imports", json=body, headers=ADMIN)
    assert response.status_code == 400, response.text
    assert "a K-set answer is not imported" in response.text
    assert _n_judgments(client, party) == 1
