"""Exports of a campaign: every answer, preference pairs for reward models, the leaderboard.

`judgments` rows carry who answered what about which clips as shown (left, right), plus the
preference pair they imply (`prompt`, `chosen`, `rejected`: external ids; prompt is the clips'
shared group), and `gold`: an answer to a gold question (engine.gold), which tested the rater
and moved no clip. `preferences` keeps only the rows with a winner that are not gold and
answer "which is better?", as reward-model training data; `criterion_preferences` the rows
with a winner that answer a criterion question ("which is better aligned?"), one preference
pair per criterion (`criterion` names it). `clips` lists every clip once with its status
(and when it was withheld). Each clip carries its status now (`active`, `retired`,
`withheld:threshold` or `withheld:reports`), so a consumer can leave out what the operator
took out. `leaderboard` is every clip by posterior rank (one posterior: the leaderboard when
the export began). Each is rendered batch by batch (`render_chunks`), so the service
streams it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Literal

from api.db import as_utc

ExportFormat = Literal["csv", "jsonl"]
ExportKind = Literal["judgments", "preferences", "criterion_preferences", "clips", "leaderboard"]
JUDGMENT_COLUMNS = (
    "judgment_id",
    "seq",
    "assignment_id",
    "rater_id",
    "rater_name",
    "kind",
    "left_external_id",
    "left_uri",
    "left_group",
    "left_status",
    "right_external_id",
    "right_uri",
    "right_group",
    "right_status",
    "choice",
    "level",
    "gold",
    "prompt",
    "chosen",
    "rejected",
    "created_at",
    "criterion",
)
PREFERENCE_COLUMNS = (
    "prompt",
    "chosen",
    "rejected",
    "chosen_uri",
    "rejected_uri",
    "chosen_status",
    "rejected_status",
    "rater_id",
    "judgment_id",
)
CRITERION_PREFERENCE_COLUMNS = (
    "prompt",
    "chosen",
    "rejected",
    "criterion",
    "chosen_uri",
    "rejected_uri",
    "chosen_status",
    "rejected_status",
    "rater_id",
    "judgment_id",
)
CLIP_COLUMNS = (
    "clip_id",
    "external_id",
    "uri",
    "group",
    "context",
    "status",
    "withheld_at",
)
LEADERBOARD_COLUMNS = (
    "rank",
    "id",
    "external_id",
    "uri",
    "group",
    "context",
    "mean",
    "sd",
    "lower",
    "upper",
    "labels",
    "state",
)
COLUMNS = {
    "judgments": JUDGMENT_COLUMNS,
    "preferences": PREFERENCE_COLUMNS,
    "criterion_preferences": CRITERION_PREFERENCE_COLUMNS,
    "clips": CLIP_COLUMNS,
    "leaderboard": LEADERBOARD_COLUMNS,
}
# Litestar adds "; charset=utf-8" to text types itself
MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


def with_preference(row: dict[str, Any]) -> dict[str, Any]:
    """The row plus prompt/chosen/rejected (None unless one side won)."""
    out = dict(row)
    out["created_at"] = _iso(row["created_at"])
    same_group = row["left_group"] is not None and row["left_group"] == row["right_group"]
    out["prompt"] = row["left_group"] if same_group else None
    out["chosen"] = out["rejected"] = out["chosen_uri"] = out["rejected_uri"] = None
    out["chosen_status"] = out["rejected_status"] = None
    sides = {"left": ("left", "right"), "right": ("right", "left")}.get(row["choice"] or "")
    if sides is not None:
        winner, loser = sides
        out["chosen"], out["rejected"] = row[f"{winner}_external_id"], row[f"{loser}_external_id"]
        out["chosen_uri"], out["rejected_uri"] = row[f"{winner}_uri"], row[f"{loser}_uri"]
        out["chosen_status"] = row[f"{winner}_status"]
        out["rejected_status"] = row[f"{loser}_status"]
    return out


def render_chunks(
    batches: Iterable[list[dict[str, Any]]], kind: ExportKind, fmt: ExportFormat
) -> Iterator[str]:
    """The export as CSV (a header first, also when there is no row) or JSON lines, one
    chunk of text per batch of rows (judgment rows as `store.export_rows` reads them, clip
    rows as `store.export_clips`, leaderboard rows with `LEADERBOARD_COLUMNS`)."""
    columns = COLUMNS[kind]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    if fmt == "csv":
        writer.writeheader()
        yield buffer.getvalue()
    for batch in batches:
        if kind == "leaderboard":
            rows = batch
        elif kind == "clips":
            rows = [{**row, "withheld_at": _iso_or_none(row["withheld_at"])} for row in batch]
        else:
            rows = [with_preference(row) for row in batch]
        if kind == "preferences":
            rows = [
                row
                for row in rows
                if row["chosen"] is not None and not row.get("gold") and not row.get("criterion")
            ]
        if kind == "criterion_preferences":
            rows = [row for row in rows if row["chosen"] is not None and row.get("criterion")]
        if fmt == "jsonl":
            yield "".join(json.dumps({c: row[c] for c in columns}) + "\n" for row in rows)
            continue
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(rows)
        yield buffer.getvalue()


def _iso(moment: datetime) -> str:
    return as_utc(moment).isoformat()


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _iso(moment)


__all__ = [
    "CLIP_COLUMNS",
    "LEADERBOARD_COLUMNS",
    "MEDIA_TYPES",
    "ExportFormat",
    "ExportKind",
    "render_chunks",
    "with_preference",
]
