"""The service layer between the HTTP handlers and the campaign runtimes.

Handlers hand a request Struct in and get a response Struct back; this module validates what
the schemas cannot (limits that depend on settings, names that depend on the campaign),
resolves rater tokens, loads each campaign's runtime on first use (replaying its log), and
turns runtime state into response Structs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import msgspec
import numpy as np
from anyio import to_thread
from msgspec import UNSET
from sqlalchemy import Connection, Engine, text

from api import schemas, store
from api.auth import hash_token, new_token
from api.bulk import BulkFormat, ClipReader, feature_problem
from api.campaign_config import (
    build_config,
    emoji_thresholds,
    engine_config,
    scale_levels,
    stored_both_threshold,
    stored_feature_dim,
    stored_min_labels,
    stored_prior_refit,
    stored_side_bias,
    with_gold,
)
from api.campaigns import (
    ACTIVE,
    CLOSED,
    LEASE_LOST,
    PAUSED,
    SAFETY_CRITERION,
    CampaignRuntime,
    ClipState,
    NewClip,
    RaterState,
    Report,
    question_words,
    utc,
)
from api.db import MAX_ROW_ID, as_utc
from api.engine_host import Board
from api.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
)
from api.export import ExportFormat, ExportKind, render_chunks
from api.imports import parse
from api.metrics import Metrics
from api.ownership import Claim, Leases, worker_id
from api.settings import Settings
from api.store import CampaignRecord
from api.writer import Writer
from engine import DEFAULT_CRITERIA, Outcome
from engine.questions import NO_SECOND
from engine.stopping import Targets

log = logging.getLogger("ratingparty.api")
FORWARD_TIMEOUT_S = 60.0  # a forwarded assignment may wait for its engine (assign_timeout_s)
LOADING_RETRY_S = 1  # Retry-After of a request that met its campaign loading
MAX_IMPORT_RECORDS = 200_000  # judgments in one import (one transaction)
MAX_ABS_SCORE = 1e12  # larger raw scores would overflow the per-campaign standardisation
DEFAULT_LEVEL = 0.9
DEFAULT_PAGE = 1_000  # leaderboard rows per page unless asked otherwise
MAX_PAGE = 10_000  # most leaderboard rows in one page
# the widest credible level served: its bounds (about 4.9 sd either side) are finite numbers,
# where a level a rounding step from 1 would put them at infinity
MAX_LEVEL = 0.999_999
# action -> (the state it leads to, the states it may start from; the target itself is a no-op)
TRANSITIONS = {
    "pause": (PAUSED, (ACTIVE,)),
    "resume": (ACTIVE, (PAUSED,)),
    "close": (CLOSED, (ACTIVE, PAUSED)),
    "reopen": (ACTIVE, (CLOSED,)),
}


class Service:
    """Campaign runtimes and rater tokens of one database.

    Args:
        settings: limits and queue sizes.
        engine: the database.
        writer: the database's only writer.
        metrics: where judgments, engine calls and replays are counted (a private registry
            when None).
    """

    def __init__(
        self, settings: Settings, engine: Engine, writer: Writer, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.writer = writer
        self.metrics = metrics or Metrics()
        self._runtimes: dict[int, CampaignRuntime] = {}
        self._loading: dict[int, asyncio.Lock] = {}
        self._loads: dict[int, asyncio.Future[CampaignRuntime]] = {}  # loads under way
        self._tokens: dict[str, tuple[int, int]] = {}  # token hash -> (rater id, campaign id)
        # tokens seen valid -> (rater id, campaign id): spares a SHA-256 per request; holds
        # only known raters' tokens, so it grows no larger than the raters table
        self._known: dict[str, tuple[int, int]] = {}
        self.leases = Leases(
            writer,
            worker_id(),
            settings.public_url,
            settings.owner_lease_s,
            fenced=engine.dialect.name == "postgresql",
        )
        # campaigns another process owns, as last read: campaign -> its claim
        self._owners: dict[int, Claim] = {}
        self._prompts: dict[int, PromptIndex] = {}  # campaign -> its clips by prompt
        self._renewing: asyncio.Task[None] | None = None
        self._forwarder: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Load the rater tokens (campaigns load lazily, on first use) and start renewing
        this process's campaign leases."""
        raters = await to_thread.run_sync(store.rater_tokens, self.engine)
        self._tokens = {r.token_hash: (r.id, r.campaign_id) for r in raters}
        self._renewing = asyncio.create_task(self._renew_leases(), name="lease-renewal")

    async def close(self) -> None:
        """Stop every campaign runtime, then give up their leases (another process may take
        them at once)."""
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        for runtime in list(self._runtimes.values()):
            await runtime.close()
        self._runtimes.clear()
        try:
            await self.leases.release()
        except Exception:  # they lapse on their own
            log.exception("giving up the campaign leases failed")
        if self._forwarder is not None:
            await self._forwarder.aclose()

    async def _renew_leases(self) -> None:
        """Renew this process's leases every third of their length; a runtime whose lease
        another process took (this one stalled past it) stops serving at once."""
        while True:
            await asyncio.sleep(self.settings.owner_lease_s / 3)
            try:
                lost = await self.leases.renew()
            except Exception:
                log.exception("renewing the campaign leases failed")
                continue
            for campaign_id in lost:
                log.warning("campaign %s: another service process took it over", campaign_id)
                runtime = self._runtimes.get(campaign_id)
                if runtime is not None:
                    runtime.stop_serving(LEASE_LOST)

    # which process runs a campaign ------------------------------------------------------------

    async def learn_token(self, token: str) -> tuple[int, int] | None:
        """(rater id, campaign id) of a rater token, read from the database when this process
        has not seen it (the rater was registered through another process); None if unknown."""
        found = self._known.get(token)
        if found is not None:
            return found
        digest = hash_token(token)
        found = self._tokens.get(digest)
        if found is None:
            rater = await to_thread.run_sync(store.find_rater, self.engine, digest)
            if rater is None:
                return None
            found = self._tokens[digest] = (rater.id, rater.campaign_id)
        return found

    async def owner_address(self, campaign_id: int) -> str | None:
        """Where to send a request for this campaign: None to serve it here (this process
        owns it, or may claim it), else the owning process's address."""
        if campaign_id in self.leases.held or not 0 < campaign_id <= MAX_ROW_ID:
            return None
        claim = self._owners.get(campaign_id)
        if claim is None or claim.expires_at <= time.time():
            claim = await to_thread.run_sync(self.leases.read, self.engine, campaign_id)
            if claim is None or claim.owner == self.leases.worker:
                self._owners.pop(campaign_id, None)
                return None
            self._owners[campaign_id] = claim
        if claim.expires_at <= time.time():
            return None  # lapsed: this process claims it
        return claim.address

    def forget_owner(self, campaign_id: int) -> float:
        """Forget the cached owner of a campaign (it did not answer); seconds until its lease
        lapses as last read."""
        claim = self._owners.pop(campaign_id, None)
        return 1.0 if claim is None else max(1.0, claim.expires_at - time.time())

    def forwarder(self) -> httpx.AsyncClient:
        """The HTTP client that forwards requests to other service processes."""
        if self._forwarder is None:
            self._forwarder = httpx.AsyncClient(timeout=FORWARD_TIMEOUT_S, follow_redirects=False)
        return self._forwarder

    def _run_elsewhere(self, campaign_id: int, claim: Claim) -> Unavailable:
        """The 503 for a campaign another process owns (a request forwarded to this one, or
        one that raced a takeover)."""
        where = f" at {claim.address}" if claim.address else " (it gave no address)"
        left = max(1.0, claim.expires_at - time.time())
        return Unavailable(
            detail=f"campaign {campaign_id} is run by another service process{where}; this "
            "one cannot serve it until that one's claim lapses or moves: retry",
            headers={"Retry-After": str(1 if claim.address else math.ceil(left))},
        )

    @property
    def loaded(self) -> int:
        return len(self._runtimes)

    def queue_state(self) -> dict[int, tuple[int, int]]:
        """Per loaded campaign: (tasks chosen ahead, open assignments)."""
        return {
            campaign_id: (runtime.queue_depth, runtime.open_assignments)
            for campaign_id, runtime in self._runtimes.items()
        }

    async def healthy(self) -> bool:
        """Whether the database answers."""

        def ping() -> None:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        try:
            await to_thread.run_sync(ping)
        except Exception:
            return False
        return True

    # campaigns --------------------------------------------------------------------------------

    async def create_campaign(self, body: schemas.CampaignCreate) -> schemas.Campaign:
        """Store a new campaign."""
        criteria = list(DEFAULT_CRITERIA if body.criteria is None else body.criteria)
        if len(set(criteria)) != len(criteria):
            repeated = sorted({c for c in criteria if criteria.count(c) > 1})
            raise BadRequest(detail=f"criterion names must be unique; repeated: {repeated}")
        _check_threshold(body.safety_threshold, criteria)
        if body.both_threshold is not None and not body.ties:
            raise BadRequest(
                detail="'both_threshold' needs ties: both good and both bad are ties that "
                "also say where the pair stands"
            )
        values = {
            "name": body.name,
            "criteria": criteria,
            "pair_scope": body.pair_scope,
            "ties": body.ties,
            "emoji_levels": body.emoji_levels,
            "lease_seconds": float(body.lease_seconds),
            "skip_limit": body.skip_limit,
            "engine_config": engine_config(
                criteria,
                body.pair_scope,
                body.ties,
                body.emoji_levels,
                None
                if body.side_bias is None
                else {"global_sd": body.side_bias.global_sd, "rater_sd": body.side_bias.rater_sd},
                body.both_threshold,
                body.feature_dim,
                body.criterion_questions,
                body.criterion_gain,
            ),
            "safety_threshold": body.safety_threshold,
            "report_limit": body.report_limit,
        }
        if body.targets is not None:
            values["engine_config"]["targets"] = _targets(body.targets)
        values["engine_config"] = with_gold(values["engine_config"], body.gold_rate)
        values["engine_config"]["structure"] = body.structure
        values["engine_config"]["min_labels"] = body.min_labels
        values["engine_config"]["prior_refit"] = body.prior_refit
        if body.kset is not None:
            values["engine_config"]["kset"] = {
                "size": body.kset.size,
                "mode": body.kset.mode,
                "seconds": body.kset.seconds,
            }
        _check_config(values["engine_config"], BadRequest)
        record = await self.writer.run(store.insert_campaign(values))
        return _campaign_view(record, (0, 0, 0))

    async def list_campaigns(self) -> list[schemas.Campaign]:
        """Every campaign with its counts."""

        def read() -> tuple[list[CampaignRecord], dict[int, tuple[int, int, int]]]:
            return store.list_campaigns(self.engine), store.campaign_counts(self.engine)

        records, counts = await to_thread.run_sync(read)
        return [_campaign_view(r, self._counts(r.id, counts)) for r in records]

    async def get_campaign(self, campaign_id: int) -> schemas.Campaign:
        """One campaign with its counts."""
        runtime = await self.runtime(campaign_id)
        return _campaign_view(runtime.record, self._counts(campaign_id, {}))

    async def change_state(self, campaign_id: int, action: str) -> schemas.Campaign:
        """Pause, resume, close or reopen a campaign (asking for the state it is in is a
        no-op).

        Raises:
            Conflict: the action does not start from the campaign's state (resume a closed
                campaign, reopen a paused one, pause a closed one).
        """
        target, sources = TRANSITIONS[action]
        runtime = await self.runtime(campaign_id)
        current = runtime.record.state
        if current != target:
            if current not in sources:
                hint = {CLOSED: "reopen it first", PAUSED: "resume it"}.get(current, "")
                raise Conflict(
                    detail=f"campaign {campaign_id} is {current}: it cannot {action}; {hint}"
                )
            await runtime.update({"state": target})
        return _campaign_view(runtime.record, self._counts(campaign_id, {}))

    async def update_campaign(
        self, campaign_id: int, body: schemas.CampaignUpdate
    ) -> schemas.Campaign:
        """Change the settings that may change mid-campaign: name and lease at any time, rating
        tasks off (`emoji_levels` null) or back on with the same scale at any time, another
        emoji scale while no rating was given on it, the pairing scope while no label exists.
        A change of scale or scope rebuilds the campaign's engine from its log (requests
        meeting the rebuild get a 503: retry).

        Raises:
            Conflict: ties or criteria changed (never), or the scale or scope once labels
                were given on them.
        """
        runtime = await self.runtime(campaign_id)
        record = runtime.record
        refused = []
        if body.ties is not UNSET and body.ties != record.ties:
            refused.append(
                "'ties' never changes: the tie margin is part of how every label is read "
                "(create a new campaign)"
            )
        if body.criteria is not UNSET and list(body.criteria or ()) != list(record.criteria):
            refused.append(
                "'criteria' never change: every clip's scores are stored in their order "
                "(create a new campaign)"
            )
        if refused:
            raise Conflict(detail="; ".join(refused))
        values: dict[str, Any] = {}
        if body.safety_threshold is not UNSET:
            _check_threshold(body.safety_threshold, record.criteria)
            values["safety_threshold"] = body.safety_threshold
        if body.report_limit is not UNSET:
            values["report_limit"] = body.report_limit
        if body.name is not UNSET:
            values["name"] = body.name
        if body.lease_seconds is not UNSET:
            values["lease_seconds"] = float(body.lease_seconds)
        if body.skip_limit is not UNSET:
            values["skip_limit"] = body.skip_limit
        config = dict(record.engine_config)
        if body.targets is not UNSET:
            # an absent key is no target: how campaigns created before targets are stored
            config.pop("targets", None)
            if body.targets is not None:
                config["targets"] = _targets(body.targets)
            if config.get("targets") != record.engine_config.get("targets"):
                values["engine_config"] = config  # applied to the live engine by the runtime
        if body.min_labels is not UNSET:
            config["min_labels"] = int(body.min_labels)
            if body.min_labels != stored_min_labels(record.engine_config):
                values["engine_config"] = config  # applied to the live engine by the runtime
        gold_changes = False
        if body.gold_rate is not UNSET:
            before = float(config.get("gold_rate", 0.0))
            config = with_gold(config, float(body.gold_rate))
            gold_changes = float(config.get("gold_rate", 0.0)) != before
        new_scope = record.pair_scope if body.pair_scope is UNSET else body.pair_scope
        new_levels = record.emoji_levels if body.emoji_levels is UNSET else body.emoji_levels
        values["pair_scope"], values["emoji_levels"] = new_scope, new_levels
        scope_changes = new_scope != config["pair_scope"]
        scale_changes = new_levels is not None and new_levels != scale_levels(config)
        if not (scope_changes or scale_changes or gold_changes):
            await runtime.update(values)
            return _campaign_view(runtime.record, self._counts(campaign_id, {}))
        if scope_changes:
            config["pair_scope"] = new_scope
        if scale_changes:
            config["emoji_thresholds"] = emoji_thresholds(new_levels)
        values["engine_config"] = config
        _check_config(config, Conflict)
        old_levels = scale_levels(record.engine_config)

        def check(connection: Connection) -> None:
            pairs, ratings = store.label_counts(connection, campaign_id)
            if scope_changes and pairs + ratings:
                raise Conflict(
                    detail=f"the pairing scope can change only while the campaign has no "
                    f"label; it has {pairs + ratings}"
                )
            if scale_changes and ratings:
                raise Conflict(
                    detail=f"{ratings} ratings were given on this campaign's {old_levels}-level "
                    f"emoji scale: it can be turned off (null) or on again with "
                    f"{old_levels} levels, not changed"
                )

        await self._rebuild(campaign_id, store.update_campaign(campaign_id, values, check))
        return await self.get_campaign(campaign_id)

    async def _rebuild(self, campaign_id: int, op: Any) -> None:
        """Stop the campaign's runtime, run the database `op` with nothing else writing to the
        campaign, and load the campaign again (with the new engine settings `op` stored)."""
        lock = self._loading.setdefault(campaign_id, asyncio.Lock())
        async with lock:
            runtime = self._runtimes.pop(campaign_id, None)
            if runtime is not None:
                await runtime.close()
            try:
                await self.writer.run(self.leases.fence(campaign_id, op))
            except Conflict:
                raise
            except Exception as error:
                log.exception("storing a campaign change failed")
                raise Unavailable(detail="the database did not store the change; retry") from error
        await self.runtime(campaign_id)

    def _counts(
        self, campaign_id: int, stored: dict[int, tuple[int, int, int]]
    ) -> tuple[int, int, int]:
        runtime = self._runtimes.get(campaign_id)
        if runtime is None:
            return stored.get(campaign_id, (0, 0, 0))
        return len(runtime.clips), len(runtime.raters), runtime.n_labels

    def loaded_runtime(self, campaign_id: int) -> CampaignRuntime:
        """The runtime serving the campaign in this process now, without loading it (KeyError:
        none is loaded); for tests and diagnostics that look at a live campaign."""
        return self._runtimes[campaign_id]

    async def runtime(self, campaign_id: int) -> CampaignRuntime:
        """The campaign's runtime, loaded on first use (its latest snapshot and the log after
        it), and again after its engine stopped (a killed or crashed engine process): the old
        runtime closes first (its database writes under way finish), so the replay sees every
        acknowledged label. A request waits `load_wait_s` for a load, which goes on after.

        Raises:
            NotFound: no such campaign.
            Unavailable: the campaign is still loading (with Retry-After), or another process
                runs it.
        """
        runtime = self._runtimes.get(campaign_id)
        if runtime is not None and not runtime.failed:
            return runtime
        if not 0 < campaign_id <= MAX_ROW_ID:
            raise NotFound(detail=f"campaign {campaign_id} not found")
        load = self._loads.get(campaign_id)
        if load is None:
            load = self._loads[campaign_id] = asyncio.ensure_future(self._load(campaign_id))
            load.add_done_callback(partial(self._loaded, campaign_id))
        try:
            return await asyncio.wait_for(asyncio.shield(load), self.settings.load_wait_s)
        except TimeoutError:
            raise Unavailable(
                detail=f"campaign {campaign_id} is loading (its latest snapshot and the labels "
                "after it); retry",
                headers={"Retry-After": str(LOADING_RETRY_S)},
            ) from None

    def _loaded(self, campaign_id: int, load: asyncio.Future[CampaignRuntime]) -> None:
        if self._loads.get(campaign_id) is load:
            del self._loads[campaign_id]
        if not load.cancelled():
            load.exception()  # read here: a load nobody waits for any more must not warn

    async def _load(self, campaign_id: int) -> CampaignRuntime:
        lock = self._loading.setdefault(campaign_id, asyncio.Lock())
        async with lock:
            runtime = self._runtimes.get(campaign_id)
            if runtime is not None and not runtime.failed:
                return runtime
            if runtime is not None:
                log.warning("campaign %s: rebuilding its engine from the database", campaign_id)
                del self._runtimes[campaign_id]
                await runtime.close()
                # the writer commits in order: past this no-op, every write queued before it
                # (batch marks, progress points) is in the database the replay reads
                await self.writer.run(_nothing)
            record = await to_thread.run_sync(store.get_campaign, self.engine, campaign_id)
            if record is None:
                raise NotFound(detail=f"campaign {campaign_id} not found")
            # the claim commits before the log is read: a takeover replays whatever the last
            # owner acknowledged (its writes under way hold the lease row, see Leases.fence)
            claim = await self.leases.claim(campaign_id)
            if claim.missing:
                raise NotFound(detail=f"campaign {campaign_id} not found")
            if not claim.mine:
                self._owners[campaign_id] = claim
                raise self._run_elsewhere(campaign_id, claim)
            self._owners.pop(campaign_id, None)
            runtime = CampaignRuntime(
                record,
                self.engine,
                self.writer,
                self.settings,
                self.metrics,
                fence=self.leases.fence,
            )
            await runtime.start()
            self._runtimes[campaign_id] = runtime
            return runtime

    # clips and raters -------------------------------------------------------------------------

    async def add_clips(self, campaign_id: int, body: schemas.ClipsIn) -> schemas.ClipsAdded:
        """Validate and add a clip batch.

        Raises:
            PayloadTooLarge: more clips than `max_clips_per_request`.
            BadRequest: repeated external ids, unknown criteria, scores out of range.
            Conflict: an external id exists already (from the runtime).
        """
        limit = self.settings.max_clips_per_request
        if len(body.clips) > limit:
            raise PayloadTooLarge(
                detail=f"{len(body.clips)} clips in one request; at most {limit} per request"
            )
        runtime = await self.runtime(campaign_id)
        clips = _validated_clips(
            body.clips, runtime.record.criteria, stored_feature_dim(runtime.record.engine_config)
        )
        added = await runtime.add_clips(clips)
        return schemas.ClipsAdded(
            added=len(added),
            clips=[schemas.ClipRef(id=c.id, external_id=c.external_id) for c in added],
        )

    async def add_clips_bulk(
        self, campaign_id: int, fmt: BulkFormat, chunks: AsyncIterator[bytes]
    ) -> schemas.BulkClipsAdded:
        """Read a streamed clip upload (JSON lines or CSV) chunk by chunk, then add it as one
        batch: all or nothing.

        Raises:
            BadRequest: a bad row (named by its line), or no rows.
            PayloadTooLarge: more than `max_bulk_clips` clips.
            Conflict: an external id exists already (from the runtime).
        """
        runtime = await self.runtime(campaign_id)
        reader = ClipReader(
            fmt,
            runtime.record.criteria,
            self.settings.max_bulk_clips,
            stored_feature_dim(runtime.record.engine_config),
        )
        body = _at_most(chunks, self.settings.max_bulk_bytes)
        # PostgreSQL: each chunk's rows are written while the next is read (api/clip_stream.py)
        stream = await runtime.stream_clips()
        try:
            with _no_cyclic_gc():
                try:
                    async for chunk in body:
                        reader.feed(chunk)
                        if reader.failed:
                            break
                        if stream is not None:
                            await stream.send(reader.take())
                    columns = reader.finish()
                except (BadRequest, PayloadTooLarge):
                    # the client may still be sending: read the rest (up to the byte limit)
                    # and drop it, so that it reads this answer instead of a reset connection
                    with contextlib.suppress(PayloadTooLarge):
                        async for _ in body:
                            pass
                    raise
                await runtime.add_clips(columns, stream)
        finally:
            if stream is not None:
                await stream.close()
        return schemas.BulkClipsAdded(added=len(columns), n_clips=len(runtime.clips))

    async def register_rater(self, campaign_id: int, body: schemas.RaterIn) -> schemas.RaterCreated:
        """A new rater of the campaign and their token (shown only here)."""
        runtime = await self.runtime(campaign_id)
        token = new_token()
        digest = hash_token(token)
        rater_id = await self.writer.run(
            runtime.fenced(store.insert_rater(campaign_id, body.name, digest))
        )
        self._tokens[digest] = (rater_id, campaign_id)
        runtime.add_rater(rater_id, body.name)
        return schemas.RaterCreated(id=rater_id, name=body.name, token=token)

    async def rater(
        self, token: str | None, campaign_id: int | None = None
    ) -> tuple[CampaignRuntime, RaterState]:
        """The rater a token belongs to (and their campaign's runtime).

        Raises:
            Unauthorized: no token or an unknown one.
            Forbidden: the token belongs to another campaign than `campaign_id`.
        """
        rater_id, owner = self.rater_ids(token)
        if campaign_id is not None and owner != campaign_id:
            raise Forbidden(
                detail=f"this rater token belongs to another campaign than {campaign_id}"
            )
        runtime = await self.runtime(owner)
        return runtime, runtime.raters[rater_id]

    def _active(self, rater: RaterState) -> None:
        """Raises Forbidden when the operator deactivated this rater."""
        if not rater.active:
            raise Forbidden(
                detail=f"rater {rater.id} is deactivated: this token gets no new tasks (the "
                "campaign's operator can reactivate it)"
            )

    def rater_ids(self, token: str | None) -> tuple[int, int]:
        """(rater id, campaign id) of a rater token, without touching the campaign.

        Raises:
            Unauthorized: no token or an unknown one.
        """
        if token is None:
            raise Unauthorized(detail="send the rater's token: 'Authorization: Bearer <token>'")
        found = self._known.get(token)
        if found is None:
            found = self._tokens.get(hash_token(token))
            if found is None:
                raise Unauthorized(detail="unknown rater token")
            self._known[token] = found
        return found

    def is_rater_of(self, token: str | None, campaign_id: int) -> bool:
        """Whether `token` is a rater token of this campaign."""
        found = None if token is None else self._tokens.get(hash_token(token))
        if found is None or found[1] != campaign_id:
            return False
        runtime = self._runtimes.get(campaign_id)
        rater = None if runtime is None else runtime.raters.get(found[0])
        return rater is None or rater.active

    async def import_judgments(self, campaign_id: int, body: schemas.ImportIn) -> schemas.ImportOut:
        """Import past judgments (see `CampaignRuntime.import_judgments`).

        Raises:
            BadRequest: the text does not parse, or names what the campaign lacks.
            PayloadTooLarge: more than `MAX_IMPORT_RECORDS` judgments.
            Conflict: the key was used for another import.
        """
        runtime = await self.runtime(campaign_id)
        records, problems = await to_thread.run_sync(parse, body.data, body.format)
        if len(records) > MAX_IMPORT_RECORDS:
            raise PayloadTooLarge(
                detail=f"{len(records)} judgments in one import; at most {MAX_IMPORT_RECORDS}"
            )
        digest = hashlib.sha256(f"{body.format}\n{body.data}".encode()).hexdigest()
        result, duplicate = await runtime.import_judgments(body.key, digest, records, problems)
        return schemas.ImportOut(
            key=result["key"],
            imported=result["imported"],
            raters_created=list(result["raters_created"]),
            duplicate=duplicate,
        )

    async def retire_clip(
        self, campaign_id: int, clip_id: int, retired: bool
    ) -> schemas.ClipStatus:
        """Retire (`retired`) or restore a clip (see `CampaignRuntime.retire_clip`)."""
        runtime = await self.runtime(campaign_id)
        if not 0 < clip_id <= MAX_ROW_ID:
            raise NotFound(detail=f"clip {clip_id} not found in campaign {campaign_id}")
        clip = await runtime.retire_clip(clip_id, retired)
        return schemas.ClipStatus(
            id=clip.id, external_id=clip.external_id, retired=clip.retired, status=clip.status
        )

    async def withheld(self, campaign_id: int) -> schemas.WithheldClips:
        """The campaign's withholding policy and the clips it withholds now, with why."""
        runtime = await self.runtime(campaign_id)
        record = runtime.record

        def report(found: Report) -> schemas.ClipReport:
            rater = runtime.raters.get(found.rater_id)
            return schemas.ClipReport(
                rater_id=found.rater_id,
                rater_name=None if rater is None else rater.name,
                assignment_id=found.assignment_id,
                at=found.at,
            )

        return schemas.WithheldClips(
            safety_criterion=SAFETY_CRITERION,
            safety_threshold=record.safety_threshold,
            report_limit=record.report_limit,
            clips=[
                schemas.WithheldClip(
                    clip=schemas.ClipRef(id=clip.id, external_id=clip.external_id),
                    reason=clip.withheld or "",
                    withheld_at=clip.withheld_at,
                    safety=clip.safety,
                    labels=clip.labels,
                    reports=[report(r) for r in clip.reports],
                )
                for clip in runtime.withheld()
            ],
        )

    async def set_rater_active(
        self, campaign_id: int, rater_id: int, active: bool
    ) -> schemas.RaterStatus:
        """Deactivate or reactivate a rater (see `CampaignRuntime.set_rater_active`)."""
        runtime = await self.runtime(campaign_id)
        if not 0 < rater_id <= MAX_ROW_ID:
            raise NotFound(detail=f"rater {rater_id} not found in campaign {campaign_id}")
        rater = await runtime.set_rater_active(rater_id, active)
        return schemas.RaterStatus(id=rater.id, name=rater.name, active=rater.active)

    async def add_gold(self, campaign_id: int, body: schemas.GoldIn) -> schemas.GoldAdded:
        """Validate and store gold pairs, all or nothing (see `CampaignRuntime.add_gold`).

        Raises:
            BadRequest: an unknown clip, the same clip twice, a pair twice in the request, or
                a tie where the campaign has no ties; every problem in one message.
            Conflict: a pair is gold already with another answer.
        """
        runtime = await self.runtime(campaign_id)
        problems: list[str] = []
        pairs: list[tuple[int, int, Outcome]] = []
        seen: set[tuple[int, int]] = set()
        for number, pair in enumerate(body.pairs):
            where = f"pair {number}"
            first = runtime.clip_index.get(pair.first)
            second = runtime.clip_index.get(pair.second)
            for name, position in ((pair.first, first), (pair.second, second)):
                if position is None:
                    problems.append(f"{where}: no clip {name!r} in campaign {campaign_id}")
            if pair.answer == "tie" and not runtime.record.ties:
                problems.append(f"{where}: this campaign does not allow ties")
            if first is None or second is None:
                continue
            if first == second:
                problems.append(f"{where}: a gold pair needs two different clips")
                continue
            outcome = {"first": Outcome.WIN, "second": Outcome.LOSS, "tie": Outcome.TIE}[
                pair.answer
            ]
            if first > second:  # stored low position first, the answer said the same way
                first, second = second, first
                outcome = {Outcome.WIN: Outcome.LOSS, Outcome.LOSS: Outcome.WIN}.get(
                    outcome, outcome
                )
            if (first, second) in seen:
                problems.append(f"{where}: the same pair appears twice in this request")
            seen.add((first, second))
            pairs.append((first, second, outcome))
        if problems:
            raise BadRequest(detail="; ".join(problems[:20]))
        if runtime.record.pair_scope == "group":
            apart = [
                (f, s)
                for f, s, _ in pairs
                if runtime.clips[f].group is None
                or runtime.clips[f].group != runtime.clips[s].group
            ]
            if apart:
                f, s = apart[0]
                raise BadRequest(
                    detail=f"clips {runtime.clips[f].external_id!r} and "
                    f"{runtime.clips[s].external_id!r} are not of one prompt group: this "
                    "campaign (pair_scope group) compares clips of one prompt only"
                )
        added = await runtime.add_gold(pairs)
        return schemas.GoldAdded(added=added, total=len(runtime.gold))

    async def gold_pairs(self, campaign_id: int) -> schemas.GoldList:
        """The campaign's gold pairs and gold rate."""
        runtime = await self.runtime(campaign_id)

        def ref(position: int) -> schemas.ClipRef:
            clip = runtime.clips[position]
            return schemas.ClipRef(id=clip.id, external_id=clip.external_id)

        answers = {Outcome.WIN: "first", Outcome.LOSS: "second", Outcome.TIE: "tie"}
        return schemas.GoldList(
            gold_rate=runtime.gold_rate,
            pairs=[
                schemas.GoldPairOut(first=ref(f), second=ref(s), answer=answers[a])  # type: ignore[arg-type]
                for (f, s), a in runtime.gold.items()
            ],
        )

    async def skip_flags(self, campaign_id: int) -> schemas.SkipFlags:
        """The tasks and clips repeated skips withdrew for everyone."""
        runtime = await self.runtime(campaign_id)
        tasks, clips = runtime.skip_flags()

        def ref(position: int) -> schemas.ClipRef:
            clip = runtime.clips[position]
            return schemas.ClipRef(id=clip.id, external_id=clip.external_id)

        return schemas.SkipFlags(
            skip_limit=runtime.record.skip_limit,
            tasks=[
                schemas.SkippedTask(
                    left=ref(key[0]),
                    right=None if key[1] == NO_SECOND else ref(key[1]),
                    raters=raters,
                    clips=[ref(position) for position in key] if len(key) > 2 else None,
                )
                for key, raters in tasks
            ],
            clips=[
                schemas.SkippedClip(
                    clip=ref(position),
                    raters=raters,
                    tasks=n_tasks,
                    retired=runtime.clips[position].retired,
                )
                for position, raters, n_tasks in clips
            ],
        )

    # assignments ------------------------------------------------------------------------------

    async def assign(self, campaign_id: int, token: str | None) -> schemas.AssignmentOut:
        """The rater's next assignment, or a message saying why there is none."""
        runtime, rater = await self.rater(token, campaign_id)
        self._active(rater)
        state, message, campaign_state = await runtime.assign(rater)
        if state is None:
            return schemas.AssignmentOut(assignment=None, message=message, state=campaign_state)
        record = runtime.record
        if state.is_pair:
            both = stored_both_threshold(record.engine_config) is not None
            choices = [
                "left",
                "right",
                *(["tie"] if record.ties else []),
                *(["both_good", "both_bad"] if both else []),
                "skip",
            ]
        else:
            choices = ["skip"]
        if state.is_kset:
            kind = "kset"
        elif state.criterion is not None:
            kind = "criterion"
        else:
            kind = "pair" if state.is_pair else "rating"
        assignment = schemas.Assignment(
            id=state.id,
            kind=kind,
            question=question_words(state.criterion) if state.is_pair else "",
            criterion=state.criterion,
            # a K-set's first clip as shown, so a client that reads only `left` still works
            left=_clip_view(runtime.clips[state.shown[0] if state.is_kset else state.left]),
            right=_clip_view(runtime.clips[state.right]) if state.is_pair else None,
            expires_at=utc(state.expires_at),
            lease_seconds=record.lease_seconds,
            choices=choices,
            emoji_levels=record.emoji_levels
            if state.is_pair or state.is_kset
            else runtime.scale_levels,
            clips=[_clip_view(runtime.clips[p]) for p in state.shown] if state.is_kset else None,
            mode=state.mode if state.is_kset else None,
        )
        return schemas.AssignmentOut(assignment=assignment, message=None, state=record.state)

    async def judge(
        self, assignment_id: int, token: str | None, body: schemas.JudgmentIn
    ) -> schemas.JudgmentOut:
        """Record the rater's answer to their assignment (idempotent)."""
        runtime, rater = await self.rater(token)
        seconds = _answer_seconds(body.shown_at, body.answered_at)
        result = await runtime.judge(
            rater,
            assignment_id,
            body.choice,
            body.level,
            body.ranking,
            seconds,
            criterion=body.criterion,
        )
        self.metrics.judgment(result.choice, result.duplicate)
        return schemas.JudgmentOut(
            assignment_id=result.assignment_id,
            judgment_id=result.judgment_id,
            choice=result.choice,
            level=result.level,
            duplicate=result.duplicate,
            ranking=result.ranking,
        )

    async def report(
        self, assignment_id: int, token: str | None, body: schemas.ReportIn
    ) -> schemas.ReportOut:
        """A rater reports a clip of their assignment as unsafe or broken."""
        runtime, rater = await self.rater(token)
        self._active(rater)  # a deactivated rater's word withholds nothing
        result = await runtime.report(rater, assignment_id, body.clip_id)
        clip = result.clip
        return schemas.ReportOut(
            assignment_id=assignment_id,
            clip=schemas.ClipRef(id=clip.id, external_id=clip.external_id),
            reports=result.reports,
            withheld=clip.withheld is not None,
            duplicate=result.duplicate,
        )

    # reads ------------------------------------------------------------------------------------

    async def leaderboard(
        self,
        campaign_id: int,
        level: float,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
        prompt: str | None = None,
        external_id: str | None = None,
    ) -> schemas.Leaderboard:
        """One page of the clips by posterior rank (best first; `prompt`: only that prompt's
        clips; `external_id`: only that clip, or none), with credible intervals and label
        counts, and how many clips match in all.

        Raises:
            BadRequest: a level, limit or offset out of range.
        """
        _check_level(level)
        if not 1 <= limit <= MAX_PAGE or not 0 <= offset <= MAX_ROW_ID:
            raise BadRequest(
                detail=f"limit must be in 1..{MAX_PAGE} and offset in 0..{MAX_ROW_ID}, "
                f"got limit={limit}, offset={offset}"
            )
        runtime = await self.runtime(campaign_id)
        board = await runtime.leaderboard(level)
        order = board.order[board.order < len(runtime.clips)]
        if prompt is not None:
            index = self._prompts.get(campaign_id)
            if index is None or index.runtime is not runtime:  # a reload starts a new one
                index = self._prompts[campaign_id] = PromptIndex(runtime)
            members = index.positions(prompt)
            order = members[np.argsort(board.rank[members], kind="stable")]
        if external_id is not None:
            position = runtime.clip_index.get(external_id)
            order = order[order == position] if position is not None else order[:0]
        page = order[offset : offset + limit].tolist()
        return schemas.Leaderboard(
            campaign_id=campaign_id,
            n_judgments=runtime.n_labels,
            level=level,
            expected_kendall_tau=board.tau,
            clips=[_board_row(runtime, board, i) for i in page],
            total=len(order),
            offset=offset,
            limit=limit,
            prompt=prompt,
            external_id=external_id,
            prior=schemas.PriorOut(
                weight_scale=board.prior[0],
                context_scale=board.prior[1],
                residual_scale=board.prior[2],
                refits=board.refits,
                refitting=runtime.refits.busy,
            ),
        )

    async def weights(self, campaign_id: int, level: float) -> schemas.Weights:
        """The criterion weights' posterior, globally and per context."""
        _check_level(level)
        runtime = await self.runtime(campaign_id)
        read = await runtime.weights(level)
        criteria = list(runtime.record.criteria)

        def rows(
            mean: Sequence[float], sd: Sequence[float], half: Sequence[float]
        ) -> list[schemas.Weight]:
            return [
                schemas.Weight(criterion=c, mean=m, sd=s, lower=m - h, upper=m + h)
                for c, m, s, h in zip(criteria, mean, sd, half, strict=True)
            ]

        return schemas.Weights(
            criteria=criteria,
            level=level,
            global_=rows(*read["global"]),
            contexts=[
                schemas.ContextWeights(context=name, weights=rows(mean, sd, half))
                for name, mean, sd, half in read["contexts"]
            ],
            gate=[
                schemas.FeatureWeights(feature=d, weights=rows(*row))
                for d, row in enumerate(read["gate"])
            ]
            if stored_feature_dim(runtime.record.engine_config)
            else None,
        )

    async def raters(self, campaign_id: int) -> schemas.Raters:
        """Every rater's labels and learned reliability."""
        runtime = await self.runtime(campaign_id)
        stats = await runtime.rater_stats()
        side = await runtime.side_offsets()
        rater_sides = {} if side is None else side["raters"]
        out = []
        for rater_id, rater in runtime.raters.items():
            noise, keep, random_share, flagged = stats.get(rater_id, (math.nan, 1.0, None, False))
            out.append(
                schemas.RaterStats(
                    id=rater_id,
                    name=rater.name,
                    labels=rater.labels,
                    skips=rater.skips,
                    noise_sd=noise,
                    keep_probability=keep,
                    probability_random=random_share,
                    flagged=flagged,
                    active=rater.active,
                    side_offset=_side_offset(rater_sides.get(rater_id)),
                )
            )
        return schemas.Raters(
            raters=out, side_offset=None if side is None else _side_offset(side["global"])
        )

    async def progress(self, campaign_id: int) -> schemas.Progress:
        """The recorded labels vs expected Kendall tau points, and where the posterior stands
        against the campaign's stopping targets (after every acknowledged label)."""
        runtime = await self.runtime(campaign_id)
        status = await runtime.progress()
        points = await to_thread.run_sync(store.progress_points, self.engine, campaign_id)
        return schemas.Progress(
            points=[
                schemas.ProgressPoint(labels=labels, expected_kendall_tau=tau, at=as_utc(at))
                for labels, tau, at in points
            ],
            targets=[
                schemas.TargetStatus(
                    name=t["name"],
                    target=t["target"],
                    value=_finite(t["value"]),
                    distance=_finite(t["distance"]),
                    met=t["met"],
                )
                for t in status["targets"]
            ],
            done=status["done"],
            reason=status["reason"],
            task_seconds=status["task_seconds"],
        )

    async def export(
        self, campaign_id: int, kind: ExportKind, fmt: ExportFormat, level: float = DEFAULT_LEVEL
    ) -> Iterator[str]:
        """All judgments, the preference pairs, every clip with its status, or the leaderboard
        (every clip by rank at `level`), as CSV or JSON lines: chunks of text to stream, read
        batch by batch (from the database, or from the one leaderboard read when the export
        began)."""
        _check_level(level)
        runtime = await self.runtime(campaign_id)
        if kind == "clips":
            clips = await to_thread.run_sync(store.export_clips, self.engine, campaign_id)
            return render_chunks([clips], kind, fmt)
        if kind != "leaderboard":
            batches = store.export_rows(self.engine, campaign_id, store.EXPORT_BATCH)
            return render_chunks(batches, kind, fmt)
        board = await runtime.leaderboard(level)
        order = board.order[board.order < len(runtime.clips)]

        def batches() -> Iterator[list[dict[str, Any]]]:
            for start in range(0, len(order), store.EXPORT_BATCH):
                yield [
                    msgspec.structs.asdict(_board_row(runtime, board, position))
                    for position in order[start : start + store.EXPORT_BATCH].tolist()
                ]

        return render_chunks(batches(), kind, fmt)


# views and validation -----------------------------------------------------------------------


def _targets(body: schemas.TargetsIn) -> dict[str, float]:
    """The stored form of a request's targets (the set ones), checked as the engine will
    read them.

    Raises:
        BadRequest: a combination `Targets` refuses (a confidence without a Kendall tau).
    """
    values = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}
    try:
        Targets(**values)
    except ValueError as error:
        raise BadRequest(detail=f"targets: {error}") from None
    return values


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector off for the block (back on after, if it was on). An
    upload makes millions of objects that hold no cycle (rows, strings, floats, clip
    states); the collector's passes over them, each one walking every object alive, cost
    more than the upload's own work. Reference counting still frees everything meanwhile."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


async def _at_most(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """`chunks`, ending in a 413 once they hold more than `limit` bytes."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                detail=f"the upload is larger than the service accepts ({limit} bytes at most)"
            )
        yield chunk


def _check_config(stored: dict[str, Any], error: type[BadRequest] | type[Conflict]) -> None:
    """Raise `error` with the engine's reason when it refuses a stored `engine_config` (a
    combination such as structure "blocks" with pair_scope "any")."""
    try:
        build_config(stored)
    except ValueError as refused:
        raise error(detail=f"the engine refuses these settings: {refused}") from None


class PromptIndex:
    """Each prompt's clip positions, extended as clips are added (a clip's prompt never
    changes, and clips are only appended)."""

    def __init__(self, runtime: CampaignRuntime) -> None:
        self.runtime = runtime
        self._indexed = 0
        self._members: dict[str | None, list[int]] = {}

    def positions(self, prompt: str) -> np.ndarray:
        """The positions of `prompt`'s clips, in the order they were added."""
        clips = self.runtime.clips
        for clip in clips[self._indexed :]:
            self._members.setdefault(clip.group, []).append(clip.position)
        self._indexed = len(clips)
        return np.asarray(self._members.get(prompt, ()), dtype=np.int64)


def _board_row(runtime: CampaignRuntime, board: Board, position: int) -> schemas.LeaderboardClip:
    clip = runtime.clips[position]
    state = "withdrawn" if clip.offered and position in runtime.withdrawn_clips else clip.status
    return schemas.LeaderboardClip(
        id=clip.id,
        external_id=clip.external_id,
        uri=clip.uri,
        group=clip.group,
        context=clip.context,
        mean=float(board.mean[position]),
        sd=float(board.sd[position]),
        lower=float(board.lower[position]),
        upper=float(board.upper[position]),
        rank=int(board.rank[position]),
        labels=clip.labels,
        state=state,
    )


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: an undefined read-out is null."""
    return value if math.isfinite(value) else None


def _nothing(connection: Connection) -> None:
    """A writer op that writes nothing (a barrier: it commits after every earlier op)."""
    del connection


def _side_offset(moments: Sequence[float] | None) -> schemas.SideOffset | None:
    return None if moments is None else schemas.SideOffset(mean=moments[0], sd=moments[1])


def _campaign_view(record: CampaignRecord, counts: tuple[int, int, int]) -> schemas.Campaign:
    side = stored_side_bias(record.engine_config)
    kset = record.engine_config.get("kset")
    return schemas.Campaign(
        id=record.id,
        name=record.name,
        criteria=list(record.criteria),
        pair_scope=record.pair_scope,
        ties=record.ties,
        emoji_levels=record.emoji_levels,
        lease_seconds=record.lease_seconds,
        n_clips=counts[0],
        n_raters=counts[1],
        n_judgments=counts[2],
        created_at=as_utc(record.created_at),
        state=record.state,
        skip_limit=record.skip_limit,
        side_bias=None
        if side is None
        else schemas.SideBias(global_sd=side.global_sd, rater_sd=side.rater_sd),
        gold_rate=float(record.engine_config.get("gold_rate", 0.0)),
        safety_threshold=record.safety_threshold,
        report_limit=record.report_limit,
        structure=record.engine_config.get("structure", "dense"),
        min_labels=stored_min_labels(record.engine_config),
        prior_refit=stored_prior_refit(record.engine_config),
        targets=record.engine_config.get("targets") or None,
        both_threshold=stored_both_threshold(record.engine_config),
        kset=None if kset is None else schemas.KSet(**kset),
        feature_dim=stored_feature_dim(record.engine_config),
        criterion_questions=list(
            record.engine_config.get("criterion_questions", {}).get("criteria", [])
        ),
    )


def _answer_seconds(shown_at: datetime | None, answered_at: datetime | None) -> float | None:
    """How long an answer took: `answered_at` (the page's clock; default now) minus
    `shown_at`; None when the page sent no `shown_at`.

    Raises:
        BadRequest: a time without a zone, or an answer before its showing.
    """
    if shown_at is None:
        if answered_at is not None:
            raise BadRequest(detail="'answered_at' needs 'shown_at'")
        return None
    if shown_at.utcoffset() is None or (
        answered_at is not None and answered_at.utcoffset() is None
    ):
        raise BadRequest(detail="'shown_at' and 'answered_at' need a time zone (e.g. Z)")
    end = answered_at if answered_at is not None else datetime.now(UTC)
    seconds = (end - shown_at).total_seconds()
    if seconds < 0:
        raise BadRequest(
            detail=f"'shown_at' ({shown_at.isoformat()}) is after the answer "
            f"({end.isoformat()}); send when the page showed the task"
        )
    return seconds


def _clip_view(clip: ClipState) -> schemas.Clip:
    return schemas.Clip(
        id=clip.id,
        external_id=clip.external_id,
        uri=clip.uri,
        group=clip.group,
        context=clip.context,
    )


def _check_threshold(threshold: float | None, criteria: Sequence[str]) -> None:
    """A safety threshold needs the criterion it reads (`SAFETY_CRITERION`, by name).

    Raises:
        BadRequest: a threshold on a campaign without that criterion.
    """
    if threshold is not None and SAFETY_CRITERION not in criteria:
        raise BadRequest(
            detail=f"safety_threshold reads the {SAFETY_CRITERION!r} score, and this campaign's "
            f"criteria {list(criteria)} have none; add a {SAFETY_CRITERION!r} criterion or "
            "leave the threshold out"
        )


def _check_level(level: float) -> None:
    if not 0 < level <= MAX_LEVEL:
        raise BadRequest(detail=f"level must be a credible level in (0, {MAX_LEVEL}], got {level}")


def _validated_clips(
    clips: Sequence[schemas.ClipIn], criteria: Sequence[str], feature_dim: int = 0
) -> list[NewClip]:
    """Clips with scores aligned to `criteria` and feature vectors of `feature_dim` numbers
    where the campaign has a feature gate; every problem of the batch in one 400."""
    problems: list[str] = []
    counts = Counter(clip.external_id for clip in clips)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        problems.append(f"external ids repeated within the batch: {repeated[:10]}")
    known = set(criteria)
    out = []
    for index, clip in enumerate(clips):
        unknown = sorted(set(clip.scores) - known)
        if unknown:
            problems.append(
                f"clips[{index}] ({clip.external_id!r}): unknown criteria {unknown}; "
                f"this campaign's criteria are {list(criteria)}"
            )
        for name, value in clip.scores.items():
            if value is not None and not (math.isfinite(value) and abs(value) <= MAX_ABS_SCORE):
                problems.append(
                    f"clips[{index}] ({clip.external_id!r}): score {name!r} = {value} is not a "
                    f"finite number within +-{MAX_ABS_SCORE:g} (use null for a missing score)"
                )
        why = feature_problem(clip.features, feature_dim)
        if why is not None:
            problems.append(f"clips[{index}] ({clip.external_id!r}): {why}")
        scores = tuple(clip.scores.get(name) for name in criteria)
        features = None if clip.features is None else tuple(clip.features)
        out.append(NewClip(clip.external_id, clip.uri, clip.group, clip.context, scores, features))
    if problems:
        shown = problems[:10] + (
            [f"... and {len(problems) - 10} more"] if len(problems) > 10 else []
        )
        raise BadRequest(detail="invalid clips: " + "; ".join(shown))
    return out


__all__ = ["DEFAULT_LEVEL", "MAX_LEVEL", "Service"]
