"""The operator's controls over HTTP: retire and restore a clip, deactivate and reactivate a
rater, and the pairs and clips that repeated skips withdraw for everyone."""

from __future__ import annotations

from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import ADMIN, answer, clip_batch, make_party


def _ask(client: TestClient, party, rater: int) -> dict | None:
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
    assert response.status_code in (200, 201), response.text
    return response.json()["assignment"]


def _judge(client: TestClient, party, rater: int, shown: dict, choice: str = "left"):
    body = {"choice": choice} if shown["kind"] == "pair" else {"level": 1}
    return client.post(
        f"/v1/assignments/{shown['id']}/judgment", json=body, headers=party.rater(rater)
    )


def _ids(shown: dict) -> set[str]:
    return {
        shown["left"]["external_id"],
        *([shown["right"]["external_id"]] if shown["right"] else []),
    }


def test_a_retired_clip_is_never_offered_and_its_labels_stay(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=5, n_raters=3, groups=1, pair_scope="any")
        for step in range(4):
            answer(client, party, step % 3)
        held = _ask(client, party, 0)
        target = held["left"]  # a clip some rater holds right now
        board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
        labels_before = {c["external_id"]: c["labels"] for c in board["clips"]}
        retired = client.post(
            f"/v1/campaigns/{party.id}/clips/{target['id']}/retire", headers=ADMIN
        )
        assert retired.status_code == 200 and retired.json()["retired"] is True
        late = _judge(client, party, 0, held)
        assert late.status_code == 410 and "retired" in late.json()["detail"]
        for step in range(12):
            shown = _ask(client, party, step % 3)
            if shown is None:
                continue
            assert target["external_id"] not in _ids(shown)
            assert _judge(client, party, step % 3, shown).status_code == 201
        board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
        row = next(c for c in board["clips"] if c["id"] == target["id"])
        assert row["state"] == "retired"
        assert row["labels"] == labels_before[target["external_id"]]  # its labels stay
        missing = client.post(f"/v1/campaigns/{party.id}/clips/99999/retire", headers=ADMIN)
        assert missing.status_code == 404
        assert client.post(f"/v1/campaigns/{party.id}/clips/{target['id']}/retire").status_code == (
            401
        )
    with TestClient(app=create_app(settings)) as client:  # still retired after a restart
        for step in range(6):
            shown = _ask(client, party, step % 3)
            if shown is not None:
                assert target["external_id"] not in _ids(shown)
                _judge(client, party, step % 3, shown)
        restored = client.post(
            f"/v1/campaigns/{party.id}/clips/{target['id']}/restore", headers=ADMIN
        )
        assert restored.status_code == 200 and restored.json()["retired"] is False
        seen = set()
        for step in range(30):
            shown = _ask(client, party, step % 3)
            if shown is None:
                continue
            seen |= _ids(shown)
            _judge(client, party, step % 3, shown)
            if target["external_id"] in seen:
                break
        assert target["external_id"] in seen


def test_a_deactivated_rater_gets_no_tasks_and_keeps_their_labels(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=6, n_raters=2)
        first = answer(client, party, 0)
        held = _ask(client, party, 0)
        rater_id = party.raters[0]["id"]
        off = client.post(f"/v1/campaigns/{party.id}/raters/{rater_id}/deactivate", headers=ADMIN)
        assert off.status_code == 200 and off.json()["active"] is False
        refused = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0))
        assert refused.status_code == 403 and "deactivated" in refused.json()["detail"]
        assert _judge(client, party, 0, held).status_code == 410
        # an answer acknowledged before is still acknowledged (a client's retry)
        again = _judge(client, party, 0, first)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        raters = client.get(f"/v1/campaigns/{party.id}/raters", headers=ADMIN).json()["raters"]
        mine = next(r for r in raters if r["id"] == rater_id)
        assert (mine["active"], mine["labels"]) == (False, 1)
        assert answer(client, party, 1)  # the others go on
    with TestClient(app=create_app(settings)) as client:
        refused = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0))
        assert refused.status_code == 403
        on = client.post(f"/v1/campaigns/{party.id}/raters/{rater_id}/reactivate", headers=ADMIN)
        assert on.status_code == 200 and on.json()["active"] is True
        assert answer(client, party, 0)
        assert (
            client.post(f"/v1/campaigns/{party.id}/raters/99999/deactivate", headers=ADMIN)
        ).status_code == 404


def test_a_pair_skipped_by_several_raters_is_withdrawn_for_everyone(client: TestClient) -> None:
    created = client.post(
        "/v1/campaigns",
        json={"name": "s", "criteria": ["a", "b"], "skip_limit": 2},
        headers=ADMIN,
    ).json()
    cid = created["id"]
    assert created["skip_limit"] == 2
    # two clips of one prompt: one pair in scope
    clips = client.post(
        f"/v1/campaigns/{cid}/clips", json={"clips": clip_batch(2, groups=1)}, headers=ADMIN
    ).json()["clips"]
    tokens = [
        client.post(f"/v1/campaigns/{cid}/raters", json={}, headers=ADMIN).json()["token"]
        for _ in range(3)
    ]

    def ask(token: str) -> dict | None:
        auth = {"Authorization": f"Bearer {token}"}
        return client.post(f"/v1/campaigns/{cid}/assignments", headers=auth).json()["assignment"]

    for token in tokens[:2]:
        shown = ask(token)
        assert shown is not None
        skipped = client.post(
            f"/v1/assignments/{shown['id']}/judgment",
            json={"choice": "skip"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert skipped.status_code == 201
    assert ask(tokens[2]) is None  # withdrawn for the third rater too
    flags = client.get(f"/v1/campaigns/{cid}/skipped", headers=ADMIN).json()
    assert flags["skip_limit"] == 2 and flags["clips"] == []
    assert len(flags["tasks"]) == 1 and flags["tasks"][0]["raters"] == 2
    assert {flags["tasks"][0]["left"]["id"], flags["tasks"][0]["right"]["id"]} == {
        c["id"] for c in clips
    }
    # the operator restores one of its clips: the pair is offered again
    client.post(f"/v1/campaigns/{cid}/clips/{clips[0]['id']}/restore", headers=ADMIN)
    assert client.get(f"/v1/campaigns/{cid}/skipped", headers=ADMIN).json()["tasks"] == []
    assert ask(tokens[2]) is not None


def test_a_clip_whose_pairs_several_raters_skip_is_withdrawn(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=5, n_raters=3, groups=1)
        bad = "e0"
        flags: dict = {}
        for step in range(60):
            rater = step % 3
            shown = _ask(client, party, rater)
            if shown is None:
                continue
            choice = "skip" if bad in _ids(shown) else "left"
            assert _judge(client, party, rater, shown, choice).status_code == 201
            flags = client.get(f"/v1/campaigns/{party.id}/skipped", headers=ADMIN).json()
            if flags["clips"]:
                break
        assert [c["clip"]["external_id"] for c in flags["clips"]] == [bad]
        assert flags["clips"][0]["raters"] >= 3 and flags["clips"][0]["tasks"] >= 2
        board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
        assert next(c for c in board["clips"] if c["external_id"] == bad)["state"] == "withdrawn"
        for step in range(9):
            shown = _ask(client, party, step % 3)
            if shown is not None:
                assert bad not in _ids(shown)
                _judge(client, party, step % 3, shown)
    with TestClient(app=create_app(settings)) as client:  # rebuilt from the skips in the log
        again = client.get(f"/v1/campaigns/{party.id}/skipped", headers=ADMIN).json()
        assert again == flags
