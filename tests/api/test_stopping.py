"""The stopping rule over HTTP: a campaign whose targets are met hands out no task and says
so, its progress says which target is met, and raising a target opens it again."""

from __future__ import annotations

from litestar.testing import TestClient

from tests.api.conftest import ADMIN, make_party


def _ask(client: TestClient, party, rater: int) -> dict:
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code in (200, 201), response.text
    return response.json()


def _progress(client: TestClient, cid: int) -> dict:
    response = client.get(f"/v1/campaigns/{cid}/progress", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def _answer(client: TestClient, party, rater: int, assignment: dict) -> None:
    # the clip with the smaller external id always wins: consistent labels
    left, right = assignment["left"]["external_id"], assignment["right"]["external_id"]
    judged = client.post(
        f"/v1/assignments/{assignment['id']}/judgment",
        json={"choice": "left" if left < right else "right"},
        headers=party.rater(rater),
    )
    assert judged.status_code == 201, judged.text


def test_a_met_target_stops_the_campaign_and_a_raised_one_reopens_it(client: TestClient) -> None:
    # three clips, three raters: nine pair labels at most; the widest interval starts near
    # 4.7 and falls below 4.2 after a few consistent labels
    party = make_party(
        client, n_clips=3, n_raters=3, groups=1, pair_scope="any", targets={"interval_width": 4.2}
    )
    start = _progress(client, party.id)
    assert not start["done"] and start["targets"][0]["name"] == "interval_width"
    assert start["targets"][0]["distance"] > 0
    done = None
    for step in range(9):
        out = _ask(client, party, step % 3)
        if out["assignment"] is None:
            done = out
            break
        _answer(client, party, step % 3, out["assignment"])
        _progress(client, party.id)  # a read applies the labels committed so far
    assert done is not None and done["state"] == "done", done
    assert "interval_width" in done["message"] and "met" in done["message"]
    met = _progress(client, party.id)
    assert met["done"] and met["targets"][0]["met"] and met["targets"][0]["distance"] == 0
    # asked again: still done (nothing changed)
    assert _ask(client, party, 0)["state"] == "done"

    raised = client.patch(
        f"/v1/campaigns/{party.id}", json={"targets": {"interval_width": 2.0}}, headers=ADMIN
    )
    assert raised.status_code == 200, raised.text
    assert not _progress(client, party.id)["done"]
    again = [_ask(client, party, r) for r in range(3)]
    assert any(out["assignment"] is not None for out in again), again
    assert all(out["state"] == "active" for out in again)

    # no target at all: never done
    cleared = client.patch(f"/v1/campaigns/{party.id}", json={"targets": None}, headers=ADMIN)
    assert cleared.status_code == 200, cleared.text
    assert _progress(client, party.id)["targets"] == []


def test_targets_are_checked(client: TestClient) -> None:
    body = {"name": "bad", "targets": {"confidence": 0.9}}
    refused = client.post("/v1/campaigns", json=body, headers=ADMIN)
    assert refused.status_code == 400 and "confidence" in refused.json()["detail"]
    body = {"name": "bad", "targets": {"kendall_tau": 1.5}}
    assert client.post("/v1/campaigns", json=body, headers=ADMIN).status_code == 400
