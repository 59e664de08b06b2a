"""SQLModel tables and the database engine (SQLite with WAL by default, PostgreSQL in deployments).

The judgments table is the source of truth: a campaign's engine state is rebuilt by replaying
its clip batches and judgments in the order they were applied (`ClipRow.after_seq`,
`JudgmentRow.seq`, `JudgmentRow.batch`). Rows are written through `api.store` only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import DateTime, Engine, Index, UniqueConstraint, event
from sqlalchemy.engine import make_url
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
    batch: int
    after_seq: int
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


class RaterRow(SQLModel, table=True):
    """A rater of one campaign; only a hash of their token is stored."""

    __tablename__ = "rater"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    name: str | None = None
    token_hash: str = Field(unique=True)
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
    status: str = "open"  # open | answered | skipped (an open one past expires_at is expired)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)
    expires_at: datetime = Field(sa_type=UTC_TIME)


class JudgmentRow(SQLModel, table=True):
    """An answer. Labels carry `seq` (commit order within the campaign) and, once applied to
    the posterior, `batch` (the engine call they were applied in); a skip has neither."""

    __tablename__ = "judgment"
    __table_args__ = (Index("ix_judgment_campaign_seq", "campaign_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    assignment_id: int = Field(foreign_key="assignment.id", unique=True)
    rater_id: int = Field(foreign_key="rater.id")
    choice: str | None = None  # left | right | tie | skip (None for an emoji level)
    level: int | None = None
    first: int
    second: int
    outcome: str | None = None  # engine Outcome of first vs second (win = first is better)
    seq: int | None = None
    batch: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


class ProgressRow(SQLModel, table=True):
    """One point of the labels vs expected-ranking-accuracy curve."""

    __tablename__ = "progress"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    labels: int
    expected_kendall_tau: float | None = None
    at: datetime = Field(default_factory=utcnow, sa_type=UTC_TIME)


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


def create_tables(engine: Engine) -> None:
    """Create the tables that do not exist yet."""
    SQLModel.metadata.create_all(engine)


__all__ = [
    "MAX_ROW_ID",
    "AssignmentRow",
    "CampaignRow",
    "ClipRow",
    "JudgmentRow",
    "ProgressRow",
    "RaterRow",
    "as_utc",
    "create_tables",
    "make_engine",
    "utcnow",
]
