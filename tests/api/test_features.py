"""Prompt-feature gating over HTTP: a campaign created with `feature_dim` takes each clip's
feature vector (single and bulk uploads, JSON lines and CSV), refuses a bad one with a 400
and writes nothing, stores the vectors and replays them after a restart."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.settings import Settings
from engine.campaign import MAX_FEATURE_DIM as ENGINE_MAX_FEATURE_DIM
from engine.state import quality_prior
from tests.api.conftest import ADMIN, answer, assert_close_structures
from tests.api.conftest import Party as _Party
from tests.api.test_snapshots import _metric

CRITERIA = ["a", "b"]
FEATURE_DIM = 3


def _features(prompt: int) -> list[float]:
    """A prompt's feature vector, about unit norm."""
    return [round(math.cos(prompt + d) / math.sqrt(FEATURE_DIM), 6) for d in range(FEATURE_DIM)]


def _clips(n: int, *, start: int = 0, prompt_size: int = 3) -> list[dict[str, Any]]:
    clips = []
    for i in range(start, start + n):
        prompt = i // prompt_size
        clips.append(
            {
                "external_id": f"e{i}",
                "uri": f"https://example.org/{i}.mp4",
                "group": f"p{prompt}",
                "scores": {"a": float(i % 5) - 2.0, "b": None if i % 4 == 3 else float(i % 3)},
                "features": _features(prompt),
            }
        )
    return clips


def _campaign(client: TestClient, **options: Any) -> int:
    body = {"name": "gated", "criteria": CRITERIA, "feature_dim": FEATURE_DIM, **options}
    created = client.post("/v1/campaigns", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _n_clips(client: TestClient, cid: int) -> int:
    return client.get(f"/v1/campaigns/{cid}", headers=ADMIN).json()["n_clips"]


def _board(client: TestClient, cid: int) -> list[dict[str, Any]]:
    response = client.get(f"/v1/campaigns/{cid}/leaderboard", params={"limit": 1000}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["clips"]


def test_the_engine_and_the_service_agree_on_the_largest_feature_dim() -> None:
    from api.schemas import MAX_FEATURE_DIM

    assert MAX_FEATURE_DIM == ENGINE_MAX_FEATURE_DIM


@pytest.mark.parametrize("structure", ["dense", "blocks"])
def test_features_are_stored_learned_and_replayed(settings: Settings, structure: str) -> None:
    with TestClient(app=create_app(settings)) as client:
        cid = _campaign(client, pair_scope="group", structure=structure)
        campaign = client.get(f"/v1/campaigns/{cid}", headers=ADMIN).json()
        assert campaign["feature_dim"] == FEATURE_DIM
        added = client.post(f"/v1/campaigns/{cid}/clips", json={"clips": _clips(12)}, headers=ADMIN)
        assert added.status_code == 201, added.text
        rater = client.post(f"/v1/campaigns/{cid}/raters", json={"name": "r"}, headers=ADMIN)
        assert rater.status_code == 201, rater.text
        party = _Party(cid, [c["id"] for c in added.json()["clips"]], [rater.json()])
        for _ in range(8):
            answer(client, party, 0)
        bulk = "".join(json.dumps(c) + "\n" for c in _clips(6, start=12))
        uploaded = client.post(
            f"/v1/campaigns/{cid}/clips/bulk",
            params={"format": "jsonl"},
            content=bulk.encode(),
            headers=ADMIN,
        )
        assert uploaded.status_code == 201, uploaded.text
        for _ in range(4):
            answer(client, party, 0)
        before = _board(client, cid)
        assert len(before) == 18
        weights = client.get(f"/v1/campaigns/{cid}/weights", headers=ADMIN).json()
        gate = weights["gate"]
        assert [column["feature"] for column in gate] == list(range(FEATURE_DIM))
        for column in gate:
            assert [w["criterion"] for w in column["weights"]] == CRITERIA
            for w in column["weights"]:
                # below the prior sd (the service's JOD prior): the labels taught it
                assert 0 < w["sd"] < quality_prior(len(CRITERIA)).gate_sd
                assert w["lower"] < w["mean"] < w["upper"]
    with TestClient(app=create_app(settings)) as client:  # a restart replays the database
        after = _board(client, cid)
    assert after == before


BAD_FEATURES = [
    [0.1, 0.2],  # too short
    [0.1, 0.2, 0.3, 0.4],  # too long
    [0.1, 1e999, 0.3],  # JSON past the float range: infinity
    None,  # the campaign has a gate: features are required
]


@pytest.mark.parametrize("features", BAD_FEATURES)
def test_a_bad_feature_vector_is_a_400_and_writes_nothing(
    client: TestClient, features: list[float] | None
) -> None:
    cid = _campaign(client)
    good = client.post(f"/v1/campaigns/{cid}/clips", json={"clips": _clips(3)}, headers=ADMIN)
    assert good.status_code == 201, good.text
    clip = {**_clips(1, start=3)[0], "features": features}
    if features is None:
        del clip["features"]
    body = json.dumps({"clips": [*_clips(2, start=4), clip]}).replace("Infinity", "1e999")
    refused = client.post(
        f"/v1/campaigns/{cid}/clips",
        content=body.encode(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert refused.status_code == 400, refused.text
    # a number past the float range is refused by the strict decoder, by its path
    assert "features" in refused.text or "out of range" in refused.text
    assert _n_clips(client, cid) == 3


def test_nan_in_json_is_refused(client: TestClient) -> None:
    cid = _campaign(client)
    body = json.dumps({"clips": _clips(1)}).replace(str(_features(0)[1]), "NaN")
    refused = client.post(
        f"/v1/campaigns/{cid}/clips",
        content=body.encode(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert refused.status_code == 400, refused.text
    assert _n_clips(client, cid) == 0


def test_features_for_a_campaign_without_a_gate_are_refused(client: TestClient) -> None:
    created = client.post(
        "/v1/campaigns", json={"name": "plain", "criteria": CRITERIA}, headers=ADMIN
    )
    cid = created.json()["id"]
    assert created.json()["feature_dim"] == 0
    refused = client.post(f"/v1/campaigns/{cid}/clips", json={"clips": _clips(2)}, headers=ADMIN)
    assert refused.status_code == 400, refused.text
    assert "no feature gate" in refused.text
    assert _n_clips(client, cid) == 0
    assert client.get(f"/v1/campaigns/{cid}/weights", headers=ADMIN).json()["gate"] is None


@pytest.mark.parametrize("feature_dim", [-1, 65, "3"])
def test_a_bad_feature_dim_is_a_400(client: TestClient, feature_dim: object) -> None:
    body = {"name": "bad", "criteria": CRITERIA, "feature_dim": feature_dim}
    assert client.post("/v1/campaigns", json=body, headers=ADMIN).status_code == 400
    listed = client.get("/v1/campaigns", headers=ADMIN).json()["campaigns"]
    assert all(c["name"] != "bad" for c in listed)


def _bulk(client: TestClient, cid: int, body: bytes, fmt: str) -> Any:
    return client.post(
        f"/v1/campaigns/{cid}/clips/bulk", params={"format": fmt}, content=body, headers=ADMIN
    )


def _csv(clips: list[dict[str, Any]], cells: dict[int, str] | None = None) -> bytes:
    lines = ["external_id,uri,group,a,b,features"]
    for index, clip in enumerate(clips):
        scores = ["" if clip["scores"][c] is None else repr(clip["scores"][c]) for c in CRITERIA]
        features = (cells or {}).get(index, " ".join(repr(v) for v in clip["features"]))
        lines.append(",".join([clip["external_id"], clip["uri"], clip["group"], *scores, features]))
    return ("\n".join(lines) + "\n").encode()


def test_csv_and_json_lines_read_the_same_features(client: TestClient) -> None:
    clips = _clips(6)
    from_json = _campaign(client, pair_scope="group")
    from_csv = _campaign(client, pair_scope="group")
    jsonl = "".join(json.dumps(c) + "\n" for c in clips).encode()
    assert _bulk(client, from_json, jsonl, "jsonl").status_code == 201
    assert _bulk(client, from_csv, _csv(clips), "csv").status_code == 201

    def spreads(cid: int) -> dict[str, float]:
        # a clip's prior sd holds gate_sd^2 |p|^2 s's: it reads the stored features
        return {c["external_id"]: c["sd"] for c in _board(client, cid)}

    assert spreads(from_json) == spreads(from_csv)
    other = _campaign(client, pair_scope="group")
    scaled = {i: " ".join(repr(2 * v) for v in clip["features"]) for i, clip in enumerate(clips)}
    assert _bulk(client, other, _csv(clips, scaled), "csv").status_code == 201
    assert spreads(other) != spreads(from_csv)


@pytest.mark.parametrize(
    ("fmt", "line"),
    [
        ("jsonl", {"features": [0.1, 0.2]}),
        ("jsonl", {"features": None}),
        ("csv", "0.1 nan 0.3"),
        ("csv", "0.1 inf 0.3"),
        ("csv", "0.1 0.2"),
        ("csv", "0.1 x 0.3"),
    ],
)
def test_a_bad_bulk_row_is_named_and_writes_nothing(
    client: TestClient, fmt: str, line: dict[str, Any] | str
) -> None:
    cid = _campaign(client)
    clips = _clips(5)
    if fmt == "jsonl":
        assert isinstance(line, dict)
        clips[3] = {**clips[3], **line}
        body = "".join(json.dumps(c) + "\n" for c in clips).encode()
    else:
        assert isinstance(line, str)
        body = _csv(clips, {3: line})
    refused = _bulk(client, cid, body, fmt)
    assert refused.status_code == 400, refused.text
    assert "line" in refused.text and "features" in refused.text
    assert _n_clips(client, cid) == 0


def test_a_snapshot_of_a_gated_campaign_loads_to_the_state_of_a_full_replay(
    settings: Settings,
) -> None:
    settings = replace(settings, snapshot_every=5)
    with TestClient(app=create_app(settings)) as client:
        cid = _campaign(client, pair_scope="group")
        added = client.post(f"/v1/campaigns/{cid}/clips", json={"clips": _clips(9)}, headers=ADMIN)
        assert added.status_code == 201, added.text
        raters = [
            client.post(f"/v1/campaigns/{cid}/raters", json={"name": n}, headers=ADMIN).json()
            for n in ("r0", "r1", "r2")
        ]
        party = _Party(cid, [c["id"] for c in added.json()["clips"]], raters)
        for step in range(17):  # 9 pairs in scope a rater
            answer(client, party, step % 3)
        before = _board(client, cid)
        deadline = time.monotonic() + 30  # a loaded machine writes late
        # labels may be applied in one batch at the read: one snapshot is due then
        while _metric(client, "ratingparty_snapshots_total", event="written") < 1:
            assert time.monotonic() < deadline, "no snapshot was written"
            time.sleep(0.05)
    with TestClient(app=create_app(settings)) as client:
        # the tail after the snapshot is applied in its own batches: equal to rounding
        assert_close_structures(_board(client, cid), before)
        assert _metric(client, "ratingparty_snapshots_total", event="loaded") == 1
