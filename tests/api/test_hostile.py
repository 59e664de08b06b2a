"""What a hostile or broken client sends: never a server error, never a resource held for long.

Each case is one an audit found giving a 500, a null where the OpenAPI document says number,
or a connection held open indefinitely.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from tests.api.conftest import ADMIN, ADMIN_KEY, make_party, make_settings, serve
from tests.api.test_bad_input import _row_counts

DEEP = b"[" * 1_000 + b"]" * 1_000
JSON = {"content-type": "application/json"}


def test_deeply_nested_json_is_a_400_and_no_token_is_checked_first(
    client: TestClient,
) -> None:
    party = make_party(client, n_clips=4, n_raters=1)
    shown = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0))
    aid = shown.json()["assignment"]["id"]
    deep_in_object = b'{"choice": ' + DEEP + b"}"
    for body in (DEEP, deep_in_object):
        no_token = client.post(f"/v1/assignments/{aid}/judgment", content=body, headers=JSON)
        assert no_token.status_code == 401, no_token.text
        judged = client.post(
            f"/v1/assignments/{aid}/judgment", content=body, headers={**JSON, **party.rater(0)}
        )
        # a judgment body has a small limit of its own; within it, nesting is a 400
        assert judged.status_code == 413, judged.text
        shallow = client.post(
            f"/v1/assignments/{aid}/judgment",
            content=b"[" * 500 + b"]" * 500,
            headers={**JSON, **party.rater(0)},
        )
        assert shallow.status_code == 400, shallow.text
        for path in ("/v1/campaigns", f"/v1/campaigns/{party.id}/clips"):
            response = client.post(path, content=body, headers={**JSON, **ADMIN})
            assert response.status_code == 400, (path, response.text)
            assert "nested too deeply" in response.json()["detail"], response.text
    # the assignment still takes its answer
    ok = client.post(
        f"/v1/assignments/{aid}/judgment", json={"choice": "left"}, headers=party.rater(0)
    )
    assert ok.status_code == 201


def test_ids_beyond_the_database_integer_range_are_not_found(client: TestClient) -> None:
    party = make_party(client, n_clips=2, n_raters=1)
    for campaign in ("9223372036854775808", "2147483648", "-9223372036854775809", "0", "-1"):
        for suffix in ("", "/leaderboard", "/weights", "/raters", "/progress", "/export"):
            response = client.get(f"/v1/campaigns/{campaign}{suffix}", headers=ADMIN)
            assert response.status_code == 404, (campaign, suffix, response.text)
        for suffix in ("/clips", "/raters"):
            response = client.post(f"/v1/campaigns/{campaign}{suffix}", json={}, headers=ADMIN)
            assert response.status_code in (400, 404), (campaign, suffix, response.text)
        judged = client.post(
            f"/v1/assignments/{campaign}/judgment", json={"choice": "left"}, headers=party.rater(0)
        )
        assert judged.status_code == 404, judged.text
        asked = client.post(f"/v1/campaigns/{campaign}/assignments", headers=party.rater(0))
        assert asked.status_code == 403, asked.text


def test_nul_characters_are_refused_and_write_nothing(client: TestClient, db_url: str) -> None:
    party = make_party(client, n_clips=2, n_raters=1)
    before = _row_counts(db_url)
    clip = {"external_id": "n", "uri": "https://example.org/n.mp4", "scores": {"a": 1.0}}
    cases = [
        ("/v1/campaigns", {"name": "a\x00b"}),
        ("/v1/campaigns", {"name": "x", "criteria": ["a\x00"]}),
        (f"/v1/campaigns/{party.id}/raters", {"name": "ann\x00"}),
        (f"/v1/campaigns/{party.id}/clips", {"clips": [{**clip, "external_id": "x\x00y"}]}),
        (f"/v1/campaigns/{party.id}/clips", {"clips": [{**clip, "uri": "u\x00"}]}),
        (f"/v1/campaigns/{party.id}/clips", {"clips": [{**clip, "group": "\x00"}]}),
        (f"/v1/campaigns/{party.id}/clips", {"clips": [{**clip, "context": "c\x00"}]}),
        (f"/v1/campaigns/{party.id}/clips", {"clips": [{**clip, "scores": {"a\x00": 1.0}}]}),
    ]
    for path, body in cases:
        response = client.post(path, json=body, headers=ADMIN)
        assert response.status_code == 400, (path, body, response.text)
        assert "NUL" in response.json()["detail"], response.text
    assert _row_counts(db_url) == before


def test_credible_levels_whose_bounds_are_not_finite_are_refused(client: TestClient) -> None:
    party = make_party(client, n_clips=4, n_raters=1)
    for read in ("leaderboard", "weights"):
        path = f"/v1/campaigns/{party.id}/{read}"
        for level in ("0.9999999999999999", "1", "0", "nan", "inf"):
            response = client.get(path, params={"level": level}, headers=ADMIN)
            assert response.status_code == 400, (read, level, response.text)
        for level in ("0.999999", "1e-300", "0.5"):
            response = client.get(path, params={"level": level}, headers=ADMIN)
            assert response.status_code == 200, (read, level, response.text)
            body = response.json()
            rows = body["clips"] if read == "leaderboard" else body["global"]
            bounds = [row[side] for row in rows for side in ("lower", "upper")]
            assert bounds and all(isinstance(b, float) and math.isfinite(b) for b in bounds)


def test_bodies_must_be_sent_as_json(client: TestClient) -> None:
    party = make_party(client, n_clips=4, n_raters=1)
    body = b'{"name": "plain"}'
    for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form"}):
        response = client.post("/v1/campaigns", content=body, headers={**ADMIN, **headers})
        assert response.status_code == 415, response.text
        assert "application/json" in response.json()["detail"], response.text
    shown = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0))
    aid = shown.json()["assignment"]["id"]
    plain = client.post(
        f"/v1/assignments/{aid}/judgment",
        content=b'{"choice": "left"}',
        headers={"content-type": "text/plain", **party.rater(0)},
    )
    assert plain.status_code == 415, plain.text
    campaigns = client.get("/v1/campaigns", headers=ADMIN).json()["campaigns"]
    assert [c["name"] for c in campaigns] == ["party"]
    # a JSON media type with parameters, or a +json type, is JSON
    for kind in ("application/json; charset=utf-8", "application/merged-patch+json"):
        response = client.post(
            "/v1/campaigns", content=body, headers={**ADMIN, "content-type": kind}
        )
        assert response.status_code == 201, (kind, response.text)


def test_openapi_lists_the_error_responses_and_refuses_unknown_fields(client: TestClient) -> None:
    document = client.get("/schema/openapi.json").json()
    paths = document["paths"]
    expected = {
        ("post", "/v1/campaigns"): {"400", "401", "413", "415"},
        ("get", "/v1/campaigns/{campaign_id}"): {"401", "404"},
        ("post", "/v1/campaigns/{campaign_id}/clips"): {"400", "401", "404", "409", "413"},
        ("post", "/v1/campaigns/{campaign_id}/assignments"): {"401", "403", "429", "503"},
        ("post", "/v1/assignments/{assignment_id}/judgment"): {
            "400",
            "401",
            "404",
            "409",
            "410",
            "413",
            "415",
        },
        ("get", "/v1/campaigns/{campaign_id}/leaderboard"): {"400", "401", "404"},
        ("get", "/v1/campaigns/{campaign_id}/export"): {"401", "404"},
    }
    for (method, path), codes in expected.items():
        responses = paths[path][method]["responses"]
        assert codes <= set(responses), (method, path, sorted(responses))
        error = responses["401"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Error"}
    schemas = document["components"]["schemas"]
    for name in ("CampaignCreate", "ClipsIn", "ClipIn", "RaterIn", "JudgmentIn"):
        assert schemas[name]["additionalProperties"] is False, name
    level = next(
        p
        for p in paths["/v1/campaigns/{campaign_id}/weights"]["get"]["parameters"]
        if p["name"] == "level"
    )
    assert level["schema"]["exclusiveMinimum"] == 0 and level["schema"]["maximum"] < 1


def test_a_short_admin_key_stops_the_server_with_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RATINGPARTY_ADMIN_KEY": "short",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "api", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "at least 16 characters" in lines[0], done.stderr


# the server itself: deadlines and limits -----------------------------------------------------

HEADER_TIMEOUT_S = 0.5
BODY_TIMEOUT_S = 0.8


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[str]:
    """A live server with short deadlines and a 100 kB body limit; yields host:port."""
    settings = make_settings(
        f"sqlite:///{tmp_path / 'r.db'}",
        header_timeout_s=HEADER_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
        max_body_bytes=100_000,
    )
    with serve(settings) as server:
        yield server.url.removeprefix("http://")


def _talk(address: str, data: bytes, wait_s: float = 5.0) -> tuple[bytes, float]:
    """Send `data`, then read until the server closes; (what came back, seconds it took)."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port))) as sock:
        started = time.monotonic()
        sock.sendall(data)
        sock.settimeout(wait_s)
        received = b""
        try:
            while chunk := sock.recv(65_536):
                received += chunk
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {wait_s} s: {received[:200]!r}")
        return received, time.monotonic() - started


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.slow
def test_silent_slow_and_stalled_clients_are_cut_off(strict_server: str) -> None:
    idle, took = _talk(strict_server, b"")
    assert idle == b"" and took < HEADER_TIMEOUT_S + 2
    slow_head, took = _talk(strict_server, b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-a: 1\r\n")
    assert slow_head.startswith(b"HTTP/1.1 408") and took < HEADER_TIMEOUT_S + 2, slow_head
    admin = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    stalled = _head("/v1/campaigns", {**admin, "content-length": "50000"}) + b'{"name": '
    stalled_body, took = _talk(strict_server, stalled)
    assert stalled_body.startswith(b"HTTP/1.1 408") and took < BODY_TIMEOUT_S + 2, stalled_body
    huge_head, _ = _talk(strict_server, b"GET /healthz HTTP/1.1\r\nx-a: " + b"a" * 100_000)
    assert huge_head.startswith(b"HTTP/1.1 431"), huge_head[:100]
    # a judgment without a token is refused before its 4.8 MB body is read
    json_body = {"content-type": "application/json", "content-length": "4800000"}
    judgment = _head("/v1/assignments/1/judgment", json_body) + b"[" * 1_000
    refused, took = _talk(strict_server, judgment)
    assert refused.startswith(b"HTTP/1.1 401"), refused[:200]
    assert took < BODY_TIMEOUT_S + 2
    # and the server still answers
    assert httpx.get(f"http://{strict_server}/healthz", timeout=10).status_code == 200


@pytest.mark.slow
def test_a_body_over_the_limit_gets_a_413_answer_while_it_streams(strict_server: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65_536

    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    with httpx.Client(base_url=f"http://{strict_server}", timeout=20) as client:
        streamed = client.post("/v1/campaigns", content=chunks(), headers=headers)
        assert streamed.status_code == 413, streamed.text
        assert "100000 bytes at most" in streamed.json()["detail"]
        announced = client.post("/v1/campaigns", content=b" " * 2_000_000, headers=headers)
        assert announced.status_code == 413, announced.text
        assert client.get("/healthz").status_code == 200


@pytest.mark.slow
def test_a_bulk_upload_that_keeps_coming_outlasts_the_body_deadline(strict_server: str) -> None:
    """Its deadline counts from the last bytes received: an upload sent over three body
    deadlines goes in whole; one that stops sending is cut off like any other body."""
    base = f"http://{strict_server}"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(
        f"{base}/v1/campaigns", json={"name": "slow", "criteria": ["a"]}, headers=admin
    )
    cid = created.json()["id"]
    n_chunks = 12
    pause = 3 * BODY_TIMEOUT_S / n_chunks

    def trickle() -> Iterator[bytes]:
        for i in range(n_chunks):
            yield f'{{"external_id": "c{i}", "uri": "u{i}", "group": "p"}}\n'.encode()
            time.sleep(pause)

    added = httpx.post(
        f"{base}/v1/campaigns/{cid}/clips/bulk", content=trickle(), headers=admin, timeout=60
    )
    assert added.status_code == 201, added.text
    assert added.json() == {"added": n_chunks, "n_clips": n_chunks}
    head = _head(
        f"/v1/campaigns/{cid}/clips/bulk",
        {"authorization": f"Bearer {ADMIN_KEY}", "transfer-encoding": "chunked"},
    )
    stalled, took = _talk(strict_server, head + b"20\r\n" + b'{"external_id": "x", "uri": "u"}')
    assert stalled.startswith(b"HTTP/1.1 408") and took < BODY_TIMEOUT_S + 2, stalled[:200]
    assert httpx.get(f"{base}/v1/campaigns/{cid}", headers=admin).json()["n_clips"] == n_chunks
