"""Gold questions over HTTP: the operator uploads pairs with known answers, raters get them as
ordinary-looking tasks at the campaign's gold rate, the answers test the rater and never move a
clip (also after a restart), random clickers are flagged and can be stopped, and the export
marks gold answers. On SQLite and PostgreSQL (`db_url`)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import ADMIN, Party, assert_close_structures, inspect, make_party, run_sql
from tests.api.test_restart import _reads
from tests.api.test_snapshots import _metric

# clips e0..e11 in groups g0 (even) and g1 (odd)
GOLD = [
    {"first": "e0", "second": "e2", "answer": "first"},
    {"first": "e3", "second": "e1", "answer": "second"},
    {"first": "e4", "second": "e6", "answer": "tie"},
    {"first": "e5", "second": "e7", "answer": "first"},
    {"first": "e8", "second": "e10", "answer": "second"},
    {"first": "e9", "second": "e11", "answer": "first"},
    {"first": "e0", "second": "e4", "answer": "first"},
    {"first": "e1", "second": "e5", "answer": "second"},
]


def _gold_party(client: TestClient, **campaign: Any) -> Party:
    party = make_party(client, n_clips=12, n_raters=3, groups=2, **campaign)
    added = client.post(f"/v1/campaigns/{party.id}/gold", json={"pairs": GOLD}, headers=ADMIN)
    assert added.status_code == 201, added.text
    assert added.json() == {"added": len(GOLD), "total": len(GOLD)}
    return party


def _known(pair: dict[str, Any]) -> dict[frozenset[str], str | None]:
    """Gold pair -> the external id of the better clip (None for a tie)."""
    better = {"first": pair["first"], "second": pair["second"], "tie": None}[pair["answer"]]
    return {frozenset((pair["first"], pair["second"])): better}


KNOWN = {key: value for pair in GOLD for key, value in _known(pair).items()}


def _ask(client: TestClient, party: Party, rater: int) -> dict[str, Any]:
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code == 201, response.text
    return response.json()


def _judge(client: TestClient, party: Party, rater: int, assignment_id: int, choice: str) -> None:
    judged = client.post(
        f"/v1/assignments/{assignment_id}/judgment",
        json={"choice": choice},
        headers=party.rater(rater),
    )
    assert judged.status_code == 201, judged.text


def _pair(assignment: dict[str, Any]) -> frozenset[str]:
    return frozenset((assignment["left"]["external_id"], assignment["right"]["external_id"]))


def _right_answer(assignment: dict[str, Any]) -> str:
    better = KNOWN[_pair(assignment)]
    if better is None:
        return "tie"
    return "left" if assignment["left"]["external_id"] == better else "right"


def _wrong_answer(assignment: dict[str, Any]) -> str:
    return {"left": "right", "right": "left", "tie": "left"}[_right_answer(assignment)]


def test_gold_tasks_look_ordinary_and_never_move_clips(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = _gold_party(client, gold_rate=1.0)
        listed = client.get(f"/v1/campaigns/{party.id}/gold", headers=ADMIN).json()
        assert listed["gold_rate"] == 1.0
        assert len(listed["pairs"]) == len(GOLD)
        assert client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()["gold_rate"] == 1.0
        board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
        # rate 1: every task is gold while gold pairs the rater has not seen remain
        seen = []
        for _ in range(len(GOLD)):
            offer = _ask(client, party, 0)
            assignment = offer["assignment"]
            assert _pair(assignment) in KNOWN
            assert "gold" not in offer and "gold" not in str(assignment).lower()
            seen.append(_pair(assignment))
            _judge(client, party, 0, assignment["id"], _right_answer(assignment))
        assert len(set(seen)) == len(GOLD)  # never the same gold pair twice
        after = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
        assert after.pop("n_judgments") == len(GOLD)
        board.pop("n_judgments")
        assert after == board  # no clip's mean, interval, rank or label count moved
        ordinary = _ask(client, party, 0)["assignment"]
        assert set(ordinary) == set(assignment)  # a gold task's payload has the same fields
        raters = {
            r["id"]: r
            for r in client.get(f"/v1/campaigns/{party.id}/raters", headers=ADMIN).json()["raters"]
        }
        mine = raters[party.raters[0]["id"]]
        assert mine["labels"] == len(GOLD) and not mine["flagged"]
        exported = client.get(
            f"/v1/campaigns/{party.id}/export?format=jsonl&kind=judgments", headers=ADMIN
        ).text.splitlines()
        assert len(exported) == len(GOLD) and all('"gold": true' in line for line in exported)
        again = client.post(
            f"/v1/campaigns/{party.id}/imports",
            json={"key": "re", "format": "jsonl", "data": "\n".join(exported)},
            headers=ADMIN,
        )
        assert again.status_code == 400 and "gold" in again.json()["detail"]
        preferences = client.get(
            f"/v1/campaigns/{party.id}/export?format=jsonl&kind=preferences", headers=ADMIN
        ).text
        assert preferences == ""  # gold answers are no training pairs


def test_random_clicker_is_flagged_stopped_and_gold_survives_a_restart(
    settings: Settings,
) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = _gold_party(client, gold_rate=1.0)
        clicker = party.raters[1]["id"]
        for _ in range(5):
            assignment = _ask(client, party, 1)["assignment"]
            _judge(client, party, 1, assignment["id"], _wrong_answer(assignment))
        for _ in range(5):
            assignment = _ask(client, party, 2)["assignment"]
            _judge(client, party, 2, assignment["id"], _right_answer(assignment))
        raters = client.get(f"/v1/campaigns/{party.id}/raters", headers=ADMIN).json()["raters"]
        flags = {r["id"]: r["flagged"] for r in raters}
        assert flags[clicker] and not flags[party.raters[2]["id"]]
        board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
        stop = client.post(f"/v1/campaigns/{party.id}/raters/{clicker}/deactivate", headers=ADMIN)
        assert stop.status_code == 200 and stop.json()["active"] is False
        refused = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(1))
        assert refused.status_code == 403
        runtime = client.app.state.service.loaded_runtime(party.id)
        log = inspect(client, runtime, "log")
        assert sum(j.gold is not None for j in log) == 10
    with TestClient(app=create_app(settings)) as client:
        # replayed from the database: the gold answers are gold again, nothing moved
        assert client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json() == board
        raters = client.get(f"/v1/campaigns/{party.id}/raters", headers=ADMIN).json()["raters"]
        assert {r["id"]: r["flagged"] for r in raters} == flags
        runtime = client.app.state.service.loaded_runtime(party.id)
        assert sum(j.gold is not None for j in inspect(client, runtime, "log")) == 10
        listed = client.get(f"/v1/campaigns/{party.id}/gold", headers=ADMIN).json()["pairs"]
        assert len(listed) == len(GOLD)
        # the honest rater gets the gold pairs they have not answered, never one again
        seen = set()
        for _ in range(len(GOLD) - 5):
            assignment = _ask(client, party, 2)["assignment"]
            assert _pair(assignment) in KNOWN
            seen.add(_pair(assignment))
            _judge(client, party, 2, assignment["id"], _right_answer(assignment))
        assert len(seen) == len(GOLD) - 5


def test_bad_gold_input_is_refused_and_writes_nothing(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=6, n_raters=1, groups=2, ties=False)
        url = f"/v1/campaigns/{party.id}/gold"

        def refused(pairs: list[dict[str, Any]], status: int, words: str) -> None:
            response = client.post(url, json={"pairs": pairs}, headers=ADMIN)
            assert response.status_code == status, response.text
            assert words in response.json()["detail"]
            assert client.get(url, headers=ADMIN).json()["pairs"] == kept

        kept: list[dict[str, Any]] = []
        good = {"first": "e0", "second": "e2", "answer": "first"}
        refused([good, {"first": "e0", "second": "nope", "answer": "first"}], 400, "nope")
        refused([{"first": "e0", "second": "e0", "answer": "first"}], 400, "two different")
        refused([{"first": "e0", "second": "e2", "answer": "tie"}], 400, "ties")
        refused([{"first": "e0", "second": "e1", "answer": "first"}], 400, "prompt group")
        refused([good, {"first": "e2", "second": "e0", "answer": "second"}], 400, "twice")
        refused([{"first": "e0", "second": "e2", "answer": "left"}], 400, "answer")
        refused([], 400, "pairs")
        assert client.post(url, json={"pairs": [good]}, headers=ADMIN).status_code == 201
        kept = client.get(url, headers=ADMIN).json()["pairs"]
        assert len(kept) == 1
        again = client.post(url, json={"pairs": [good]}, headers=ADMIN)
        assert again.status_code == 201 and again.json() == {"added": 0, "total": 1}
        flipped = {"first": "e2", "second": "e0", "answer": "first"}
        refused([flipped], 409, "another answer")
        created = client.post("/v1/campaigns", json={"name": "x", "gold_rate": 1.5}, headers=ADMIN)
        assert created.status_code == 400
        assert (
            client.post("/v1/campaigns/999/gold", json={"pairs": [good]}, headers=ADMIN).status_code
            == 404
        )
        rater_call = client.post(url, json={"pairs": [good]}, headers=party.rater(0))
        assert rater_call.status_code in (401, 403)


def test_a_snapshot_with_gold_answers_restarts_to_the_full_replay(settings: Settings) -> None:
    """Gold and ordinary answers, a snapshot in between: a restart from the snapshot (tail
    replayed) and one from the whole log give the state before, gold answers still gold."""
    settings = replace(settings, snapshot_every=4)
    with TestClient(app=create_app(settings)) as client:
        party = _gold_party(client, gold_rate=0.5)
        # the campaign draws its gold seed at random: answer until both kinds are there
        ordinary = golden = 0
        for step in range(90):
            rater = step % 3
            assignment = _ask(client, party, rater)["assignment"]
            gold = _pair(assignment) in KNOWN
            choice = _wrong_answer(assignment) if gold and rater == 1 else "left"
            _judge(client, party, rater, assignment["id"], choice)
            ordinary, golden = ordinary + (not gold), golden + gold
            if step >= 23 and ordinary >= 8 and golden:
                break
        before = _reads(client, party.id)
        runtime = client.app.state.service.loaded_runtime(party.id)
        n_gold = sum(j.gold is not None for j in inspect(client, runtime, "log"))
        assert 0 < n_gold <= step + 1 - 8  # at least 8 ordinary labels: two snapshots of 4
        # a wait, not a timing: the snapshot is written in the background, and labels applied
        # in one micro-batch take one snapshot however many multiples of 4 they cross
        deadline = time.monotonic() + 60
        query = "SELECT max(labels) FROM campaign_snapshot WHERE campaign_id = :c"
        while (run_sql(settings, query, c=party.id)[0][0] or 0) < 4:
            assert time.monotonic() < deadline, "no snapshot with labels was written"
            time.sleep(0.05)
    with TestClient(app=create_app(settings)) as client:
        from_snapshot = _reads(client, party.id)
        assert _metric(client, "ratingparty_snapshots_total", event="loaded") == 1
        runtime = client.app.state.service.loaded_runtime(party.id)
        assert sum(j.gold is not None for j in inspect(client, runtime, "log")) <= n_gold
    with TestClient(app=create_app(replace(settings, snapshot_every=0))) as client:
        full = _reads(client, party.id)
        runtime = client.app.state.service.loaded_runtime(party.id)
        assert sum(j.gold is not None for j in inspect(client, runtime, "log")) == n_gold
    assert_close_structures(from_snapshot, full)
    assert_close_structures(before, full)


def test_the_gold_rate_changes_by_patch(settings: Settings) -> None:
    def is_gold(assignment: dict[str, Any]) -> bool:
        query = "SELECT gold FROM assignment WHERE id = :a"
        ((gold,),) = run_sql(settings, query, a=assignment["id"])
        return gold is not None

    with TestClient(app=create_app(settings)) as client:
        party = _gold_party(client)  # gold pairs, but rate 0: no gold task
        assert not any(is_gold(_ask(client, party, 0)["assignment"]) for _ in range(3))
        url = f"/v1/campaigns/{party.id}"
        assert client.patch(url, json={"gold_rate": 2}, headers=ADMIN).status_code == 400
        changed = client.patch(url, json={"gold_rate": 1.0}, headers=ADMIN)
        assert changed.status_code == 200 and changed.json()["gold_rate"] == 1.0
        assert all(is_gold(_ask(client, party, 1)["assignment"]) for _ in range(3))
        off = client.patch(url, json={"gold_rate": 0}, headers=ADMIN)
        assert off.status_code == 200 and off.json()["gold_rate"] == 0.0
        assert not any(is_gold(_ask(client, party, 2)["assignment"]) for _ in range(3))
