"""Exports of a campaign: every answer, preference pairs for reward models, the leaderboard.

`judgments` rows carry who answered what about which clips as shown (left, right), plus the
preference pair they imply (`prompt`, `chosen`, `rejected`: external ids; prompt is the clips'
shared group), and `gold`: an answer to a gold question (engine.gold), which tested the rater
and moved no clip. A K-set's row (`kind` "kset") carries what it asked (`kset_mode`), its
clips in the order shown (`shown`, external ids; `left` is the first) and the answer
(`ranking`, external ids best first); `seconds` is how long an answer took, where the page
said when it showed the task. `preferences` keeps only the rows with a winner that are not
gold and answer "which is better?", as reward-model training data, one pair per row; a K-set
answer gives the pairs it is rank-broken into (engine.questions.KSet.comparisons: the best
over each other clip, each other clip over the worst, or an order's consecutive pairs).
`criterion_preferences` keeps the rows with a winner that answer a criterion question ("which
is better aligned?"), one preference pair per criterion (`criterion` names it). `clips` lists
every clip once with its status (and when it was withheld). Each clip carries its status now
(`active`, `retired`, `withheld:threshold` or `withheld:reports`), so a consumer can leave out
what the operator took out. `leaderboard` is every clip by posterior rank (one posterior: the
leaderboard when the export began). Each is rendered batch by batch (`render_chunks`), so the
service streams it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Literal

from api.db import as_utc
from api.store import clip_status
from engine.questions import KSet

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
    "kset_mode",
    "shown",
    "ranking",
    "seconds",
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
    "kind",  # what the pair came from: "pair", or "kset" (one of its rank-broken pairs)
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
    """The row plus prompt/chosen/rejected (None unless one side won; a K-set's row gives
    its clips as `shown` and its answer as `ranking` instead, its pairs in `preferences`)."""
    out = dict(row)
    out["created_at"] = _iso(row["created_at"])
    out.setdefault("kset_mode", None)
    out.setdefault("seconds", None)
    out["shown"] = out["ranking"] = None
    if row.get("items") is not None:
        return _kset_row(out)
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


def _kset_row(out: dict[str, Any]) -> dict[str, Any]:
    """A K-set's judgment row: left is its first clip as shown, no right; its prompt is the
    clips' group; shown and ranking as external ids."""
    clips, items, ranking = out["kset_clips"], out["items"], out.get("ranking_positions")
    first = clips[items[0]]
    out["left_external_id"], out["left_uri"] = first["external_id"], first["uri"]
    out["left_group"], out["left_status"] = first["prompt_group"], clip_status(first)
    for name in ("external_id", "uri", "group", "status"):
        out[f"right_{name}"] = None
    groups = {clips[p]["prompt_group"] for p in items}
    out["prompt"] = groups.pop() if len(groups) == 1 else None
    out["chosen"] = out["rejected"] = out["chosen_uri"] = out["rejected_uri"] = None
    out["chosen_status"] = out["rejected_status"] = None
    out["shown"] = [clips[p]["external_id"] for p in items]
    out["ranking"] = None if ranking is None else [clips[p]["external_id"] for p in ranking]
    return out


def preferences(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The preference pairs a judgment row (`with_preference`'s) gives: its own when one
    side won, a K-set answer's rank-broken pairs (none for a skip), none for a gold row."""
    if row.get("gold") or row.get("criterion"):
        return []  # a criterion answer's pair goes to `criterion_preferences`
    if row.get("items") is None:
        return [row] if row["chosen"] is not None else []
    positions = row.get("ranking_positions")
    if positions is None:
        return []
    clips = row["kset_clips"]
    pairs = KSet(tuple(row["items"]), row["kset_mode"]).comparisons(tuple(positions))
    return [
        {
            **row,
            "chosen": clips[winner]["external_id"],
            "rejected": clips[loser]["external_id"],
            "chosen_uri": clips[winner]["uri"],
            "rejected_uri": clips[loser]["uri"],
            "chosen_status": clip_status(clips[winner]),
            "rejected_status": clip_status(clips[loser]),
        }
        for winner, loser in pairs
    ]


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
            rows = [pair for row in rows for pair in preferences(row)]
        if kind == "criterion_preferences":
            rows = [row for row in rows if row["chosen"] is not None and row.get("criterion")]
        if fmt == "jsonl":
            yield "".join(json.dumps({c: row[c] for c in columns}) + "\n" for row in rows)
            continue
        buffer.seek(0)
        buffer.truncate()
        # a list (a K-set's clips, its ranking) is one CSV cell: its JSON text
        writer.writerows([r if r.get("items") is None else _cells(r) for r in rows])
        yield buffer.getvalue()


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    """A K-set row for CSV: its lists as JSON text."""
    return {c: json.dumps(v) if isinstance(v, list) else v for c, v in row.items()}


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
    "preferences",
    "render_chunks",
    "with_preference",
]
