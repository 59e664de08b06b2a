"""`GET /metrics` through the real app, and the logs of a real server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.api.conftest import ADMIN, ADMIN_KEY, answer, make_party
from tests.api.test_server import _free_port, _stop

JUDGMENT_ROUTE = "/v1/assignments/{assignment_id}/judgment"


def _samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_judgments_queue_engine_and_database(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    party = make_party(client, n_clips=6, n_raters=2, groups=1)
    for _ in range(3):
        answer(client, party, 0)
    skipped = answer(client, party, 1, choice="skip")
    again = client.post(
        f"/v1/assignments/{skipped['id']}/judgment", json={"choice": "skip"}, headers=party.rater(1)
    )
    assert again.status_code == 200 and again.json()["duplicate"]
    held = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0))
    assert held.status_code == 201
    assert client.get("/v1/campaigns/999", headers=ADMIN).status_code == 404
    # a read applies every committed label first
    assert client.get(f"/v1/campaigns/{party.id}/leaderboard", headers=ADMIN).status_code == 200

    samples = _samples(client)
    total = "ratingparty_http_requests_total"
    assert _value(samples, total, method="POST", route=JUDGMENT_ROUTE, status="201") == 4
    assert _value(samples, total, method="POST", route=JUDGMENT_ROUTE, status="200") == 1
    assert _value(samples, total, method="GET", route="/v1/campaigns/{campaign_id}", status="404")
    latency = "ratingparty_http_request_seconds_count"
    assert _value(samples, latency, method="POST", route=JUDGMENT_ROUTE) == 5
    judged = "ratingparty_judgments_total"
    assert _value(samples, judged, answer="label") == 3
    assert _value(samples, judged, answer="skip") == 1
    assert _value(samples, judged, answer="duplicate") == 1
    campaign = str(party.id)
    assert ("ratingparty_queue_depth", frozenset({("campaign", campaign)})) in samples
    assert _value(samples, "ratingparty_open_assignments", campaign=campaign) == 1
    assert _value(samples, "ratingparty_campaigns_loaded") == 1
    assert _value(samples, "ratingparty_engine_call_seconds_count", call="choose") >= 1
    assert _value(samples, "ratingparty_engine_call_seconds_count", call="observe") >= 1
    assert _value(samples, "ratingparty_engine_seconds_per_task_count") >= 1
    assert _value(samples, "ratingparty_replay_seconds_count") == 1

    # an error the database raises through the service's engine is counted by its type
    engine = client.app.state.service.engine
    with pytest.raises(Exception), engine.connect() as connection:  # noqa: B017
        connection.execute(text("SELECT * FROM no_such_table"))
    errors = [
        v
        for (name, _), v in _samples(client).items()
        if name == "ratingparty_database_errors_total"
    ]
    assert errors == [1.0]


@pytest.mark.slow
def test_logs_are_json_lines_without_keys_or_tokens(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "RATINGPARTY_ADMIN_KEY": ADMIN_KEY,
        "RATINGPARTY_ACCESS_LOG": "1",
        "RATINGPARTY_DEVICE": "cpu",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "api", "--port", str(port), "--log-level", "info"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 60
            while not _healthy(client):
                assert server.poll() is None, server.stdout.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the server did not start within 60 s"
                time.sleep(0.2)
            cid = client.post("/v1/campaigns", json={"name": "logs"}, headers=ADMIN).json()["id"]
            token = client.post(f"/v1/campaigns/{cid}/raters", headers=ADMIN).json()["token"]
            rater = {"Authorization": f"Bearer {token}"}
            assert client.get(f"/rate/{cid}", params={"token": token}).status_code == 200
            assert client.get(f"/dashboard/{cid}", params={"key": ADMIN_KEY}).status_code == 200
            assert client.get(f"/v1/campaigns/{cid}/leaderboard", headers=rater).status_code == 200
            missing = client.post(
                "/v1/assignments/1/judgment", json={"choice": "left"}, headers=rater
            )
            assert missing.status_code == 404
    finally:
        output = _stop(server)
    assert ADMIN_KEY not in output and token not in output
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert records, output
    access = [r for r in records if r["logger"] == "ratingparty.access"]
    paths = {r["path"] for r in access}
    assert f"/rate/{cid}?[redacted]" in paths and f"/dashboard/{cid}?[redacted]" in paths, paths
    rated = next(r for r in access if r["path"].startswith("/rate/"))
    assert rated["status"] == 200 and rated["route"] == "/rate/{campaign_id}" and rated["ms"] >= 0
    assert any(r["status"] == 404 and r["route"] == JUDGMENT_ROUTE for r in access)
    assert {r["level"] for r in records} <= {"debug", "info", "warning", "error", "critical"}


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False
