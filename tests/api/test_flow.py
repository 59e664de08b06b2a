"""The whole flow over HTTP through the real app, with the response shapes the pages rely on."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

from litestar.testing import TestClient

from tests.api.conftest import ADMIN, answer, clip_batch, make_party

CLIP_KEYS = {"id", "external_id", "uri", "group", "context"}


def test_campaign_create_list_read(client: TestClient) -> None:
    created = client.post(
        "/v1/campaigns",
        json={
            "name": "p",
            "criteria": ["x"],
            "pair_scope": "any",
            "ties": False,
            "emoji_levels": 5,
            "lease_seconds": 30,
        },
        headers=ADMIN,
    )
    assert created.status_code == 201
    campaign = created.json()
    assert campaign | {"id": 0, "created_at": ""} == {
        "id": 0,
        "name": "p",
        "criteria": ["x"],
        "pair_scope": "any",
        "ties": False,
        "emoji_levels": 5,
        "lease_seconds": 30.0,
        "n_clips": 0,
        "n_raters": 0,
        "n_judgments": 0,
        "created_at": "",
        "state": "active",
        "skip_limit": 3,
        "side_bias": None,
        "gold_rate": 0.0,
        "safety_threshold": None,
        "report_limit": 1,
        "structure": "dense",
        "min_labels": 2,
        "prior_refit": "split",
        "targets": None,
        "both_threshold": None,
        "kset": None,
        "feature_dim": 0,
        "criterion_questions": [],
    }
    assert datetime.fromisoformat(campaign["created_at"]).utcoffset().total_seconds() == 0
    defaults = client.post("/v1/campaigns", json={"name": "d"}, headers=ADMIN).json()
    assert defaults["criteria"] == [
        "alignment",
        "safety",
        "fineness",
        "coherence_consistency",
        "bias_fairness",
    ]
    assert (defaults["pair_scope"], defaults["ties"], defaults["emoji_levels"]) == (
        "group",
        True,
        None,
    )
    listed = client.get("/v1/campaigns", headers=ADMIN).json()["campaigns"]
    assert [c["id"] for c in listed] == [campaign["id"], defaults["id"]]
    read = client.get(f"/v1/campaigns/{campaign['id']}", headers=ADMIN).json()
    assert read == campaign


def test_whole_flow(client: TestClient) -> None:
    party = make_party(client, n_clips=6, n_raters=2, emoji_levels=5)
    labels = 0
    for round_ in range(6):
        for rater in (0, 1):
            response = client.post(
                f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater)
            )
            assert response.status_code == 201
            out = response.json()
            assert out["message"] is None
            a = out["assignment"]
            assert set(a) >= {
                "id",
                "kind",
                "left",
                "right",
                "expires_at",
                "lease_seconds",
                "choices",
                "emoji_levels",
            }
            assert set(a["left"]) == CLIP_KEYS
            assert a["emoji_levels"] == 5 and a["lease_seconds"] == 120.0
            assert datetime.fromisoformat(a["expires_at"]).utcoffset().total_seconds() == 0
            if a["kind"] == "pair":
                assert set(a["right"]) == CLIP_KEYS and a["left"]["group"] == a["right"]["group"]
                assert a["choices"] == ["left", "right", "tie", "skip"]
                body = {"choice": ("left", "right", "tie")[round_ % 3]}
            else:
                assert a["right"] is None and a["choices"] == ["skip"]
                body = {"level": round_ % 5}
            judged = client.post(
                f"/v1/assignments/{a['id']}/judgment", json=body, headers=party.rater(rater)
            )
            assert judged.status_code == 201
            j = judged.json()
            assert j == {
                "assignment_id": a["id"],
                "judgment_id": j["judgment_id"],
                "choice": body.get("choice"),
                "level": body.get("level"),
                "duplicate": False,
            }
            labels += 1
    board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
    assert board["campaign_id"] == party.id and board["n_judgments"] == labels
    assert board["level"] == 0.9 and 0 < board["expected_kendall_tau"] < 1
    assert [c["rank"] for c in board["clips"]] == list(range(1, 7))
    for clip in board["clips"]:
        assert set(clip) >= CLIP_KEYS and clip["lower"] < clip["mean"] < clip["upper"]
        assert clip["sd"] > 0
    # every pair label counts for two clips, every rating for one
    assert sum(c["labels"] for c in board["clips"]) >= labels
    campaign = client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()
    assert (campaign["n_clips"], campaign["n_raters"], campaign["n_judgments"]) == (6, 2, labels)

    weights = client.get(f"/v1/campaigns/{party.id}/weights?level=0.8", headers=ADMIN).json()
    assert weights["criteria"] == ["a", "b"] and weights["level"] == 0.8
    assert [w["criterion"] for w in weights["global"]] == ["a", "b"]
    assert {c["context"] for c in weights["contexts"]} == {"animals", "sports"}
    for w in weights["global"]:
        assert w["lower"] < w["mean"] < w["upper"] and w["sd"] > 0

    raters = client.get(f"/v1/campaigns/{party.id}/raters", headers=ADMIN).json()["raters"]
    assert [r["labels"] for r in raters] == [6, 6]
    for r in raters:
        assert r["noise_sd"] > 0 and 0 < r["keep_probability"] <= 1
        assert isinstance(r["flagged"], bool) and r["name"] in ("r0", "r1")

    points = client.get(f"/v1/campaigns/{party.id}/progress", headers=ADMIN).json()["points"]
    assert points and points[0]["labels"] >= 1
    assert all(set(p) == {"labels", "expected_kendall_tau", "at"} for p in points)


def test_adding_clips_mid_campaign(client: TestClient) -> None:
    party = make_party(client, n_clips=4, n_raters=1, groups=1)
    for _ in range(3):
        answer(client, party, 0)
    more = client.post(
        f"/v1/campaigns/{party.id}/clips",
        json={"clips": clip_batch(3, start=4, groups=1)},
        headers=ADMIN,
    )
    assert more.status_code == 201 and more.json()["added"] == 3
    assert [c["external_id"] for c in more.json()["clips"]] == ["e4", "e5", "e6"]
    seen = set()
    for _ in range(12):
        a = answer(client, party, 0)
        seen |= {a["left"]["external_id"], a["right"]["external_id"]}
    assert {"e4", "e5", "e6"} <= seen  # the new clips are asked about
    board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
    assert len(board["clips"]) == 7 and board["n_judgments"] == 15


def test_export_judgments_and_preferences(client: TestClient) -> None:
    party = make_party(client, n_clips=4, n_raters=1, groups=1)
    shown = [answer(client, party, 0, choice) for choice in ("left", "right", "tie")]
    skipped = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0)).json()
    client.post(
        f"/v1/assignments/{skipped['assignment']['id']}/judgment",
        json={"choice": "skip"},
        headers=party.rater(0),
    )
    response = client.get(f"/v1/campaigns/{party.id}/export?format=csv", headers=ADMIN)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["choice"] for r in rows] == ["left", "right", "tie", "skip"]
    assert rows[0]["chosen"] == shown[0]["left"]["external_id"]
    assert rows[0]["rejected"] == shown[0]["right"]["external_id"]
    assert rows[1]["chosen"] == shown[1]["right"]["external_id"]
    assert rows[2]["chosen"] == "" and rows[0]["prompt"] == "g0"
    assert rows[0]["rater_name"] == "r0" and rows[3]["seq"] == ""

    lines = client.get(f"/v1/campaigns/{party.id}/export?format=jsonl", headers=ADMIN).text
    records = [json.loads(line) for line in lines.splitlines()]
    assert [r["judgment_id"] for r in records] == [int(r["judgment_id"]) for r in rows]
    prefs = client.get(
        f"/v1/campaigns/{party.id}/export?format=jsonl&kind=preferences", headers=ADMIN
    ).text
    pairs = [json.loads(line) for line in prefs.splitlines()]
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("g0", shown[0]["left"]["external_id"], shown[0]["right"]["external_id"]),
        ("g0", shown[1]["right"]["external_id"], shown[1]["left"]["external_id"]),
    ]


def test_health_and_openapi(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = client.get("/schema/openapi.json").json()
    for path in (
        "/v1/campaigns",
        "/v1/campaigns/{campaign_id}",
        "/v1/campaigns/{campaign_id}/clips",
        "/v1/campaigns/{campaign_id}/raters",
        "/v1/campaigns/{campaign_id}/assignments",
        "/v1/assignments/{assignment_id}/judgment",
        "/v1/campaigns/{campaign_id}/leaderboard",
        "/v1/campaigns/{campaign_id}/weights",
        "/v1/campaigns/{campaign_id}/progress",
        "/v1/campaigns/{campaign_id}/export",
        "/healthz",
        "/v1/whoami",
    ):
        assert path in schema["paths"], path


def test_whoami_names_the_token_s_rater_and_refuses_others(client: TestClient) -> None:
    party = make_party(client, n_clips=3, n_raters=2, groups=1)
    for index in (0, 1):
        response = client.get("/v1/whoami", headers=party.rater(index))
        assert response.status_code == 200, response.text
        assert response.json() == {"rater_id": party.raters[index]["id"], "campaign_id": party.id}
    assert client.get("/v1/whoami").status_code == 401
    assert client.get("/v1/whoami", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/whoami", headers=ADMIN).status_code == 401


def test_nothing_left_is_a_200_with_a_message(client: TestClient) -> None:
    party = make_party(client, n_clips=3, n_raters=1, groups=1, ties=False)
    for _ in range(3):  # three pairs in one group
        answer(client, party, 0)
    response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0))
    assert response.status_code == 200
    assert response.json()["assignment"] is None
    assert "judged every pair" in response.json()["message"]
