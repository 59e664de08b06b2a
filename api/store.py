"""Every SQL statement the service runs: writes (as ops for `api.writer.Writer`) and reads.

Plain records cross this module's boundary (dataclasses and dicts), never SQLModel objects.
Writes use SQLAlchemy Core statements on the SQLModel tables: the hot paths (an assignment,
a judgment) are one INSERT and at most one UPDATE each, compiled once per dialect and run on
the DB-API cursor (`Prepared`), because SQLAlchemy's per-execution work costs several times
what SQLite itself spends on a one-row INSERT.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql.dml import UpdateBase

from api.bulk import ClipColumns
from api.db import (
    AssignmentRow,
    CampaignRow,
    ClipReportRow,
    ClipRow,
    GoldPairRow,
    ImportRow,
    JudgmentRow,
    ProgressRow,
    RaterRow,
    RefitRow,
    SnapshotPartRow,
    SnapshotRow,
    utcnow,
)

T = TypeVar("T")
campaign_table = CampaignRow.__table__  # type: ignore[attr-defined]
clip_table = ClipRow.__table__  # type: ignore[attr-defined]
_CLIP_COLUMNS = (
    "campaign_id",
    "position",
    "external_id",
    "uri",
    "prompt_group",
    "context",
    "scores",
    "batch",
    "after_seq",
    "created_at",
    "withheld",
    "withheld_at",
    "features",
)
_SCORES = msgspec.json.Encoder()
_COPY_CLIPS = f"COPY clip ({', '.join(_CLIP_COLUMNS)}) FROM STDIN"
# COPY text escapes, backslash first so that the others' backslashes stay single
_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
EXPORT_BATCH = 2_000  # judgments read (and sent) at a time by an export
rater_table = RaterRow.__table__  # type: ignore[attr-defined]
assignment_table = AssignmentRow.__table__  # type: ignore[attr-defined]
judgment_table = JudgmentRow.__table__  # type: ignore[attr-defined]
progress_table = ProgressRow.__table__  # type: ignore[attr-defined]
import_table = ImportRow.__table__  # type: ignore[attr-defined]
snapshot_table = SnapshotRow.__table__  # type: ignore[attr-defined]
snapshot_part_table = SnapshotPartRow.__table__  # type: ignore[attr-defined]
refit_table = RefitRow.__table__  # type: ignore[attr-defined]
gold_table = GoldPairRow.__table__  # type: ignore[attr-defined]
report_table = ClipReportRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CampaignRecord:
    """A campaign row."""

    id: int
    name: str
    criteria: tuple[str, ...]
    pair_scope: str
    ties: bool
    emoji_levels: int | None
    lease_seconds: float
    engine_config: dict[str, Any]
    created_at: datetime
    state: str = "active"
    skip_limit: int = 3
    safety_threshold: float | None = None
    report_limit: int = 1


@dataclass(frozen=True)
class ClipRecord:
    """A clip row; `scores` aligned with the campaign's criteria (None where missing)."""

    id: int
    position: int
    external_id: str
    uri: str
    group: str | None
    context: str | None
    scores: tuple[float | None, ...]
    batch: int
    after_seq: int
    features: tuple[float, ...] | None = None  # where the campaign has a feature gate
    retired: bool = False
    skips_cleared: int = 0
    withheld: str | None = None
    withheld_at: datetime | None = None
    restored_at: datetime | None = None
    reports_cleared: int = 0


@dataclass(frozen=True)
class ReportRecord:
    """A rater's report that a clip of their task is unsafe or broken."""

    id: int
    clip_id: int
    rater_id: int
    assignment_id: int
    created_at: datetime


@dataclass(frozen=True)
class RaterRecord:
    """A rater row (token hash only)."""

    id: int
    campaign_id: int
    name: str | None
    token_hash: str
    active: bool = True


@dataclass(frozen=True)
class AssignmentRecord:
    """An assignment row."""

    id: int
    rater_id: int
    first: int
    second: int
    swapped: bool
    status: str
    expires_at: datetime
    gold: str | None = None
    items: tuple[int, ...] | None = None  # a K-set's clip positions, in the order shown
    kset_mode: str | None = None
    criterion: str | None = None


@dataclass(frozen=True)
class JudgmentRecord:
    """A judgment row."""

    id: int
    assignment_id: int
    rater_id: int
    choice: str | None
    level: int | None
    first: int
    second: int
    outcome: str | None
    seq: int | None
    batch: int | None
    swapped: bool = False  # its assignment showed `first` on the right

    @property
    def left(self) -> int | None:
        """The clip shown on the left (None for a rating)."""
        if self.second < 0:
            return None
        return self.second if self.swapped else self.first

    gold: str | None = None
    items: tuple[int, ...] | None = None  # a K-set's clip positions, in the order shown
    kset_mode: str | None = None
    ranking: tuple[int, ...] | None = None  # a K-set's answer, best first
    seconds: float | None = None
    criterion: str | None = None  # a criterion question's criterion (engine.criteria)


@dataclass(frozen=True)
class SnapshotRecord:
    """A campaign's latest snapshot row (api/snapshots.py)."""

    format: str
    config: str
    labels: int
    label_batch: int
    clip_batch: int
    data: bytes
    # the key of the parts that hold the bytes (`data` is then empty: `insert_snapshot_part`)
    parts_key: str | None = None


@dataclass(frozen=True)
class RefitRecord:
    """A prior refit the engine adopted (api/refits.py): `refit` is its values as JSON
    (api/replay.py reads them), the rest where its copy was made and where it was adopted."""

    config: str
    ordinal: int
    copy_entries: int
    label_batch: int
    clip_batch: int
    refit: str


@dataclass(frozen=True)
class CampaignLog:
    """What a campaign's replay needs, each list in its table's order of application."""

    clips: list[ClipRecord]
    raters: list[RaterRecord]
    assignments: list[AssignmentRecord]
    judgments: list[JudgmentRecord]
    gold: list[GoldRecord] = field(default_factory=list)
    reports: list[ReportRecord] = field(default_factory=list)
    refits: list[RefitRecord] = field(default_factory=list)  # in order of adoption


@dataclass(frozen=True)
class GoldRecord:
    """A gold pair row: `answer` is the outcome of `first` against `second` (positions)."""

    id: int
    first: int
    second: int
    answer: str


# prepared statements ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    """A statement's SQL for one dialect, its bind names in the driver's order and their bind
    processors (None where the driver takes the Python value as it is)."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool


class Prepared:
    """A Core DML statement compiled once per dialect and run on the DB-API cursor.

    `Connection.execute` spends several times longer in Python per call (cache key, execution
    context, result wrapping) than SQLite takes to run a small statement; this keeps
    SQLAlchemy for the SQL text and the bind processors (SQLite's datetime strings, booleans)
    and calls the driver directly, inside the connection's transaction. Every bind parameter
    must be named in the statement (`bindparam(name)`); defaults on the SQLAlchemy side are
    never evaluated.

    Args:
        statement: the statement, with one `bindparam` per value passed to `execute`.
    """

    def __init__(self, statement: UpdateBase) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, str], _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        key = (dialect.name, dialect.driver)
        found = self._compiled.get(key)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            positional = bool(dialect.positional)
            names = tuple(compiled.positiontup or ()) if positional else tuple(compiled.binds)
            processors = tuple(
                compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in names
            )
            found = _Compiled(compiled.string, names, processors, positional)
            self._compiled[key] = found
        return found

    @staticmethod
    def _params(compiled: _Compiled, values: Mapping[str, Any]) -> Any:
        converted = [
            value if process is None or value is None else process(value)
            for process, value in zip(
                compiled.processors, (values[name] for name in compiled.names), strict=True
            )
        ]
        return (
            tuple(converted)
            if compiled.positional
            else dict(zip(compiled.names, converted, strict=True))
        )

    def execute(self, connection: Connection, values: Mapping[str, Any]) -> list[Any]:
        """Run the statement with `values` in `connection`'s transaction; the rows it returned
        (RETURNING), as DB-API tuples."""
        compiled = self._for(connection.dialect)
        cursor = connection.connection.cursor()
        try:
            cursor.execute(compiled.sql, self._params(compiled, values))
            # fetch everything: SQLite keeps a RETURNING statement open until it is drained
            return list(cursor.fetchall()) if cursor.description is not None else []
        finally:
            cursor.close()


_ASSIGNMENT_COLUMNS = (
    "campaign_id",
    "rater_id",
    "first",
    "second",
    "swapped",
    "gain",
    "gold",
    "items",
    "kset_mode",
    "criterion",
    "status",
    "expires_at",
    "created_at",
)
_JUDGMENT_COLUMNS = (
    "campaign_id",
    "assignment_id",
    "rater_id",
    "choice",
    "level",
    "first",
    "second",
    "outcome",
    "gold",
    "ranking",
    "seconds",
    "criterion",
    "seq",
    "created_at",
)
_INSERT_ASSIGNMENT = Prepared(
    insert(assignment_table)
    .values({name: bindparam(name) for name in _ASSIGNMENT_COLUMNS})
    .returning(assignment_table.c.id)
)
_INSERT_JUDGMENT = Prepared(
    insert(judgment_table)
    .values({name: bindparam(name) for name in _JUDGMENT_COLUMNS})
    .returning(judgment_table.c.id)
)
_CLOSE_ASSIGNMENT = Prepared(
    update(assignment_table)
    .where(assignment_table.c.id == bindparam("assignment_id"))
    .values(status=bindparam("status"))
)


# writes -------------------------------------------------------------------------------------


def insert_campaign(values: dict[str, Any]) -> Callable[[Connection], CampaignRecord]:
    """Op: insert a campaign (values as CampaignRow columns, criteria and engine_config as
    Python objects)."""

    def op(connection: Connection) -> CampaignRecord:
        row = {
            **values,
            "criteria": json.dumps(list(values["criteria"])),
            "engine_config": json.dumps(values["engine_config"]),
            "created_at": utcnow(),
        }
        result = connection.execute(insert(campaign_table).returning(campaign_table), row)
        return _campaign(result.mappings().one())

    return op


def insert_clip_columns(
    campaign_id: int,
    columns: ClipColumns,
    start: int,
    batch: int,
    after_seq: int,
    withheld: Sequence[str | None] | None = None,
) -> Callable[[Connection], list[int]]:
    """Op: insert a clip batch given by column at positions `start`...; returns the new row
    ids in the given order. `withheld`: each clip's reason to be withheld from its arrival
    (None: none), when any is.

    One statement for the whole batch: PostgreSQL's COPY (its text written by column,
    `clip_copy_text`), SQLite's executemany (the SQLite module's C loop), since row-by-row
    inserts through SQLAlchemy cost more than everything else of a bulk upload. The ids are
    read back by position in the same transaction.
    """

    def op(connection: Connection) -> list[int]:
        created: Any = utcnow()
        # the driver's own connection, in this transaction: SQLAlchemy's executemany costs
        # as much per row again as the insert
        raw: Any = connection.connection.driver_connection
        if connection.dialect.name == "postgresql":
            with raw.cursor() as cursor, cursor.copy(_COPY_CLIPS) as copy:
                copy.write(
                    clip_copy_text(campaign_id, columns, start, batch, after_seq, created, withheld)
                )
            return _clip_ids(raw, "%s", campaign_id, start)
        # SQLite stores SQLAlchemy's text of the time: made once, not per row
        column_type = clip_table.c.created_at.type.dialect_impl(connection.dialect)
        stamp = column_type.bind_processor(connection.dialect)
        created = stamp(created) if stamp else created
        features: Any = itertools.repeat(None)
        if columns.features is not None:
            features = _json_lines(columns.features)
        values = zip(
            itertools.repeat(campaign_id),
            range(start, start + len(columns)),
            columns.external_ids,
            columns.uris,
            columns.groups,
            columns.contexts,
            _json_lines(columns.scores),
            itertools.repeat(batch),
            itertools.repeat(after_seq),
            itertools.repeat(created),
            itertools.repeat(None) if withheld is None else withheld,
            itertools.repeat(None)
            if withheld is None
            else (None if reason is None else created for reason in withheld),
            features,
            strict=False,  # the repeats are endless; the columns have n_clips entries each
        )
        marks = ", ".join("?" * len(_CLIP_COLUMNS))
        cursor = raw.cursor()
        try:
            cursor.executemany(
                f"INSERT INTO clip ({', '.join(_CLIP_COLUMNS)}) VALUES ({marks})", values
            )
        finally:
            cursor.close()
        return _clip_ids(raw, "?", campaign_id, start)

    return op


def clip_copy_text(
    campaign_id: int,
    columns: ClipColumns,
    start: int,
    batch: int,
    after_seq: int,
    created: datetime,
    withheld: Sequence[str | None] | None = None,
) -> bytes:
    """The rows of `insert_clip_columns` in PostgreSQL's COPY text format (`_CLIP_COLUMNS`
    in order, tab-separated, `\\N` for null), made column by column: each text column is
    escaped as one joined string rather than cell by cell."""
    n_clips = len(columns)
    stamp = created.isoformat()
    head = f"{campaign_id}\t"
    middle = f"\t{batch}\t{after_seq}\t{stamp}\t"
    reasons: Any = itertools.repeat("\\N\t\\N")
    if withheld is not None:
        reasons = [
            "\\N\t\\N" if r is None else f"{_copy_escape([r])[0]}\t{stamp}" for r in withheld
        ]
    features: Any = itertools.repeat("\\N")
    if columns.features is not None:
        features = _json_lines(columns.features)
    rows = map(
        "".join,
        zip(
            itertools.repeat(head),
            map(str, range(start, start + n_clips)),
            itertools.repeat("\t"),
            _copy_escape(columns.external_ids),
            itertools.repeat("\t"),
            _copy_escape(columns.uris),
            itertools.repeat("\t"),
            _copy_escape(columns.groups),
            itertools.repeat("\t"),
            _copy_escape(columns.contexts),
            itertools.repeat("\t"),
            _json_lines(columns.scores),  # numbers and null: nothing to escape
            itertools.repeat(middle),
            reasons,
            itertools.repeat("\t"),
            features,
            itertools.repeat("\n"),
            strict=False,  # the repeats are endless; the columns have n_clips entries each
        ),
    )
    return "".join(rows).encode()


def _copy_escape(texts: Sequence[str | None]) -> list[str]:
    """Each text as a COPY cell (backslash, tab, newline and carriage return escaped; None
    as `\\N`). The texts are joined by NUL, which no clip text holds (`ClipIn` refuses it),
    escaped at once and split again; an empty text (also refused) stands for None."""
    if not texts:
        return []
    joined = "\0".join([t or "" for t in texts])
    if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
        for plain, escaped in _COPY_ESCAPES:
            joined = joined.replace(plain, escaped)
    return [t or "\\N" for t in joined.split("\0")]


def _json_lines(values: Any) -> list[str]:
    """Each row of a float array as a JSON list; NaN (a missing value) is written null, as
    msgspec writes it."""
    return _SCORES.encode_lines(values.tolist()).decode().split("\n")[:-1]


def _clip_ids(raw: Any, marker: str, campaign_id: int, start: int) -> list[int]:
    """The ids of the campaign's clips at positions `start`..., by position."""
    cursor = raw.cursor()
    try:
        cursor.execute(
            f"SELECT id FROM clip WHERE campaign_id = {marker} AND position >= {marker} "
            "ORDER BY position",
            (campaign_id, start),
        )
        return [row[0] for row in cursor.fetchall()]
    finally:
        cursor.close()


class ClipCopy:
    """A clip upload written to PostgreSQL while its body is still read: one transaction on a
    connection of its own (not the writer's, whose other ops go on meanwhile), one COPY fed
    batch by batch (`write`), then `finish` and `commit`, or `abandon`. Nothing is seen by
    anyone else before the commit, so an upload that turns out bad leaves no trace.

    The methods block on the database: the service runs them on a thread, one at a time and
    in order, so that it reads the next chunk while this one is written.

    Args:
        engine: the database's engine (PostgreSQL).
        campaign_id: the campaign the clips join.
        start: the position of the first clip.
        batch: the clip batch number of the upload.
        after_seq: the judgments applied so far (`end` corrects it should more be applied
            before the engine takes the clips).
    """

    def __init__(
        self, engine: Engine, campaign_id: int, start: int, batch: int, after_seq: int
    ) -> None:
        self.campaign_id = campaign_id
        self.start = start
        self.batch = batch
        self.after_seq = after_seq
        self.n_written = 0
        self._created = utcnow()
        self._connection = engine.connect()
        self._stack = contextlib.ExitStack()
        try:
            self._transaction = self._connection.begin()
            raw: Any = self._connection.connection.driver_connection
            cursor = self._stack.enter_context(raw.cursor())
            self._copy: Any = self._stack.enter_context(cursor.copy(_COPY_CLIPS))
        except BaseException:
            self.abandon()
            raise

    def write(self, columns: ClipColumns, withheld: Sequence[str | None] | None = None) -> None:
        """Send the next clips (positions after those sent so far)."""
        position = self.start + self.n_written
        created = self._created
        self._copy.write(
            clip_copy_text(
                self.campaign_id, columns, position, self.batch, self.after_seq, created, withheld
            )
        )
        self.n_written += len(columns)

    def end(self, after_seq: int) -> Callable[[Connection], list[int]]:
        """Op for `finish`: write `after_seq` (the judgments applied before the engine took
        the clips) where it differs from the one sent; returns the new row ids by position."""

        def op(connection: Connection) -> list[int]:
            if after_seq != self.after_seq:
                connection.execute(
                    update(clip_table)
                    .where(
                        clip_table.c.campaign_id == self.campaign_id,
                        clip_table.c.position >= self.start,
                    )
                    .values(after_seq=after_seq)
                )
            raw: Any = connection.connection.driver_connection
            return _clip_ids(raw, "%s", self.campaign_id, self.start)

        return op

    def finish(self, op: Callable[[Connection], T]) -> T:
        """End the COPY and run `op` (`end`, fenced) in the upload's transaction, which stays
        open for `commit`; on any error nothing is written."""
        try:
            self._stack.close()  # the COPY ends; a refusal by the server raises here
            return op(self._connection)
        except BaseException:
            self.abandon()
            raise

    def commit(self) -> None:
        """Commit the upload (after `finish`); on an error nothing is written."""
        try:
            self._transaction.commit()
        except BaseException:
            self.abandon()
            raise
        self._connection.close()

    def abandon(self) -> None:
        """Drop the upload (again: nothing): its connection is closed unreturned (the server
        rolls the transaction back), which also holds where a COPY is still open."""
        if self._connection.closed:
            return
        self._connection.invalidate()
        self._connection.close()


def insert_rater(
    campaign_id: int, name: str | None, token_hash: str
) -> Callable[[Connection], int]:
    """Op: register a rater; returns their id."""

    def op(connection: Connection) -> int:
        result = connection.execute(
            insert(rater_table).returning(rater_table.c.id),
            {
                "campaign_id": campaign_id,
                "name": name,
                "token_hash": token_hash,
                "created_at": utcnow(),
            },
        )
        return int(result.scalar_one())

    return op


def insert_assignment(values: dict[str, Any]) -> Callable[[Connection], int]:
    """Op: insert an open assignment; returns its id."""

    row = {
        "gold": None,
        "items": None,
        "kset_mode": None,
        "criterion": None,
        **values,
        "status": "open",
        "created_at": utcnow(),
    }

    def op(connection: Connection) -> int:
        return int(_INSERT_ASSIGNMENT.execute(connection, row)[0][0])

    return op


def insert_judgment(values: dict[str, Any], status: str) -> Callable[[Connection], int]:
    """Op: insert a judgment and close its assignment (`status`) in the same transaction."""

    row = {
        "gold": None,
        "ranking": None,
        "seconds": None,
        "criterion": None,
        **values,
        "created_at": utcnow(),
    }
    close = {"assignment_id": values["assignment_id"], "status": status}

    def op(connection: Connection) -> int:
        judgment_id = int(_INSERT_JUDGMENT.execute(connection, row)[0][0])
        _CLOSE_ASSIGNMENT.execute(connection, close)
        return judgment_id

    return op


def update_campaign(
    campaign_id: int,
    values: Mapping[str, Any],
    check: Callable[[Connection], None] | None = None,
    withdraw: Sequence[int] = (),
) -> Callable[[Connection], CampaignRecord]:
    """Op: change a campaign's columns (`engine_config` as a Python object) after `check`
    passed in the same transaction, and withdraw the open assignments `withdraw`; returns
    the campaign as stored."""

    def op(connection: Connection) -> CampaignRecord:
        if check is not None:
            check(connection)
        row = dict(values)
        if "engine_config" in row:
            row["engine_config"] = json.dumps(row["engine_config"])
        if row:
            connection.execute(
                update(campaign_table).where(campaign_table.c.id == campaign_id).values(row)
            )
        withdraw_assignments(withdraw)(connection)
        found = connection.execute(
            select(campaign_table).where(campaign_table.c.id == campaign_id)
        ).mappings()
        return _campaign(found.one())

    return op


def withdraw_assignments(ids: Sequence[int]) -> Callable[[Connection], None]:
    """Op: mark the assignments `ids` that are still open as withdrawn (never handed back on
    a restart; an answer arriving later is refused)."""

    def op(connection: Connection) -> None:
        if ids:
            connection.execute(
                update(assignment_table)
                .where(assignment_table.c.id.in_(list(ids)), assignment_table.c.status == "open")
                .values(status="withdrawn")
            )

    return op


def set_clip_retired(
    campaign_id: int, clip_id: int, retired: bool, withdraw: Sequence[int] = ()
) -> Callable[[Connection], int]:
    """Op: retire or restore a clip, withdrawing the open assignments `withdraw` (a retire).
    Either ends a withholding (the operator decided). A restore also forgets the skips of its
    tasks and the reports of it so far; returns the last judgment id it forgets the skips up
    to (0 for a retire)."""

    def op(connection: Connection) -> int:
        values: dict[str, Any] = {"retired": retired, "withheld": None}
        cleared = 0
        if not retired:
            cleared = int(
                connection.execute(
                    select(func.coalesce(func.max(judgment_table.c.id), 0)).where(
                        judgment_table.c.campaign_id == campaign_id
                    )
                ).scalar_one()
            )
            values["skips_cleared"] = cleared
            values["restored_at"] = utcnow()
            values["reports_cleared"] = int(
                connection.execute(
                    select(func.coalesce(func.max(report_table.c.id), 0)).where(
                        report_table.c.clip_id == clip_id
                    )
                ).scalar_one()
            )
        connection.execute(
            update(clip_table)
            .where(clip_table.c.campaign_id == campaign_id, clip_table.c.id == clip_id)
            .values(values)
        )
        withdraw_assignments(withdraw)(connection)
        return cleared

    return op


def insert_gold(
    campaign_id: int, pairs: Sequence[tuple[int, int, str]]
) -> Callable[[Connection], list[int]]:
    """Op: store gold pairs `(first, second, answer)` (positions, first < second); returns
    their ids."""

    def op(connection: Connection) -> list[int]:
        ids = []
        for first, second, answer in pairs:
            result = connection.execute(
                insert(gold_table).returning(gold_table.c.id),
                {
                    "campaign_id": campaign_id,
                    "first": first,
                    "second": second,
                    "answer": answer,
                    "created_at": utcnow(),
                },
            )
            ids.append(int(result.scalar_one()))
        return ids

    return op


def withhold_clips(
    campaign_id: int, clip_ids: Sequence[int], reason: str, withdraw: Sequence[int] = ()
) -> Callable[[Connection], datetime]:
    """Op: withhold clips for `reason` ("threshold" or "reports"), withdrawing the open
    assignments `withdraw` (those that hold them); returns when."""

    def op(connection: Connection) -> datetime:
        now = utcnow()
        if clip_ids:
            connection.execute(
                update(clip_table)
                .where(clip_table.c.campaign_id == campaign_id, clip_table.c.id.in_(list(clip_ids)))
                .values(withheld=reason, withheld_at=now)
            )
        withdraw_assignments(withdraw)(connection)
        return now

    return op


def insert_report(
    values: dict[str, Any], withdraw: Sequence[int] = (), withhold: bool = False
) -> Callable[[Connection], ReportRecord]:
    """Op: store a rater's report of a clip (values as ClipReportRow columns), withdraw the
    open assignments `withdraw` and, when `withhold`, withhold the clip for its reports, all
    in one transaction."""

    def op(connection: Connection) -> ReportRecord:
        now = utcnow()
        row = {**values, "created_at": now}
        report_id = int(
            connection.execute(insert(report_table).returning(report_table.c.id), row).scalar_one()
        )
        if withhold:
            connection.execute(
                update(clip_table)
                .where(clip_table.c.id == values["clip_id"])
                .values(withheld="reports", withheld_at=now)
            )
        withdraw_assignments(withdraw)(connection)
        return ReportRecord(
            report_id, values["clip_id"], values["rater_id"], values["assignment_id"], now
        )

    return op


def set_rater_active(
    rater_id: int, active: bool, withdraw: Sequence[int] = ()
) -> Callable[[Connection], None]:
    """Op: deactivate or reactivate a rater, withdrawing their open assignments `withdraw`."""

    def op(connection: Connection) -> None:
        connection.execute(
            update(rater_table).where(rater_table.c.id == rater_id).values(active=active)
        )
        withdraw_assignments(withdraw)(connection)

    return op


@dataclass(frozen=True)
class Imported:
    """What an import op wrote: the new raters' ids (in the order given) and, per judgment,
    its assignment and judgment ids; None when the key was taken meanwhile."""

    rater_ids: list[int]
    assignment_ids: list[int]
    judgment_ids: list[int]


def find_import(engine: Engine, campaign_id: int, key: str) -> tuple[str, dict[str, Any]] | None:
    """(digest, result) of the campaign's import with this key, or None."""
    with engine.connect() as connection:
        row = connection.execute(
            select(import_table.c.digest, import_table.c.result).where(
                import_table.c.campaign_id == campaign_id, import_table.c.key == key
            )
        ).first()
    return None if row is None else (row[0], json.loads(row[1]))


def insert_import(
    campaign_id: int,
    key: str,
    digest: str,
    result: dict[str, Any],
    raters: Sequence[tuple[str, str]],
    judgments: Sequence[dict[str, Any]],
) -> Callable[[Connection], Imported | None]:
    """Op: one import in one transaction: its key, the new raters (name, token hash), and per
    judgment an answered assignment and the judgment. A judgment's `rater_id` is a rater id,
    or `-(k + 1)` for the k-th new rater. Writes nothing and returns None when the key exists.
    """

    def op(connection: Connection) -> Imported | None:
        taken = connection.execute(
            select(import_table.c.id).where(
                import_table.c.campaign_id == campaign_id, import_table.c.key == key
            )
        ).first()
        if taken is not None:
            return None
        now = utcnow()
        connection.execute(
            insert(import_table),
            {
                "campaign_id": campaign_id,
                "key": key,
                "digest": digest,
                "result": json.dumps(result),
                "created_at": now,
            },
        )
        rater_ids: list[int] = []
        if raters:
            statement = insert(rater_table).returning(
                rater_table.c.id, sort_by_parameter_order=True
            )
            rows = [
                {"campaign_id": campaign_id, "name": name, "token_hash": digest_, "created_at": now}
                for name, digest_ in raters
            ]
            rater_ids = [int(i) for i in connection.execute(statement, rows).scalars()]
        # new dicts, never the caller's: the writer may run this op a second time
        resolved = [
            {**j, "rater_id": rater_ids[-j["rater_id"] - 1] if j["rater_id"] < 0 else j["rater_id"]}
            for j in judgments
        ]
        assignments = [
            {
                "campaign_id": campaign_id,
                "rater_id": j["rater_id"],
                "first": j["first"],
                "second": j["second"],
                "swapped": False,
                "gain": 0.0,
                "status": "answered",
                "created_at": j["created_at"],
                "expires_at": j["created_at"],
            }
            for j in resolved
        ]
        statement = insert(assignment_table).returning(
            assignment_table.c.id, sort_by_parameter_order=True
        )
        assignment_ids = [int(i) for i in connection.execute(statement, assignments).scalars()]
        rows = [
            {**j, "campaign_id": campaign_id, "assignment_id": a}
            for j, a in zip(resolved, assignment_ids, strict=True)
        ]
        statement = insert(judgment_table).returning(
            judgment_table.c.id, sort_by_parameter_order=True
        )
        judgment_ids = [int(i) for i in connection.execute(statement, rows).scalars()]
        return Imported(rater_ids, assignment_ids, judgment_ids)

    return op


def label_counts(connection: Connection, campaign_id: int) -> tuple[int, int]:
    """(pair labels, emoji ratings) stored for the campaign."""
    query = (
        select(judgment_table.c.level.is_(None), func.count())
        .where(judgment_table.c.campaign_id == campaign_id, judgment_table.c.seq.is_not(None))
        .group_by(judgment_table.c.level.is_(None))
    )
    counts = {bool(is_pair): int(count) for is_pair, count in connection.execute(query)}
    return counts.get(True, 0), counts.get(False, 0)


def mark_batch(campaign_id: int, seqs: Sequence[int], batch: int) -> Callable[[Connection], None]:
    """Op: record that the labels `seqs` were applied together as engine batch `batch`."""

    def op(connection: Connection) -> None:
        connection.execute(
            update(judgment_table)
            .where(judgment_table.c.campaign_id == campaign_id, judgment_table.c.seq.in_(seqs))
            .values(batch=batch)
        )

    return op


def insert_progress(
    campaign_id: int, labels: int, expected_kendall_tau: float | None
) -> Callable[[Connection], None]:
    """Op: record one progress point."""

    def op(connection: Connection) -> None:
        connection.execute(
            insert(progress_table),
            {
                "campaign_id": campaign_id,
                "labels": labels,
                "expected_kendall_tau": expected_kendall_tau,
                "at": utcnow(),
            },
        )

    return op


def insert_snapshot(campaign_id: int, snapshot: SnapshotRecord) -> Callable[[Connection], None]:
    """Op: store the campaign's snapshot in place of the one before (only the latest is
    read). With `parts_key`, its parts are stored already (`insert_snapshot_part`); the parts
    of the snapshots before are left for `delete_stale_snapshot_part`."""

    def op(connection: Connection) -> None:
        connection.execute(
            delete(snapshot_table).where(snapshot_table.c.campaign_id == campaign_id)
        )
        connection.execute(
            insert(snapshot_table),
            {
                "campaign_id": campaign_id,
                "format": snapshot.format,
                "config": snapshot.config,
                "labels": snapshot.labels,
                "label_batch": snapshot.label_batch,
                "clip_batch": snapshot.clip_batch,
                "data": snapshot.data,
                "parts_key": snapshot.parts_key,
                "created_at": utcnow(),
            },
        )

    return op


def insert_refit(campaign_id: int, refit: RefitRecord) -> Callable[[Connection], None]:
    """Op: record a prior refit the engine is about to adopt."""

    def op(connection: Connection) -> None:
        connection.execute(
            insert(refit_table),
            {
                "campaign_id": campaign_id,
                "config": refit.config,
                "ordinal": refit.ordinal,
                "copy_entries": refit.copy_entries,
                "label_batch": refit.label_batch,
                "clip_batch": refit.clip_batch,
                "refit": refit.refit,
                "created_at": utcnow(),
            },
        )

    return op


def delete_refit(campaign_id: int, config: str, ordinal: int) -> Callable[[Connection], None]:
    """Op: forget a refit the engine did not adopt after all."""

    def op(connection: Connection) -> None:
        connection.execute(
            delete(refit_table).where(
                refit_table.c.campaign_id == campaign_id,
                refit_table.c.config == config,
                refit_table.c.ordinal == ordinal,
            )
        )

    return op


def insert_snapshot_part(
    campaign_id: int, key: str, part: int, data: bytes | memoryview
) -> Callable[[Connection], None]:
    """Op: store part `part` (from 0) of the snapshot bytes under `key` (a view of them is
    copied in the writer's thread)."""

    def op(connection: Connection) -> None:
        connection.execute(
            insert(snapshot_part_table),
            {"campaign_id": campaign_id, "snapshot_key": key, "part": part, "data": bytes(data)},
        )

    return op


def delete_stale_snapshot_part(campaign_id: int) -> Callable[[Connection], bool]:
    """Op: delete one part of the campaign's snapshots that its latest snapshot row does not
    name (one before it, or one whose writing stopped); whether there was one. One at a time:
    each delete is a short transaction, as each part's insert was."""

    def op(connection: Connection) -> bool:
        current = select(snapshot_table.c.parts_key).where(
            snapshot_table.c.campaign_id == campaign_id, snapshot_table.c.parts_key.is_not(None)
        )
        stale = connection.execute(
            select(snapshot_part_table.c.id)
            .where(
                snapshot_part_table.c.campaign_id == campaign_id,
                snapshot_part_table.c.snapshot_key.not_in(current),
            )
            .limit(1)
        ).scalar()
        if stale is None:
            return False
        connection.execute(delete(snapshot_part_table).where(snapshot_part_table.c.id == stale))
        return True

    return op


# reads --------------------------------------------------------------------------------------


def latest_snapshot(engine: Engine, campaign_id: int) -> SnapshotRecord | None:
    """The campaign's latest snapshot, or None."""
    with engine.connect() as connection:
        row = (
            connection.execute(
                select(snapshot_table)
                .where(snapshot_table.c.campaign_id == campaign_id)
                .order_by(snapshot_table.c.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        data = bytes(row["data"]) if row is not None else b""
        if row is not None and row["parts_key"] is not None:
            data = b"".join(
                bytes(part)
                for part in connection.execute(
                    select(snapshot_part_table.c.data)
                    .where(snapshot_part_table.c.snapshot_key == row["parts_key"])
                    .order_by(snapshot_part_table.c.part)
                ).scalars()
            )
    if row is None:
        return None
    return SnapshotRecord(
        row["format"],
        row["config"],
        int(row["labels"]),
        int(row["label_batch"]),
        int(row["clip_batch"]),
        data,
        row["parts_key"],
    )


def _campaign(row: Any) -> CampaignRecord:
    return CampaignRecord(
        id=row["id"],
        name=row["name"],
        criteria=tuple(json.loads(row["criteria"])),
        pair_scope=row["pair_scope"],
        ties=bool(row["ties"]),
        emoji_levels=row["emoji_levels"],
        lease_seconds=float(row["lease_seconds"]),
        engine_config=json.loads(row["engine_config"]),
        created_at=row["created_at"],
        state=row["state"],
        skip_limit=int(row["skip_limit"]),
        safety_threshold=row["safety_threshold"],
        report_limit=int(row["report_limit"]),
    )


def list_campaigns(engine: Engine) -> list[CampaignRecord]:
    """Every campaign, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(select(campaign_table).order_by(campaign_table.c.id))
        return [_campaign(row) for row in rows.mappings()]


def get_campaign(engine: Engine, campaign_id: int) -> CampaignRecord | None:
    """One campaign, or None."""
    with engine.connect() as connection:
        row = (
            connection.execute(select(campaign_table).where(campaign_table.c.id == campaign_id))
            .mappings()
            .first()
        )
        return None if row is None else _campaign(row)


def campaign_counts(engine: Engine) -> dict[int, tuple[int, int, int]]:
    """Per campaign id: (clips, raters, labels)."""
    counts: dict[int, list[int]] = {}
    with engine.connect() as connection:
        for slot, (table, label_only) in enumerate(
            ((clip_table, False), (rater_table, False), (judgment_table, True))
        ):
            query = select(table.c.campaign_id, func.count()).group_by(table.c.campaign_id)
            if label_only:
                query = query.where(table.c.seq.is_not(None))
            for campaign_id, count in connection.execute(query):
                counts.setdefault(campaign_id, [0, 0, 0])[slot] = int(count)
    return {key: (value[0], value[1], value[2]) for key, value in counts.items()}


def rater_tokens(engine: Engine) -> list[RaterRecord]:
    """Every rater of every campaign (for token look-up)."""
    with engine.connect() as connection:
        rows = connection.execute(select(rater_table).order_by(rater_table.c.id))
        return [
            RaterRecord(r["id"], r["campaign_id"], r["name"], r["token_hash"], bool(r["active"]))
            for r in rows.mappings()
        ]


def find_rater(engine: Engine, token_hash: str) -> RaterRecord | None:
    """The rater whose token has this hash, or None."""
    with engine.connect() as connection:
        r = (
            connection.execute(select(rater_table).where(rater_table.c.token_hash == token_hash))
            .mappings()
            .first()
        )
    if r is None:
        return None
    return RaterRecord(r["id"], r["campaign_id"], r["name"], r["token_hash"], bool(r["active"]))


def load_log(engine: Engine, campaign_id: int) -> CampaignLog:
    """Clips (by position), raters, assignments and judgments (by id) of one campaign."""
    with engine.connect() as connection:
        clips = [
            ClipRecord(
                id=r["id"],
                position=r["position"],
                external_id=r["external_id"],
                uri=r["uri"],
                group=r["prompt_group"],
                context=r["context"],
                scores=tuple(json.loads(r["scores"])),
                batch=r["batch"],
                after_seq=r["after_seq"],
                features=None if r["features"] is None else tuple(json.loads(r["features"])),
                retired=bool(r["retired"]),
                skips_cleared=int(r["skips_cleared"]),
                withheld=r["withheld"],
                withheld_at=r["withheld_at"],
                restored_at=r["restored_at"],
                reports_cleared=int(r["reports_cleared"]),
            )
            for r in connection.execute(
                select(clip_table)
                .where(clip_table.c.campaign_id == campaign_id)
                .order_by(clip_table.c.position)
            ).mappings()
        ]
        raters = [
            RaterRecord(r["id"], r["campaign_id"], r["name"], r["token_hash"], bool(r["active"]))
            for r in connection.execute(
                select(rater_table).where(rater_table.c.campaign_id == campaign_id)
            ).mappings()
        ]
        assignments = [
            AssignmentRecord(
                r["id"],
                r["rater_id"],
                r["first"],
                r["second"],
                bool(r["swapped"]),
                r["status"],
                r["expires_at"],
                r["gold"],
                _positions(r["items"]),
                r["kset_mode"],
                r["criterion"],
            )
            for r in connection.execute(
                select(assignment_table)
                .where(assignment_table.c.campaign_id == campaign_id)
                .order_by(assignment_table.c.id)
            ).mappings()
        ]
        judgments = [
            JudgmentRecord(
                r["id"],
                r["assignment_id"],
                r["rater_id"],
                r["choice"],
                r["level"],
                r["first"],
                r["second"],
                r["outcome"],
                r["seq"],
                r["batch"],
                bool(r["swapped"]),
                r["gold"],
                _positions(r["items"]),
                r["kset_mode"],
                _positions(r["ranking"]),
                r["seconds"],
                r["criterion"],
            )
            for r in connection.execute(
                select(
                    judgment_table,
                    assignment_table.c.swapped,
                    assignment_table.c["items"],
                    assignment_table.c.kset_mode,
                )
                .join(assignment_table, assignment_table.c.id == judgment_table.c.assignment_id)
                .where(judgment_table.c.campaign_id == campaign_id)
                .order_by(judgment_table.c.id)
            ).mappings()
        ]
        gold = [
            GoldRecord(r["id"], r["first"], r["second"], r["answer"])
            for r in connection.execute(
                select(gold_table)
                .where(gold_table.c.campaign_id == campaign_id)
                .order_by(gold_table.c.id)
            ).mappings()
        ]
        reports = [
            ReportRecord(r["id"], r["clip_id"], r["rater_id"], r["assignment_id"], r["created_at"])
            for r in connection.execute(
                select(report_table)
                .where(report_table.c.campaign_id == campaign_id)
                .order_by(report_table.c.id)
            ).mappings()
        ]
        refits = [
            RefitRecord(
                r["config"],
                r["ordinal"],
                r["copy_entries"],
                r["label_batch"],
                r["clip_batch"],
                r["refit"],
            )
            for r in connection.execute(
                select(refit_table)
                .where(refit_table.c.campaign_id == campaign_id)
                .order_by(refit_table.c.id)
            ).mappings()
        ]
    return CampaignLog(clips, raters, assignments, judgments, gold, reports, refits)


def _positions(stored: str | None) -> tuple[int, ...] | None:
    """A JSON list of clip positions as stored (None: not a K-set)."""
    return None if stored is None else tuple(int(p) for p in json.loads(stored))


def progress_points(engine: Engine, campaign_id: int) -> list[tuple[int, float | None, datetime]]:
    """The campaign's progress points, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                progress_table.c.labels, progress_table.c.expected_kendall_tau, progress_table.c.at
            )
            .where(progress_table.c.campaign_id == campaign_id)
            .order_by(progress_table.c.id)
        )
        return [(int(labels), tau, at) for labels, tau, at in rows]


def clip_status(row: Mapping[str, Any]) -> str:
    """A clip row's status as exports show it: `active`, `retired`, or `withheld:<reason>`
    (`threshold` or `reports`)."""
    if row["retired"]:
        return "retired"
    return "active" if row["withheld"] is None else f"withheld:{row['withheld']}"


def export_clips(engine: Engine, campaign_id: int) -> list[dict[str, Any]]:
    """Every clip of the campaign by position, with its status (`clip_status`)."""
    with engine.connect() as connection:
        return [
            {
                "clip_id": row["id"],
                "external_id": row["external_id"],
                "uri": row["uri"],
                "group": row["prompt_group"],
                "context": row["context"],
                "status": clip_status(row),
                "withheld_at": None if row["retired"] else row["withheld_at"],
            }
            for row in connection.execute(
                select(clip_table)
                .where(clip_table.c.campaign_id == campaign_id)
                .order_by(clip_table.c.position)
            ).mappings()
        ]


def export_rows(
    engine: Engine, campaign_id: int, batch_size: int = EXPORT_BATCH
) -> Iterator[list[dict[str, Any]]]:
    """Every judgment of the campaign in commit order, with its rater and the clips as shown
    (left and right; right is None for an emoji rating) and their status (`clip_status`), in
    batches of `batch_size` read from one cursor: an export of millions of labels never
    holds them all (nor the campaign's clips: each row joins its two). A K-set's row also
    carries its clips by position (`kset_clips`: those of its batch's K-sets, read once per
    batch), the positions as shown (`items`, left is the first) and its `ranking`."""
    clip_aliases = {
        "first": clip_table.alias("first_clip"),
        "second": clip_table.alias("second_clip"),
    }
    fields = ("external_id", "uri", "prompt_group", "retired", "withheld")

    def joined(alias: Any, position: Any) -> Any:
        return (alias.c.campaign_id == judgment_table.c.campaign_id) & (
            alias.c.position == position
        )

    query = (
        select(
            judgment_table.c.id,
            judgment_table.c.seq,
            judgment_table.c.assignment_id,
            judgment_table.c.rater_id,
            rater_table.c.name,
            judgment_table.c.first,
            judgment_table.c.second,
            judgment_table.c.choice,
            judgment_table.c.level,
            judgment_table.c.gold,
            judgment_table.c.criterion,
            judgment_table.c.created_at,
            judgment_table.c.ranking,
            judgment_table.c.seconds,
            assignment_table.c.swapped,
            assignment_table.c["items"],
            assignment_table.c.kset_mode,
            *(
                alias.c[name].label(f"{side}_{name}")
                for side, alias in clip_aliases.items()
                for name in fields
            ),
        )
        .join(assignment_table, assignment_table.c.id == judgment_table.c.assignment_id)
        .join(rater_table, rater_table.c.id == judgment_table.c.rater_id, isouter=True)
        .join(clip_aliases["first"], joined(clip_aliases["first"], judgment_table.c.first))
        .join(
            clip_aliases["second"],
            joined(clip_aliases["second"], judgment_table.c.second),
            isouter=True,
        )
        .where(judgment_table.c.campaign_id == campaign_id)
        .order_by(judgment_table.c.id)
    )
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=batch_size).execute(
            query
        )
        for part in result.partitions():
            rows = []
            kset_clips = _clips_at(
                engine,
                campaign_id,
                {p for row in part if row.items is not None for p in json.loads(row.items)},
                fields,
            )
            for row in part:
                values = row._mapping
                clips = {
                    side: None
                    if side == "second" and row.second < 0
                    else {name: values[f"{side}_{name}"] for name in fields}
                    for side in clip_aliases
                }
                left, right = (
                    (clips["second"], clips["first"])
                    if row.swapped
                    else (clips["first"], clips["second"])
                )
                assert left is not None
                rows.append(
                    {
                        "judgment_id": row.id,
                        "seq": row.seq,
                        "assignment_id": row.assignment_id,
                        "rater_id": row.rater_id,
                        "rater_name": row.name,
                        "kind": "criterion"
                        if row.criterion is not None
                        else "pair"
                        if row.second >= 0
                        else "rating",
                        "criterion": row.criterion,
                        "left_external_id": left["external_id"],
                        "left_uri": left["uri"],
                        "left_group": left["prompt_group"],
                        "left_status": clip_status(left),
                        "right_external_id": None if right is None else right["external_id"],
                        "right_uri": None if right is None else right["uri"],
                        "right_group": None if right is None else right["prompt_group"],
                        "right_status": None if right is None else clip_status(right),
                        "choice": row.choice,
                        "level": row.level,
                        "gold": row.gold is not None,
                        "created_at": row.created_at,
                        "seconds": row.seconds,
                        **_kset_fields(row, kset_clips),
                    }
                )
            yield rows


def _clips_at(
    engine: Engine, campaign_id: int, positions: set[int], fields: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """`fields` of the campaign's clips at `positions` (one query; none when empty)."""
    if not positions:
        return {}
    with engine.connect() as connection:
        found = connection.execute(
            select(clip_table.c.position, *(clip_table.c[name] for name in fields)).where(
                (clip_table.c.campaign_id == campaign_id)
                & clip_table.c.position.in_(sorted(positions))
            )
        ).mappings()
        return {r["position"]: {name: r[name] for name in fields} for r in found}


def _kset_fields(row: Any, clips: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """A K-set row's mode, its clips as shown and its ranking (positions), and its clips by
    position; None for other rows."""
    if row.items is None:
        return {"kset_mode": None, "items": None, "ranking_positions": None, "kset_clips": None}
    items = [int(p) for p in json.loads(row.items)]
    return {
        "kind": "kset",
        "kset_mode": row.kset_mode,
        "items": items,
        "ranking_positions": None
        if row.ranking is None
        else [int(p) for p in json.loads(row.ranking)],
        "kset_clips": {p: clips[p] for p in items},
    }


__all__ = [
    "AssignmentRecord",
    "CampaignLog",
    "CampaignRecord",
    "ClipRecord",
    "Imported",
    "JudgmentRecord",
    "Prepared",
    "RaterRecord",
    "RefitRecord",
    "ReportRecord",
    "SnapshotRecord",
    "campaign_counts",
    "clip_status",
    "delete_refit",
    "delete_stale_snapshot_part",
    "export_clips",
    "export_rows",
    "find_import",
    "find_rater",
    "get_campaign",
    "insert_assignment",
    "insert_campaign",
    "insert_import",
    "insert_judgment",
    "insert_progress",
    "insert_rater",
    "insert_refit",
    "insert_report",
    "insert_snapshot",
    "insert_snapshot_part",
    "label_counts",
    "latest_snapshot",
    "list_campaigns",
    "load_log",
    "mark_batch",
    "progress_points",
    "rater_tokens",
    "set_clip_retired",
    "set_rater_active",
    "update_campaign",
    "withdraw_assignments",
    "withhold_clips",
]
