"""The request/response layer that `Client` and `AsyncClient` share.

Each endpoint is one function returning a `Call`: what to send, which credential it needs,
when sending it again is safe, and how to read the answer. The two clients only differ in how
they send (blocking or awaited) and sleep between tries; `retry_delay` decides whether and
when to try again and `result` turns a response into a typed value or a `ServiceError`.

When a retry is safe:
  - a connection that never opened (connect error, connect or pool timeout) means the
    request never reached the service: any call may be sent again;
  - reads change nothing, and a judgment is idempotent per assignment (the service keeps the
    first answer and acknowledges the same answer again with `duplicate: true`), so both are
    also retried after a lost response (read timeout, dropped connection) and after a 502/503/
    504 that says the service could not serve them now;
  - asking for an assignment is retried after a 503 (none was handed out) but not after a
    lost response, which may have leased one; creating a campaign or a rater and adding clips
    are retried only when the request was never sent (a repeat would make a second campaign or
    rater, or be refused as repeated external ids).
"""

from __future__ import annotations

import dataclasses
import email.utils
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import httpx
import msgspec

from client import models
from client.errors import BY_STATUS, ServiceError

T = TypeVar("T")
Credential = Literal["admin", "rater", "either", "none"]
ExportKind = Literal["judgments", "preferences", "clips", "leaderboard"]
BulkFormat = Literal["jsonl", "csv"]
ExportFormat = Literal["csv", "jsonl"]
# "both_good" / "both_bad" where the campaign has a both_threshold
Choice = Literal["left", "right", "tie", "both_good", "both_bad", "skip"]
StateAction = Literal["pause", "resume", "close", "reopen"]
ClipLike = models.NewClip | Mapping[str, Any]

UNAVAILABLE = frozenset({502, 503, 504})
# errors raised before a byte of the request left this process
UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class Retry:
    """When a call may be sent again, besides a connection that never opened.

    Attributes:
        lost_response: after the request may have arrived but no answer came back.
        unavailable: after a 502/503/504.
    """

    lost_response: bool
    unavailable: bool


IDEMPOTENT = Retry(lost_response=True, unavailable=True)
ASSIGNMENT = Retry(lost_response=False, unavailable=True)
UNSENT_ONLY = Retry(lost_response=False, unavailable=False)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: `min(max_delay, backoff * 2**attempt)`, or the
    service's `Retry-After` when it sends one.

    Attributes:
        retries: tries after the first.
        backoff: the first wait, seconds.
        max_delay: the longest wait, seconds.
    """

    retries: int = 3
    backoff: float = 0.2
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_delay < 0:
            raise ValueError("retries, backoff and max_delay must be >= 0")

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """Seconds to wait before try `attempt + 1` (attempt 0 is the first try)."""
        wait = min(self.max_delay, self.backoff * 2**attempt)
        header = response.headers.get("retry-after") if response is not None else None
        if header:
            wait = min(self.max_delay, _retry_after(header, wait))
        return wait


def _retry_after(header: str, default: float) -> float:
    """Seconds from a Retry-After header (a number of seconds or an HTTP date)."""
    try:
        return max(0.0, float(header))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(header) if header.strip() else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else default


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer.

    Attributes:
        method, path: what to ask (path relative to the service's base URL).
        credential: the admin key, a rater token, either (the key when both are set), none.
        read: decoded JSON (or the text, when `text`) -> the typed result.
        body: the JSON body, or None.
        params: query parameters.
        retry: when sending it again is safe.
        text: the answer is text (an export), not JSON.
        content: a raw body instead of JSON: bytes, or an iterable of bytes sent as it is
            read (a bulk upload).
    """

    method: str
    path: str
    credential: Credential
    read: Callable[[Any], T]
    body: object = None
    params: Mapping[str, str | float] | None = None
    retry: Retry = IDEMPOTENT
    text: bool = False
    content: Any = None


@dataclass(frozen=True)
class Credentials:
    """The admin key and/or one rater's token."""

    key: str | None = None
    token: str | None = None

    def header(self, credential: Credential) -> dict[str, str]:
        """The Authorization header a call needs (none when the secret is not set: the
        service then answers 401 saying what to send)."""
        secret = {
            "admin": self.key,
            "rater": self.token,
            "either": self.key or self.token,
            "none": None,
        }[credential]
        return {"Authorization": f"Bearer {secret}"} if secret else {}


def build_request(
    http: httpx.Client | httpx.AsyncClient, call: Call[Any], credentials: Credentials
) -> httpx.Request:
    """The HTTP request of a call."""
    return http.build_request(
        call.method,
        call.path,
        json=call.body,
        content=call.content,
        params=dict(call.params) if call.params else None,
        headers=credentials.header(call.credential),
    )


def retry_delay(
    call: Call[Any],
    policy: RetryPolicy,
    attempt: int,
    *,
    response: httpx.Response | None = None,
    error: httpx.TransportError | None = None,
) -> float | None:
    """Seconds to wait before sending the call again, or None to stop here.

    Args:
        call: what was sent.
        policy: the retry budget.
        attempt: tries so far, minus one.
        response: the answer, when one came back.
        error: the transport error, when none did.
    """
    if attempt >= policy.retries:
        return None
    if error is not None:
        safe = isinstance(error, UNSENT_ERRORS) or call.retry.lost_response
        return policy.delay(attempt) if safe else None
    if response is not None and response.status_code in UNAVAILABLE and call.retry.unavailable:
        return policy.delay(attempt, response)
    return None


def result(call: Call[T], response: httpx.Response) -> T:
    """The typed result of a call's answer.

    Raises:
        ServiceError: the subclass for the status, carrying the service's detail.
    """
    if response.status_code >= 400:
        raise error_of(response)
    if call.text:
        return call.read(response.text)
    return call.read(response.json())


def error_of(response: httpx.Response) -> ServiceError:
    """The exception for an error response: its status and the service's detail."""
    try:
        body: object = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    message = str(detail) if detail else (response.text.strip() or response.reason_phrase)
    kind = BY_STATUS.get(response.status_code, ServiceError)
    return kind(response.status_code, message, body)


def unreachable_message(call: Call[Any], error: httpx.TransportError, tries: int) -> str:
    """What `Unreachable` says: the call, the error, how often it was tried."""
    return f"{call.method} {call.path}: no answer after {tries} tries ({error!r})"


def _as(kind: type[T]) -> Callable[[Any], T]:
    return lambda data: msgspec.convert(data, kind)


def clip_body(clip: ClipLike) -> dict[str, Any]:
    """A clip as the service takes it (scores {} when none; a missing score is None)."""
    values = dataclasses.asdict(clip) if isinstance(clip, models.NewClip) else dict(clip)
    if values.get("scores") is None:
        values["scores"] = {}
    if values.get("features") is None:
        values.pop("features", None)  # a campaign without a feature gate takes none
    return values


def batches(clips: Iterable[ClipLike], size: int) -> Iterator[list[dict[str, Any]]]:
    """Clip bodies in lists of at most `size`, read lazily from `clips`."""
    if size < 1:
        raise ValueError("batch_size must be >= 1")
    batch: list[dict[str, Any]] = []
    for clip in clips:
        batch.append(clip_body(clip))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def clip_lines(clips: Iterable[ClipLike], rows_per_chunk: int = 1000) -> Iterator[bytes]:
    """Clips as JSON lines, `rows_per_chunk` lines a chunk, read lazily from `clips`."""
    encoder = msgspec.json.Encoder()
    chunk: list[dict[str, Any]] = []
    for clip in clips:
        chunk.append(clip_body(clip))
        if len(chunk) == rows_per_chunk:
            yield encoder.encode_lines(chunk)
            chunk = []
    if chunk:
        yield encoder.encode_lines(chunk)


def file_chunks(path: str | os.PathLike[str], size: int = 1 << 20) -> Iterator[bytes]:
    """A file's bytes, `size` at a time."""
    with open(path, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def merge(parts: Iterable[models.ClipsAdded]) -> models.ClipsAdded:
    """The clips added by several batches, as one result."""
    refs = [ref for part in parts for ref in part.clips]
    return models.ClipsAdded(added=len(refs), clips=refs)


# endpoints ------------------------------------------------------------------------------------


def health() -> Call[models.Health]:
    return Call("GET", "/healthz", "none", _as(models.Health))


def create_campaign(
    name: str,
    *,
    criteria: list[str] | None,
    pair_scope: Literal["group", "any"],
    ties: bool,
    emoji_levels: int | None,
    lease_seconds: float,
    targets: Mapping[str, float] | None = None,
    gold_rate: float = 0.0,
    safety_threshold: float | None = None,
    report_limit: int = 1,
    structure: str | None = None,
    min_labels: int | None = None,
    both_threshold: float | None = None,
    kset: Mapping[str, Any] | None = None,
    feature_dim: int = 0,
) -> Call[models.Campaign]:
    body: dict[str, Any] = {
        "name": name,
        "criteria": criteria,
        "pair_scope": pair_scope,
        "ties": ties,
        "emoji_levels": emoji_levels,
        "lease_seconds": lease_seconds,
        "report_limit": report_limit,
    }
    if structure is not None:
        body["structure"] = structure
    if min_labels is not None:
        body["min_labels"] = min_labels
    if kset is not None:
        body["kset"] = dict(kset)
    if feature_dim:
        body["feature_dim"] = feature_dim
    if targets is not None:
        body["targets"] = dict(targets)
    if gold_rate:
        body["gold_rate"] = gold_rate
    if safety_threshold is not None:
        body["safety_threshold"] = safety_threshold
    if both_threshold is not None:
        body["both_threshold"] = both_threshold
    return Call("POST", "/v1/campaigns", "admin", _as(models.Campaign), body, retry=UNSENT_ONLY)


def list_campaigns() -> Call[list[models.Campaign]]:
    return Call(
        "GET", "/v1/campaigns", "admin", lambda data: _as(list[models.Campaign])(data["campaigns"])
    )


def get_campaign(campaign_id: int) -> Call[models.Campaign]:
    return Call("GET", f"/v1/campaigns/{campaign_id}", "admin", _as(models.Campaign))


def add_clips(campaign_id: int, clips: list[dict[str, Any]]) -> Call[models.ClipsAdded]:
    return Call(
        "POST",
        f"/v1/campaigns/{campaign_id}/clips",
        "admin",
        _as(models.ClipsAdded),
        {"clips": clips},
        retry=UNSENT_ONLY,
    )


def upload_clips(campaign_id: int, content: Any, fmt: BulkFormat) -> Call[models.BulkClipsAdded]:
    # a body read from an iterable cannot be sent twice: retried only when the connection
    # never opened, before a byte of it was read
    return Call(
        "POST",
        f"/v1/campaigns/{campaign_id}/clips/bulk",
        "admin",
        _as(models.BulkClipsAdded),
        params={"format": fmt},
        retry=UNSENT_ONLY,
        content=content,
    )


def register_rater(campaign_id: int, name: str | None) -> Call[models.RaterCreated]:
    return Call(
        "POST",
        f"/v1/campaigns/{campaign_id}/raters",
        "admin",
        _as(models.RaterCreated),
        {"name": name},
        retry=UNSENT_ONLY,
    )


def raters(campaign_id: int) -> Call[list[models.RaterStats]]:
    return Call(
        "GET",
        f"/v1/campaigns/{campaign_id}/raters",
        "admin",
        lambda data: _as(list[models.RaterStats])(data["raters"]),
    )


def next_assignment(campaign_id: int) -> Call[models.AssignmentOut]:
    return Call(
        "POST",
        f"/v1/campaigns/{campaign_id}/assignments",
        "rater",
        _as(models.AssignmentOut),
        retry=ASSIGNMENT,
    )


def judge(assignment_id: int, choice: Choice | None, level: int | None) -> Call[models.JudgmentOut]:
    if (choice is None) == (level is None):
        raise ValueError("give a choice (left, right, tie, skip) or an emoji level, not both")
    body = {"choice": choice} if choice is not None else {"level": level}
    # idempotent per assignment: the same answer again is acknowledged as a duplicate
    return Call(
        "POST", f"/v1/assignments/{assignment_id}/judgment", "rater", _as(models.JudgmentOut), body
    )


def rank(assignment_id: int, ranking: list[int]) -> Call[models.JudgmentOut]:
    # a K-set's answer: clip ids, best first; idempotent per assignment like `judge`
    body = {"ranking": list(ranking)}
    return Call(
        "POST", f"/v1/assignments/{assignment_id}/judgment", "rater", _as(models.JudgmentOut), body
    )


def report_clip(assignment_id: int, clip_id: int) -> Call[models.ReportOut]:
    # idempotent per rater and clip: the same report again is acknowledged as a duplicate
    return Call(
        "POST",
        f"/v1/assignments/{assignment_id}/report",
        "rater",
        _as(models.ReportOut),
        {"clip_id": clip_id},
    )


def leaderboard(
    campaign_id: int,
    level: float,
    limit: int | None = None,
    offset: int = 0,
    prompt: str | None = None,
    external_id: str | None = None,
) -> Call[models.Leaderboard]:
    params: dict[str, str | float] = {"level": level}
    if external_id is not None:
        params["external_id"] = external_id
    if limit is not None:
        params["limit"] = limit
    if offset:
        params["offset"] = offset
    if prompt is not None:
        params["prompt"] = prompt
    return Call(
        "GET",
        f"/v1/campaigns/{campaign_id}/leaderboard",
        "either",
        _as(models.Leaderboard),
        params=params,
    )


def _weights(data: dict[str, Any]) -> models.Weights:
    renamed = {("global_" if k == "global" else k): v for k, v in data.items()}
    return msgspec.convert(renamed, models.Weights)


def weights(campaign_id: int, level: float) -> Call[models.Weights]:
    return Call(
        "GET", f"/v1/campaigns/{campaign_id}/weights", "admin", _weights, params={"level": level}
    )


def progress(campaign_id: int) -> Call[list[models.ProgressPoint]]:
    return Call(
        "GET",
        f"/v1/campaigns/{campaign_id}/progress",
        "admin",
        lambda data: _as(list[models.ProgressPoint])(data["points"]),
    )


# the operator's controls: each is safe to repeat (the same state, the same settings, the
# same import key give the same result)


def update_campaign(campaign_id: int, changes: Mapping[str, Any]) -> Call[models.Campaign]:
    return Call(
        "PATCH", f"/v1/campaigns/{campaign_id}", "admin", _as(models.Campaign), dict(changes)
    )


def change_state(campaign_id: int, action: StateAction) -> Call[models.Campaign]:
    return Call("POST", f"/v1/campaigns/{campaign_id}/{action}", "admin", _as(models.Campaign))


def retire_clip(campaign_id: int, clip_id: int, retired: bool) -> Call[models.ClipStatus]:
    action = "retire" if retired else "restore"
    return Call(
        "POST",
        f"/v1/campaigns/{campaign_id}/clips/{clip_id}/{action}",
        "admin",
        _as(models.ClipStatus),
    )


def set_rater_active(campaign_id: int, rater_id: int, active: bool) -> Call[models.RaterStatus]:
    action = "reactivate" if active else "deactivate"
    return Call(
        "POST",
        f"/v1/campaigns/{campaign_id}/raters/{rater_id}/{action}",
        "admin",
        _as(models.RaterStatus),
    )


def add_gold(campaign_id: int, pairs: Sequence[Mapping[str, str]]) -> Call[models.GoldAdded]:
    """Sending the same pairs again adds nothing (each pair is gold once): retried like a read."""
    body = {"pairs": [dict(pair) for pair in pairs]}
    return Call("POST", f"/v1/campaigns/{campaign_id}/gold", "admin", _as(models.GoldAdded), body)


def gold_pairs(campaign_id: int) -> Call[models.GoldList]:
    return Call("GET", f"/v1/campaigns/{campaign_id}/gold", "admin", _as(models.GoldList))


def skipped(campaign_id: int) -> Call[models.SkipFlags]:
    return Call("GET", f"/v1/campaigns/{campaign_id}/skipped", "admin", _as(models.SkipFlags))


def withheld(campaign_id: int) -> Call[models.WithheldClips]:
    return Call("GET", f"/v1/campaigns/{campaign_id}/withheld", "admin", _as(models.WithheldClips))


def import_judgments(
    campaign_id: int, key: str, data: str, import_format: ExportFormat
) -> Call[models.ImportOut]:
    body = {"key": key, "format": import_format, "data": data}
    return Call(
        "POST", f"/v1/campaigns/{campaign_id}/imports", "admin", _as(models.ImportOut), body
    )


def export(campaign_id: int, kind: ExportKind, export_format: ExportFormat) -> Call[str]:
    return Call(
        "GET",
        f"/v1/campaigns/{campaign_id}/export",
        "admin",
        str,
        params={"kind": kind, "format": export_format},
        text=True,
    )


__all__ = [
    "ASSIGNMENT",
    "IDEMPOTENT",
    "UNSENT_ONLY",
    "Call",
    "Credentials",
    "Retry",
    "RetryPolicy",
    "batches",
    "build_request",
    "clip_body",
    "clip_lines",
    "error_of",
    "file_chunks",
    "merge",
    "result",
    "retry_delay",
]
