"""Bulk clip uploads over real HTTP (a uvicorn server, bodies sent chunked as they are
generated): every row checked, all or nothing, written in one batch to the database and the
engine, replayed after a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api import store
from api.db import make_engine
from api.settings import Settings
from tests.api.conftest import ADMIN, make_settings, serve

CRITERIA = ["a", "b"]
PROMPT_SIZE = 4


def clip_rows(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    """`n` clips in prompts of `PROMPT_SIZE`, one context per prompt, a score missing now
    and then."""
    rows = []
    for i in range(start, start + n):
        prompt = i // PROMPT_SIZE
        rows.append(
            {
                "external_id": f"c{i}",
                "uri": f"https://example.org/{i}.mp4",
                "group": f"p{prompt}",
                "context": "sports" if prompt % 3 == 0 else "animals",
                "scores": {"a": round((i * 7919) % 101 / 25 - 2, 3), "b": None if i % 5 else 0.5},
            }
        )
    return rows


def ndjson(rows: list[dict[str, Any]], lines_per_chunk: int = 97) -> Iterator[bytes]:
    """The rows as JSON lines, in chunks that end mid-line (as a network delivers them)."""
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    size = max(1, len(text) * lines_per_chunk // max(len(rows), 1) + 13)
    for offset in range(0, len(text), size):
        yield text[offset : offset + size]


def csv_text(rows: list[dict[str, Any]]) -> bytes:
    lines = ["external_id,uri,group,context," + ",".join(CRITERIA)]
    for row in rows:
        scores = ["" if row["scores"][c] is None else repr(row["scores"][c]) for c in CRITERIA]
        lines.append(
            ",".join([row["external_id"], row["uri"], row["group"], row["context"], *scores])
        )
    return ("\n".join(lines) + "\n").encode()


def new_campaign(http: httpx.Client, **options: Any) -> int:
    body = {"name": "bulk", "criteria": CRITERIA, "pair_scope": "group", "structure": "blocks"}
    created = http.post("/v1/campaigns", json={**body, **options})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def upload(http: httpx.Client, cid: int, body: Any, fmt: str = "jsonl") -> httpx.Response:
    return http.post(f"/v1/campaigns/{cid}/clips/bulk", params={"format": fmt}, content=body)


def board(http: httpx.Client, cid: int) -> list[dict[str, Any]]:
    response = http.get(f"/v1/campaigns/{cid}/leaderboard", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return response.json()["clips"]


@pytest.fixture
def http(settings: Settings) -> Iterator[httpx.Client]:
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as client,
    ):
        yield client


def test_a_bad_row_mid_stream_writes_nothing(http: httpx.Client) -> None:
    cid = new_campaign(http)
    rows = clip_rows(1000)
    bad = [dict(row) for row in rows]
    bad[699] = {**bad[699], "scores": {"a": "high"}}
    refused = upload(http, cid, ndjson(bad))
    assert refused.status_code == 400, refused.text
    detail = refused.json()["detail"]
    assert "line 700" in detail and "nothing was added" in detail
    assert "line 699" not in detail and "line 701" not in detail
    assert http.get(f"/v1/campaigns/{cid}").json()["n_clips"] == 0
    assert board(http, cid) == []
    # the same rows, well formed, go in whole: nothing of the refused upload is left behind
    done = upload(http, cid, ndjson(rows))
    assert done.status_code == 201, done.text
    assert done.json() == {"added": 1000, "n_clips": 1000}


def test_a_bad_row_in_the_last_chunk_leaves_no_clip_of_the_body(settings: Settings) -> None:
    """Many chunks are written into the upload's transaction before its last line, whose
    score only the end of the read refuses: the database and the engine keep none of them."""
    rows = clip_rows(5000, start=8)
    bad = [*rows[:-1], {**rows[-1], "scores": {"a": 1e13}}]
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as http,
    ):
        cid = new_campaign(http)
        assert upload(http, cid, ndjson(clip_rows(8))).status_code == 201
        before = board(http, cid)
        refused = upload(http, cid, ndjson(bad, lines_per_chunk=200))
        assert refused.status_code == 400, refused.text
        assert "line 5000" in refused.json()["detail"]
        assert http.get(f"/v1/campaigns/{cid}").json()["n_clips"] == 8
        assert board(http, cid) == before
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as http,
    ):
        # rebuilt from the database alone: none of the refused clips was committed
        assert http.get(f"/v1/campaigns/{cid}").json()["n_clips"] == 8
        assert board(http, cid) == before
        added = upload(http, cid, ndjson(rows, lines_per_chunk=200))
        assert added.status_code == 201, added.text
        assert added.json() == {"added": 5000, "n_clips": 5008}


def test_a_label_applied_while_an_upload_streams_is_replayed_before_its_clips(
    settings: Settings,
) -> None:
    """The upload's rows are sent before the label is applied, but the engine takes the clips
    after it: the stored batch says so, and a restart rebuilds the same campaign."""
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as http,
    ):
        cid = new_campaign(http)
        assert upload(http, cid, ndjson(clip_rows(8))).status_code == 201
        token = http.post(f"/v1/campaigns/{cid}/raters", json={"name": "r"}).json()["token"]
        rater = {"Authorization": f"Bearer {token}"}
        task = http.post(f"/v1/campaigns/{cid}/assignments", headers=rater).json()["assignment"]

        def body() -> Iterator[bytes]:
            chunks = list(ndjson(clip_rows(2000, start=8), lines_per_chunk=100))
            yield from chunks[:10]
            judged = http.post(
                f"/v1/assignments/{task['id']}/judgment", json={"choice": "left"}, headers=rater
            )
            assert judged.status_code == 201, judged.text
            yield from chunks[10:]

        added = upload(http, cid, body())
        assert added.status_code == 201, added.text
        before = board(http, cid)
    engine = make_engine(settings.database_url)
    try:
        log = store.load_log(engine, cid)
    finally:
        engine.dispose()
    (seq,) = [j.seq for j in log.judgments]
    assert {c.after_seq for c in log.clips if c.batch == 2} == {seq}
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as http,
    ):
        assert board(http, cid) == before


def test_text_with_tabs_backslashes_and_line_breaks_is_stored_as_sent(
    settings: Settings,
) -> None:
    odd = ["tab\there", "back\\slash", "line\nbreak", "carriage\rreturn", "\\N", 'q"uote é']
    rows = [
        {**row, "external_id": f"{text}-{i}", "uri": f"https://x.org/{text}", "group": text}
        for i, (row, text) in enumerate(zip(clip_rows(len(odd)), odd, strict=True))
    ]
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as http,
    ):
        cid = new_campaign(http)
        added = upload(http, cid, ndjson(rows, lines_per_chunk=2))
        assert added.status_code == 201, added.text
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as http,
    ):
        stored = {c["external_id"]: (c["uri"], c["group"], c["context"]) for c in board(http, cid)}
    assert stored == {r["external_id"]: (r["uri"], r["group"], r["context"]) for r in rows}


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"external_id": "x", "uri": "u", "scores": {"zz": 1}}', "unknown criteria ['zz']"),
        ('{"external_id": "x", "uri": "u", "extra": 1}', "unknown field `extra`"),
        ('{"external_id": "", "uri": "u"}', "external_id"),
        ('{"external_id": "x\\u0000", "uri": "u"}', "NUL"),
        ('{"external_id": "x", "uri": "u", "scores": {"a\\u0000": 1}}', "NUL"),
        ('{"external_id": "x", "uri": "u", "group": "", "context": "c"}', "group"),
        ('{"external_id": "x", "uri": "u", "scores": {"a": 1e13}}', "not a finite number"),
        ('{"external_id": "x", "uri": "u", "scores": {"a": 1e999}}', "out of range"),
        ('{"external_id": "c3", "uri": "u"}', "repeats line 4"),
        ("[1, 2]", "Expected `object`"),
        ('{"external_id": "x", "uri": ', "not a JSON object"),
    ],
)
def test_each_kind_of_bad_row_is_named_by_its_line(http: httpx.Client, line: str, why: str) -> None:
    cid = new_campaign(http)
    text = "".join(json.dumps(row) + "\n" for row in clip_rows(10)) + "\n" + line + "\n"
    refused = upload(http, cid, text.encode())
    assert refused.status_code == 400, refused.text
    assert "line 12" in refused.json()["detail"] and why in refused.json()["detail"]
    assert http.get(f"/v1/campaigns/{cid}").json()["n_clips"] == 0


def test_bad_uploads_as_a_whole_get_a_4xx_and_write_nothing(settings: Settings) -> None:
    small = make_settings(settings.database_url, max_bulk_clips=50, max_bulk_bytes=20_000)
    with (
        serve(small) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as http,
    ):
        cid = new_campaign(http)
        assert upload(http, cid, b"").status_code == 400
        assert upload(http, cid, b"\n\n").status_code == 400
        too_many = upload(http, cid, ndjson(clip_rows(51)))
        assert too_many.status_code == 413 and "50 clips" in too_many.json()["detail"]
        too_big = upload(http, cid, ndjson([{**r, "uri": "u" * 900} for r in clip_rows(40)]))
        assert too_big.status_code == 413 and "20000 bytes" in too_big.json()["detail"]
        assert upload(http, cid, ndjson(clip_rows(4)), fmt="xml").status_code == 400
        assert upload(http, 999, ndjson(clip_rows(4))).status_code == 404
        denied = http.post(
            f"/v1/campaigns/{cid}/clips/bulk", content=b"{}", headers={"Authorization": "Bearer x"}
        )
        assert denied.status_code == 401
        # one prompt in two contexts: the engine refuses the batch before anything is stored
        mixed = clip_rows(4)
        mixed[1] = {**mixed[1], "context": "other"}
        refused = upload(http, cid, ndjson(mixed))
        assert refused.status_code == 400 and "context" in refused.json()["detail"]
        assert http.get(f"/v1/campaigns/{cid}").json()["n_clips"] == 0
        assert upload(http, cid, ndjson(clip_rows(8))).status_code == 201
        clash = upload(http, cid, ndjson(clip_rows(8, start=4)))
        assert clash.status_code == 409 and "'c4'" in clash.json()["detail"]
        assert http.get(f"/v1/campaigns/{cid}").json()["n_clips"] == 8


def test_csv_reads_as_the_same_clips_as_json_lines(http: httpx.Client) -> None:
    rows = clip_rows(40)
    by_json, by_csv = new_campaign(http), new_campaign(http)
    assert upload(http, by_json, ndjson(rows)).status_code == 201
    added = upload(http, by_csv, csv_text(rows), fmt="csv")
    assert added.status_code == 201, added.text
    strip = [{k: v for k, v in row.items() if k != "id"} for row in board(http, by_json)]
    assert strip == [{k: v for k, v in row.items() if k != "id"} for row in board(http, by_csv)]
    cid = new_campaign(http)
    # the text \u0000 (an escaped backslash) is no NUL
    literal = b'{"external_id": "lit", "uri": "a\\\\u0000b"}\n'
    assert upload(http, cid, literal).status_code == 201
    assert board(http, cid)[0]["uri"] == "a\\u0000b"
    cid = new_campaign(http)
    quoted = b'external_id,uri,a\n"q,1","https://e.org/a\nb",1.5\nq2,u,\n'
    assert upload(http, cid, quoted, fmt="csv").status_code == 201
    assert {row["uri"] for row in board(http, cid)} == {"https://e.org/a\nb", "u"}
    for body, why in [
        (b"external_id,uri,zz\nx,u,1\n", "line 1"),
        (b"uri\nu\n", "misses ['external_id']"),
        (b"external_id,uri,a\nx,u,1\ny,u,abc\n", "line 3: score 'a'"),
        (b"external_id,uri,a\nx,u\n", "line 2: 2 cells"),
    ]:
        refused = upload(http, new_campaign(http), body, fmt="csv")
        assert refused.status_code == 400 and why in refused.json()["detail"], refused.text


def test_a_large_upload_round_trips_and_replays(settings: Settings) -> None:
    rows = clip_rows(20_000)
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as http,
    ):
        cid = new_campaign(http)
        added = upload(http, cid, ndjson(rows, lines_per_chunk=1500))
        assert added.status_code == 201, added.text
        assert added.json() == {"added": 20_000, "n_clips": 20_000}
        more = upload(http, cid, ndjson(clip_rows(8, start=20_000)))
        assert more.json() == {"added": 8, "n_clips": 20_008}
        pages, offset = [], 0
        while True:
            page = http.get(
                f"/v1/campaigns/{cid}/leaderboard", params={"limit": 3000, "offset": offset}
            ).json()
            assert page["total"] == 20_008 and page["limit"] == 3000
            if not page["clips"]:
                break
            pages.append(page["clips"])
            offset += len(page["clips"])
        assert [len(p) for p in pages] == [3000] * 6 + [2008]
        rows = [row for p in pages for row in p]
        assert sorted(row["external_id"] for row in rows) == sorted(f"c{i}" for i in range(20_008))
        assert [row["rank"] for row in rows] == list(range(1, 20_009))
        first = http.get(f"/v1/campaigns/{cid}/leaderboard").json()
        assert len(first["clips"]) == 1000 and first["clips"] == rows[:1000]
        before = http.get(f"/v1/campaigns/{cid}/leaderboard", params={"prompt": "p17"}).json()
        rater = http.post(f"/v1/campaigns/{cid}/raters", json={"name": "r"}).json()["token"]
        task = http.post(
            f"/v1/campaigns/{cid}/assignments", headers={"Authorization": f"Bearer {rater}"}
        )
        assert task.status_code == 201 and task.json()["assignment"]["kind"] == "pair"
        pair = task.json()["assignment"]
        assert pair["left"]["group"] == pair["right"]["group"]
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=120) as http,
    ):
        after = http.get(f"/v1/campaigns/{cid}/leaderboard", params={"prompt": "p17"}).json()
        assert after == before
        assert after["total"] == PROMPT_SIZE and after["prompt"] == "p17"
        assert sorted(row["external_id"] for row in after["clips"]) == [
            f"c{i}" for i in range(17 * PROMPT_SIZE, 18 * PROMPT_SIZE)
        ]
        ranks = [row["rank"] for row in after["clips"]]
        assert ranks == sorted(ranks)
        assert http.get(f"/v1/campaigns/{cid}").json()["n_clips"] == 20_008


def test_a_campaign_in_blocks_refuses_settings_the_engine_cannot_keep(http: httpx.Client) -> None:
    refused = http.post(
        "/v1/campaigns",
        json={"name": "x", "pair_scope": "any", "structure": "blocks"},
    )
    assert refused.status_code == 400 and "pair_scope" in refused.json()["detail"]
    cid = new_campaign(http)
    assert http.get(f"/v1/campaigns/{cid}").json()["structure"] == "blocks"
    changed = http.patch(f"/v1/campaigns/{cid}", json={"pair_scope": "any"})
    assert changed.status_code == 409 and "pair_scope" in changed.json()["detail"]
    assert http.get(f"/v1/campaigns/{cid}").json()["pair_scope"] == "group"


def test_leaderboard_pages_refuse_bad_values_and_filter_by_prompt_and_id(
    http: httpx.Client,
) -> None:
    cid = new_campaign(http)
    assert upload(http, cid, ndjson(clip_rows(40))).status_code == 201
    path = f"/v1/campaigns/{cid}/leaderboard"
    for params in (
        {"limit": 0},
        {"limit": 10_001},
        {"offset": -1},
        {"limit": "ten"},
        {"prompt": ""},
        {"prompt": "p" * 257},
    ):
        assert http.get(path, params=params).status_code == 400, params
    whole = http.get(path).json()
    assert whole["total"] == 40 and whole["offset"] == 0 and whole["limit"] == 1000
    page = http.get(path, params={"limit": 7, "offset": 35}).json()
    assert page["clips"] == whole["clips"][35:] and page["total"] == 40
    assert http.get(path, params={"offset": 40}).json()["clips"] == []
    prompt = http.get(path, params={"prompt": "p3", "limit": 2, "offset": 1}).json()
    mine = [row for row in whole["clips"] if row["group"] == "p3"]
    assert prompt["total"] == 4 and prompt["clips"] == mine[1:3]
    nobody = http.get(path, params={"prompt": "nope"}).json()
    assert nobody["total"] == 0 and nobody["clips"] == []
    last = whole["clips"][-1]
    one = http.get(path, params={"external_id": last["external_id"], "limit": 1}).json()
    assert one["total"] == 1 and one["clips"] == [last]
    assert one["external_id"] == last["external_id"]
    both = {"external_id": last["external_id"], "prompt": last["group"]}
    assert http.get(path, params=both).json()["clips"] == [last]
    elsewhere = {
        "external_id": last["external_id"],
        "prompt": "p0" if last["group"] != "p0" else "p1",
    }
    assert http.get(path, params=elsewhere).json()["total"] == 0
    unknown = http.get(path, params={"external_id": "no-such-clip"}).json()
    assert unknown["total"] == 0 and unknown["clips"] == []
    assert http.get(path, params={"external_id": ""}).status_code == 400


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_bulk_upload_to_another_process_streams_on_to_the_owner(
    db_url: str, tmp_path: Path
) -> None:
    """Two processes on one PostgreSQL database: an upload larger than a whole-body request
    may be, sent to the process that does not run the campaign, reaches the one that does."""
    from tests.api.test_workers import _start, _stop

    owner, other = _start(db_url, tmp_path), _start(db_url, tmp_path)
    try:
        with httpx.Client(headers=ADMIN, timeout=120) as http:
            cid = http.post(
                f"{owner.url}/v1/campaigns",
                json={"name": "x", "criteria": CRITERIA, "structure": "blocks"},
            ).json()["id"]
            assert http.get(f"{owner.url}/v1/campaigns/{cid}/leaderboard").status_code == 200
            rows = clip_rows(40_000)  # about 6 MB: over the 5 MB of a whole-body request
            body = b"".join(ndjson(rows, lines_per_chunk=2000))
            assert len(body) > 5_000_000
            added = http.post(
                f"{other.url}/v1/campaigns/{cid}/clips/bulk", content=ndjson(rows, 2000)
            )
            assert added.status_code == 201, added.text
            assert added.json() == {"added": 40_000, "n_clips": 40_000}
            page = http.get(f"{other.url}/v1/campaigns/{cid}/leaderboard", params={"limit": 1})
            assert page.json()["total"] == 40_000
            bad = [dict(row) for row in clip_rows(100, start=40_000)]
            bad[50] = {**bad[50], "uri": ""}
            refused = http.post(f"{other.url}/v1/campaigns/{cid}/clips/bulk", content=ndjson(bad))
            assert refused.status_code == 400 and "line 51" in refused.json()["detail"]
            assert http.get(f"{owner.url}/v1/campaigns/{cid}").json()["n_clips"] == 40_000
    finally:
        _stop(owner)
        _stop(other)
