"""SQLModel tables and the database engine (SQLite with WAL by default, PostgreSQL in deployments).

The judgments table is the source of truth: a campaign's engine state is rebuilt by replaying
its clip batches and judgments in the order they were applied (`ClipRow.after_seq`,
`JudgmentRow.seq`, `JudgmentRow.batch`). Rows are written through `api.store` only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Index,
    LargeBinary,
    UniqueConstraint,
    event,
    false,
    inspect,
    true,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlmodel import Field, SQLModel, create_engine

# integer primary keys are int4 on PostgreSQL; a larger id names no row on either backend (and
# would overflow the driver's parameter instead of finding nothing)
MAX_ROW_ID = 2**31 - 1
SQLITE_BUSY_TIMEOUT_MS = 5_000  # readers and the one writer share the file; wait, never fail
# timestamptz on PostgreSQL; SQLite keeps the UTC wall time without an offset (see as_utc)
UTC_TIME = DateTime(timezone=True)


def utcnow() -> datetime:
    """Now, as an aware UTC datetime (how every datetime column is written)."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A datetime read back from the database as an aware UTC one (a naive value is UTC:
    SQLite keeps no offset)."""
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)


class CampaignRow(SQLModel, table=True):
    """One rating campaign and the engine configuration it was created with (JSON)."""

    __tablename__ = "campaign"

    id: int | None = Field(default=None, primary_key=True)
    name: str
    criteria: str  # JSON list of criterion names, in score order
    pair_scope: str
    ties: bool
    emoji_levels: int | None = None
    lease_seconds: float
    engine_config: str  # JSON: what api.campaigns.engine_config() built, replayed as is
    # active | paused (no new tasks) | closed (no new tasks, open assignments withdrawn)
    state: str = Field(default="active", sa_column_kwargs={"server_default": "active"})
    # a pair (or a clip) skipped by this many distinct raters is withdrawn for everyone
    skip_limit: int = Field(default=3, sa_column_kwargs={"server_default": "3"})
    # a clip whose "safety" score is below this is withheld when it arrives (None: no check)
    safety_threshold: float | None = None
    # a clip reported "unsafe or broken" by this many distinct raters is withheld
    report_limit: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


class ClipRow(SQLModel, table=True):
    """A clip; `position` is its engine index, `batch` the add_clips call it came in and
    `after_seq` the number of judgments applied before that call (for the replay order)."""

    __tablename__ = "clip"
    __table_args__ = (
        UniqueConstraint("campaign_id", "external_id"),
        UniqueConstraint("campaign_id", "position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    position: int
    external_id: str
    uri: str
    prompt_group: str | None = None
    context: str | None = None
    scores: str  # JSON list aligned with the campaign's criteria; null where missing
    # JSON list of the clip's feature vector where the campaign has a feature gate
    features: str | None = None
    batch: int
    after_seq: int
    # retired by the operator: never offered, its labels stay
    retired: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    # skips of its tasks up to this judgment id are forgotten (the operator restored it)
    skips_cleared: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # withheld by the campaign's policy: "threshold" (its safety score) or "reports" (raters
    # reported it); never offered until the operator restores or retires it; labels stay
    withheld: str | None = None
    withheld_at: datetime | None = Field(default=None, sa_type=UTC_TIME)
    # when the operator last restored it (None: never); reports up to `reports_cleared`
    # (a report id) were answered by that restore and no longer count
    restored_at: datetime | None = Field(default=None, sa_type=UTC_TIME)
    reports_cleared: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


class ClipReportRow(SQLModel, table=True):
    """A rater's report that a clip of their task is unsafe or broken."""

    __tablename__ = "clip_report"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    clip_id: int = Field(foreign_key="clip.id")
    rater_id: int = Field(foreign_key="rater.id")
    assignment_id: int = Field(foreign_key="assignment.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


class RaterRow(SQLModel, table=True):
    """A rater of one campaign; only a hash of their token is stored."""

    __tablename__ = "rater"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    name: str | None = None
    token_hash: str = Field(unique=True)
    # deactivated by the operator: no new tasks, their labels stay
    active: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


class AssignmentRow(SQLModel, table=True):
    """A task handed to a rater: clips `first`, `second` (engine order; second = -1 for an
    emoji rating), shown with `first` on the right when `swapped`; open until answered."""

    __tablename__ = "assignment"
    __table_args__ = (Index("ix_assignment_campaign_status", "campaign_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    rater_id: int = Field(foreign_key="rater.id", index=True)
    first: int
    second: int
    swapped: bool
    gain: float
    # the known answer (engine Outcome of first vs second) of a gold task; never shown
    gold: str | None = None
    # a K-set: its clips' positions as a JSON list in the order shown (first and second are
    # then its two lowest positions), and what it asks (best | best_worst | rank)
    items: str | None = None
    kset_mode: str | None = None
    # a criterion question's criterion ("which is better aligned?"); None: overall quality
    criterion: str | None = None
    # open | answered | skipped | withdrawn (by the operator: a closed campaign, a retired
    # clip, a deactivated rater); an open one past expires_at is expired
    status: str = "open"
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)
    expires_at: datetime = Field(sa_type=UTC_TIME)


class JudgmentRow(SQLModel, table=True):
    """An answer. Labels carry `seq` (commit order within the campaign) and, once applied to
    the posterior, `batch` (the engine call they were applied in); a skip has neither."""

    __tablename__ = "judgment"
    # unique: two workers that both believed they owned a campaign could otherwise give two
    # labels one sequence number (a skip's seq is NULL, and NULLs never collide)
    __table_args__ = (Index("ix_judgment_campaign_seq", "campaign_id", "seq", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    assignment_id: int = Field(foreign_key="assignment.id", unique=True)
    rater_id: int = Field(foreign_key="rater.id")
    choice: str | None = None  # left | right | tie | skip (None for an emoji level)
    level: int | None = None
    first: int
    second: int
    outcome: str | None = None  # engine Outcome of first vs second (win = first is better)
    # an answer to a gold task: its known outcome; it moves no clip, only the rater's reliability
    gold: str | None = None
    # a K-set's answer: clip positions as a JSON list, best first ([best], [best, worst] or
    # the whole order)
    ranking: str | None = None
    # how long the rater took (answered at minus the shown_at the page sent); None: not sent
    seconds: float | None = None
    criterion: str | None = None  # the criterion a criterion question asked about
    seq: int | None = None
    batch: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


class GoldPairRow(SQLModel, table=True):
    """A pair whose answer the operator knows: `answer` is the engine Outcome of `first`
    against `second` (clip positions, first < second)."""

    __tablename__ = "gold_pair"
    __table_args__ = (UniqueConstraint("campaign_id", "first", "second"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    first: int
    second: int
    answer: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


class CampaignOwnerRow(SQLModel, table=True):
    """Which service process runs a campaign's engine: `owner` (a process's id) until
    `expires_at`, renewed while it lives; `address` is where other processes send the
    campaign's requests (None when it gave none)."""

    __tablename__ = "campaign_owner"

    campaign_id: int = Field(
        foreign_key="campaign.id", primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    owner: str
    address: str | None = None
    expires_at: datetime = Field(sa_type=UTC_TIME)


class SnapshotRow(SQLModel, table=True):
    """A campaign's engine state after its label batch `label_batch` and clip batch
    `clip_batch` (`labels` labels), so a load replays only the log after it. `format` names
    what wrote it and `config` digests the engine settings it was built with; a load refuses
    a snapshot whose either differs and replays the whole log instead (api/snapshots.py)."""

    __tablename__ = "campaign_snapshot"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    format: str
    config: str
    labels: int
    label_batch: int
    clip_batch: int
    data: bytes = Field(sa_type=LargeBinary)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)
    # set: `data` is empty and the bytes are the parts of this key, in order (SnapshotPartRow)
    parts_key: str | None = None


class SnapshotPartRow(SQLModel, table=True):
    """One part of a snapshot's bytes. A snapshot of tens of megabytes written in one
    transaction would hold the database's one writer (every assignment and answer) for as
    long; written a part at a time, each transaction is short. Parts are written before the
    snapshot row that names their key, so a row never names missing parts."""

    __tablename__ = "campaign_snapshot_part"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    snapshot_key: str = Field(index=True)
    part: int
    data: bytes = Field(sa_type=LargeBinary)


class RefitRow(SQLModel, table=True):
    """A prior refit the campaign's engine adopted (api/refits.py), so that a replay of the
    log adopts it at the same place: its values (`refit`: JSON of engine.history.Refit), the
    engine history entries its copy was made after (`copy_entries`), and where it was
    adopted: after label batch `label_batch` and clip batch `clip_batch`, the campaign's
    `ordinal`-th refit. `config` digests the engine settings it was found under; a load
    skips a refit whose digest differs, as it refuses such a snapshot (api/replay.py)."""

    __tablename__ = "campaign_refit"
    __table_args__ = (UniqueConstraint("campaign_id", "config", "ordinal"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    config: str
    ordinal: int
    copy_entries: int
    label_batch: int
    clip_batch: int
    refit: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


class ProgressRow(SQLModel, table=True):
    """One point of the labels vs expected-ranking-accuracy curve."""

    __tablename__ = "progress"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    labels: int
    expected_kendall_tau: float | None = None
    at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


class ImportRow(SQLModel, table=True):
    """An import of past judgments, by the client's key: what it was (a digest of its
    format and text) and what it did (JSON), so the same key again answers the same."""

    __tablename__ = "import_batch"
    __table_args__ = (UniqueConstraint("campaign_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    key: str
    digest: str
    result: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


def make_engine(database_url: str) -> Engine:
    """A SQLAlchemy engine; SQLite files get WAL, NORMAL sync, foreign keys and a busy timeout.

    WAL with synchronous=NORMAL keeps every committed transaction across a process crash (only
    an OS crash or power loss can drop the last ones) and lets readers run beside the writer.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


class SchemaError(ValueError):
    """The database's schema is at a revision this code does not know (newer code made it)."""


# the revision of the schema the service made before it was versioned: such a database (its
# tables but no alembic_version) is stamped with it, then upgraded like any other
BASELINE_REVISION = "0001"


def _alembic(connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", "api:migrations")
    config.attributes["connection"] = connection
    return config


def _check_known(connection: Connection, script: ScriptDirectory) -> list[str]:
    """The database's current revisions, all known to this code.

    Raises:
        SchemaError: a revision this code does not know.
    """
    current = list(MigrationContext.configure(connection).get_current_heads())
    known = {revision.revision for revision in script.walk_revisions()}
    unknown = [revision for revision in current if revision not in known]
    if unknown:
        raise SchemaError(
            f"the database's schema is at revision {', '.join(unknown)}, which this version of "
            f"ratingparty does not know (its newest is {script.get_current_head()}): a newer "
            "version made it; run that version, or restore a backup made before it"
        )
    return current


def migrate(engine: Engine) -> None:
    """Bring the database's schema to this code's newest revision (creating it when empty).

    Raises:
        SchemaError: the schema is at a revision this code does not know.
    """
    script = ScriptDirectory.from_config(_alembic())
    with engine.begin() as connection:
        current = _check_known(connection, script)
        config = _alembic(connection)
        if not current and inspect(connection).has_table("campaign"):
            command.stamp(config, BASELINE_REVISION)
        command.upgrade(config, "head")


def check_schema(database_url: str) -> None:
    """Refuse a database whose schema is newer than this code (before anything starts).

    Raises:
        SchemaError: a schema revision this code does not know, or a database that does not
            answer (the message names it without its password).
    """
    engine = make_engine(database_url)
    script = ScriptDirectory.from_config(_alembic())
    try:
        with engine.connect() as connection:
            _check_known(connection, script)
    except SQLAlchemyError as error:
        shown = make_url(database_url).render_as_string(hide_password=True)
        reason = str(error.orig if isinstance(error, DBAPIError) else error).splitlines()[0]
        raise SchemaError(f"the database {shown} did not answer: {reason}") from error
    finally:
        engine.dispose()


def create_tables(engine: Engine) -> None:
    """Create the tables of the newest schema (`migrate`)."""
    migrate(engine)


__all__ = [
    "MAX_ROW_ID",
    "AssignmentRow",
    "CampaignOwnerRow",
    "CampaignRow",
    "ClipRow",
    "ImportRow",
    "JudgmentRow",
    "ProgressRow",
    "RaterRow",
    "SchemaError",
    "SnapshotRow",
    "as_utc",
    "check_schema",
    "create_tables",
    "make_engine",
    "migrate",
    "utcnow",
]
