"""The service's settings, read from the environment.

`DATABASE_URL` picks the database (an SQLite file by default, PostgreSQL in deployments),
`RATINGPARTY_ADMIN_KEY` the admin key. When no key is given, one is generated once and kept in
a file next to the database (`.ratingparty/admin_key` by default), so a restart keeps it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_DATA_DIR = Path(".ratingparty")
DEFAULT_DATABASE_URL = f"sqlite:///{DEFAULT_DATA_DIR / 'ratingparty.db'}"
KEY_FILE_NAME = "admin_key"
MIN_ADMIN_KEY_LENGTH = 16  # shorter keys are guessable; refuse them instead of running open


@dataclass(frozen=True)
class Settings:
    """Everything the app factory needs.

    Attributes:
        database_url: SQLAlchemy URL; `sqlite:///path.db` or `postgresql+psycopg://...`.
        admin_key: the bearer key for campaign management, reads and export.
        max_body_bytes: largest request body accepted (413 beyond).
        max_clips_per_request: largest clip batch in one POST (413 beyond).
        max_bulk_bytes: largest streamed bulk upload of clips (413 beyond).
        max_bulk_clips: most clips in one bulk upload (413 beyond).
        max_open_assignments: assignments one rater may hold open at once (429 beyond).
        queue_min: tasks the campaign keeps chosen ahead even when nobody waits.
        queue_max: most tasks chosen ahead (each is pending in the engine while queued):
            enough for QUEUE_AHEAD_S (api/task_queue.py) of 500 requests a second, so a
            background refit's fit, which slows the engine's refills, does not run it dry.
        refill_batch: most tasks chosen in one engine call (the queue's refill:
            `next_tasks(None, count)`, which screens all pairs and rebuilds the pending-task
            shrink once per batch, so a larger batch amortises both; see
            benchmarks/results/service_load.md for the measured effect). A batch is never
            larger than the queue's shortfall (`queue_min` plus one per waiting request), so
            a quiet campaign still chooses one task at a time, and the queue's size, not the
            batch, bounds how far ahead of the posterior tasks are chosen.
        max_apply_batch: most judgments applied to the posterior in one engine call.
        apply_batch, apply_wait_s: committed judgments wait for the engine until this many
            have gathered or the oldest waited this long (or a read or a clip batch
            needs them): one posterior update costs a pass over the covariance whatever its
            size, so batches of 16 cost far less per label than batches of 1-3.
        progress_every_s: least time between two recorded progress points.
        assign_timeout_s: how long an assignment request waits for the engine before a 503.
        engine_device: torch device of the campaigns' posteriors; None = the engine default.
        engine_process: run each campaign's engine in a process of its own (the default: the
            engine and the HTTP side then use different cores instead of sharing one GIL);
            False runs it on a thread of the service's process (less memory per campaign).
        header_timeout_s: a request's line and headers must arrive within this long of the
            connection (or of the previous response), else 408 and the connection closes.
        body_timeout_s: a request's body must arrive within this long of its headers.
        keep_alive_s: an idle keep-alive connection closes after this long.
        max_connections: past this many open connections, new requests get a 503.
        access_log: write one log line per request (method, path without its query string,
            status, milliseconds); off by default, as a line costs more than a label.
        snapshot_every: save the campaign's engine state every this many labels, so a load
            replays only the labels after the latest snapshot (0: never; api/snapshots.py).
        load_wait_s: how long a request waits for its campaign to load before a 503 with
            Retry-After (the load goes on).
        owner_lease_s: how long a service process's claim on a campaign (it runs the
            campaign's engine) lasts unless renewed; renewed every third of it. A killed
            owner's campaigns move to another process within this long (api/ownership.py).
        public_url: the base URL other service processes on the same database send this
            one's campaigns' requests to (`python -m api` fills in its host and port); None:
            they answer 503 naming the owner instead.
        seed: seeds the left/right order; None draws it from the OS.
        demo: seed a demo campaign of synthetic clips at start (when none exists).
    """

    database_url: str = DEFAULT_DATABASE_URL
    admin_key: str = ""
    max_body_bytes: int = 5_000_000
    max_clips_per_request: int = 5_000
    max_bulk_bytes: int = 2_000_000_000
    max_bulk_clips: int = 2_000_000
    max_open_assignments: int = 8
    queue_min: int = 2
    queue_max: int = 128
    refill_batch: int = 32
    max_apply_batch: int = 64
    apply_batch: int = 16
    apply_wait_s: float = 0.05
    progress_every_s: float = 1.0
    assign_timeout_s: float = 20.0
    engine_device: str | None = None
    engine_process: bool = True
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5
    max_connections: int = 1_000
    access_log: bool = False
    snapshot_every: int = 1_000
    load_wait_s: float = 10.0
    owner_lease_s: float = 10.0
    public_url: str | None = None
    seed: int | None = None
    demo: bool = False

    def __post_init__(self) -> None:
        if len(self.admin_key) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(
                f"the admin key must have at least {MIN_ADMIN_KEY_LENGTH} characters "
                "(set RATINGPARTY_ADMIN_KEY, or leave it unset to generate one)"
            )
        if not 1 <= self.queue_min <= self.queue_max:
            raise ValueError("need 1 <= queue_min <= queue_max")
        positive = (
            "max_body_bytes",
            "max_clips_per_request",
            "max_bulk_bytes",
            "max_bulk_clips",
            "max_open_assignments",
        )
        for name in (*positive, "max_apply_batch", "refill_batch", "apply_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "max_connections"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.snapshot_every < 0:
            raise ValueError("snapshot_every must be >= 0 (0: no snapshots)")
        if not 0 <= self.load_wait_s <= 600:
            raise ValueError("load_wait_s must be in [0, 600] seconds")
        if not 0.5 <= self.owner_lease_s <= 3600:
            raise ValueError("owner_lease_s must be in [0.5, 3600] seconds")
        if not 0 <= self.apply_wait_s <= 10:
            raise ValueError("apply_wait_s must be in [0, 10] seconds")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Settings from the environment; the admin key from `RATINGPARTY_ADMIN_KEY` or the
        key file (created with a fresh key when missing)."""
        env = dict(os.environ if environ is None else environ)
        url = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
        key = env.get("RATINGPARTY_ADMIN_KEY") or load_or_create_admin_key(url)[0]
        settings = cls(database_url=url, admin_key=key)
        overrides: dict[str, object] = {}
        for name, cast in (
            ("max_body_bytes", int),
            ("max_clips_per_request", int),
            ("max_bulk_bytes", int),
            ("max_bulk_clips", int),
            ("max_open_assignments", int),
            ("queue_min", int),
            ("queue_max", int),
            ("refill_batch", int),
            ("max_apply_batch", int),
            ("progress_every_s", float),
            ("header_timeout_s", float),
            ("body_timeout_s", float),
            ("keep_alive_s", int),
            ("max_connections", int),
            ("owner_lease_s", float),
            ("snapshot_every", int),
            ("load_wait_s", float),
            ("seed", int),
        ):
            variable = f"RATINGPARTY_{name.upper()}"
            raw = env.get(variable)
            if raw:
                try:
                    overrides[name] = cast(raw)
                except ValueError:
                    raise ValueError(
                        f"{variable} must be a{'n integer' if cast is int else ' number'}, "
                        f"not {raw!r}"
                    ) from None
        if env.get("RATINGPARTY_DEMO", "").lower() in ("1", "true", "yes"):
            overrides["demo"] = True
        for name in ("engine_process", "access_log"):
            variable = f"RATINGPARTY_{name.upper()}"
            flag = env.get(variable, "").lower()
            if flag:
                if flag not in ("0", "1", "true", "false", "yes", "no"):
                    raise ValueError(f"{variable} must be 0 or 1, not {flag!r}")
                overrides[name] = flag in ("1", "true", "yes")
        if env.get("RATINGPARTY_PUBLIC_URL"):
            overrides["public_url"] = env["RATINGPARTY_PUBLIC_URL"].rstrip("/")
        if env.get("RATINGPARTY_DEVICE"):
            overrides["engine_device"] = env["RATINGPARTY_DEVICE"]
        return replace(settings, **overrides) if overrides else settings


def data_dir(database_url: str) -> Path:
    """Where the service keeps its files: the SQLite file's folder, else `.ratingparty/`."""
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and database_url[len(prefix) :] not in ("", ":memory:"):
        return Path(database_url[len(prefix) :]).parent
    return DEFAULT_DATA_DIR


def load_or_create_admin_key(database_url: str) -> tuple[str, bool]:
    """The stored admin key for this database, creating it (mode 0600) when missing.

    Returns:
        (key, created): created is True when the key was generated just now.
    """
    path = data_dir(database_url) / KEY_FILE_NAME
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    # O_EXCL: two servers starting at once must not both write a key
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, True


def key_file(database_url: str) -> Path:
    """The path of the generated admin key for this database."""
    return data_dir(database_url) / KEY_FILE_NAME


__all__ = ["Settings", "data_dir", "key_file", "load_or_create_admin_key"]
