"""A campaign's life cycle over HTTP: pause, resume, close, reopen; settings changed mid-way;
all of it kept across a restart."""

from __future__ import annotations

from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import ADMIN, answer, make_party


def _ask(client: TestClient, party, rater: int) -> dict:
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code in (200, 201), response.text
    return response.json()


def _act(client: TestClient, cid: int, action: str) -> dict:
    response = client.post(f"/v1/campaigns/{cid}/{action}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def test_pause_resume_close_reopen(client: TestClient) -> None:
    party = make_party(client, n_clips=6, n_raters=2)
    assert client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()["state"] == "active"
    held = _ask(client, party, 0)
    assert held["state"] == "active" and held["assignment"] is not None

    assert _act(client, party.id, "pause")["state"] == "paused"
    paused = _ask(client, party, 1)
    assert paused["assignment"] is None and paused["state"] == "paused"
    assert "paused" in paused["message"]
    # an answer to a task handed out before the pause still counts
    judged = client.post(
        f"/v1/assignments/{held['assignment']['id']}/judgment",
        json={"choice": "left"},
        headers=party.rater(0),
    )
    assert judged.status_code == 201
    assert _act(client, party.id, "pause")["state"] == "paused"  # again: a no-op
    refused = client.post(f"/v1/campaigns/{party.id}/reopen", headers=ADMIN)
    assert refused.status_code == 409 and "paused" in refused.json()["detail"]

    assert _act(client, party.id, "resume")["state"] == "active"
    out = _ask(client, party, 1)
    assert out["assignment"] is not None

    assert _act(client, party.id, "close")["state"] == "closed"
    closed = _ask(client, party, 0)
    assert closed["assignment"] is None and closed["state"] == "closed"
    # the assignment open at the close was withdrawn
    late = client.post(
        f"/v1/assignments/{out['assignment']['id']}/judgment",
        json={"choice": "left"},
        headers=party.rater(1),
    )
    assert late.status_code == 410 and "closed" in late.json()["detail"]
    for action in ("resume", "pause"):
        response = client.post(f"/v1/campaigns/{party.id}/{action}", headers=ADMIN)
        assert response.status_code == 409, action
        assert "reopen" in response.json()["detail"]
    board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
    assert board["n_judgments"] == 1  # the label given while paused stays

    assert _act(client, party.id, "reopen")["state"] == "active"
    assert _ask(client, party, 1)["assignment"] is not None
    assert client.post(f"/v1/campaigns/{party.id}/pause").status_code == 401
    assert client.post("/v1/campaigns/999/pause", headers=ADMIN).status_code == 404


def test_settings_that_may_change_and_those_that_may_not(client: TestClient) -> None:
    party = make_party(client, n_clips=6, n_raters=2, emoji_levels=5, pair_scope="group")
    cid = party.id
    url = f"/v1/campaigns/{cid}"
    changed = client.patch(url, json={"lease_seconds": 7, "name": "renamed"}, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["lease_seconds"], changed.json()["name"]) == (7.0, "renamed")
    assert _ask(client, party, 0)["assignment"]["lease_seconds"] == 7.0

    # the scope changes while no label exists (the engine is rebuilt with it)
    assert client.patch(url, json={"pair_scope": "any"}, headers=ADMIN).json()["pair_scope"] == (
        "any"
    )
    for body, word in (({"ties": False}, "ties"), ({"criteria": ["z"]}, "criteria")):
        refused = client.patch(url, json=body, headers=ADMIN)
        assert refused.status_code == 409 and word in refused.json()["detail"]
    assert client.patch(url, json={"ties": True}, headers=ADMIN).status_code == 200  # unchanged
    assert client.patch(url, json={"lease_seconds": -1}, headers=ADMIN).status_code == 400
    assert client.patch(url, json={"colour": 1}, headers=ADMIN).status_code == 400

    # ratings off: only pairs are handed out
    assert (
        client.patch(url, json={"emoji_levels": None}, headers=ADMIN).json()["emoji_levels"] is None
    )
    for _ in range(6):
        assert answer(client, party, 1)["kind"] == "pair"
    refused = client.patch(url, json={"pair_scope": "group"}, headers=ADMIN)
    assert refused.status_code == 409 and "no label" in refused.json()["detail"]
    # another scale is fine while no rating was given on the old one
    assert client.patch(url, json={"emoji_levels": 3}, headers=ADMIN).json()["emoji_levels"] == 3
    board = client.get(f"{url}/leaderboard", headers=ADMIN).json()
    assert board["n_judgments"] == 6  # the rebuild replayed every label
    ratings = 0
    for _ in range(30):
        shown = _ask(client, party, 0)["assignment"]
        if shown is None:
            break
        body = {"choice": "left"} if shown["kind"] == "pair" else {"level": 2}
        if shown["kind"] == "rating":
            assert shown["emoji_levels"] == 3
            ratings += 1
        response = client.post(
            f"/v1/assignments/{shown['id']}/judgment", json=body, headers=party.rater(0)
        )
        assert response.status_code == 201, response.text
        if ratings:
            break
    assert ratings == 1
    refused = client.patch(url, json={"emoji_levels": 5}, headers=ADMIN)
    assert refused.status_code == 409 and "3-level" in refused.json()["detail"]
    assert client.patch(url, json={"emoji_levels": None}, headers=ADMIN).status_code == 200
    assert client.patch(url, json={"emoji_levels": 3}, headers=ADMIN).status_code == 200


def test_state_and_settings_survive_a_restart(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=6, n_raters=2, emoji_levels=5)
        answer(client, party, 0)
        held = _ask(client, party, 1)["assignment"]
        client.patch(
            f"/v1/campaigns/{party.id}",
            json={"lease_seconds": 9, "emoji_levels": None},
            headers=ADMIN,
        )
        _act(client, party.id, "close")
    with TestClient(app=create_app(settings)) as client:
        campaign = client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()
        assert (campaign["state"], campaign["lease_seconds"], campaign["emoji_levels"]) == (
            "closed",
            9.0,
            None,
        )
        assert _ask(client, party, 0)["state"] == "closed"
        body = {"choice": "left"} if held["kind"] == "pair" else {"level": 1}
        late = client.post(
            f"/v1/assignments/{held['id']}/judgment", json=body, headers=party.rater(1)
        )
        assert late.status_code == 410  # withdrawn at the close, also after the restart
        _act(client, party.id, "reopen")
        for _ in range(4):
            assert answer(client, party, 0)["kind"] == "pair"  # ratings stay off
