"""Answers: idempotency, 409 on a changed answer, 410 after the lease, skips, answer rules."""

from __future__ import annotations

import time

from litestar.testing import TestClient

from api.task_keys import task_key
from tests.api.conftest import ADMIN, answer, inspect, make_party, pending_tasks


def _assign(client: TestClient, party, rater: int = 0) -> dict:
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code == 201, response.text
    return response.json()["assignment"]


def _judge(client: TestClient, party, assignment_id: int, body: dict, rater: int = 0):
    return client.post(
        f"/v1/assignments/{assignment_id}/judgment", json=body, headers=party.rater(rater)
    )


def _labels(client: TestClient, party) -> int:
    return client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()["n_judgments"]


def test_same_answer_twice_is_one_label_and_a_different_one_is_409(client: TestClient) -> None:
    party = make_party(client)
    a = _assign(client, party)
    first = _judge(client, party, a["id"], {"choice": "left"})
    again = _judge(client, party, a["id"], {"choice": "left"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {**first.json(), "duplicate": True}
    assert _labels(client, party) == 1
    changed = _judge(client, party, a["id"], {"choice": "right"})
    assert changed.status_code == 409
    assert "already answered with choice 'left'" in changed.json()["detail"]
    skip = _judge(client, party, a["id"], {"choice": "skip"})
    assert skip.status_code == 409
    assert _labels(client, party) == 1
    rows = client.get(f"/v1/campaigns/{party.id}/export?format=jsonl", headers=ADMIN).text
    assert len(rows.splitlines()) == 1


def test_expired_assignment_is_410_and_its_pair_is_released(client: TestClient) -> None:
    party = make_party(client, n_clips=4, groups=1, lease_seconds=0.3)
    a = _assign(client, party)
    service = client.app.state.service
    runtime = service.loaded_runtime(party.id)
    held = {(t.first, t.second) for t in pending_tasks(client, runtime)}
    state = runtime.assignments[a["id"]]
    assert (state.first, state.second) in held
    time.sleep(0.45)
    late = _judge(client, party, a["id"], {"choice": "left"})
    assert late.status_code == 410
    assert "expired" in late.json()["detail"] and "lease 0.3 s" in late.json()["detail"]
    # the pump releases it from the engine's pending set (lazily, within a moment)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if all(t.id != state.task_id for t in pending_tasks(client, runtime)):
            break
        time.sleep(0.02)
    assert all(t.id != state.task_id for t in pending_tasks(client, runtime))
    assert _labels(client, party) == 0
    unknown = _judge(client, party, 987654, {"choice": "left"})
    assert unknown.status_code == 404
    assert "assignment 987654 not found" in unknown.json()["detail"]


def test_skip_closes_without_a_label(client: TestClient) -> None:
    party = make_party(client)
    a = _assign(client, party)
    skipped = _judge(client, party, a["id"], {"choice": "skip"})
    assert skipped.status_code == 201
    assert skipped.json()["choice"] == "skip" and skipped.json()["level"] is None
    assert _judge(client, party, a["id"], {"choice": "skip"}).json()["duplicate"] is True
    assert _labels(client, party) == 0
    raters = client.get(f"/v1/campaigns/{party.id}/raters", headers=ADMIN).json()["raters"]
    assert (raters[0]["labels"], raters[0]["skips"]) == (0, 1)


def test_answer_must_fit_the_task(client: TestClient) -> None:
    party = make_party(client, n_clips=4, groups=1, ties=False, emoji_levels=3)
    kinds: dict[str, dict] = {}
    answered = 0
    for _ in range(8):
        a = _assign(client, party)
        if a["kind"] in kinds:  # answer the ones we do not keep open
            body = {"level": 1} if a["kind"] == "rating" else {"choice": "left"}
            assert _judge(client, party, a["id"], body).status_code == 201
            answered += 1
        kinds.setdefault(a["kind"], a)
        if len(kinds) == 2:
            break
    assert set(kinds) == {"pair", "rating"}
    pair, rating = kinds["pair"], kinds["rating"]
    assert pair["choices"] == ["left", "right", "skip"]
    cases = [
        (pair, {"choice": "tie"}, "does not allow ties"),
        (pair, {"level": 1}, "is a pair"),
        (rating, {"choice": "left"}, "is an emoji rating"),
        (rating, {"level": 3}, "levels 0..2"),
        (pair, {}, "exactly one of 'choice' or 'level'"),
        (pair, {"choice": "left", "level": 1}, "exactly one of 'choice' or 'level'"),
    ]
    for assignment, body, message in cases:
        response = _judge(client, party, assignment["id"], body)
        assert response.status_code == 400, (body, response.text)
        assert message in response.json()["detail"], (body, response.json())
    assert _labels(client, party) == answered
    assert _judge(client, party, rating["id"], {"level": 2}).status_code == 201
    assert _judge(client, party, pair["id"], {"choice": "right"}).status_code == 201
    assert _judge(client, party, rating["id"], {"choice": "skip"}).status_code == 409
    assert _labels(client, party) == answered + 2


def test_left_right_order_maps_to_the_right_winner(client: TestClient) -> None:
    """Whatever side a clip was shown on, choosing it makes it the winner in the engine."""
    party = make_party(client, n_clips=2, groups=1, ties=False, lease_seconds=60)
    a = _assign(client, party)
    _judge(client, party, a["id"], {"choice": "left"})
    service = client.app.state.service
    runtime = service.loaded_runtime(party.id)
    board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
    best = board["clips"][0]["external_id"]
    assert best == a["left"]["external_id"]
    assert inspect(client, runtime, "log")[0].answer.value in ("win", "loss")


def test_queued_pairs_every_active_rater_judged_are_released(client: TestClient) -> None:
    """Queued pairs that every rater who asked lately has judged are released when a request
    finds nothing queued for its rater (chosen for no rater in particular, they would
    otherwise fill the queue for good)."""
    party = make_party(client, n_clips=4, n_raters=1, groups=1, ties=False)
    for _ in range(6):  # every pair, by the campaign's only rater
        answer(client, party, 0)
    runtime = client.app.state.service.loaded_runtime(party.id)
    assert len(runtime.answered.keys(party.raters[0]["id"])) == 6
    deadline = time.monotonic() + 5
    while not runtime.queue.depth and time.monotonic() < deadline:  # the pump refills
        time.sleep(0.02)
    stale = {task.id for task in runtime.queue.tasks()}
    assert stale, "nothing queued: the set-up tests nothing"
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0))
    assert response.status_code == 200, response.text  # nothing left for them
    assert response.json()["assignment"] is None
    # out of the queue at once (the idle refresh would replace them only after 0.25 s)
    assert not stale & {task.id for task in runtime.queue.tasks()}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not {t.id for t in pending_tasks(client, runtime)} & stale:
            break
        time.sleep(0.02)
    assert not {t.id for t in pending_tasks(client, runtime)} & stale


def test_refills_leave_out_pairs_every_active_rater_judged(client: TestClient) -> None:
    """A refill chooses no pair that every rater who asked lately has judged (it could not be
    handed out), and finding none such is not 'nothing left' for a rater who did not ask yet."""
    party = make_party(client, n_clips=3, n_raters=2, groups=1, ties=False)
    for _ in range(3):  # rater 0 judges all three pairs; rater 1 has not asked yet
        answer(client, party, 0)
    runtime = client.app.state.service.loaded_runtime(party.id)
    judged = runtime.answered.keys(party.raters[0]["id"])
    assert len(judged) == 3
    done = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0))
    assert done.status_code == 200 and done.json()["assignment"] is None
    assert "judged every pair" in done.json()["message"]
    deadline = time.monotonic() + 5
    while not runtime.queue.spent and time.monotonic() < deadline:  # the pump's refill found none
        time.sleep(0.02)
    assert runtime.queue.spent and not runtime.queue.exhausted
    # a refill under way when rater 0 last asked may have queued a pair they judged meanwhile:
    # asking again releases it (the queue's pruning); later refills must not bring such back
    again = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0))
    assert again.status_code == 200 and again.json()["assignment"] is None
    time.sleep(0.4)  # past REFRESH_IDLE_S: idle refreshes leave them out too
    assert not [t for t in runtime.queue.tasks() if task_key(t.first, t.second) in judged]
    shown = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(1))
    assert shown.status_code == 201, shown.text
    assert shown.json()["assignment"]["kind"] == "pair"
