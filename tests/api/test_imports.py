"""Importing past judgments over HTTP: all or nothing, idempotent by key, in order, in the
export afterwards and replayed after a restart."""

from __future__ import annotations

import json

from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import ADMIN, answer, make_party

CSV = """rater,left,right,choice,level,time
ann,e0,e2,left,,2024-05-01T10:00:00Z
bob,e2,e4,tie,,2024-05-01T10:01:00
ann,e4,e0,right,,
ann,e1,,,3,2024-05-01T10:02:00+02:00
"""


def _import(client: TestClient, cid: int, key: str, data: str, fmt: str = "csv"):
    return client.post(
        f"/v1/campaigns/{cid}/imports",
        json={"key": key, "format": fmt, "data": data},
        headers=ADMIN,
    )


def _export(client: TestClient, cid: int) -> list[dict]:
    text = client.get(f"/v1/campaigns/{cid}/export", params={"format": "jsonl"}, headers=ADMIN).text
    return [json.loads(line) for line in text.splitlines()]


def test_import_is_all_or_nothing_idempotent_and_in_the_export(settings: Settings) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = make_party(client, n_clips=6, n_raters=1, emoji_levels=5)
        answer(client, party, 0)  # one live label before the import
        bad = CSV + "carl,e0,nope,left,,\ncarl,e0,e1,sideways,,\n"
        refused = _import(client, party.id, "k1", bad)
        assert refused.status_code == 400
        detail = refused.json()["detail"]
        assert "line 6" in detail and "'nope'" in detail and "line 7" in detail
        assert len(_export(client, party.id)) == 1  # nothing of it was written
        assert (
            len(client.get(f"/v1/campaigns/{party.id}/raters", headers=ADMIN).json()["raters"]) == 1
        )

        done = _import(client, party.id, "k1", CSV)
        assert done.status_code == 201, done.text
        assert done.json() == {
            "key": "k1",
            "imported": 4,
            "raters_created": ["ann", "bob"],
            "duplicate": False,
        }
        again = _import(client, party.id, "k1", CSV)
        assert again.status_code == 200 and again.json() == {**done.json(), "duplicate": True}
        clash = _import(client, party.id, "k1", CSV.replace("tie", "left"))
        assert clash.status_code == 409 and "k1" in clash.json()["detail"]

        rows = _export(client, party.id)
        assert len(rows) == 5
        imported = rows[1:]
        assert [
            (r["rater_name"], r["left_external_id"], r["right_external_id"]) for r in imported
        ] == [
            ("ann", "e0", "e2"),
            ("bob", "e2", "e4"),
            ("ann", "e4", "e0"),
            ("ann", "e1", None),
        ]
        assert [r["choice"] for r in imported] == ["left", "tie", "right", None]
        assert imported[3]["level"] == 3
        assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)  # applied in order
        assert imported[0]["created_at"].startswith("2024-05-01T10:00:00")
        assert imported[3]["created_at"].startswith("2024-05-01T08:02:00")  # as UTC
        board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
        assert board["n_judgments"] == 5
        labels = {c["external_id"]: c["labels"] for c in board["clips"]}
        assert labels["e1"] >= 1 and labels["e0"] >= 2
        # a rater of the same name is the same rater: no new one the second time
        more = _import(
            client,
            party.id,
            "k2",
            '{"rater": "ann", "left": "e3", "right": "e5", "choice": "left"}\n',
            "jsonl",
        )
        assert more.status_code == 201 and more.json()["raters_created"] == []
        before = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
    with TestClient(app=create_app(settings)) as client:  # replayed after a restart
        after = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
        assert after["n_judgments"] == 6
        for x, y in zip(before["clips"], after["clips"], strict=True):
            assert x["external_id"] == y["external_id"]
            assert abs(x["mean"] - y["mean"]) < 1e-9
        assert _import(client, party.id, "k1", CSV).json()["duplicate"] is True


def test_import_refuses_what_the_campaign_cannot_take(client: TestClient) -> None:
    party = make_party(client, n_clips=4, n_raters=0, ties=False)
    cases = [
        ("rater,left,right,choice\nann,e0,e1,tie\n", "ties"),
        ("rater,left,right,level\nann,e0,,2\n", "emoji scale"),
        ("rater,left,right,choice\nann,e0,e0,left\n", "same clip"),
        ("rater,left,right,choice\n,e0,e1,left\n", "'rater' is missing"),
        ("rater,left,right,choice,time\nann,e0,e1,left,yesterday\n", "ISO 8601"),
        ("", "no records"),
    ]
    for data, words in cases:
        response = _import(client, party.id, "k", data)
        assert response.status_code == 400, data
        assert words in response.json()["detail"], response.json()["detail"]
    assert _import(client, party.id, "k", "[1]\n", "jsonl").status_code == 400
    assert (
        client.post(
            f"/v1/campaigns/{party.id}/imports",
            json={"key": "k", "format": "xml", "data": ""},
            headers=ADMIN,
        ).status_code
        == 400
    )
    assert (
        client.post(
            f"/v1/campaigns/{party.id}/imports", json={"key": "k", "format": "csv", "data": "x"}
        ).status_code
        == 401
    )
    assert _export(client, party.id) == []
