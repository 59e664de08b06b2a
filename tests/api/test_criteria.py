"""Criterion questions over HTTP (engine.criteria): a campaign that may ask "which is better
aligned?", the question in the assignment, answers checked against it and stored, the
per-criterion preference pairs exported, and the same state after a restart."""

from __future__ import annotations

import csv
import io

from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import ADMIN, make_party

CRITERIA = ["alignment", "safety"]


def _party(client: TestClient):
    return make_party(
        client,
        n_clips=16,
        n_raters=2,
        groups=2,
        criteria=CRITERIA,
        criterion_questions=["alignment"],
        criterion_gain="all",  # counting the criterion values, the engine asks them often
    )


def _criterion_assignment(client: TestClient, party, rater: int) -> dict:
    """Answer overall questions ("left") until a criterion question comes; return it. When
    it comes depends on which tasks the service chose ahead before each label was applied,
    so on the machine's pace: the limit leaves room for a slow one."""
    for _ in range(200):
        response = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(rater))
        assert response.status_code == 201, response.text
        assignment = response.json()["assignment"]
        assert assignment is not None
        if assignment["kind"] == "criterion":
            return assignment
        assert assignment["kind"] == "pair"
        assert assignment["question"] == "Which one is better?"
        judged = client.post(
            f"/v1/assignments/{assignment['id']}/judgment",
            json={"choice": "left"},
            headers=party.rater(rater),
        )
        assert judged.status_code == 201, judged.text
    raise AssertionError("no criterion question in 200 assignments")


def _export(client: TestClient, cid: int, kind: str) -> list[dict[str, str]]:
    response = client.get(f"/v1/campaigns/{cid}/export?kind={kind}&format=csv", headers=ADMIN)
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def test_a_criterion_question_is_asked_answered_exported_and_replayed(
    settings: Settings,
) -> None:
    with TestClient(app=create_app(settings)) as client:
        party = _party(client)
        campaign = client.get(f"/v1/campaigns/{party.id}", headers=ADMIN).json()
        assert campaign["criterion_questions"] == ["alignment"]
        assignment = _criterion_assignment(client, party, 0)
        assert assignment["criterion"] == "alignment"
        assert assignment["question"] == "Which one is better aligned with the prompt?"
        assert assignment["right"] is not None and "left" in assignment["choices"]
        url = f"/v1/assignments/{assignment['id']}/judgment"
        before = len(_export(client, party.id, "judgments"))
        # an answer about another criterion, or one the campaign does not have: 400, nothing
        for wrong in ("safety", "style"):
            refused = client.post(
                url, json={"choice": "left", "criterion": wrong}, headers=party.rater(0)
            )
            assert refused.status_code == 400, refused.text
            assert "alignment" in refused.json()["detail"]
        assert len(_export(client, party.id, "judgments")) == before
        judged = client.post(
            url, json={"choice": "left", "criterion": "alignment"}, headers=party.rater(0)
        )
        assert judged.status_code == 201, judged.text
        rows = _export(client, party.id, "criterion_preferences")
        assert len(rows) == 1
        (row,) = rows
        assert row["criterion"] == "alignment"
        assert row["chosen"] == assignment["left"]["external_id"]
        assert row["rejected"] == assignment["right"]["external_id"]
        assert row["prompt"] == assignment["left"]["group"]
        overall = _export(client, party.id, "preferences")
        assert len(overall) == before  # every overall answer had a winner; not the criterion
        kinds = [r["kind"] for r in _export(client, party.id, "judgments")]
        assert kinds.count("criterion") == 1
        board = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
    with TestClient(app=create_app(settings)) as client:  # a restart replays the database
        again = client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).json()
    assert again == board


def test_criterion_questions_the_campaign_cannot_have_are_refused(client: TestClient) -> None:
    body = {"name": "c", "criteria": CRITERIA}
    unknown = client.post(
        "/v1/campaigns", json={**body, "criterion_questions": ["style"]}, headers=ADMIN
    )
    assert unknown.status_code == 400, unknown.text
    assert "style" in unknown.json()["detail"]
    blocks = client.post(
        "/v1/campaigns",
        json={**body, "criterion_questions": ["safety"], "structure": "blocks"},
        headers=ADMIN,
    )
    assert blocks.status_code == 400, blocks.text
    plain = make_party(client, n_clips=4, n_raters=1, criteria=CRITERIA)
    assert (
        client.get(f"/v1/campaigns/{plain.id}", headers=ADMIN).json()["criterion_questions"] == []
    )
    response = client.post(f"/v1/campaigns/{plain.id}/assignments", headers=plain.rater(0))
    assignment = response.json()["assignment"]
    # absent from a plain pair (the assignment omits what does not apply)
    assert assignment["kind"] == "pair" and assignment.get("criterion") is None
    refused = client.post(
        f"/v1/assignments/{assignment['id']}/judgment",
        json={"choice": "left", "criterion": "safety"},
        headers=plain.rater(0),
    )
    assert refused.status_code == 400, refused.text
    assert "does not ask about" in refused.json()["detail"]
