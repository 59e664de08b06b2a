"""Who runs each campaign's engine, with the database as the only coordination point.

PostgreSQL: any number of service processes share one database. Each campaign's engine runs
in exactly one of them, the owner named by the campaign's row in `campaign_owner`: a lease
that the owner renews every third of `owner_lease_s` while it lives, and that any process may
take once it lapsed (a killed owner stops renewing). Every write a runtime makes checks, in
its own transaction and under a share lock on that row, that its process still owns the
campaign (`Leases.fence`): a takeover's UPDATE waits for the old owner's writes under way and
commits before the new owner reads the log, so the new owner replays every label the old one
acknowledged, and the old one can acknowledge nothing after that.

SQLite: one server per file. `hold_sqlite` takes an exclusive lock on a file beside the
database for the life of the process; a second server on the same file is refused at start.
The leases are kept on SQLite too (one code path), without the per-write fence, which the
file lock makes needless.

Clocks: expiry times are written and compared with the processes' own UTC clocks, so the
machines' clocks must agree to well within `owner_lease_s` (NTP does).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url

from api.db import CampaignOwnerRow, CampaignRow, as_utc, utcnow
from api.writer import Writer

T = TypeVar("T")
owner_table = CampaignOwnerRow.__table__  # type: ignore[attr-defined]
campaign_table = CampaignRow.__table__  # type: ignore[attr-defined]


def worker_id() -> str:
    """A new id for this service process: host, pid and a random part (a restarted process
    with the pid of a dead one is still another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseLost(RuntimeError):
    """This process no longer owns the campaign: another one took it over."""


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a campaign: `mine`, or the owner that holds it (its id, its
    address or None, and when its lease ends in seconds since the epoch); `missing` when no
    such campaign exists."""

    mine: bool
    owner: str | None = None
    address: str | None = None
    expires_at: float = 0.0
    missing: bool = False


class Leases:
    """This process's campaign leases.

    Args:
        writer: the database's writer (leases are written through it like everything else).
        worker: this process's id (`worker_id()`).
        address: the base URL other processes reach this one at; None when it gave none.
        lease_s: how long a lease lasts unless renewed.
        fenced: check ownership in every runtime write (PostgreSQL); False on SQLite.
    """

    def __init__(
        self, writer: Writer, worker: str, address: str | None, lease_s: float, *, fenced: bool
    ) -> None:
        self.writer = writer
        self.worker = worker
        self.address = address
        self.lease_s = lease_s
        self.fenced = fenced
        self.held: set[int] = set()  # campaigns whose lease this process holds

    def _claim_op(self, campaign_id: int) -> Callable[[Connection], Claim]:
        worker, address, lease_s = self.worker, self.address, self.lease_s

        def op(connection: Connection) -> Claim:
            exists = connection.execute(
                select(campaign_table.c.id).where(campaign_table.c.id == campaign_id)
            ).first()
            if exists is None:
                return Claim(False, missing=True)
            now = utcnow()
            values = {
                "campaign_id": campaign_id,
                "owner": worker,
                "address": address,
                "expires_at": now + timedelta(seconds=lease_s),
            }
            insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
            connection.execute(insert(owner_table).values(values).on_conflict_do_nothing())
            taken = connection.execute(
                update(owner_table)
                .where(
                    owner_table.c.campaign_id == campaign_id,
                    (owner_table.c.owner == worker) | (owner_table.c.expires_at < now),
                )
                .values(owner=worker, address=address, expires_at=values["expires_at"])
                .returning(owner_table.c.campaign_id)
            ).first()
            if taken is not None:
                return Claim(True)
            row = connection.execute(
                select(owner_table.c.owner, owner_table.c.address, owner_table.c.expires_at).where(
                    owner_table.c.campaign_id == campaign_id
                )
            ).one()
            return Claim(False, row[0], row[1], as_utc(row[2]).timestamp())

        return op

    async def claim(self, campaign_id: int) -> Claim:
        """Take the campaign's lease when it is free, lapsed or ours already; else say who
        holds it."""
        claim = await self.writer.run(self._claim_op(campaign_id))
        if claim.mine:
            self.held.add(campaign_id)
        else:
            self.held.discard(campaign_id)
        return claim

    @staticmethod
    def read(engine: Engine, campaign_id: int) -> Claim | None:
        """The campaign's lease as stored (`mine` False), or None when it has none."""
        with engine.connect() as connection:
            row = connection.execute(
                select(owner_table.c.owner, owner_table.c.address, owner_table.c.expires_at).where(
                    owner_table.c.campaign_id == campaign_id
                )
            ).first()
        return None if row is None else Claim(False, row[0], row[1], as_utc(row[2]).timestamp())

    async def renew(self) -> set[int]:
        """Extend every lease this process holds; returns the campaigns it lost meanwhile."""
        held = sorted(self.held)
        if not held:
            return set()
        worker, lease_s = self.worker, self.lease_s

        def op(connection: Connection) -> set[int]:
            rows = connection.execute(
                update(owner_table)
                .where(owner_table.c.campaign_id.in_(held), owner_table.c.owner == worker)
                .values(expires_at=utcnow() + timedelta(seconds=lease_s))
                .returning(owner_table.c.campaign_id)
            )
            return {int(r[0]) for r in rows}

        kept = await self.writer.run(op)
        lost = set(held) - kept
        self.held -= lost
        return lost

    async def release(self, campaign_ids: set[int] | None = None) -> None:
        """Give up leases (all of this process's by default): another process may take them
        at once instead of waiting for them to lapse."""
        ids = sorted(self.held if campaign_ids is None else campaign_ids & self.held)
        if not ids:
            return
        worker = self.worker

        def op(connection: Connection) -> None:
            connection.execute(
                update(owner_table)
                .where(owner_table.c.campaign_id.in_(ids), owner_table.c.owner == worker)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )

        await self.writer.run(op)
        self.held -= set(ids)

    def fence(self, campaign_id: int, op: Callable[[Connection], T]) -> Callable[[Connection], T]:
        """`op` preceded, in its transaction, by a check that this process owns the campaign.

        The check holds a share lock on the lease row until the transaction ends, so a
        takeover (an UPDATE of that row) waits for this write, and a write after a takeover
        raises `LeaseLost` instead of committing.
        """
        if not self.fenced:
            return op
        worker = self.worker

        def fenced(connection: Connection) -> T:
            row = connection.exec_driver_sql(
                "SELECT owner FROM campaign_owner WHERE campaign_id = %s FOR SHARE",
                (campaign_id,),
            ).first()
            if row is None or row[0] != worker:
                raise LeaseLost(f"campaign {campaign_id} is now run by another service process")
            return op(connection)

        return fenced


# one server per SQLite file ------------------------------------------------------------------

_held_files: dict[Path, list[Any]] = {}  # lock path -> [open file, holders in this process]
_files_lock = threading.Lock()


class DatabaseInUse(RuntimeError):
    """Another server process holds the SQLite file."""


def lock_path(database_url: str) -> Path | None:
    """The lock file beside an SQLite database (None for other databases and in-memory ones)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(f"{url.database}.server-lock").resolve()


def hold_sqlite(database_url: str) -> Callable[[], None]:
    """Lock the SQLite file for this process (re-entrant within it); returns the release.

    Raises:
        DatabaseInUse: another process serves it (the message names its pid).
    """
    path = lock_path(database_url)
    if path is None:
        return lambda: None
    with _files_lock:
        held = _held_files.get(path)
        if held is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+")  # noqa: SIM115  held open for as long as the lock
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                pid = handle.read().strip() or "unknown"
                handle.close()
                raise DatabaseInUse(
                    f"another ratingparty server (pid {pid}) is serving {path.with_suffix('')}"
                    "; an SQLite file takes one server: stop that one, or use PostgreSQL "
                    "(DATABASE_URL) to run several"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            held = _held_files[path] = [handle, 0]
        held[1] += 1
    released = False

    def release() -> None:
        nonlocal released
        with _files_lock:
            if released:
                return
            released = True
            entry = _held_files.get(path)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held_files[path]
                with contextlib.suppress(OSError):
                    fcntl.flock(entry[0], fcntl.LOCK_UN)
                entry[0].close()

    return release


__all__ = [
    "Claim",
    "DatabaseInUse",
    "LeaseLost",
    "Leases",
    "hold_sqlite",
    "lock_path",
    "worker_id",
]
