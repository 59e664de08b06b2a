"""`Client` (blocking) and `AsyncClient` (asyncio) for the ratingparty service.

Both send the calls of `client.calls` and differ only in how they wait; every method returns
the dataclass of `client.models` for the answer, or raises a `client.errors.ServiceError`
carrying the service's status and message.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from typing import Any, Literal, TypeVar

import httpx

from client import calls, models
from client.calls import (
    BulkFormat,
    Call,
    Choice,
    ClipLike,
    Credentials,
    ExportFormat,
    ExportKind,
    RetryPolicy,
    StateAction,
)
from client.errors import Unreachable

T = TypeVar("T")
DEFAULT_LEVEL = 0.9
DEFAULT_BATCH = 1000  # clips per request when streaming; the service takes up to 5,000
DEFAULT_PAGE = 1000  # leaderboard rows per page when iterating (the service allows 10,000)


def _user_agent() -> str:
    try:
        version = metadata.version("ratingparty")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"ratingparty-client/{version}"


class Client:
    """A blocking client.

    Args:
        base_url: where the service listens, e.g. "http://127.0.0.1:8000".
        key: the admin key (campaigns, clips, raters, reads, export).
        token: a rater's token (assignments and judgments); see also `for_rater`.
        timeout: seconds per request.
        retry: how often and how long to retry where it is safe (`client.calls`).
        transport: an httpx transport (tests, proxies); ignored when `http` is given.
        http: an httpx.Client to send through (not closed by this client).

    Use it as a context manager, or call `close()`, to release its connections.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        key: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.credentials = Credentials(key, token)
        self.retry = retry or RetryPolicy()
        self._owns_http = http is None
        self.http = http or httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": _user_agent()},
        )

    def for_rater(self, token: str) -> Client:
        """A client acting as the rater with `token`, sharing this one's connections."""
        return Client(http=self.http, token=token, retry=self.retry)

    def close(self) -> None:
        """Close the connections (when this client opened them)."""
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run(self, call: Call[T]) -> T:
        """Send a call, retrying where its `Retry` allows, and read its answer.

        Raises:
            ServiceError: the service's answer was an error (the subclass for its status).
            Unreachable: no answer came back, after the retries the call allows.
        """
        attempt = 0
        while True:
            request = calls.build_request(self.http, call, self.credentials)
            try:
                response = self.http.send(request)
            except httpx.TransportError as error:
                delay = calls.retry_delay(call, self.retry, attempt, error=error)
                if delay is None:
                    message = calls.unreachable_message(call, error, attempt + 1)
                    raise Unreachable(None, message) from error
            else:
                delay = calls.retry_delay(call, self.retry, attempt, response=response)
                if delay is None:
                    return calls.result(call, response)
            attempt += 1
            time.sleep(delay)

    # service ---------------------------------------------------------------------------------

    def health(self) -> models.Health:
        """Whether the process and its database are up."""
        return self.run(calls.health())

    # campaigns (admin key) -------------------------------------------------------------------

    def create_campaign(
        self,
        name: str,
        *,
        criteria: list[str] | None = None,
        pair_scope: Literal["group", "any"] = "group",
        ties: bool = True,
        emoji_levels: int | None = None,
        lease_seconds: float = 120.0,
        targets: dict[str, float] | None = None,
        gold_rate: float = 0.0,
        safety_threshold: float | None = None,
        report_limit: int = 1,
        structure: str | None = None,
        min_labels: int | None = None,
        both_threshold: float | None = None,
        kset: dict[str, Any] | None = None,
        feature_dim: int = 0,
    ) -> models.Campaign:
        """A new campaign (criteria default to the service's five reward-model criteria);
        `targets` (`kendall_tau`, `confidence`, `interval_width`) say when it is done; a clip
        whose "safety" score is below `safety_threshold`, or that `report_limit` raters
        reported, is withheld; `structure="blocks"` (with pair_scope "group") holds millions
        of clips; each clip gets `min_labels` labels at least (None: the service's default,
        2; 0: no floor); `both_threshold` (needs ties) lets pairs be answered "both_good" or
        "both_bad"; `kset` ({"size", "mode", "seconds"}, dense campaigns) hands out K clips
        at once where they teach more per second; `feature_dim` D > 0
        gates the criterion weights by each clip's feature vector (`NewClip.features`, D
        numbers)."""
        return self.run(
            calls.create_campaign(
                name,
                criteria=criteria,
                pair_scope=pair_scope,
                ties=ties,
                emoji_levels=emoji_levels,
                lease_seconds=lease_seconds,
                targets=targets,
                gold_rate=gold_rate,
                safety_threshold=safety_threshold,
                report_limit=report_limit,
                structure=structure,
                min_labels=min_labels,
                both_threshold=both_threshold,
                kset=kset,
                feature_dim=feature_dim,
            )
        )

    def campaigns(self) -> list[models.Campaign]:
        """Every campaign with its counts."""
        return self.run(calls.list_campaigns())

    def campaign(self, campaign_id: int) -> models.Campaign:
        """One campaign with its counts."""
        return self.run(calls.get_campaign(campaign_id))

    def add_clips(self, campaign_id: int, clips: Iterable[ClipLike]) -> models.ClipsAdded:
        """Add clips in one request: all of them, or none (the error says why)."""
        return self.run(calls.add_clips(campaign_id, [calls.clip_body(c) for c in clips]))

    def stream_clips(
        self, campaign_id: int, clips: Iterable[ClipLike], *, batch_size: int = DEFAULT_BATCH
    ) -> models.ClipsAdded:
        """Add clips read lazily from any iterable, `batch_size` per request; each batch is
        all or nothing, and the batches before a failed one stay added."""
        parts = [
            self.run(calls.add_clips(campaign_id, batch))
            for batch in calls.batches(clips, batch_size)
        ]
        return calls.merge(parts)

    def upload_clips(
        self,
        campaign_id: int,
        clips: Iterable[ClipLike] | str | os.PathLike[str],
        *,
        upload_format: BulkFormat | None = None,
    ) -> models.BulkClipsAdded:
        """Add any number of clips in one streamed request, all or nothing (a bad row is a
        `BadRequest` naming its line): an iterable of clips (read lazily, sent as JSON
        lines), or a file of JSON lines or CSV (`upload_format`, else from its suffix)."""
        content, fmt = _upload(clips, upload_format)
        return self.run(calls.upload_clips(campaign_id, content, fmt))

    def register_rater(self, campaign_id: int, name: str | None = None) -> models.RaterCreated:
        """A new rater and their token (shown only now)."""
        return self.run(calls.register_rater(campaign_id, name))

    # the operator's controls (admin key) -------------------------------------------------------

    def update_campaign(self, campaign_id: int, **changes: Any) -> models.Campaign:
        """Change settings: `name`, `lease_seconds`, `emoji_levels` (None: rating tasks off),
        `pair_scope` (no label yet), `skip_limit`, `targets` (None: never done),
        `safety_threshold` (None: none), `report_limit`; a `Conflict` says why one cannot
        change."""
        return self.run(calls.update_campaign(campaign_id, changes))

    def change_state(self, campaign_id: int, action: StateAction) -> models.Campaign:
        """`pause`, `resume`, `close` or `reopen` the campaign."""
        return self.run(calls.change_state(campaign_id, action))

    def retire_clip(self, campaign_id: int, clip_id: int) -> models.ClipStatus:
        """Never offer the clip again (its labels stay)."""
        return self.run(calls.retire_clip(campaign_id, clip_id, True))

    def restore_clip(self, campaign_id: int, clip_id: int) -> models.ClipStatus:
        """Offer a retired, withheld or skip-withdrawn clip again."""
        return self.run(calls.retire_clip(campaign_id, clip_id, False))

    def withheld(self, campaign_id: int) -> models.WithheldClips:
        """The clips the campaign's policy withholds (a safety score below the threshold,
        raters' reports), with why."""
        return self.run(calls.withheld(campaign_id))

    def deactivate_rater(self, campaign_id: int, rater_id: int) -> models.RaterStatus:
        """No new tasks for the rater; their open assignments are withdrawn."""
        return self.run(calls.set_rater_active(campaign_id, rater_id, False))

    def reactivate_rater(self, campaign_id: int, rater_id: int) -> models.RaterStatus:
        """Tasks for the rater again."""
        return self.run(calls.set_rater_active(campaign_id, rater_id, True))

    def add_gold(self, campaign_id: int, pairs: Sequence[Mapping[str, str]]) -> models.GoldAdded:
        """Gold pairs `{first, second, answer}` (external ids; answer "first", "second" or
        "tie"), all or nothing; mixed into raters' tasks at the campaign's gold rate."""
        return self.run(calls.add_gold(campaign_id, pairs))

    def gold_pairs(self, campaign_id: int) -> models.GoldList:
        """The campaign's gold pairs and gold rate."""
        return self.run(calls.gold_pairs(campaign_id))

    def skipped(self, campaign_id: int) -> models.SkipFlags:
        """The pairs and clips repeated skips withdrew for everyone."""
        return self.run(calls.skipped(campaign_id))

    def import_judgments(
        self, campaign_id: int, key: str, data: str, import_format: ExportFormat = "csv"
    ) -> models.ImportOut:
        """Import past judgments (CSV or JSON lines), all or nothing; the same `key` again
        returns the first result (so a retry is safe)."""
        return self.run(calls.import_judgments(campaign_id, key, data, import_format))

    # rating (rater token) --------------------------------------------------------------------

    def next_assignment(self, campaign_id: int) -> models.AssignmentOut:
        """The rater's next task under a lease, or `assignment=None` and the message why."""
        return self.run(calls.next_assignment(campaign_id))

    def judge(
        self, assignment_id: int, choice: Choice | None = None, *, level: int | None = None
    ) -> models.JudgmentOut:
        """Answer an assignment with a choice or an emoji level (retried safely: the same
        answer twice is one label)."""
        return self.run(calls.judge(assignment_id, choice, level))

    def rank(self, assignment_id: int, ranking: list[int]) -> models.JudgmentOut:
        """Answer a K-set: clip ids, best first (the best; the best and the worst; or the
        whole order, as its `mode` asks); retried safely like `judge`."""
        return self.run(calls.rank(assignment_id, ranking))

    def report_clip(self, assignment_id: int, clip_id: int) -> models.ReportOut:
        """Report a clip of the assignment as unsafe or broken (retried safely: the same
        report again is acknowledged as a duplicate)."""
        return self.run(calls.report_clip(assignment_id, clip_id))

    # reads -----------------------------------------------------------------------------------

    def leaderboard(
        self,
        campaign_id: int,
        level: float = DEFAULT_LEVEL,
        *,
        limit: int | None = None,
        offset: int = 0,
        prompt: str | None = None,
        external_id: str | None = None,
    ) -> models.Leaderboard:
        """A page of the clips best first with credible intervals (admin key or a rater of
        the campaign): `limit` rows (the service's default page when None) after `offset`,
        of one `prompt` when given, only the clip of `external_id` when given (no row when
        none has it); `total` counts every matching clip."""
        return self.run(calls.leaderboard(campaign_id, level, limit, offset, prompt, external_id))

    def iter_leaderboard(
        self,
        campaign_id: int,
        level: float = DEFAULT_LEVEL,
        *,
        prompt: str | None = None,
        page_size: int = DEFAULT_PAGE,
    ) -> Iterator[models.LeaderboardClip]:
        """Every clip best first (of one `prompt` when given), a page at a time. Labels that
        arrive meanwhile may move clips between pages; `export(id, "leaderboard")` reads
        one posterior."""
        offset = 0
        while True:
            page = self.leaderboard(
                campaign_id, level, limit=page_size, offset=offset, prompt=prompt
            )
            yield from page.clips
            offset += len(page.clips)
            if not page.clips or page.total is None or offset >= page.total:
                return

    def weights(self, campaign_id: int, level: float = DEFAULT_LEVEL) -> models.Weights:
        """Criterion weights with credible intervals, globally and per context."""
        return self.run(calls.weights(campaign_id, level))

    def raters(self, campaign_id: int) -> list[models.RaterStats]:
        """Labels, learned noise, keep probability and flags per rater."""
        return self.run(calls.raters(campaign_id))

    def progress(self, campaign_id: int) -> list[models.ProgressPoint]:
        """Labels against the expected Kendall tau of the ranking, over time."""
        return self.run(calls.progress(campaign_id))

    def export(
        self,
        campaign_id: int,
        kind: ExportKind = "judgments",
        export_format: ExportFormat = "csv",
    ) -> str:
        """Every judgment, the preference pairs, or every clip by rank (`"leaderboard"`), as
        CSV or JSON lines."""
        return self.run(calls.export(campaign_id, kind, export_format))


def _upload(
    clips: Iterable[ClipLike] | str | os.PathLike[str], upload_format: BulkFormat | None
) -> tuple[Iterator[bytes], BulkFormat]:
    """The body of a bulk upload and its format."""
    if isinstance(clips, str | os.PathLike):
        suffix = os.fspath(clips).rsplit(".", 1)[-1].lower()
        fmt: BulkFormat = upload_format or ("csv" if suffix == "csv" else "jsonl")
        return calls.file_chunks(clips), fmt
    if upload_format not in (None, "jsonl"):
        raise ValueError("clips from an iterable are sent as JSON lines; a file may be CSV")
    return calls.clip_lines(clips), "jsonl"


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks` for httpx's async client (which reads a streamed body asynchronously)."""
    for chunk in chunks:
        yield chunk


class AsyncClient:
    """The asyncio twin of `Client`: the same methods, awaited.

    Args:
        base_url, key, token, timeout, retry: as for `Client`.
        transport: an httpx async transport (e.g. `httpx.ASGITransport(app)` in process).
        http: an httpx.AsyncClient to send through (not closed by this client).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        key: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.credentials = Credentials(key, token)
        self.retry = retry or RetryPolicy()
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": _user_agent()},
        )

    def for_rater(self, token: str) -> AsyncClient:
        """A client acting as the rater with `token`, sharing this one's connections."""
        return AsyncClient(http=self.http, token=token, retry=self.retry)

    async def aclose(self) -> None:
        """Close the connections (when this client opened them)."""
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def run(self, call: Call[T]) -> T:
        """`Client.run`, awaited."""
        attempt = 0
        while True:
            request = calls.build_request(self.http, call, self.credentials)
            try:
                response = await self.http.send(request)
            except httpx.TransportError as error:
                delay = calls.retry_delay(call, self.retry, attempt, error=error)
                if delay is None:
                    message = calls.unreachable_message(call, error, attempt + 1)
                    raise Unreachable(None, message) from error
            else:
                delay = calls.retry_delay(call, self.retry, attempt, response=response)
                if delay is None:
                    return calls.result(call, response)
            attempt += 1
            await asyncio.sleep(delay)

    async def health(self) -> models.Health:
        """Whether the process and its database are up."""
        return await self.run(calls.health())

    async def create_campaign(
        self,
        name: str,
        *,
        criteria: list[str] | None = None,
        pair_scope: Literal["group", "any"] = "group",
        ties: bool = True,
        emoji_levels: int | None = None,
        lease_seconds: float = 120.0,
        targets: dict[str, float] | None = None,
        gold_rate: float = 0.0,
        safety_threshold: float | None = None,
        report_limit: int = 1,
        structure: str | None = None,
        min_labels: int | None = None,
        both_threshold: float | None = None,
        kset: dict[str, Any] | None = None,
        feature_dim: int = 0,
    ) -> models.Campaign:
        """A new campaign (criteria default to the service's five reward-model criteria);
        `targets` (`kendall_tau`, `confidence`, `interval_width`) say when it is done; a clip
        whose "safety" score is below `safety_threshold`, or that `report_limit` raters
        reported, is withheld; `structure="blocks"` (with pair_scope "group") holds millions
        of clips; each clip gets `min_labels` labels at least (None: the service's default,
        2; 0: no floor); `both_threshold` (needs ties) lets pairs be answered "both_good" or
        "both_bad"; `kset` ({"size", "mode", "seconds"}, dense campaigns) hands out K clips
        at once where they teach more per second; `feature_dim` D > 0
        gates the criterion weights by each clip's feature vector (`NewClip.features`, D
        numbers)."""
        return await self.run(
            calls.create_campaign(
                name,
                criteria=criteria,
                pair_scope=pair_scope,
                ties=ties,
                emoji_levels=emoji_levels,
                lease_seconds=lease_seconds,
                targets=targets,
                gold_rate=gold_rate,
                safety_threshold=safety_threshold,
                report_limit=report_limit,
                structure=structure,
                min_labels=min_labels,
                both_threshold=both_threshold,
                kset=kset,
                feature_dim=feature_dim,
            )
        )

    async def campaigns(self) -> list[models.Campaign]:
        """Every campaign with its counts."""
        return await self.run(calls.list_campaigns())

    async def campaign(self, campaign_id: int) -> models.Campaign:
        """One campaign with its counts."""
        return await self.run(calls.get_campaign(campaign_id))

    async def add_clips(self, campaign_id: int, clips: Iterable[ClipLike]) -> models.ClipsAdded:
        """Add clips in one request: all of them, or none (the error says why)."""
        return await self.run(calls.add_clips(campaign_id, [calls.clip_body(c) for c in clips]))

    async def stream_clips(
        self,
        campaign_id: int,
        clips: Iterable[ClipLike] | AsyncIterable[ClipLike],
        *,
        batch_size: int = DEFAULT_BATCH,
    ) -> models.ClipsAdded:
        """`Client.stream_clips`, also from an async iterable."""
        parts = []
        if isinstance(clips, AsyncIterable):
            batch: list[Any] = []
            async for clip in clips:
                batch.append(calls.clip_body(clip))
                if len(batch) >= batch_size:
                    parts.append(await self.run(calls.add_clips(campaign_id, batch)))
                    batch = []
            if batch:
                parts.append(await self.run(calls.add_clips(campaign_id, batch)))
        else:
            for batch in calls.batches(clips, batch_size):
                parts.append(await self.run(calls.add_clips(campaign_id, batch)))
        return calls.merge(parts)

    async def upload_clips(
        self,
        campaign_id: int,
        clips: Iterable[ClipLike] | str | os.PathLike[str],
        *,
        upload_format: BulkFormat | None = None,
    ) -> models.BulkClipsAdded:
        """`Client.upload_clips`: clips from an iterable (read lazily) or a file."""
        content, fmt = _upload(clips, upload_format)
        return await self.run(calls.upload_clips(campaign_id, _async_chunks(content), fmt))

    async def register_rater(
        self, campaign_id: int, name: str | None = None
    ) -> models.RaterCreated:
        """A new rater and their token (shown only now)."""
        return await self.run(calls.register_rater(campaign_id, name))

    # the operator's controls (admin key) -------------------------------------------------------

    async def update_campaign(self, campaign_id: int, **changes: Any) -> models.Campaign:
        """Change settings: `name`, `lease_seconds`, `emoji_levels` (None: rating tasks off),
        `pair_scope` (no label yet), `skip_limit`, `targets` (None: never done),
        `safety_threshold` (None: none), `report_limit`; a `Conflict` says why one cannot
        change."""
        return await self.run(calls.update_campaign(campaign_id, changes))

    async def change_state(self, campaign_id: int, action: StateAction) -> models.Campaign:
        """`pause`, `resume`, `close` or `reopen` the campaign."""
        return await self.run(calls.change_state(campaign_id, action))

    async def retire_clip(self, campaign_id: int, clip_id: int) -> models.ClipStatus:
        """Never offer the clip again (its labels stay)."""
        return await self.run(calls.retire_clip(campaign_id, clip_id, True))

    async def restore_clip(self, campaign_id: int, clip_id: int) -> models.ClipStatus:
        """Offer a retired, withheld or skip-withdrawn clip again."""
        return await self.run(calls.retire_clip(campaign_id, clip_id, False))

    async def withheld(self, campaign_id: int) -> models.WithheldClips:
        """The clips the campaign's policy withholds (a safety score below the threshold,
        raters' reports), with why."""
        return await self.run(calls.withheld(campaign_id))

    async def deactivate_rater(self, campaign_id: int, rater_id: int) -> models.RaterStatus:
        """No new tasks for the rater; their open assignments are withdrawn."""
        return await self.run(calls.set_rater_active(campaign_id, rater_id, False))

    async def reactivate_rater(self, campaign_id: int, rater_id: int) -> models.RaterStatus:
        """Tasks for the rater again."""
        return await self.run(calls.set_rater_active(campaign_id, rater_id, True))

    async def add_gold(
        self, campaign_id: int, pairs: Sequence[Mapping[str, str]]
    ) -> models.GoldAdded:
        """Gold pairs `{first, second, answer}` (external ids; answer "first", "second" or
        "tie"), all or nothing; mixed into raters' tasks at the campaign's gold rate."""
        return await self.run(calls.add_gold(campaign_id, pairs))

    async def gold_pairs(self, campaign_id: int) -> models.GoldList:
        """The campaign's gold pairs and gold rate."""
        return await self.run(calls.gold_pairs(campaign_id))

    async def skipped(self, campaign_id: int) -> models.SkipFlags:
        """The pairs and clips repeated skips withdrew for everyone."""
        return await self.run(calls.skipped(campaign_id))

    async def import_judgments(
        self, campaign_id: int, key: str, data: str, import_format: ExportFormat = "csv"
    ) -> models.ImportOut:
        """Import past judgments (CSV or JSON lines), all or nothing; the same `key` again
        returns the first result (so a retry is safe)."""
        return await self.run(calls.import_judgments(campaign_id, key, data, import_format))

    async def next_assignment(self, campaign_id: int) -> models.AssignmentOut:
        """The rater's next task under a lease, or `assignment=None` and the message why."""
        return await self.run(calls.next_assignment(campaign_id))

    async def judge(
        self, assignment_id: int, choice: Choice | None = None, *, level: int | None = None
    ) -> models.JudgmentOut:
        """Answer an assignment (retried safely: the same answer twice is one label)."""
        return await self.run(calls.judge(assignment_id, choice, level))

    async def rank(self, assignment_id: int, ranking: list[int]) -> models.JudgmentOut:
        """Answer a K-set: clip ids, best first (retried safely like `judge`)."""
        return await self.run(calls.rank(assignment_id, ranking))

    async def report_clip(self, assignment_id: int, clip_id: int) -> models.ReportOut:
        """Report a clip of the assignment as unsafe or broken (retried safely: the same
        report again is acknowledged as a duplicate)."""
        return await self.run(calls.report_clip(assignment_id, clip_id))

    async def leaderboard(
        self,
        campaign_id: int,
        level: float = DEFAULT_LEVEL,
        *,
        limit: int | None = None,
        offset: int = 0,
        prompt: str | None = None,
        external_id: str | None = None,
    ) -> models.Leaderboard:
        """`Client.leaderboard`: a page of the clips best first."""
        return await self.run(
            calls.leaderboard(campaign_id, level, limit, offset, prompt, external_id)
        )

    async def iter_leaderboard(
        self,
        campaign_id: int,
        level: float = DEFAULT_LEVEL,
        *,
        prompt: str | None = None,
        page_size: int = DEFAULT_PAGE,
    ) -> AsyncIterator[models.LeaderboardClip]:
        """`Client.iter_leaderboard`: every clip best first, a page at a time."""
        offset = 0
        while True:
            page = await self.leaderboard(
                campaign_id, level, limit=page_size, offset=offset, prompt=prompt
            )
            for clip in page.clips:
                yield clip
            offset += len(page.clips)
            if not page.clips or page.total is None or offset >= page.total:
                return

    async def weights(self, campaign_id: int, level: float = DEFAULT_LEVEL) -> models.Weights:
        """Criterion weights with credible intervals, globally and per context."""
        return await self.run(calls.weights(campaign_id, level))

    async def raters(self, campaign_id: int) -> list[models.RaterStats]:
        """Labels, learned noise, keep probability and flags per rater."""
        return await self.run(calls.raters(campaign_id))

    async def progress(self, campaign_id: int) -> list[models.ProgressPoint]:
        """Labels against the expected Kendall tau of the ranking, over time."""
        return await self.run(calls.progress(campaign_id))

    async def export(
        self,
        campaign_id: int,
        kind: ExportKind = "judgments",
        export_format: ExportFormat = "csv",
    ) -> str:
        """Every judgment, the preference pairs, or every clip by rank (`"leaderboard"`), as
        CSV or JSON lines."""
        return await self.run(calls.export(campaign_id, kind, export_format))


__all__ = ["DEFAULT_BATCH", "DEFAULT_PAGE", "AsyncClient", "Client"]
