"""Streamed exports over real HTTP: the judgments export is sent in chunks as it is read, with
exactly the content the export had when it was built whole; the leaderboard export is every
clip, as the leaderboard's pages show them."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api import store
from api.db import make_engine
from api.export import JUDGMENT_COLUMNS, PREFERENCE_COLUMNS, with_preference
from api.settings import Settings
from tests.api.conftest import ADMIN, answer, make_party, serve

N_LABELS = 25


def previous_export(database_url: str, campaign_id: int, kind: str, fmt: str) -> str:
    """The export as the service built it before it streamed: every clip and judgment read
    into memory, then rendered in one piece (clip statuses and gold answers included)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            clips = {
                row.position: row
                for row in connection.execute(
                    select(store.clip_table).where(store.clip_table.c.campaign_id == campaign_id)
                )
            }
            names = dict(
                connection.execute(
                    select(store.rater_table.c.id, store.rater_table.c.name).where(
                        store.rater_table.c.campaign_id == campaign_id
                    )
                ).all()
            )
            query = (
                select(store.judgment_table, store.assignment_table.c.swapped)
                .join(
                    store.assignment_table,
                    store.assignment_table.c.id == store.judgment_table.c.assignment_id,
                )
                .where(store.judgment_table.c.campaign_id == campaign_id)
                .order_by(store.judgment_table.c.id)
            )
            rows = []
            for row in connection.execute(query).mappings():
                first, second = row["first"], row["second"]
                left, right = (second, first) if row["swapped"] else (first, second)
                shown = clips[right] if right >= 0 else None
                rows.append(
                    {
                        "judgment_id": row["id"],
                        "seq": row["seq"],
                        "assignment_id": row["assignment_id"],
                        "rater_id": row["rater_id"],
                        "rater_name": names.get(row["rater_id"]),
                        "kind": "criterion"
                        if row["criterion"] is not None
                        else "pair"
                        if right >= 0
                        else "rating",
                        "criterion": row["criterion"],
                        "left_external_id": clips[left].external_id,
                        "left_uri": clips[left].uri,
                        "left_group": clips[left].prompt_group,
                        "left_status": store.clip_status(clips[left]._mapping),
                        "right_external_id": None if shown is None else shown.external_id,
                        "right_uri": None if shown is None else shown.uri,
                        "right_group": None if shown is None else shown.prompt_group,
                        "right_status": None
                        if shown is None
                        else store.clip_status(shown._mapping),
                        "choice": row["choice"],
                        "level": row["level"],
                        "gold": row["gold"] is not None,
                        "created_at": row["created_at"],
                    }
                )
    finally:
        engine.dispose()
    full = [with_preference(row) for row in rows]
    if kind == "preferences":
        full = [row for row in full if row["chosen"] is not None and not row["gold"]]
    columns = JUDGMENT_COLUMNS if kind == "judgments" else PREFERENCE_COLUMNS
    if fmt == "jsonl":
        return "".join(json.dumps({c: row[c] for c in columns}) + "\n" for row in full)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(full)
    return buffer.getvalue()


@pytest.fixture
def http(settings: Settings) -> Iterator[httpx.Client]:
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers=ADMIN, timeout=60) as client,
    ):
        yield client


def streamed(http: httpx.Client, path: str, **params: Any) -> tuple[str, int, httpx.Headers]:
    """The body of a GET and the number of chunks it came in."""
    with http.stream("GET", path, params=params) as response:
        assert response.status_code == 200, response.read()
        chunks = list(response.iter_raw())
        return b"".join(chunks).decode(), len(chunks), response.headers


def test_the_streamed_export_is_the_export_as_it_was(
    http: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    party = make_party(http, n_clips=8, n_raters=2, emoji_levels=5)  # type: ignore[arg-type]
    for i in range(N_LABELS):
        answer(http, party, i % 2, choice=("left", "right", "tie")[i % 3])  # type: ignore[arg-type]
    # batches of 4 judgments: the export goes out in several chunks
    monkeypatch.setattr(store, "EXPORT_BATCH", 4)
    path = f"/v1/campaigns/{party.id}/export"
    for kind in ("judgments", "preferences"):
        for fmt in ("csv", "jsonl"):
            body, n_chunks, headers = streamed(http, path, kind=kind, format=fmt)
            assert body == previous_export(settings.database_url, party.id, kind, fmt)
            assert headers.get("transfer-encoding") == "chunked"
            assert n_chunks > 2, (kind, fmt)
    assert len(streamed(http, path, format="jsonl")[0].splitlines()) == N_LABELS


def test_the_leaderboard_export_is_every_page_of_the_leaderboard(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    party = make_party(http, n_clips=30, n_raters=1, groups=3)  # type: ignore[arg-type]
    for _ in range(6):
        answer(http, party, 0)  # type: ignore[arg-type]
    monkeypatch.setattr(store, "EXPORT_BATCH", 7)
    path = f"/v1/campaigns/{party.id}/export"
    pages = [
        row
        for offset in range(0, 30, 8)
        for row in http.get(
            f"/v1/campaigns/{party.id}/leaderboard",
            params={"limit": 8, "offset": offset, "level": 0.8},
        ).json()["clips"]
    ]
    lines, n_chunks, _ = streamed(http, path, kind="leaderboard", format="jsonl", level=0.8)
    exported = [json.loads(line) for line in lines.splitlines()]
    assert exported == pages and n_chunks >= 5
    table = list(csv.DictReader(io.StringIO(streamed(http, path, kind="leaderboard")[0])))
    assert [row["external_id"] for row in table] == [row["external_id"] for row in pages]
    assert [float(row["mean"]) for row in table] == [
        row["mean"] for row in http.get(f"/v1/campaigns/{party.id}/leaderboard").json()["clips"]
    ]
    assert http.get(path, params={"kind": "leaderboard", "level": 1.5}).status_code == 400
    assert http.get(path, params={"kind": "everything"}).status_code == 400
    empty = make_party(http, n_clips=2, n_raters=0)  # type: ignore[arg-type]
    header = streamed(http, f"/v1/campaigns/{empty.id}/export")[0]
    assert header == ",".join(JUDGMENT_COLUMNS) + "\n"
