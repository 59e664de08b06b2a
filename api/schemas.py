"""Request and response bodies (msgspec Structs): the only types that cross the wire.

The response shapes are a contract with the rating page and the dashboard; fields may be
added, never renamed. Request bodies reject unknown fields, so a misspelt key is a 400 that
names it instead of a silently ignored option.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

# no NUL character in stored text: PostgreSQL refuses it in text columns, SQLite keeps it
NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Label = Annotated[str, Meta(min_length=1, max_length=256, pattern=NO_NUL)]
Uri = Annotated[str, Meta(min_length=1, max_length=4096, pattern=NO_NUL)]
Criterion = Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_NUL)]
MAX_CRITERIA = 32
MAX_EMOJI_LEVELS = 11
MAX_LEASE_SECONDS = 86_400.0
MAX_SKIP_LIMIT = 1_000
SkipLimit = Annotated[int, Meta(ge=1, le=MAX_SKIP_LIMIT)]
MAX_REPORT_LIMIT = 1_000
MAX_FEATURE_DIM = 64  # engine.campaign.MAX_FEATURE_DIM: the gate is K D wide
ReportLimit = Annotated[int, Meta(ge=1, le=MAX_REPORT_LIMIT)]
MAX_MIN_LABELS = 1_000
# the fewest labels each clip gets (engine.exposure): while a clip has fewer, answered plus
# out, the next pair shows it; 0 turns the floor off
MinLabels = Annotated[int, Meta(ge=0, le=MAX_MIN_LABELS)]
DEFAULT_MIN_LABELS = 2  # one comparison cannot tell a clip from its partner; two can
# a threshold on the "safety" score; scores are at most 1e6 in size (api/service.py)
SafetyThreshold = Annotated[float, Meta(ge=-1e6, le=1e6)]
RowId = Annotated[int, Meta(ge=1, le=2**31 - 1)]


class _Input(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: unknown keys are an error."""


# requests -----------------------------------------------------------------------------------


class TargetsIn(_Input):
    """When a campaign is done (engine.stopping.Targets): an expected Kendall tau to reach,
    or with `confidence` c one reached with posterior probability c, and/or a widest central
    90 % interval of a clip's quality to get below. While every target set is met, an
    assignment request answers `state: "done"`; raise a target to reopen it."""

    kendall_tau: Annotated[float, Meta(gt=0, le=1)] | None = None
    confidence: Annotated[float, Meta(gt=0, lt=1)] | None = None
    interval_width: Annotated[float, Meta(gt=0)] | None = None


class SideBiasIn(_Input):
    """Learn the raters' preference for a side (engine.position): a global side offset with
    prior sd `global_sd` and each rater's own around it with prior sd `rater_sd` (latent
    units, as clip quality; positive favours the clip shown left)."""

    global_sd: Annotated[float, Meta(gt=0, le=5)] = 0.5
    rater_sd: Annotated[float, Meta(gt=0, le=5)] = 0.3


class KSetIn(_Input):
    """K-sets a campaign may hand out: `size` clips of one prompt in one task, the rater
    picks the best (`mode` "best"), the best and the worst ("best_worst"), or orders them
    ("rank"); handed out when one teaches more per second of rater time than a pair."""

    size: Annotated[int, Meta(ge=3, le=6)] = 4
    mode: Literal["best", "best_worst", "rank"] = "best"
    # the prior seconds of such a task (null: the engine's stated model); answers' times
    # (their shown_at) refine it
    seconds: Annotated[float, Meta(gt=0, le=3600)] | None = None


class CampaignCreate(_Input):
    """`POST /v1/campaigns`."""

    name: Name
    criteria: Annotated[list[Criterion], Meta(max_length=MAX_CRITERIA)] | None = None
    pair_scope: Literal["group", "any"] = "group"
    ties: bool = True
    emoji_levels: Annotated[int, Meta(ge=2, le=MAX_EMOJI_LEVELS)] | None = None
    lease_seconds: Annotated[float, Meta(gt=0, le=MAX_LEASE_SECONDS)] = 120.0
    skip_limit: SkipLimit = 3
    targets: TargetsIn | None = None
    side_bias: SideBiasIn | None = None  # fixed at creation: it changes how labels replay
    # criteria raters may also be asked about ("which is better aligned?"), among `criteria`;
    # fixed at creation; needs structure "dense"
    criterion_questions: Annotated[list[Criterion], Meta(max_length=MAX_CRITERIA)] | None = None
    # what a criterion question's gain counts: "quality", what it says about the two clips'
    # qualities; "all", the criterion values too (docs/MATH.md §9)
    criterion_gain: Literal["quality", "all"] = "quality"
    # the share of each rater's tasks that are gold questions, while gold pairs remain
    gold_rate: Annotated[float, Meta(ge=0, le=1)] = 0.0
    # a clip whose "safety" score is below this is withheld (the campaign needs that criterion)
    safety_threshold: SafetyThreshold | None = None
    # a clip reported unsafe or broken by this many distinct raters is withheld
    report_limit: ReportLimit = 1
    # how the engine keeps the posterior (engine.forms): "blocks" holds millions of clips
    # (needs pair_scope "group" and one context per prompt), "dense" at most 20,000
    structure: Literal["dense", "blocks", "factorised"] = "dense"
    min_labels: MinLabels = DEFAULT_MIN_LABELS
    # tau of the answers "both good" (the pair's mean quality above tau, latent units) and
    # "both bad" (below -tau); null: pairs take no such answer. Needs ties; fixed at creation
    both_threshold: Annotated[float, Meta(ge=0, le=10)] | None = None
    kset: KSetIn | None = None  # fixed at creation; dense structure only
    # D: each clip's feature vector (e.g. a reduced prompt embedding, |p| about 1) gates the
    # criterion weights, w(p) = w + W p (engine.gating); 0: no gate. Fixed at creation
    feature_dim: Annotated[int, Meta(ge=0, le=MAX_FEATURE_DIM)] = 0
    # how the prior is refitted by empirical Bayes at 2n, 4n, 8n, ... labels (n clips), in the
    # background (api/refits.py): "split" (the default) learns the criteria's share of the
    # prior's quality variance (docs/MATH.md §1), "scales" each scale, "off" keeps the stated
    # prior. Fixed at creation; a campaign stored without it (created before the service
    # refitted) keeps its stated prior
    prior_refit: Literal["split", "scales", "off"] = "split"


class GoldPairIn(_Input):
    """A pair whose answer is known: clips by external id, `answer` "first" (the first is
    better), "second" or "tie" (only where the campaign has ties)."""

    first: Label
    second: Label
    answer: Literal["first", "second", "tie"]


class GoldIn(_Input):
    """`POST /v1/campaigns/{id}/gold`."""

    pairs: Annotated[list[GoldPairIn], Meta(min_length=1, max_length=5000)]


class CampaignUpdate(_Input):
    """`PATCH /v1/campaigns/{id}`: the settings to change; a key left out stays as it is.
    `emoji_levels: null` turns rating tasks off. `ties` and `criteria` are accepted only to
    say why they cannot change (409)."""

    name: Name | UnsetType = UNSET
    lease_seconds: Annotated[float, Meta(gt=0, le=MAX_LEASE_SECONDS)] | UnsetType = UNSET
    emoji_levels: Annotated[int, Meta(ge=2, le=MAX_EMOJI_LEVELS)] | UnsetType | None = UNSET
    pair_scope: Literal["group", "any"] | UnsetType = UNSET
    skip_limit: SkipLimit | UnsetType = UNSET
    targets: TargetsIn | UnsetType | None = UNSET  # null: no target (never done)
    gold_rate: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    safety_threshold: SafetyThreshold | UnsetType | None = UNSET  # null: no threshold
    report_limit: ReportLimit | UnsetType = UNSET
    min_labels: MinLabels | UnsetType = UNSET
    ties: bool | UnsetType = UNSET
    criteria: Annotated[list[Criterion], Meta(max_length=MAX_CRITERIA)] | UnsetType | None = UNSET


class ClipIn(_Input):
    """One clip of `POST /v1/campaigns/{id}/clips`; a score may be null or left out."""

    external_id: Label
    uri: Uri
    group: Label | None = None
    context: Label | None = None
    scores: dict[Criterion, float | None] = field(default_factory=dict)
    # the campaign's feature_dim numbers, required where it has a feature gate, else absent
    features: Annotated[list[float], Meta(max_length=MAX_FEATURE_DIM)] | None = None


class ClipsIn(_Input):
    """`POST /v1/campaigns/{id}/clips`."""

    clips: Annotated[list[ClipIn], Meta(min_length=1)]


class RaterIn(_Input):
    """`POST /v1/campaigns/{id}/raters`."""

    name: Name | None = None


class JudgmentIn(_Input):
    """`POST /v1/assignments/{id}/judgment`: a choice, an emoji level (0 = worst), or a
    K-set's `ranking` (clip ids, best first: the best; the best and the worst; or the whole
    order, as the assignment's `mode` asks). `shown_at` is when the page showed the task
    (and `answered_at` when it was answered, by the same clock; default: when the service
    receives it): the campaign learns seconds per task kind from them."""

    # "both_good" / "both_bad" only where the campaign sets a both_threshold
    choice: Literal["left", "right", "tie", "both_good", "both_bad", "skip"] | None = None
    level: Annotated[int, Meta(ge=0)] | None = None
    ranking: Annotated[list[RowId], Meta(min_length=1, max_length=6)] | None = None
    shown_at: datetime | None = None
    answered_at: datetime | None = None
    # a criterion question's criterion, echoed: an answer about another one is refused
    criterion: Criterion | None = None


class ReportIn(_Input):
    """`POST /v1/assignments/{id}/report`: the clip of that task the rater reports as unsafe
    or broken (its `id`, as the assignment shows it)."""

    clip_id: RowId


class ImportIn(_Input):
    """`POST /v1/campaigns/{id}/imports`: past judgments as CSV (with a header) or JSON
    lines (fields in api/imports.py), under a key of the client's: the same key again
    returns the first result, another text under it is a 409."""

    key: Label
    format: Literal["csv", "jsonl"]
    data: str


INPUTS: tuple[type[Struct], ...] = (
    TargetsIn,
    SideBiasIn,
    CampaignCreate,
    CampaignUpdate,
    ClipIn,
    ClipsIn,
    RaterIn,
    JudgmentIn,
    ReportIn,
    ImportIn,
)

# responses ----------------------------------------------------------------------------------


class Campaign(Struct, kw_only=True):
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
    # active | paused (no new tasks; answers to tasks out still count) | closed
    state: str
    skip_limit: int  # distinct raters whose skips withdraw a pair (or a clip) for everyone
    side_bias: SideBias | None = None  # the side offsets' prior; null: sides are ignored
    criterion_questions: list[str] = []  # criteria raters may also be asked about
    gold_rate: float = 0.0  # the share of a rater's tasks that are gold questions
    safety_threshold: float | None = None  # a "safety" score below it withholds a clip
    report_limit: int = 1  # distinct raters whose reports withhold a clip
    structure: str = "dense"  # how the engine keeps the posterior (engine.forms)
    min_labels: int = 0  # the fewest labels each clip gets (engine.exposure); 0: no floor
    prior_refit: str = "off"  # how the prior is refitted in the background (api/refits.py)
    # the stopping targets as set (`TargetsIn`'s keys; null: none, the campaign never stops)
    targets: dict[str, float] | None = None
    # tau of "both good" / "both bad"; null: pairs take no such answer
    both_threshold: float | None = None
    kset: KSet | None = None  # the K-sets it may hand out; null: pairs and ratings only
    feature_dim: int = 0  # the length of a clip's feature vector; 0: no feature gate


class KSet(Struct, kw_only=True):
    size: int
    mode: str
    seconds: float | None = None


class SideBias(Struct, kw_only=True):
    global_sd: float
    rater_sd: float


class SideOffset(Struct, kw_only=True):
    """A side offset's posterior (latent units; positive favours the clip shown left)."""

    mean: float
    sd: float


class CampaignList(Struct, kw_only=True):
    campaigns: list[Campaign]


class ClipRef(Struct, kw_only=True):
    id: int
    external_id: str


class ClipsAdded(Struct, kw_only=True):
    added: int
    clips: list[ClipRef]


class RaterCreated(Struct, kw_only=True):
    id: int
    name: str | None
    token: str


class Clip(Struct, kw_only=True):
    id: int
    external_id: str
    uri: str
    group: str | None
    context: str | None


class Assignment(Struct, kw_only=True, omit_defaults=True):  # K-set fields only on K-sets
    id: int
    # "criterion": a pair asked about one criterion ("which is better aligned?")
    kind: Literal["pair", "rating", "kset", "criterion"]
    left: Clip
    right: Clip | None
    expires_at: datetime
    lease_seconds: float
    choices: list[str]
    emoji_levels: int | None
    clips: list[Clip] | None = None  # a K-set's clips, in the order shown
    mode: Literal["best", "best_worst", "rank"] | None = None  # what a K-set asks
    question: str = ""  # the question in words, as the page shows it
    criterion: str | None = None  # what a criterion question asks about


class AssignmentOut(Struct, kw_only=True):
    assignment: Assignment | None
    message: str | None
    # the campaign's: active, paused or closed (then assignment is null), or done (null too:
    # every stopping target is met; message says by how much)
    state: str


class JudgmentOut(Struct, kw_only=True, omit_defaults=True):  # ranking only for K-sets
    assignment_id: int
    judgment_id: int
    choice: str | None
    level: int | None
    duplicate: bool
    ranking: list[int] | None = None  # a K-set's answer: clip ids, best first


class BulkClipsAdded(Struct, kw_only=True):
    """`POST /v1/campaigns/{id}/clips/bulk`: clips added, and the campaign's clips now."""

    added: int
    n_clips: int


class LeaderboardClip(Struct, kw_only=True):
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
    # active | retired (by the operator) | withheld (by the campaign's policy: a safety score
    # below the threshold or raters' reports) | withdrawn (its tasks skipped by skip_limit raters)
    state: str


class PriorOut(Struct, kw_only=True):
    """The prior scales the posterior is under (latent units, docs/MATH.md §1), how many
    empirical-Bayes refits made them (api/refits.py), and whether one more is on its way
    (`refitting`: due, or fitting in the background; the posterior changes when it lands,
    without a new label)."""

    weight_scale: float
    context_scale: float
    residual_scale: float
    refits: int
    refitting: bool = False


class Leaderboard(Struct, kw_only=True):
    campaign_id: int
    n_judgments: int
    level: float
    expected_kendall_tau: float | None
    clips: list[LeaderboardClip]  # this page, best first
    total: int  # clips that match (the prompt's, the external id's, or all), over every page
    offset: int
    limit: int
    prompt: str | None
    external_id: str | None = None
    prior: PriorOut | None = None


class Weight(Struct, kw_only=True):
    criterion: str
    mean: float
    sd: float
    lower: float
    upper: float


class ContextWeights(Struct, kw_only=True):
    context: str
    weights: list[Weight]


class FeatureWeights(Struct, kw_only=True):
    """Column d of the feature gate W: how feature d moves each criterion weight."""

    feature: int
    weights: list[Weight]


class Weights(Struct, kw_only=True):
    criteria: list[str]
    level: float
    global_: list[Weight] = field(name="global")
    contexts: list[ContextWeights]
    # a campaign with a feature gate: W by column, w(p) = global + W p; null without one
    gate: list[FeatureWeights] | None = None


class RaterStats(Struct, kw_only=True):
    id: int
    name: str | None
    labels: int
    skips: int
    noise_sd: float
    keep_probability: float
    probability_random: float | None
    flagged: bool
    active: bool
    # the rater's side offset (global plus their own), when the campaign learns one and they
    # have a comparison with a recorded side
    side_offset: SideOffset | None = None


class ImportOut(Struct, kw_only=True):
    key: str
    imported: int  # judgments, all of them labels
    raters_created: list[str]  # names no rater of the campaign had (no token: they rate no more)
    duplicate: bool  # this key was imported before: its first result


class GoldPairOut(Struct, kw_only=True):
    first: ClipRef
    second: ClipRef
    answer: Literal["first", "second", "tie"]


class GoldList(Struct, kw_only=True):
    gold_rate: float
    pairs: list[GoldPairOut]


class GoldAdded(Struct, kw_only=True):
    added: int  # new gold pairs (a pair sent again with its answer is not new)
    total: int


class ClipStatus(Struct, kw_only=True):
    """A clip after it was retired or restored."""

    id: int
    external_id: str
    retired: bool
    status: str  # active | retired | withheld


class ReportOut(Struct, kw_only=True):
    """A rater's report of a clip: how many distinct raters reported it since the operator
    last restored it, and whether it is withheld now."""

    assignment_id: int
    clip: ClipRef
    reports: int
    withheld: bool
    duplicate: bool  # this rater had reported it already: nothing written


class ClipReport(Struct, kw_only=True):
    rater_id: int
    rater_name: str | None
    assignment_id: int
    at: datetime


class WithheldClip(Struct, kw_only=True):
    """A clip the campaign's policy withholds: `reason` threshold (its `safety` score) or
    reports (`reports`: who and when, since the operator last restored it)."""

    clip: ClipRef
    reason: str
    withheld_at: datetime | None
    safety: float | None
    labels: int
    reports: list[ClipReport]


class WithheldClips(Struct, kw_only=True):
    """`GET /v1/campaigns/{id}/withheld`: the policy and the clips it withholds now."""

    safety_criterion: str
    safety_threshold: float | None
    report_limit: int
    clips: list[WithheldClip]


class RaterStatus(Struct, kw_only=True):
    """A rater after they were deactivated or reactivated."""

    id: int
    name: str | None
    active: bool


class SkippedTask(Struct, kw_only=True, omit_defaults=True):  # clips only for K-sets
    """A pair (or a clip's rating: `right` null) withdrawn because `raters` skipped it."""

    left: ClipRef
    right: ClipRef | None
    raters: int
    clips: list[ClipRef] | None = None  # a K-set's clips (left and right: its first two)


class SkippedClip(Struct, kw_only=True):
    """A clip withdrawn because `raters` between them skipped `tasks` of its tasks."""

    clip: ClipRef
    raters: int
    tasks: int
    retired: bool


class SkipFlags(Struct, kw_only=True):
    """What repeated skips withdrew for every rater, for the operator to look at."""

    skip_limit: int
    tasks: list[SkippedTask]
    clips: list[SkippedClip]


class Raters(Struct, kw_only=True):
    raters: list[RaterStats]
    side_offset: SideOffset | None = None  # the global side offset, when the campaign learns it


class ProgressPoint(Struct, kw_only=True):
    labels: int
    expected_kendall_tau: float | None
    at: datetime


class TargetStatus(Struct, kw_only=True):
    name: str  # expected_kendall_tau | kendall_tau_quantile | interval_width
    target: float
    value: float | None  # None when undefined (no pair in scope)
    distance: float | None  # still to go (0 when met; None when undefined)
    met: bool


class Progress(Struct, kw_only=True):
    points: list[ProgressPoint]
    targets: list[TargetStatus]  # one per target set (empty: none set)
    done: bool  # every target set is met (False when none is set)
    reason: str
    # expected rater seconds per task kind ("pair", "level", "kset:<mode>:<K>"), learned
    # from the answers' shown_at
    task_seconds: dict[str, float] = field(default_factory=dict)


class Error(Struct, kw_only=True):
    """Every 4xx and 5xx: Litestar's error body; `extra` lists a validation error's problems."""

    status_code: int
    detail: str
    extra: list[dict[str, str | None]] | None = None


class Health(Struct, kw_only=True):
    status: str
    database: str
    campaigns_loaded: int


class Whoami(Struct, kw_only=True):
    rater_id: int
    campaign_id: int


def to_builtins(value: Struct) -> object:
    """A Struct as JSON-ready builtins (for tests and the CLI)."""
    return msgspec.to_builtins(value)


__all__ = [
    "INPUTS",
    "NO_NUL",
    "Assignment",
    "AssignmentOut",
    "BulkClipsAdded",
    "Campaign",
    "CampaignCreate",
    "CampaignList",
    "CampaignUpdate",
    "Clip",
    "ClipIn",
    "ClipRef",
    "ClipStatus",
    "ClipsAdded",
    "ClipsIn",
    "ContextWeights",
    "Error",
    "Health",
    "ImportIn",
    "ImportOut",
    "JudgmentIn",
    "JudgmentOut",
    "Leaderboard",
    "LeaderboardClip",
    "PriorOut",
    "Progress",
    "ProgressPoint",
    "RaterCreated",
    "RaterIn",
    "RaterStats",
    "RaterStatus",
    "Raters",
    "SkipFlags",
    "SkippedClip",
    "SkippedTask",
    "TargetStatus",
    "TargetsIn",
    "Weight",
    "Weights",
    "Whoami",
]
