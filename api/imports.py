"""Past judgments to import, read from CSV or JSON lines.

One record a row (CSV with a header) or a line (JSON objects): `rater` (their name), `left`
and `right` (clips by external id; `right` empty or null for an emoji rating of `left`),
`choice` (`left`, `right`, `tie`, or `both_good` / `both_bad` where the campaign takes them)
for a pair or `level` (0 = worst) for a rating, and an
optional `time` (ISO 8601; UTC when it names no offset). The columns are the export's, so an
export's `rater_name`, `left_external_id`, `right_external_id` and `created_at` are read too;
an export's gold answer (`gold` true) is refused: it tested a rater and is no label.
Every problem of the whole text is reported at once; nothing is imported unless all is well.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ImportFormat = Literal["csv", "jsonl"]
CHOICES = ("left", "right", "tie", "both_good", "both_bad")
# the export's names for the same fields
ALIASES = {
    "rater_name": "rater",
    "left_external_id": "left",
    "right_external_id": "right",
    "created_at": "time",
}
FIELDS = ("rater", "left", "right", "choice", "level", "time")
MAX_TEXT = 256  # longest rater name or external id (as the API's other text fields)


@dataclass(frozen=True)
class PastJudgment:
    """One record: a pair's choice (`right` set, `level` None) or a rating's level."""

    line: int
    rater: str
    left: str
    right: str | None
    choice: str | None
    level: int | None
    time: datetime | None


def parse(text: str, fmt: ImportFormat) -> tuple[list[PastJudgment], list[tuple[int, str]]]:
    """The records of `text` in order (those without a problem), and every problem found,
    with its line (0: the text as a whole)."""
    rows, problems = _rows(text, fmt)
    records = []
    for line, row in rows:
        record = _record(line, row, problems)
        if record is not None:
            records.append(record)
    if not rows and not problems:
        problems.append("no records to import")
    return records, [(_line_of(problem), problem) for problem in problems]


def _line_of(problem: str) -> int:
    head = problem.split(":", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 0


def _rows(text: str, fmt: ImportFormat) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    problems: list[str] = []
    rows: list[tuple[int, dict[str, Any]]] = []
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        try:
            for row in reader:
                rows.append((reader.line_num, {k: v for k, v in row.items() if k is not None}))
        except csv.Error as error:
            problems.append(f"line {reader.line_num}: not valid CSV ({error})")
        return rows, problems
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            problems.append(f"line {line}: not a JSON object")
            continue
        if not isinstance(value, dict):
            problems.append(f"line {line}: not a JSON object")
            continue
        rows.append((line, value))
    return rows, problems


def _record(line: int, row: dict[str, Any], problems: list[str]) -> PastJudgment | None:
    fields = {ALIASES.get(key, key): value for key, value in row.items()}
    found = len(problems)
    if fields.get("kind") == "kset":  # an export's K-set row: its ranking is no pair or level
        problems.append(f"line {line}: a K-set answer is not imported (pairs and ratings only)")
        return None

    def text(name: str, required: bool) -> str | None:
        value = fields.get(name)
        if value is None or value == "":
            if required:
                problems.append(f"line {line}: {name!r} is missing")
            return None
        if not isinstance(value, str) or "\x00" in value or len(value) > MAX_TEXT:
            problems.append(
                f"line {line}: {name!r} must be text of at most {MAX_TEXT} characters, no NUL"
            )
            return None
        return value

    rater, left, right = text("rater", True), text("left", True), text("right", False)
    choice = text("choice", False)
    if choice is not None and choice not in CHOICES:
        problems.append(f"line {line}: choice {choice!r} is not one of {list(CHOICES)}")
    level = _level(fields.get("level"), line, problems)
    if right is not None and (choice is None or level is not None):
        problems.append(f"line {line}: a pair takes a 'choice' ({', '.join(CHOICES)}), no 'level'")
    if right is None and (level is None or choice is not None):
        problems.append(f"line {line}: a rating (no 'right') takes a 'level', no 'choice'")
    if right is not None and right == left:
        problems.append(f"line {line}: 'left' and 'right' are the same clip {left!r}")
    if fields.get("gold") in (True, "True", "true"):
        problems.append(f"line {line}: a gold answer (gold true) tests a rater; it is no label")
    moment = _time(fields.get("time"), line, problems)
    if len(problems) > found or rater is None or left is None:
        return None
    return PastJudgment(line, rater, left, right, choice, level, moment)


def _level(value: Any, line: int, problems: list[str]) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            problems.append(f"line {line}: level {value!r} is not a whole number")
            return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append(f"line {line}: level {value!r} is not a whole number >= 0")
        return None
    return value


def _time(value: Any, line: int, problems: list[str]) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        problems.append(f"line {line}: time {value!r} is not an ISO 8601 date and time")
        return None
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)


__all__ = ["FIELDS", "ImportFormat", "PastJudgment", "parse"]
