"""Raters act only with their own token, on their own assignments, in their own campaign."""

from __future__ import annotations

from litestar.testing import TestClient

from tests.api.conftest import ADMIN, make_party


def test_rater_a_cannot_answer_rater_b_assignment(client: TestClient) -> None:
    party = make_party(client, n_clips=4, n_raters=2, groups=1)
    a = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0)).json()
    b = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(1)).json()
    a_id, b_id = a["assignment"]["id"], b["assignment"]["id"]
    stolen = client.post(
        f"/v1/assignments/{b_id}/judgment", json={"choice": "left"}, headers=party.rater(0)
    )
    assert stolen.status_code == 404
    assert stolen.json()["detail"] == f"assignment {b_id} not found for this rater"
    own = client.post(
        f"/v1/assignments/{b_id}/judgment", json={"choice": "right"}, headers=party.rater(1)
    )
    assert own.status_code == 201 and own.json()["choice"] == "right"
    assert (
        client.post(
            f"/v1/assignments/{a_id}/judgment", json={"choice": "left"}, headers=party.rater(0)
        ).status_code
        == 201
    )


def test_nothing_crosses_campaigns(client: TestClient) -> None:
    first = make_party(client, n_clips=4, n_raters=1, groups=1)
    second = make_party(client, n_clips=4, n_raters=1, groups=1)
    held = client.post(f"/v1/campaigns/{first.id}/assignments", headers=first.rater(0)).json()
    crossing = client.post(f"/v1/campaigns/{first.id}/assignments", headers=second.rater(0))
    assert crossing.status_code == 403
    answer = client.post(
        f"/v1/assignments/{held['assignment']['id']}/judgment",
        json={"choice": "left"},
        headers=second.rater(0),
    )
    assert answer.status_code == 404
    assert (
        client.get(f"/v1/campaigns/{first.id}/leaderboard", headers=first.rater(0)).status_code
        == 200
    )
    assert (
        client.get(f"/v1/campaigns/{first.id}/leaderboard", headers=second.rater(0)).status_code
        == 401
    )
    # the two campaigns' clips never meet
    second_clips = set(second.clip_ids)
    shown = held["assignment"]
    assert {shown["left"]["id"], shown["right"]["id"]}.isdisjoint(second_clips)
    board = client.get(f"/v1/campaigns/{second.id}/leaderboard", headers=ADMIN).json()
    assert {c["id"] for c in board["clips"]} == second_clips and board["n_judgments"] == 0
