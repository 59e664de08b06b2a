"""What the service returns, as typed dataclasses (the shapes of `api/schemas.py`).

The service may add response fields, never rename them; decoding ignores fields it does not
know, so an older client keeps working against a newer service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True)
class Campaign:
    """A campaign and its counts."""

    id: int
    name: str
    criteria: list[str]
    pair_scope: str
    ties: bool
    emoji_levels: int | None
    lease_seconds: float
    n_clips: int
    n_raters: int
    n_judgments: int
    created_at: datetime
    state: str = "active"  # active, paused or closed
    skip_limit: int = 3  # distinct raters whose skips withdraw a pair (or clip) for everyone
    gold_rate: float = 0.0  # the share of a rater's tasks that are gold questions
    safety_threshold: float | None = None  # a "safety" score below it withholds a clip
    report_limit: int = 1  # distinct raters whose reports withhold a clip
    structure: str = "dense"  # how the engine keeps the posterior: dense, blocks, factorised
    min_labels: int = 0  # the fewest labels each clip gets (0: no floor)
    both_threshold: float | None = None  # tau of "both good" / "both bad"; None: not taken
    kset: dict[str, Any] | None = None  # the K-sets it may hand out: size, mode, seconds
    feature_dim: int = 0  # the length of a clip's feature vector; 0: no feature gate


@dataclass(frozen=True)
class NewClip:
    """A clip to add: `scores` maps criterion -> reward-model score (None = missing);
    `features` its feature vector where the campaign has a feature gate (`feature_dim`)."""

    external_id: str
    uri: str
    group: str | None = None
    context: str | None = None
    scores: dict[str, float | None] | None = None
    features: list[float] | None = None


@dataclass(frozen=True)
class ClipRef:
    """The service's id of an added clip."""

    id: int
    external_id: str


@dataclass(frozen=True)
class ClipsAdded:
    """Clips added by one call (or by every batch of a stream), in the order given."""

    added: int
    clips: list[ClipRef]


@dataclass(frozen=True)
class RaterCreated:
    """A registered rater and their token (the service keeps only its hash)."""

    id: int
    name: str | None
    token: str


@dataclass(frozen=True)
class Clip:
    """A clip as an assignment shows it."""

    id: int
    external_id: str
    uri: str
    group: str | None
    context: str | None


@dataclass(frozen=True)
class Assignment:
    """A task under a lease: a pair (`right` set), one clip to rate on the emoji scale, or a
    K-set (`clips` in the order shown, `mode`: best, best_worst or rank)."""

    id: int
    kind: Literal["pair", "rating", "kset"]
    left: Clip
    right: Clip | None
    expires_at: datetime
    lease_seconds: float
    choices: list[str]
    emoji_levels: int | None
    clips: list[Clip] | None = None
    mode: str | None = None


@dataclass(frozen=True)
class AssignmentOut:
    """The next assignment, or None and the service's message saying why there is none."""

    assignment: Assignment | None
    message: str | None
    state: str = "active"  # the campaign's: paused or closed campaigns hand out nothing


@dataclass(frozen=True)
class JudgmentOut:
    """A recorded answer; `duplicate` when the service had it already (a retried post)."""

    assignment_id: int
    judgment_id: int
    choice: str | None
    level: int | None
    duplicate: bool
    ranking: list[int] | None = None  # a K-set's answer: clip ids, best first


@dataclass(frozen=True)
class LeaderboardClip:
    """One clip of the leaderboard: posterior mean, sd, credible interval, rank, labels."""

    id: int
    external_id: str
    uri: str
    group: str | None
    context: str | None
    mean: float
    sd: float
    lower: float
    upper: float
    rank: int
    labels: int
    state: str = "active"  # retired, withheld (unsafe or broken) or withdrawn (skipped by many)


@dataclass(frozen=True)
class Leaderboard:
    """One page of the clips best first (of one prompt when `prompt` is set), how many
    match in all, and the expected Kendall tau of the ranking."""

    campaign_id: int
    n_judgments: int
    level: float
    expected_kendall_tau: float | None
    clips: list[LeaderboardClip]
    total: int | None = None  # None: a service from before pages (its page is every clip)
    offset: int = 0
    limit: int | None = None
    prompt: str | None = None
    external_id: str | None = None  # the one clip asked for, when one was


@dataclass(frozen=True)
class BulkClipsAdded:
    """A bulk upload: clips added, and the campaign's clips now."""

    added: int
    n_clips: int


@dataclass(frozen=True)
class Weight:
    """One criterion weight with its credible interval."""

    criterion: str
    mean: float
    sd: float
    lower: float
    upper: float


@dataclass(frozen=True)
class ContextWeights:
    """The weights in one context (prompt category)."""

    context: str
    weights: list[Weight]


@dataclass(frozen=True)
class Weights:
    """Criterion weights, globally (`global` on the wire) and per context."""

    criteria: list[str]
    level: float
    global_: list[Weight]
    contexts: list[ContextWeights]


@dataclass(frozen=True)
class RaterStats:
    """A rater's labels, learned noise, keep probability and flag."""

    id: int
    name: str | None
    labels: int
    skips: int
    noise_sd: float
    keep_probability: float
    probability_random: float | None
    flagged: bool
    active: bool = True  # False: deactivated by the operator


@dataclass(frozen=True)
class ClipStatus:
    """A clip after it was retired or restored."""

    id: int
    external_id: str
    retired: bool
    status: str = "active"  # active, retired or withheld


@dataclass(frozen=True)
class ReportOut:
    """A rater's report of a clip: distinct raters who reported it since the operator last
    restored it, whether it is withheld now, and `duplicate` when this rater had reported it."""

    assignment_id: int
    clip: ClipRef
    reports: int
    withheld: bool
    duplicate: bool


@dataclass(frozen=True)
class ClipReport:
    """Who reported a clip, from which assignment, and when."""

    rater_id: int
    rater_name: str | None
    assignment_id: int
    at: datetime


@dataclass(frozen=True)
class WithheldClip:
    """A clip the campaign's policy withholds: `reason` threshold or reports."""

    clip: ClipRef
    reason: str
    withheld_at: datetime | None
    safety: float | None
    labels: int
    reports: list[ClipReport]


@dataclass(frozen=True)
class WithheldClips:
    """The campaign's withholding policy and the clips it withholds now."""

    safety_criterion: str
    safety_threshold: float | None
    report_limit: int
    clips: list[WithheldClip]


@dataclass(frozen=True)
class RaterStatus:
    """A rater after they were deactivated or reactivated."""

    id: int
    name: str | None
    active: bool


@dataclass(frozen=True)
class SkippedTask:
    """A pair (or a clip's rating: `right` None) withdrawn because `raters` skipped it."""

    left: ClipRef
    right: ClipRef | None
    raters: int


@dataclass(frozen=True)
class SkippedClip:
    """A clip withdrawn because `raters` between them skipped `tasks` of its tasks."""

    clip: ClipRef
    raters: int
    tasks: int
    retired: bool


@dataclass(frozen=True)
class SkipFlags:
    """What repeated skips withdrew for every rater."""

    skip_limit: int
    tasks: list[SkippedTask]
    clips: list[SkippedClip]


@dataclass(frozen=True)
class ImportOut:
    """An import of past judgments; `duplicate` when the key was imported before."""

    key: str
    imported: int
    raters_created: list[str]
    duplicate: bool


@dataclass(frozen=True)
class ProgressPoint:
    """Labels so far against the expected Kendall tau of the ranking."""

    labels: int
    expected_kendall_tau: float | None
    at: datetime


@dataclass(frozen=True)
class Health:
    """Whether the process and its database are up."""

    status: str
    database: str
    campaigns_loaded: int


@dataclass(frozen=True)
class GoldPair:
    """A pair whose answer is known: "first" (the first clip is better), "second" or "tie"."""

    first: ClipRef
    second: ClipRef
    answer: str


@dataclass(frozen=True)
class GoldList:
    """The campaign's gold pairs and the share of a rater's tasks that are gold."""

    gold_rate: float
    pairs: list[GoldPair]


@dataclass(frozen=True)
class GoldAdded:
    """New gold pairs (a pair sent again with its answer is not new) and how many there are."""

    added: int
    total: int


__all__ = [
    "Assignment",
    "AssignmentOut",
    "BulkClipsAdded",
    "Campaign",
    "Clip",
    "ClipRef",
    "ClipStatus",
    "ClipsAdded",
    "ContextWeights",
    "GoldAdded",
    "GoldList",
    "GoldPair",
    "Health",
    "ImportOut",
    "JudgmentOut",
    "Leaderboard",
    "LeaderboardClip",
    "NewClip",
    "ProgressPoint",
    "RaterCreated",
    "RaterStats",
    "RaterStatus",
    "SkipFlags",
    "SkippedClip",
    "SkippedTask",
    "Weight",
    "Weights",
]
