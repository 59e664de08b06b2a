"""Every invalid request is a 4xx whose detail says what is wrong, and writes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from sqlalchemy import create_engine, func, select

from api.app import create_app
from api.db import AssignmentRow, CampaignRow, ClipRow, JudgmentRow, ProgressRow, RaterRow
from tests.api.conftest import ADMIN, clip_batch, make_party, make_settings

TABLES = (CampaignRow, ClipRow, RaterRow, AssignmentRow, JudgmentRow, ProgressRow)


def _row_counts(db_url: str) -> dict[str, int]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return {
                t.__tablename__: connection.execute(
                    select(func.count()).select_from(t)
                ).scalar_one()
                for t in TABLES
            }
    finally:
        engine.dispose()


@pytest.fixture
def small_client(db_url: str) -> Iterator[TestClient]:
    """Limits small enough to hit: 5 clips a request, 20 kB a body."""
    settings = make_settings(db_url, max_clips_per_request=5, max_body_bytes=20_000)
    with TestClient(app=create_app(settings)) as test_client:
        yield test_client


def _clip(**changes) -> dict:
    return {**clip_batch(1, start=99)[0], **changes}


def test_bad_requests_are_4xx_with_a_reason_and_write_nothing(
    small_client: TestClient, db_url: str
) -> None:
    client = small_client
    party = make_party(client, n_clips=4, n_raters=2, groups=1, ties=False)
    other = make_party(client, n_clips=2, n_raters=1, groups=1)
    held = client.post(f"/v1/campaigns/{party.id}/assignments", headers=party.rater(0)).json()
    aid = held["assignment"]["id"]
    before = _row_counts(db_url)
    raw = {"content-type": "application/json"}
    cid = party.id
    cases = [
        # (method, path, body (dict or raw bytes), headers, status, words in the detail)
        ("post", "/v1/campaigns", {"name": 3}, ADMIN, 400, "Expected `str`, got `int`"),
        ("post", "/v1/campaigns", {"name": "x", "lease_seconds": "5"}, ADMIN, 400, "lease_seconds"),
        ("post", "/v1/campaigns", {"name": "x", "lease_seconds": 0}, ADMIN, 400, "lease_seconds"),
        ("post", "/v1/campaigns", {"name": "x", "emoji_levels": 1}, ADMIN, 400, "emoji_levels"),
        ("post", "/v1/campaigns", {"name": "x", "emoji_levels": 2.5}, ADMIN, 400, "emoji_levels"),
        ("post", "/v1/campaigns", {"name": "x", "pair_scope": "all"}, ADMIN, 400, "pair_scope"),
        ("post", "/v1/campaigns", {"name": "x", "criteria": "a"}, ADMIN, 400, "criteria"),
        ("post", "/v1/campaigns", {"name": "x", "criteria": ["a", "a"]}, ADMIN, 400, "unique"),
        ("post", "/v1/campaigns", {"name": "x", "tie": True}, ADMIN, 400, "unknown field `tie`"),
        ("post", "/v1/campaigns", {"name": ""}, ADMIN, 400, "name"),
        ("post", "/v1/campaigns", b'{"name": "x"', {**ADMIN, **raw}, 400, "truncated"),
        ("post", "/v1/campaigns", {"name": "x"}, None, 401, "admin key"),
        ("post", "/v1/campaigns", {"name": "x"}, party.rater(0), 401, "admin key"),
        ("get", "/v1/campaigns/999", None, ADMIN, 404, "campaign 999 not found"),
        ("post", "/v1/campaigns/999/clips", {"clips": [_clip()]}, ADMIN, 404, "campaign 999"),
        ("post", "/v1/campaigns/999/raters", {}, ADMIN, 404, "campaign 999"),
        ("get", "/v1/campaigns/999/leaderboard", None, ADMIN, 404, "campaign 999"),
        ("get", "/v1/campaigns/abc", None, ADMIN, 404, ""),
        # clips
        ("post", f"/v1/campaigns/{cid}/clips", {"clips": []}, ADMIN, 400, "clips"),
        (
            "post",
            f"/v1/campaigns/{cid}/clips",
            {"clips": [_clip(scores={"a": "high"})]},
            ADMIN,
            400,
            "Expected `float | null`",
        ),
        (
            "post",
            f"/v1/campaigns/{cid}/clips",
            b'{"clips": [{"external_id": "n", "uri": "u", "scores": {"a": NaN}}]}',
            {**ADMIN, **raw},
            400,
            "malformed",
        ),
        (
            "post",
            f"/v1/campaigns/{cid}/clips",
            b'{"clips": [{"external_id": "n", "uri": "u", "scores": {"a": Infinity}}]}',
            {**ADMIN, **raw},
            400,
            "malformed",
        ),
        (
            "post",
            f"/v1/campaigns/{cid}/clips",
            b'{"clips": [{"external_id": "n", "uri": "u", "scores": {"a": 1e999}}]}',
            {**ADMIN, **raw},
            400,
            "out of range",
        ),
        (
            "post",
            f"/v1/campaigns/{cid}/clips",
            {"clips": [_clip(scores={"a": 1e300})]},
            ADMIN,
            400,
            "not a finite number within",
        ),
        (
            "post",
            f"/v1/campaigns/{cid}/clips",
            {"clips": [_clip(scores={"c": 1.0})]},
            ADMIN,
            400,
            "unknown criteria ['c']",
        ),
        (
            "post",
            f"/v1/campaigns/{cid}/clips",
            {"clips": [_clip(), _clip()]},
            ADMIN,
            400,
            "repeated within the batch: ['e99']",
        ),
        (
            "post",
            f"/v1/campaigns/{cid}/clips",
            {"clips": [_clip(external_id="e1")]},
            ADMIN,
            409,
            "already in campaign",
        ),
        ("post", f"/v1/campaigns/{cid}/clips", {"clips": [_clip(uri=None)]}, ADMIN, 400, "uri"),
        (
            "post",
            f"/v1/campaigns/{cid}/clips",
            {"clips": clip_batch(6, start=50, criteria=("a", "b"))},
            ADMIN,
            413,
            "at most 5",
        ),
        (
            "post",
            f"/v1/campaigns/{cid}/clips",
            {"clips": [_clip(uri="u" * 4000) for _ in range(5)]},
            ADMIN,
            413,
            "",
        ),
        ("post", f"/v1/campaigns/{cid}/clips", {"clips": [_clip()]}, party.rater(0), 401, "admin"),
        ("post", f"/v1/campaigns/{cid}/raters", {"name": 7}, ADMIN, 400, "name"),
        # raters' calls
        ("post", f"/v1/campaigns/{cid}/assignments", None, None, 401, "rater's token"),
        (
            "post",
            f"/v1/campaigns/{cid}/assignments",
            None,
            {"Authorization": "Bearer nope-nope"},
            401,
            "unknown rater token",
        ),
        ("post", f"/v1/campaigns/{cid}/assignments", None, ADMIN, 401, "unknown rater token"),
        ("post", f"/v1/campaigns/{cid}/assignments", None, other.rater(0), 403, "another campaign"),
        ("post", "/v1/campaigns/999/assignments", None, party.rater(0), 403, "another campaign"),
        (
            "post",
            f"/v1/assignments/{aid}/judgment",
            {"choice": "maybe"},
            party.rater(0),
            400,
            "choice",
        ),
        ("post", f"/v1/assignments/{aid}/judgment", {"level": "2"}, party.rater(0), 400, "level"),
        (
            "post",
            f"/v1/assignments/{aid}/judgment",
            {"choice": "tie"},
            party.rater(0),
            400,
            "does not allow ties",
        ),
        ("post", f"/v1/assignments/{aid}/judgment", {"level": 1}, party.rater(0), 400, "is a pair"),
        (
            "post",
            f"/v1/assignments/{aid}/judgment",
            {"choice": "left"},
            party.rater(1),
            404,
            "not found for this rater",
        ),
        (
            "post",
            f"/v1/assignments/{aid}/judgment",
            {"choice": "left"},
            other.rater(0),
            404,
            "not found for this rater",
        ),
        ("post", f"/v1/assignments/{aid}/judgment", {"choice": "left"}, ADMIN, 401, "unknown"),
        (
            "post",
            "/v1/assignments/424242/judgment",
            {"choice": "left"},
            party.rater(0),
            404,
            "not found",
        ),
        # reads
        ("get", f"/v1/campaigns/{cid}/leaderboard?level=1.5", None, ADMIN, 400, "level"),
        ("get", f"/v1/campaigns/{cid}/leaderboard", None, None, 401, "admin key or a rater"),
        ("get", f"/v1/campaigns/{cid}/leaderboard", None, other.rater(0), 401, "rater token"),
        ("get", f"/v1/campaigns/{cid}/weights", None, party.rater(0), 401, "admin key"),
        ("get", f"/v1/campaigns/{cid}/raters", None, party.rater(0), 401, "admin key"),
        ("get", f"/v1/campaigns/{cid}/progress", None, None, 401, "admin key"),
        ("get", f"/v1/campaigns/{cid}/export", None, party.rater(0), 401, "admin key"),
        ("get", f"/v1/campaigns/{cid}/export?format=xml", None, ADMIN, 400, "format"),
        ("get", f"/v1/campaigns/{cid}/export?kind=all", None, ADMIN, 400, "kind"),
    ]
    for method, path, body, headers, status, words in cases:
        kwargs = {"headers": headers or {}}
        if isinstance(body, bytes):
            kwargs["content"] = body
        elif body is not None:
            kwargs["json"] = body
        response = getattr(client, method)(path, **kwargs)
        label = f"{method.upper()} {path} {body!r:.80}"
        assert response.status_code == status, (label, response.status_code, response.text)
        if status != 404 or words:
            detail = response.json()["detail"]
            assert words in detail, (label, detail)
    assert _row_counts(db_url) == before
    # and the held assignment still takes a valid answer
    ok = client.post(
        f"/v1/assignments/{aid}/judgment", json={"choice": "left"}, headers=party.rater(0)
    )
    assert ok.status_code == 201
