"""Bulk clip uploads: a streamed body of JSON lines or CSV read into columns, row by row.

A body arrives in chunks; `ClipReader.feed` takes each chunk as it comes (only a partial last
line is carried to the next), checks every complete row against the same rules as
`POST /v1/campaigns/{id}/clips` (the `ClipIn` schema, strictly typed; criteria the campaign
has; finite scores) and against the rows before it (no repeated external id), and appends
the row to columns. Nothing of the body is kept beyond that. `ClipReader.finish` either
returns the columns (`ClipColumns`) or raises one 4xx that names each bad row by its line.

JSON lines: one `ClipIn` object a line (`{"external_id", "uri", "group", "context",
"scores": {criterion: number or null}, "features": [numbers]}`), blank lines ignored. CSV: a
header naming `external_id` and `uri`, optionally `group` and `context`, one column per
criterion (an empty cell is a missing score or no group/context), and `features` where the
campaign has a feature gate (its numbers separated by spaces). A campaign with a feature gate
needs every clip's feature vector, of its length and finite; one without takes none.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import msgspec
import numpy as np
from msgspec import Meta

from api.errors import BadRequest, PayloadTooLarge
from api.schemas import ClipIn

BulkFormat = Literal["jsonl", "csv"]
MAX_ABS_SCORE = 1e12  # larger raw scores would overflow the per-campaign standardisation
MAX_LINE_BYTES = 1_000_000  # a clip's line is well under 10 kB; no line grows the buffer past this
MAX_PROBLEMS = 10  # bad rows named in one answer; reading stops there
CSV_FIELDS = ("external_id", "uri", "group", "context")
FEATURES = "features"  # the CSV column of a clip's feature vector


class _PlainClipIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`ClipIn` without its no-NUL pattern, which costs more than the rest of a decode: in
    valid JSON a NUL can only be written `\\u0000`, so a line without that text cannot hold
    one, and a line with it is decoded as `ClipIn` (which then names the field)."""

    external_id: Annotated[str, Meta(min_length=1, max_length=256)]
    uri: Annotated[str, Meta(min_length=1, max_length=4096)]
    group: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    context: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    scores: dict[Annotated[str, Meta(min_length=1, max_length=64)], float | None] = msgspec.field(
        default_factory=dict
    )
    features: Annotated[list[float], Meta(max_length=64)] | None = None


_DECODER = msgspec.json.Decoder(ClipIn, strict=True)
_PLAIN_DECODER = msgspec.json.Decoder(_PlainClipIn, strict=True)
_NUL = b"\\u0000"


class ClipLike(Protocol):
    """A validated clip with scores aligned to the campaign's criteria (`NewClip`)."""

    @property
    def external_id(self) -> str: ...

    @property
    def uri(self) -> str: ...

    @property
    def group(self) -> str | None: ...

    @property
    def context(self) -> str | None: ...

    @property
    def scores(self) -> tuple[float | None, ...]: ...

    @property
    def features(self) -> tuple[float, ...] | None: ...


@dataclass(frozen=True)
class ClipColumns:
    """A validated clip batch by column.

    Attributes:
        external_ids, uris, groups, contexts: one entry per clip, in upload order.
        scores: (n_clips, n_criteria) float64 raw scores aligned with the campaign's criteria,
            NaN where a score is missing.
        features: (n_clips, D) float64 feature vectors where the campaign has a feature gate,
            else None.
    """

    external_ids: list[str]
    uris: list[str]
    groups: list[str | None]
    contexts: list[str | None]
    scores: np.ndarray
    features: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.external_ids)

    @classmethod
    def of(cls, clips: Sequence[ClipLike], n_criteria: int, feature_dim: int = 0) -> ClipColumns:
        """The columns of validated clips (`NewClip`s)."""
        scores = np.array([c.scores for c in clips], dtype=np.float64).reshape(
            len(clips), n_criteria
        )
        features = None
        if feature_dim:
            features = np.array([c.features for c in clips], dtype=np.float64).reshape(
                len(clips), feature_dim
            )
        return cls(
            [c.external_id for c in clips],
            [c.uri for c in clips],
            [c.group for c in clips],
            [c.context for c in clips],
            scores,
            features,
        )


class ClipReader:
    """Reads a streamed clip upload into `ClipColumns`, checking every row.

    Args:
        fmt: "jsonl" or "csv".
        criteria: the campaign's criteria, in order.
        max_clips: most clips one upload may hold (413 beyond).
        feature_dim: the length of every clip's feature vector (0: the campaign takes none).
    """

    def __init__(
        self, fmt: BulkFormat, criteria: Sequence[str], max_clips: int, feature_dim: int = 0
    ) -> None:
        self._fmt = fmt
        self._feature_dim = feature_dim
        self._features: list[tuple[float, ...]] = []
        self._criteria = tuple(criteria)
        self._known = frozenset(criteria)
        self._max_clips = max_clips
        self._rest = b""  # the last, unfinished line of the chunks so far
        self._line = 0  # lines read so far
        self._problems: list[str] = []
        self._seen: dict[str, int] = {}  # external id -> its line
        self._external_ids: list[str] = []
        self._uris: list[str] = []
        self._groups: list[str | None] = []
        self._contexts: list[str | None] = []
        self._scores: list[tuple[float | None, ...]] = []  # the rows since the last `take`
        self._score_parts: list[np.ndarray] = []  # the scores of the rows taken before
        self._feature_parts: list[np.ndarray] = []
        self._taken = 0  # rows handed out by `take`
        self._lines: list[int] = []  # each row's line, to name the rows the score check finds
        self._columns: dict[str, int] | None = None  # CSV: header name -> index
        self._stopped = False

    @property
    def failed(self) -> bool:
        """Whether enough bad rows were found to answer (the rest need not be read)."""
        return self._stopped or len(self._problems) >= MAX_PROBLEMS

    def feed(self, chunk: bytes) -> None:
        """Read the complete lines of `chunk` (with the partial line carried from before).

        Raises:
            PayloadTooLarge: more than `max_clips` rows.
        """
        if self.failed or not chunk:
            return
        data = self._rest + chunk
        end = _csv_record_end(data) if self._fmt == "csv" else data.rfind(b"\n") + 1
        self._rest = data[end:]
        if end:
            self._read(data[:end])
        if len(self._rest) > MAX_LINE_BYTES and not self.failed:
            line = self._line + 1
            self._problem(line, f"a line (or CSV record) longer than {MAX_LINE_BYTES} bytes")
            self._stopped = True

    def take(self) -> ClipColumns:
        """The rows read since the last `take` (all rows the first time), as columns, so
        that they can be stored while the rest of the body arrives. Their scores are not yet
        checked against `MAX_ABS_SCORE`: only `finish` says whether the upload is valid."""
        start, end = self._taken, len(self._external_ids)
        self._flush()
        self._taken = end
        return ClipColumns(
            self._external_ids[start:end],
            self._uris[start:end],
            self._groups[start:end],
            self._contexts[start:end],
            self._score_parts[-1] if end > start else self._no_scores(),
            (self._feature_parts[-1] if end > start else self._no_features())
            if self._feature_dim
            else None,
        )

    def finish(self) -> ClipColumns:
        """The columns of the whole upload.

        Raises:
            BadRequest: a bad row (each named by its line, up to `MAX_PROBLEMS`), or no rows.
            PayloadTooLarge: more than `max_clips` rows.
        """
        if self._rest and not self.failed:
            rest, self._rest = self._rest, b""
            self._read(rest if rest.endswith(b"\n") else rest + b"\n")
        self._flush()
        scores = np.concatenate([self._no_scores(), *self._score_parts])
        if not self.failed and scores.size:
            # NaN is a missing score; JSON numbers past the float range decode to infinity
            bad = np.flatnonzero((np.abs(np.nan_to_num(scores)) > MAX_ABS_SCORE).any(axis=1))
            for row in bad[: MAX_PROBLEMS - len(self._problems)]:
                self._problems.append(
                    f"line {self._lines[row]}: a score is not a finite number within "
                    f"+-{MAX_ABS_SCORE:g} (use null or an empty cell for a missing score)"
                )
        if self._problems:
            more = " (reading stopped there)" if self.failed else ""
            raise BadRequest(
                detail="invalid clips, nothing was added: " + "; ".join(self._problems) + more
            )
        if not self._external_ids:
            raise BadRequest(detail="the upload holds no clips")
        features = None
        if self._feature_dim:
            features = np.concatenate([self._no_features(), *self._feature_parts])
        return ClipColumns(
            self._external_ids, self._uris, self._groups, self._contexts, scores, features
        )

    def _flush(self) -> None:
        """Move the scores (and feature vectors) of the rows since the last take into
        arrays."""
        if not self._scores:
            return
        self._score_parts.append(
            np.array(self._scores, dtype=np.float64).reshape(len(self._scores), len(self._criteria))
        )
        self._scores = []
        if self._feature_dim:
            self._feature_parts.append(
                np.array(self._features, dtype=np.float64).reshape(
                    len(self._features), self._feature_dim
                )
            )
            self._features = []

    def _no_scores(self) -> np.ndarray:
        return np.empty((0, len(self._criteria)), dtype=np.float64)

    def _no_features(self) -> np.ndarray:
        return np.empty((0, self._feature_dim), dtype=np.float64)

    # rows -------------------------------------------------------------------------------------

    def _read(self, block: bytes) -> None:
        if self._fmt == "csv":
            self._read_csv(block)
            return
        # the fast path of a million rows: one decode and a few appends a row, the rest by
        # column (the slow path only for a bad row)
        decode, known, line = _PLAIN_DECODER.decode, self._known, self._line
        clips: list[Any] = []  # ClipIn, or the same fields as _PlainClipIn
        lines: list[int] = []
        for raw in block.split(b"\n")[:-1]:  # the block ends with a newline
            line += 1
            if not raw or raw.isspace():
                continue
            try:
                clip = decode(raw) if _NUL not in raw else _DECODER.decode(raw)
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as error:
                self._problem(line, _why(error))
                if self.failed:
                    break
                continue
            if clip.scores.keys() <= known:
                why = feature_problem(clip.features, self._feature_dim)
                if why is None:
                    clips.append(clip)
                    lines.append(line)
                else:
                    self._problem(line, why)
                    if self.failed:
                        break
                continue
            unknown = sorted(set(clip.scores) - known)
            self._problem(
                line,
                f"unknown criteria {unknown}; this campaign's criteria are {list(self._criteria)}",
            )
            if self.failed:
                break
        self._line = line
        criteria = self._criteria
        self._keep(clips, [tuple(map(c.scores.get, criteria)) for c in clips], lines)

    def _read_csv(self, block: bytes) -> None:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            self._line += 1
            self._problem(self._line, "not UTF-8 text")
            return
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        first = self._line
        self._line = first + text.count("\n")  # where the block ends, unless a row stops it
        clips: list[ClipIn] = []
        scores: list[tuple[float | None, ...]] = []
        lines: list[int] = []
        try:
            for row in reader:
                line = first + reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if self._columns is None:
                    self._csv_header(row, line)
                elif (read := self._csv_row(row, line)) is not None:
                    clips.append(read[0])
                    scores.append(read[1])
                    lines.append(line)
                if self.failed:
                    break
        except csv.Error as error:
            self._problems.append(f"line {first + reader.line_num}: not valid CSV ({error})")
        self._keep(clips, scores, lines)

    def _csv_header(self, row: list[str], line: int) -> None:
        names = [name.strip() for name in row]
        allowed = (*CSV_FIELDS, FEATURES) if self._feature_dim else CSV_FIELDS
        unknown = [n for n in names if n not in allowed and n not in self._known]
        repeated = sorted({n for n in names if names.count(n) > 1})
        required = ("external_id", "uri", FEATURES) if self._feature_dim else ("external_id", "uri")
        missing = [n for n in required if n not in names]
        if missing:
            self._problem(line, f"the header misses {missing}")
        if unknown:
            self._problem(
                line,
                f"the header names columns that are neither {list(allowed)} nor this "
                f"campaign's criteria {list(self._criteria)}: {unknown}",
            )
        if repeated:
            self._problem(line, f"the header repeats {repeated}")
        if self._problems:
            self._stopped = True  # no row can be read under a bad header
            return
        self._columns = {name: index for index, name in enumerate(names)}

    def _csv_row(self, row: list[str], line: int) -> tuple[ClipIn, tuple[float | None, ...]] | None:
        """The row as a clip and its scores, or None after noting what is wrong."""
        columns = self._columns
        assert columns is not None
        if len(row) != len(columns):
            self._problem(line, f"{len(row)} cells where the header names {len(columns)}")
            return None
        fields: dict[str, Any] = {
            name: row[columns[name]] or None for name in CSV_FIELDS if name in columns
        }
        try:
            clip = msgspec.convert(fields, ClipIn, strict=True)
        except msgspec.ValidationError as error:
            self._problem(line, _readable(str(error)))
            return None
        scores: list[float | None] = []
        for name in self._criteria:
            cell = row[columns[name]].strip() if name in columns else ""
            if not cell:
                scores.append(None)
                continue
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                self._problem(line, f"score {name!r} = {cell!r} is not a finite number")
                return None
            scores.append(value)
        if self._feature_dim:
            cells = row[columns[FEATURES]].split()
            try:
                values = [float(cell) for cell in cells]
            except ValueError:
                self._problem(line, f"features {row[columns[FEATURES]]!r} are not numbers")
                return None
            why = feature_problem(values, self._feature_dim)
            if why is not None:
                self._problem(line, why)
                return None
            clip = msgspec.structs.replace(clip, features=values)
        return clip, tuple(scores)

    def _keep(
        self, clips: list[Any], scores: list[tuple[float | None, ...]], lines: list[int]
    ) -> None:
        """Append checked rows to the columns, once no external id repeats an earlier one.

        Raises:
            PayloadTooLarge: more than `max_clips` rows in all.
        """
        ids = [c.external_id for c in clips]
        seen = self._seen
        if len(set(ids)) == len(ids) and seen.keys().isdisjoint(ids):
            seen.update(zip(ids, lines, strict=True))
        else:
            keep = []
            for index, (external_id, line) in enumerate(zip(ids, lines, strict=True)):
                first = seen.setdefault(external_id, line)
                if first == line:
                    keep.append(index)
                elif len(self._problems) < MAX_PROBLEMS:
                    self._problems.append(
                        f"line {line}: external id {external_id!r} repeats line {first}"
                    )
            clips = [clips[i] for i in keep]
            scores, lines = [scores[i] for i in keep], [lines[i] for i in keep]
            ids = [c.external_id for c in clips]
        room = self._max_clips - len(self._external_ids)
        if len(ids) > room:
            raise PayloadTooLarge(
                detail=f"more than {self._max_clips} clips in one upload (line {lines[room]})"
            )
        self._external_ids += ids
        self._uris += [c.uri for c in clips]
        self._groups += [c.group for c in clips]
        self._contexts += [c.context for c in clips]
        if self._feature_dim:
            self._features += [tuple(c.features) for c in clips]
        self._scores += scores
        self._lines += lines

    def _problem(self, line: int, what: str) -> None:
        self._problems.append(f"line {line}: {what}")


def feature_problem(features: Sequence[float] | None, feature_dim: int) -> str | None:
    """What is wrong with a clip's feature vector for a campaign whose vectors have
    `feature_dim` numbers (0: it takes none), or None."""
    if not feature_dim:
        return None if features is None else "this campaign has no feature gate: no features"
    if features is None:
        return f"features are required: {feature_dim} numbers"
    if len(features) != feature_dim:
        return f"features have {len(features)} numbers; this campaign's have {feature_dim}"
    if not all(math.isfinite(v) and abs(v) <= MAX_ABS_SCORE for v in features):
        return f"features must be finite numbers within +-{MAX_ABS_SCORE:g} (no NaN or infinity)"
    return None


def _csv_record_end(data: bytes) -> int:
    """The end of the last complete CSV record in `data` (just after its newline): the last
    newline with an even number of quotes before it, since a quoted cell may hold newlines
    and a quote inside a cell is written twice."""
    codes = np.frombuffer(data, dtype=np.uint8)
    quotes = np.cumsum(codes == ord('"'))
    newlines = np.flatnonzero(codes == ord("\n"))
    even = newlines[quotes[newlines] % 2 == 0]
    return int(even[-1]) + 1 if even.size else 0


def _why(error: Exception) -> str:
    """What is wrong with a row msgspec could not decode as a clip."""
    if isinstance(error, msgspec.ValidationError):
        return _readable(str(error))
    return "nested too deeply" if isinstance(error, RecursionError) else "not a JSON object"


def _readable(message: str) -> str:
    """msgspec's message with its path said as the field (`$.scores.x` -> `scores.x`)."""
    what, _, where = message.partition(" - at `$")
    where = where.rstrip("`").lstrip(".")
    if "matching regex" in what and "x00]" in what:
        what = "Text must not contain NUL characters (\\u0000)"
    return f"{what} ({where})" if where else what


__all__ = ["MAX_ABS_SCORE", "BulkFormat", "ClipColumns", "ClipReader", "feature_problem"]
