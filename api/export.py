"""Exports of a campaign's judgments: every answer, and preference pairs for reward models.

`judgments` rows carry who answered what about which clips as shown (left, right), plus the
preference pair they imply (`prompt`, `chosen`, `rejected`: external ids; prompt is the clips'
shared group), and `gold`: an answer to a gold question (engine.gold), which tested the rater
and moved no clip. `preferences` keeps only the rows with a winner that are not gold, as
reward-model training data. `clips` lists every clip once with its status (and when it was
withheld). Each clip carries its status now (`active`, `retired`, `withheld:threshold` or
`withheld:reports`), so a consumer can leave out what the operator took out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from api.db import as_utc

ExportFormat = Literal["csv", "jsonl"]
ExportKind = Literal["judgments", "preferences", "clips"]
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
CLIP_COLUMNS = (
    "clip_id",
    "external_id",
    "uri",
    "group",
    "context",
    "status",
    "withheld_at",
)
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


def render(rows: Iterable[dict[str, Any]], kind: ExportKind, fmt: ExportFormat) -> str:
    """The export as CSV (with a header) or JSON lines."""
    if kind == "clips":
        full = [{**row, "withheld_at": _iso_or_none(row["withheld_at"])} for row in rows]
        columns = CLIP_COLUMNS
    else:
        full = [with_preference(row) for row in rows]
        if kind == "preferences":
            full = [row for row in full if row["chosen"] is not None and not row.get("gold")]
        columns = JUDGMENT_COLUMNS if kind == "judgments" else PREFERENCE_COLUMNS
    if fmt == "jsonl":
        return "".join(json.dumps({c: row[c] for c in columns}) + "\n" for row in full)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(full)
    return buffer.getvalue()


def _iso(moment: datetime) -> str:
    return as_utc(moment).isoformat()


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _iso(moment)


__all__ = ["MEDIA_TYPES", "ExportFormat", "ExportKind", "render", "with_preference"]
