"""Position bias over HTTP: a campaign that learns the raters' side offsets from the side
each pair was shown on (the service draws it), reports them with the raters, and replays
them after a restart."""

from __future__ import annotations

from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import ADMIN, make_party


def _left_clicks(client: TestClient, party, rater: int, count: int) -> None:
    """`count` answers of a rater who always picks the clip shown left."""
    for _ in range(count):
        response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
        assert response.status_code == 201, response.text
        assignment = response.json()["assignment"]
        body = {"choice": "left"} if assignment["kind"] == "pair" else {"level": 1}
        judged = client.post(
            f"/v1/assignments/{assignment['id']}/judgment", json=body, headers=party.rater(rater)
        )
        assert judged.status_code == 201, judged.text


def _raters(client: TestClient, cid: int) -> dict:
    response = client.get(f"/v1/campaigns/{cid}/raters", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def test_side_offsets_are_learned_reported_and_replayed(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = make_party(
            client,
            n_clips=16,
            n_raters=2,
            groups=2,
            side_bias={"global_sd": 0.5, "rater_sd": 0.5},
        )
        campaign = client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()
        assert campaign["side_bias"] == {"global_sd": 0.5, "rater_sd": 0.5}
        _left_clicks(client, party, 0, 24)  # a rater who always clicks left
        before = _raters(client, party.id)
        clicker = next(r for r in before["raters"] if r["name"] == "r0")
        idle = next(r for r in before["raters"] if r["name"] == "r1")
        # every pair went left whichever clip it was: the side explains it, not the clips
        assert clicker["side_offset"]["mean"] > 2 * clicker["side_offset"]["sd"] > 0
        assert before["side_offset"]["mean"] > 0
        assert idle["side_offset"] is None  # no comparison with a side yet
    with TestClient(app=create_app(settings)) as client:  # a restart replays the database
        after = _raters(client, party.id)
    assert after["side_offset"] == before["side_offset"]
    assert after["raters"] == before["raters"]


def test_a_campaign_without_a_side_bias_reports_none(client: TestClient) -> None:
    party = make_party(client, n_clips=8, n_raters=1)
    assert client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()["side_bias"] is None
    _left_clicks(client, party, 0, 3)
    raters = _raters(client, party.id)
    assert raters["side_offset"] is None
    assert raters["raters"][0]["side_offset"] is None


def test_side_bias_settings_are_checked(client: TestClient) -> None:
    for bad in ({"global_sd": 0}, {"rater_sd": -1}, {"global_sd": "wide"}, {"spread": 1}):
        refused = client.post(
            "/v1/campaigns", json={"name": "bad", "side_bias": bad}, headers=ADMIN
        )
        assert refused.status_code == 400, refused.text
    listed = client.get("/v1/campaigns", headers=ADMIN).json()["campaigns"]
    assert all(c["name"] != "bad" for c in listed)
    party = make_party(client, n_clips=4, n_raters=1)
    changed = client.patch(
        f"/v1/campaigns/{party.id}", json={"side_bias": {"global_sd": 1.0}}, headers=ADMIN
    )
    assert changed.status_code == 400, changed.text
