"""One campaign's engine state: clips, the posterior, raters, pending tasks and the label log.

`Campaign` is the in-memory object that the service and the simulator drive. It holds no I/O:
api/ persists what it is told and replays its judgments table into a fresh Campaign at start;
the state after a replay of the same labels in the same order is identical (float64, CPU).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal

import torch
from torch import Tensor

from engine.clips import DEFAULT_CONTEXT, ClipRegistry
from engine.criteria import (
    CRITERIA,
    CriterionQuestions,
    criterion_gains,
    criterion_moments,
    criterion_part,
    criterion_values,
)
from engine.device import default_device, default_dtype
from engine.empirical_bayes import (
    SCALE_REFITS,
    Hyperparameters,
    ScaleFit,
    fit_hyperparameters,
    scale_coordinates,
)
from engine.ep import Refinement
from engine.exposure import Exposure
from engine.forms import FORMS, DenseForm, PendingTask, PosteriorForm, predict
from engine.gating import check_features, gate_columns, gate_weights
from engine.gold import GoldBook, GoldPair, gold_point, uniform_draw
from engine.history import ClipsAdded, Entry, History, Refine, Refit
from engine.likelihoods import (
    Outcome,
    level_cuts,
    outcome_cuts,
)
from engine.objectives import outcome_probabilities
from engine.position import (
    SIDE,
    SIDE_RATERS,
    SideBias,
    SideOffsets,
    rater_offset_moments,
    refit_rater_sd,
    side_offsets,
    side_part,
)
from engine.questions import (
    BOTH_ANSWERS,
    NO_SECOND,
    QUESTION_KINDS,
    Answer,
    Criterion,
    KSet,
    Level,
    Pair,
    Question,
    answer_specs,
)
from engine.rater_book import GridScorer, RaterBook
from engine.refit_result import RefitResult, TakenEntry
from engine.reliability import (
    NOISE_PRIOR_LOG_SD,
    RaterGrid,
    RaterReliability,
    fit_keep_prior,
    fit_noise_spread,
    rater_grids,
    with_keep_prior,
)
from engine.selection import (
    NoEligibleTaskError,
    PairChoice,
    PairRequest,
    RatingChoice,
    RatingRequest,
    SelectionOptions,
)
from engine.state import Posterior, PriorScales
from engine.stopping import (
    INTERVAL_LEVEL,
    TAU_SAMPLES,
    TAU_SEED,
    CampaignDone,
    Progress,
    Targets,
    progress,
    tau_quantile,
)
from engine.summaries import (
    ClipSummary,
    WeightSummary,
    credible_halfwidth,
    probability_positive,
    summarise_moments,
)
from engine.task_choice import (
    KSetOffer,
    TaskClock,
    choose_task_from_moments,
    kset_candidates,
    kset_kind,
    task_kind,
)
from engine.tasks import Task, TaskBook
from engine.update import Events, cavity_moments, interval_events

DEFAULT_CRITERIA = (
    "alignment",
    "safety",
    "fineness",
    "coherence_consistency",
    "bias_fairness",
)  # MJ-VIDEO's five reward-model criteria
# the gate's block is K D wide and sits among every prompt's local coordinates in block form
MAX_FEATURE_DIM = 64
# a refit's adoption applies again the labels taken since its copy in batches of about this many
# (`reapplied`): small enough that a copy catching up in rounds leaves little to the adoption
REAPPLY_LABELS = 32
PairScope = Literal["any", "group"]
Structure = Literal["dense", "blocks", "factorised"]
# the side offsets' EM (fit_prior): steps at most, and the relative move of the sd that ends it
SIDE_EM_STEPS = 30
SIDE_EM_TOLERANCE = 0.01
# a rater offset's prior sd stays within these (latent units): EM with few labels per rater
# can shrink it toward 0, which would freeze every offset at the global one
SIDE_SD_BOUNDS = (0.05, 5.0)


@dataclass(frozen=True)
class CampaignConfig:
    """What a campaign assumes (MATH.md §1-3); `refit_prior_at` learns these from the labels.

    Attributes:
        criteria: names of the K reward-model criteria (any K, including 0).
        prior: prior scales of weights, context offsets and residuals.
        pair_scope: "group" pairs only clips of the same group (prompt); "any" pairs all.
        tie_margin: t of the tie interval (-t, t); 0 means forced choice, no ties.
        emoji_thresholds: ordered-probit cuts of the emoji levels; None disables rating tasks.
        noise_sd: default rater noise sd sigma_r (latent units).
        pair_seconds, rating_seconds: rater time per comparison / per emoji rating, for
            choosing the task with the most information per second.
        selection: objective, rule, beta and refine size.
        lapse_prior: Beta(alpha, beta) prior of each rater's keep probability (answers as the
            model says, else clicks at random); None does not model lapses.
        random_rater_share: prior share of raters who only click at random (keep = 0).
        learn_rater_noise: learn each rater's noise sd from their labels (engine.reliability)
            and use it for their later labels and their tasks' gains.
        refit_keep_prior: `fit_prior` also refits `lapse_prior`'s alpha across raters by
            empirical Bayes (engine.reliability.fit_keep_prior, MATH.md §3); the labels after
            it are applied under it.
        refit_prior_at: label counts at which the prior scales (and the tie margin, emoji
            thresholds and rater-noise spread, where the campaign has them) are refitted by
            empirical Bayes (`fit_prior`), e.g. (250, 500, 1000, 2000): not on every label.
        prior_refit: how a refit moves the prior scales (engine.empirical_bayes.SCALE_REFITS):
            "scales" each on its own, "split" the criteria's share of the prior's total
            quality variance only, the total kept (docs/MATH.md §1, "Learning the split").
        noise_prior_spread: sd of log sigma_r across raters (the rater-noise prior around
            `noise_sd`), when rater noise is learned; `fit_prior` refits it.
        structure: how the posterior is kept (engine.forms): "dense", every covariance entry
            (any scope, O(n^2) memory), or "blocks", prompt blocks plus the weight border
            (docs/MATH.md §6: the same posterior, O(n) memory, a label costs O(prompt +
            weights); needs pair_scope="group", one context per prompt, and comparisons
            within a prompt), or "factorised", the block form that also takes comparisons
            across prompts, approximately (each prompt independent of the others given the
            weights, docs/MATH.md §6): pair_scope="any" past the dense form's limit, with
            candidates from neighbours in posterior-mean order (engine.neighbours).
        targets: when the campaign is done (engine.stopping): a Kendall tau to reach, in
            expectation or with a posterior probability (`Targets.confidence`), and/or a
            largest 90 % interval width to get below; once every target set
            is met, `next_tasks`, `next_pairs` and `next_rating` raise `CampaignDone`.
        side_bias: the side offsets' prior (engine.position): comparisons that say which
            clip was shown left learn a global and a per-rater side offset; None ignores
            the side.
        both_threshold: tau of "both good" (the pair's mean quality above tau) and "both
            bad" (below -tau), answers a pair may then have besides win, loss and tie; each
            is a tie and a level event on the pair's sum (docs/MATH.md §2). Needs ties.
            None: not asked.
        gold_rate: the share of a rater's tasks that are gold questions (engine.gold), while
            gold pairs they have not answered remain; 0 asks none. Needs `lapse_prior`.
        gold_seed: fixes which of a rater's tasks are gold, and which gold pair.
        gold_margin: how far apart a gold pair's qualities are taken to be, in multiples of
            `noise_sd` (docs/MATH.md §3, gold paragraph).
        min_labels: the fewest labels a clip gets (engine.exposure, docs/MATH.md §4,
            "Exposure"): while a clip a rater may be shown has fewer, answered plus pending,
            every pair chosen holds such a clip (the objective picks which, and its partner).
            2 by default: one comparison cannot tell a clip's quality from its partner's,
            a second against another partner can; 0 turns the rule off.
        kset: K-sets the campaign may hand out (engine.task_choice.KSetOffer: K clips of one
            prompt, pick the best, best and worst, or order them), each time the best set
            teaches more per second of rater time than the best pair (docs/MATH.md §3,
            K-sets); None (the default) asks pairs and ratings only. Needs the dense
            posterior: a K-set's gain reads its clips' joint covariance.
        feature_dim: D, the length of each clip's feature vector (e.g. a reduced prompt
            embedding); the criterion weights then vary with it, `w(p) = w + W p`, with vec(W)
            a border block "gate" (engine.gating, docs/MATH.md §8). 0: no feature gate.
        criterion_questions: which criteria raters may also be asked about ("which is better
            aligned?", engine.criteria, docs/MATH.md §9) and their model; None asks none.
            Needs structure="dense".
    """

    criteria: tuple[str, ...] = DEFAULT_CRITERIA
    prior: PriorScales = field(default_factory=PriorScales)
    pair_scope: PairScope = "any"
    tie_margin: float = 0.0
    emoji_thresholds: tuple[float, ...] | None = None
    noise_sd: float = 1.0
    pair_seconds: float = 6.0
    rating_seconds: float = 4.0
    selection: SelectionOptions = field(default_factory=SelectionOptions)
    lapse_prior: tuple[float, float] | None = None
    random_rater_share: float = 0.05
    learn_rater_noise: bool = False
    refit_keep_prior: bool = False
    refit_prior_at: tuple[int, ...] = ()
    prior_refit: str = "scales"
    noise_prior_spread: float = NOISE_PRIOR_LOG_SD
    structure: Structure = "dense"
    targets: Targets = field(default_factory=Targets)
    side_bias: SideBias | None = None
    both_threshold: float | None = None
    gold_rate: float = 0.0
    gold_seed: int = 0
    gold_margin: float = 3.0
    min_labels: int = 2
    kset: KSetOffer | None = None
    feature_dim: int = 0
    criterion_questions: CriterionQuestions | None = None

    def __post_init__(self) -> None:
        if isinstance(self.min_labels, bool) or not (
            isinstance(self.min_labels, int) and self.min_labels >= 0
        ):
            raise ValueError(f"min_labels must be an integer >= 0, got {self.min_labels!r}")
        if self.kset is not None and self.structure != "dense":
            raise ValueError(
                f"K-sets (kset) need structure=\"dense\": a K-set's gain reads its K clips' "
                f"joint covariance, which the {self.structure!r} form's selection does not "
                "build"
            )
        if not 0 <= self.feature_dim <= MAX_FEATURE_DIM:
            raise ValueError(
                f"feature_dim must be in [0, {MAX_FEATURE_DIM}], got {self.feature_dim}"
            )
        if self.feature_dim and not self.criteria:
            raise ValueError("a feature gate scales the criterion weights: it needs criteria")
        questions = self.criterion_questions
        if questions is not None:
            if self.structure != "dense":
                raise ValueError(
                    'criterion questions need structure="dense" (the block forms do not keep '
                    "the per-clip criterion values local to their prompt)"
                )
            questions.columns(self.criteria)
        if self.both_threshold is not None and not (
            self.both_threshold >= 0 and math.isfinite(self.both_threshold)
        ):
            raise ValueError(f"both_threshold must be finite and >= 0, got {self.both_threshold}")
        if self.both_threshold is not None and self.tie_margin <= 0:
            raise ValueError('"both good" and "both bad" are ties: they need a tie_margin > 0')
        if not 0 <= self.gold_rate <= 1:
            raise ValueError(f"gold_rate must be in [0, 1], got {self.gold_rate}")
        if self.gold_rate > 0 and self.lapse_prior is None:
            raise ValueError("gold questions (gold_rate > 0) need the lapse model (lapse_prior)")
        if not (self.gold_margin > 0 and math.isfinite(self.gold_margin)):
            raise ValueError(f"gold_margin must be finite and > 0, got {self.gold_margin}")
        if self.structure not in FORMS:
            raise ValueError(f"structure must be one of {sorted(FORMS)}, got {self.structure!r}")
        if self.structure == "blocks" and self.pair_scope != "group":
            raise ValueError('structure="blocks" needs pair_scope="group"')
        if not (self.noise_prior_spread > 0 and math.isfinite(self.noise_prior_spread)):
            raise ValueError(
                f"noise_prior_spread must be finite and > 0, got {self.noise_prior_spread}"
            )
        if any(count < 1 for count in self.refit_prior_at):
            raise ValueError("refit_prior_at lists label counts >= 1")
        if self.prior_refit not in SCALE_REFITS:
            raise ValueError(
                f"prior_refit must be one of {sorted(SCALE_REFITS)}, got {self.prior_refit!r}"
            )
        if not 0 < self.random_rater_share < 1:
            raise ValueError("random_rater_share must be in (0, 1)")
        if self.lapse_prior is not None and not (
            len(self.lapse_prior) == 2 and all(v > 0 and math.isfinite(v) for v in self.lapse_prior)
        ):
            raise ValueError(
                f"lapse_prior must be Beta(alpha > 0, beta > 0), got {self.lapse_prior}"
            )
        if self.refit_keep_prior and self.lapse_prior is None:
            raise ValueError("refitting the keep prior (refit_keep_prior) needs lapse_prior")
        if len(set(self.criteria)) != len(self.criteria):
            raise ValueError(f"criterion names must be unique, got {self.criteria}")
        if self.pair_scope not in ("any", "group"):
            raise ValueError(f"pair_scope must be 'any' or 'group', got {self.pair_scope!r}")
        if not (self.noise_sd > 0 and math.isfinite(self.noise_sd)):
            raise ValueError(f"noise_sd must be finite and > 0, got {self.noise_sd}")
        if not (self.pair_seconds > 0 and self.rating_seconds > 0):
            raise ValueError("pair_seconds and rating_seconds must be > 0")
        probe = torch.zeros(1)
        outcome_cuts(self.tie_margin, probe)
        if self.emoji_thresholds is not None:
            level_cuts(self.emoji_thresholds, probe)


@dataclass(frozen=True)
class Judgment:
    """One label: `rater`'s `answer` to `question` (engine.questions: a comparison's Outcome,
    an emoji level).

    `noise_sd` is the rater noise the label is applied with, `keep` the probability that the
    rater answered as the model says rather than at random (lapse model); None means the
    rater's current value, and the campaign's log records the value it used, so a replay is
    exact. `left` is the clip a comparison showed on the left (None: not recorded); a
    campaign with a side bias learns from it (engine.position).
    `gold` is the known answer of a gold question (engine.gold; `question` a Pair): the
    label then teaches only the rater's reliability, never the clips' qualities. `seconds` is
    how long the rater took (answered at minus shown at; None: not recorded): the campaign's
    clock of seconds per task kind learns from it (engine.task_choice.TaskClock). `event` is
    the position of the label's first event among the campaign's events on the clips, set
    when it is applied (None for a gold answer): where the posterior form keeps its sites, so
    that the rater's reliability scores it under its cavity (docs/MATH.md §2, eq. (2.2)).
    """

    rater: Hashable | None
    question: Question
    answer: Answer
    noise_sd: float | None = None
    keep: float | None = None
    left: int | None = None
    gold: Outcome | None = None
    seconds: float | None = None
    event: int | None = None

    @classmethod
    def pair(
        cls,
        rater: Hashable | None,
        first: int,
        second: int,
        outcome: Outcome | str,
        *,
        left: int | None = None,
        **kw: float,
    ) -> Judgment:
        """`outcome` of clip `first` against clip `second` (win = first is better; or
        "both_good" / "both_bad" where the campaign takes them), with the clip shown on the
        left when known."""
        answer: Answer = outcome if outcome in BOTH_ANSWERS else Outcome(outcome)
        return cls(rater, Pair(int(first), int(second)), answer, left=left, **kw)

    @classmethod
    def rating(cls, rater: Hashable | None, item: int, level: int, **kw: float) -> Judgment:
        """Emoji level `level` (0 = worst) of clip `item`."""
        return cls(rater, Level(int(item)), int(level), **kw)

    @classmethod
    def kset(
        cls,
        rater: Hashable | None,
        items: Sequence[int],
        answer: Sequence[int],
        mode: str = "best",
        **kw: float,
    ) -> Judgment:
        """A K-set answer: `(best,)`, `(best, worst)` or the order, best first."""
        return cls(rater, KSet(tuple(items), mode), tuple(int(i) for i in answer), **kw)

    @classmethod
    def criterion(
        cls,
        rater: Hashable | None,
        first: int,
        second: int,
        criterion: str,
        outcome: Outcome | str,
        **kw: float,
    ) -> Judgment:
        """`outcome` of clip `first` against clip `second` on `criterion` (win = first is
        better aligned, safer, ...)."""
        return cls(rater, Criterion(int(first), int(second), criterion), Outcome(outcome), **kw)

    @property
    def first(self) -> int:
        return self.question.direction[0]

    @property
    def second(self) -> int:
        """The second clip of a comparison; NO_SECOND for a question about one clip."""
        return self.question.direction[1]


class Campaign:
    """A campaign's posterior plus the bookkeeping that selection needs.

    Args:
        config: the model and selection settings.
        device: where tensors live; default CUDA when present, else CPU.
        dtype: floating dtype; default float64.
    """

    def __init__(
        self,
        config: CampaignConfig | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.config = config or CampaignConfig()
        self._initial_config = self.config  # fit_prior() changes config.prior; replay starts here
        questions = self.config.criterion_questions
        if questions is not None:
            # the stated prior must leave the clips an own residual; a refit's is floored
            questions.own_scales(self.config.criteria, self.config.prior)
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or default_dtype(self.device)
        self._like = torch.zeros((), dtype=self.dtype, device=self.device)
        n_criteria = len(self.config.criteria)
        self._clips = ClipRegistry(
            n_criteria, self.device, self.dtype, feature_dim=self.config.feature_dim
        )
        self._raters = RaterBook()
        self._form: PosteriorForm = self._prior_form()
        # Clip batches and label batches in the order they happened: what replay() re-runs,
        # and the one place labels are kept (`log` reads them from here).
        self._history = History()
        self._tasks = TaskBook()
        self._gold = GoldBook()
        # seconds per task kind, learned from the answers' times (the log holds them, so a
        # replay learns the same)
        priors = {Pair.kind: self.config.pair_seconds, Level.kind: self.config.rating_seconds}
        offer = self.config.kset
        if offer is not None and offer.seconds is not None:
            priors[kset_kind(offer.size, offer.mode)] = offer.seconds
        if self.config.criterion_questions is not None:
            priors[Criterion.kind] = self.config.criterion_questions.seconds
        self._clock = TaskClock(priors=priors)
        self.pair_cuts = outcome_cuts(self.config.tie_margin, self._like)
        thresholds = self.config.emoji_thresholds
        self.level_cuts = None if thresholds is None else level_cuts(thresholds, self._like)
        # the last progress under the state it was read from: every request checks it, and a
        # quantile target's draws cost O(samples x pairs in scope)
        self._progress_cache: tuple[tuple[object, ...], Progress] | None = None

    # clips ------------------------------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return self._form.n_items

    @property
    def posterior(self) -> Posterior:
        """The posterior as one dense Gaussian (engine.state). For a campaign kept in blocks
        this builds the n x n covariance: for small campaigns and offline analysis only."""
        return self._form.dense()

    def add_clips(
        self,
        scores: Sequence[Sequence[float | None]] | Tensor | None = None,
        *,
        count: int | None = None,
        contexts: Sequence[Hashable | None] | None = None,
        groups: Sequence[Hashable | None] | None = None,
        features: Sequence[Sequence[float]] | Tensor | None = None,
    ) -> range:
        """Add clips with their raw criterion scores (None or NaN where missing).

        Scores are standardised per campaign (centre and scale per criterion over all clips).
        Before the first label the statistics follow every added clip; after it they are frozen,
        because changing them would change what the learned weights mean.

        Args:
            scores: (B, K) raw scores; may be None when K = 0 (then pass `count`).
            count: number of clips when no scores are given.
            contexts: prompt category per clip (None: the default context).
            groups: prompt id per clip, for the same-group pairing scope (None: own group).
            features: (B, D) feature vectors, D = `config.feature_dim` (None: zeros, the
                weights without the gate). A clip added after labels starts from what the
                gate learned: its prior mean is `s' (m_w + m_{u_c} + M_W p)` (docs/MATH.md §8).

        Returns:
            The new clips' indices.

        Raises:
            ValueError: wrong shapes, infinite scores, or a feature vector of the wrong length
                or with NaN or infinity; nothing is added then.
        """
        raw = self._clips.as_scores(scores, count)
        n_new = raw.shape[0]
        contexts = list(contexts) if contexts is not None else [None] * n_new
        groups = list(groups) if groups is not None else [None] * n_new
        start = self.n_items
        limit = FORMS[self.config.structure].max_items
        if limit is not None and self.config.criterion_questions is not None:
            # the dense covariance holds each clip's criterion coordinates too
            limit //= 1 + len(self.config.criterion_questions.criteria)
        if limit is not None and start + n_new > limit:
            raise ValueError(
                f"a campaign kept dense holds at most {limit:,} clips (its covariance is "
                f"n x n); for more, pair clips within prompts and keep it in blocks, exactly: "
                'CampaignConfig(pair_scope="group", structure="blocks"), or pair any clips '
                'with an approximate posterior: CampaignConfig(structure="factorised")'
            )
        batch = self._clips.plan(
            raw,
            contexts,
            groups,
            one_context_per_group=self.config.structure != "dense",
            features=features,
        )
        # Validated: commit.
        previous_contexts = self._clips.n_contexts
        gate = batch.features if self.config.feature_dim else None
        self._history.record(ClipsAdded(raw, tuple(contexts), tuple(groups), gate))
        before_labels = self._history.label_count == 0
        self._clips.commit(batch, refresh_statistics=before_labels)
        if before_labels:
            self._rebuild_prior()
        else:
            standardised = self._clips.standardised(raw)
            self._form.add(
                self._own_scales(self.config.prior),
                self._clips.n_contexts - previous_contexts,
                standardised,
                batch.context,
                batch.group,
                gate,
            )
            self._add_criterion_values(self._form, standardised, self.config.prior)
        return range(start, start + n_new)

    def _own_scales(self, scales: PriorScales) -> PriorScales:
        """The prior scales the clips are added with: with criterion questions, the clip's
        own residual r_i only (engine.criteria, docs/MATH.md §9)."""
        questions = self.config.criterion_questions
        if questions is None:
            return scales
        # the configured prior was checked at creation; a refit's is floored, not refused
        return questions.own_scales(self.config.criteria, scales, strict=False)

    def _add_criterion_values(
        self, form: PosteriorForm, scores: Tensor, scales: PriorScales
    ) -> None:
        """Give the form's last clips (standardised `scores`) their criterion coordinates."""
        questions = self.config.criterion_questions
        if questions is None:
            return
        form.add_criterion_values(  # type: ignore[attr-defined]
            scores,
            questions.columns(self.config.criteria),
            questions.gamma(self.config.criteria, scales),
            questions.residual_sd,
        )

    def _rebuild_prior(self) -> None:
        self._form = self._prior_form()

    def _prior_form(
        self, scales: PriorScales | None = None, side: SideBias | None = None
    ) -> PosteriorForm:
        """The joint prior over every clip so far (scores standardised as the campaign does),
        with the campaign's prior scales or `scales` and side prior or `side`, in the
        campaign's form."""
        scales = scales or self.config.prior
        form = FORMS[self.config.structure].prior(
            len(self.config.criteria),
            self._own_scales(scales),
            self._clips.n_contexts,
            self._clips.standardised(),
            self._clips.contexts,
            self.groups,
            self._clips.features,
        )
        side = side or self.config.side_bias
        if side is not None:
            form.grow_block(SIDE, side.global_variance(self._like), local=True)
            form.grow_block(
                SIDE_RATERS, side.rater_variances(len(self._raters.side_slots), self._like)
            )
        self._add_criterion_values(form, self._clips.standardised(), scales)
        return form

    def prior(self, scales: PriorScales | None = None) -> Posterior:
        """The joint prior over every clip so far, as one dense Gaussian (`posterior`'s
        caveat applies), with the campaign's prior scales or `scales`."""
        return self._prior_form(scales).dense()

    def fit_prior(self, max_evaluations: int = 200) -> ScaleFit:
        """Empirical Bayes (engine.empirical_bayes): refit the prior scales, and where the
        campaign has them the tie margin and emoji thresholds, to the labels so far; refit the
        raters' side-offset prior sd where the campaign has a side block (engine.position,
        MATH.md §7); refit the rater-noise spread when rater noise is learned
        (engine.reliability); then rebuild the posterior from the new prior by ADF over the
        same labels in order, and each rater's reliability.

        Call it now and then (every few hundred labels), not on every label. `replay()` repeats
        it with the values it found. It is `compute_refit` then `apply_refit`, the posterior
        the fit built under the new values kept rather than built again.

        Raises:
            ValueError: no labels yet.
        """
        fit, refit, form = self._compute_refit(max_evaluations)
        self._apply_refit(refit, form)
        return fit

    def compute_refit(self, max_evaluations: int = 200) -> Refit:
        """What `fit_prior` would adopt now, changing nothing: the values empirical Bayes finds
        for the labels so far (see `fit_prior`). A copy of the campaign (a snapshot of it, say)
        computes the same, so the fit can run away from the campaign that serves requests
        while it goes on taking labels; `apply_refit` or `adopt_refit` then adopts it.

        Raises:
            ValueError: no labels yet.
        """
        _, refit, _ = self._compute_refit(max_evaluations)
        return refit

    def _compute_refit(self, max_evaluations: int) -> tuple[ScaleFit, Refit, PosteriorForm | None]:
        """The fit, its values as a `Refit`, and the labels' posterior under them where the
        fit built it on the way (None otherwise)."""
        log = self._clip_log
        config = self.config
        pairs = any(j.question.kind in (Pair.kind, Criterion.kind) for j in log)
        ratings = any(j.question.kind == Level.kind for j in log)
        fit = fit_hyperparameters(
            None,
            lambda hyper: self._events(log, hyper),
            Hyperparameters(config.prior, config.tie_margin, config.emoji_thresholds),
            fit_weights=bool(config.criteria),
            fit_tie=config.tie_margin > 0 and pairs,
            fit_thresholds=config.emoji_thresholds is not None and ratings,
            max_evaluations=max_evaluations,
            log_evidence=lambda scales, events: self._prior_form(scales).observe(events),
            coordinates=scale_coordinates(config.prior_refit, len(config.criteria)),
        )
        spread = config.noise_prior_spread
        form = None
        side = config.side_bias
        if side is not None and self._raters.side_slots:
            side, form = self._fit_side_spread(log, fit.hyper, side)
        keep_prior = None
        fit_keep = config.refit_keep_prior and config.lapse_prior is not None
        if config.learn_rater_noise or fit_keep:
            hyper = fit.hyper
            events = self._events(log, hyper)
            if form is None:
                form = self._prior_form(hyper.scales)
                form.observe(events)
            grids = self._held_out_rater_grids(log, events, hyper, form)
            if grids and fit_keep and config.lapse_prior is not None:
                keep_prior = fit_keep_prior(
                    grids,
                    config.lapse_prior,
                    config.random_rater_share,
                    default_noise_sd=config.noise_sd,
                    spread=spread,
                )
                grids = with_keep_prior(grids, keep_prior, config.random_rater_share)
            if grids and config.learn_rater_noise:
                spread = fit_noise_spread(grids, config.noise_sd)
        refit = Refit(
            fit.hyper.scales,
            fit.hyper.tie_margin,
            fit.hyper.emoji_thresholds,
            spread,
            None if side is None else side.rater_sd,
            keep_prior,
        )
        return fit, refit, form

    def apply_refit(self, refit: Refit) -> None:
        """Adopt a refit's values (`compute_refit`): rebuild the posterior from the new prior
        by ADF over every label in order, refit each rater's reliability, and record the
        refit in the history, so that `replay()` applies it at the same place."""
        self._apply_refit(refit)

    def adopt_refit(self, refitted: Campaign | RefitResult) -> None:
        """Take a refit that a copy of this campaign computed and applied: `refitted` is this
        campaign as it was some history entries ago (a copy of it), then `fit_prior` or
        `apply_refit`, then possibly `catch_up` with what this campaign took since; or that
        copy's `refit_result()`, which leaves its history's labels out (this campaign holds
        them): the same adoption. Its posterior, raters, clip registry and clock become this
        campaign's, its history this campaign's up to the copy, the refit and what the copy
        caught up with (this campaign's own labels in the batches the copy applied them in),
        and what this campaign took since the copy was made, past what the copy caught up
        with, is applied again on top, in order (`reapplied`: clip batches and refines as they
        were, and each run of label batches between them as one batch of at most about
        REAPPLY_LABELS labels, each label with the noise and keep it was applied with; ADF
        takes a batch's labels in order, and one batch is one pass over the covariance where
        each of the batches was one). The state is then the refit's had it been applied
        where the copy was made and those labels come after it (`replay()` reproduces it),
        the same whether the copy caught up or not, but the pass over every label, and over
        the labels it caught up with, was the copy's. Pending tasks, gold pairs, the stopping
        targets and the floor of labels per clip stay this campaign's; rater noise set
        (`set_rater_noise`) since the copy was made is the copy's.

        Raises:
            ValueError: `refitted` is not a copy of this campaign with one refit applied last,
                then at most what this campaign took since (`catch_up`).
        """
        result = refitted.refit_result() if isinstance(refitted, Campaign) else refitted
        ours = list(self._history)
        start = result.entries
        if start > len(ours):
            raise ValueError("the refitted campaign's history must end with its refit")
        taken = result.taken
        before = sum(len(e) for e in ours[:start] if isinstance(e, tuple))
        since = ours[start:]
        segments = list(reapplied(since))
        if (
            any(isinstance(e, Refit) for e in since)
            or len(taken) > len(segments)
            or not all(_same_segment(e, s) for e, (_, s, _) in zip(taken, segments, strict=False))
            or result.label_count != before + sum(e for e in taken if isinstance(e, int))
            or result.n_items > self.n_items
            or (result.device, result.dtype) != (self.device, self.dtype)
        ):
            raise ValueError(
                "the refitted campaign is not a copy of this one's history with a refit applied"
            )
        # the copy's entries since its refit are these segments as it applied them (each label
        # with the noise, keep and event position recorded here): ours stand in for its own
        grafted = [tuple(s) if isinstance(s, list) else s for _, s, _ in segments[: len(taken)]]
        raters = result.raters
        try:
            raters.with_labels_of(self._raters, result.rater_labels)
        except ValueError as error:
            raise ValueError(f"the refitted campaign is not a copy of this one: {error}") from error
        self.config = self._with_refit(self.config, result.refit)
        self.pair_cuts, self.level_cuts = result.pair_cuts, result.level_cuts
        self._clips = result.clips
        self._form = result.form
        self._raters = raters
        self._clock = result.clock
        self._history = History.of([*ours[:start], result.refit, *grafted], result.clip_counts)
        self._progress_cache = None
        for _, segment, _ in segments[len(taken) :]:
            # labels are already answered: the task book and the gold book hold these answers
            self._reapply(segment)

    def adopt_refit_at(self, entries: int, refit: Refit) -> None:
        """Adopt `refit` as if a copy of this campaign made after its first `entries` history
        entries had applied it and been adopted now (`adopt_refit`, without catching up): the
        copy is a replay of those entries (`replay`), so the state is the one that adoption
        left, bit for bit on the CPU. What a restart that replays a service's log does where
        the service adopted a refit from a copy (api/replay.py): one pass over the labels
        before the copy, one more under the refit.

        Raises:
            ValueError: `entries` is not a position of this campaign's history after its
                latest refit, or the copy holds no label to refit over.
        """
        if not (self._history.latest_refit or 0) < entries <= len(self._history):
            raise ValueError(
                f"a refit's copy must end after the latest refit and within the history's "
                f"{len(self._history)} entries, got {entries}"
            )
        copy = self._replayed(entries)
        if not copy.log:
            raise ValueError("a refit's copy must hold labels")
        copy._apply_refit(refit)
        self.adopt_refit(copy)

    def refit_result(self) -> RefitResult:
        """This campaign's state for its adoption by the campaign it is a refitted copy of
        (`adopt_refit`), its history's labels left out (engine.refit_result): what a copy that
        refits elsewhere sends back.

        Raises:
            ValueError: no refit was applied.
        """
        entries = list(self._history)
        start = self._history.latest_refit
        if start is None:
            raise ValueError("the refitted campaign's history must end with its refit")
        taken: list[TakenEntry] = [
            len(entry) if isinstance(entry, tuple) else entry  # type: ignore[misc]
            for entry in entries[start + 1 :]
        ]
        refit = entries[start]
        assert isinstance(refit, Refit)
        raters, rater_labels = self._raters.without_labels()
        return RefitResult(
            refit=refit,
            entries=start,
            taken=tuple(taken),
            label_count=self._history.label_count,
            clip_counts=self._history.clip_counts,
            form=self._form,
            clips=self._clips,
            raters=raters,
            rater_labels=rater_labels,
            clock=self._clock,
            pair_cuts=self.pair_cuts,
            level_cuts=self.level_cuts,
            device=self.device,
            dtype=self.dtype,
        )

    def catch_up(self, entries: Sequence[Entry]) -> int:
        """Bring a refitted copy (see `adopt_refit`) closer to the campaign it was copied
        from, so that the adoption re-applies less: `entries` are that campaign's history
        entries (`history_since`) from the first this copy has not taken on, and the copy
        applies them as `adopt_refit` would (`reapplied`), as far as that is settled: the
        trailing run of label batches, while it holds fewer than REAPPLY_LABELS labels, may
        still grow, so it is left for a later call or the adoption. Returns how many of
        `entries` it took.

        Raises:
            ValueError: the campaign has no refit applied last, or `entries` hold one.
        """
        if not self._history.refits or any(isinstance(e, Refit) for e in entries):
            raise ValueError("catch_up takes a refitted copy and the entries since, no refit")
        taken = 0
        for end, segment, settled in reapplied(entries):
            if not settled:
                break
            self._reapply(segment)
            taken = end
        return taken

    def _reapply(self, segment: list[Judgment] | Entry) -> None:
        """Apply again one of `reapplied`'s segments."""
        if isinstance(segment, list):
            self._apply_labels(segment)
        elif isinstance(segment, Refine):
            self.refine(segment.max_sweeps, segment.damping)
        elif isinstance(segment, ClipsAdded):
            self._add_recorded_clips(segment)
        else:
            raise ValueError(f"a {type(segment).__name__} is not applied again")

    @property
    def history_length(self) -> int:
        """The history's entries so far (`history_since`)."""
        return len(self._history)

    def history_since(self, start: int) -> tuple[Entry, ...]:
        """The history's entries from the `start`-th on: clip batches, label batches as they
        were applied, refines and refits (what a refitted copy made `start` entries in
        catches up with, `catch_up`)."""
        return tuple(itertools.islice(self._history, start, None))

    def _fit_side_spread(
        self, log: Sequence[Judgment], hyper: Hyperparameters, side: SideBias
    ) -> tuple[SideBias, PosteriorForm]:
        """The raters' side-offset prior sd by EM (`engine.position.refit_rater_sd`, MATH.md
        §7): the labels' posterior under the current sd, the sd from its offsets' second
        moments, until it moves by less than SIDE_EM_TOLERANCE (at most SIDE_EM_STEPS); and
        the posterior under the sd found."""
        events = self._events(log, hyper)
        n_slots = len(self._raters.side_slots)
        form = None
        for _ in range(SIDE_EM_STEPS):
            form = self._prior_form(hyper.scales, side)
            form.observe(events)
            layout, mean, cov = form.border()
            fitted = refit_rater_sd(*rater_offset_moments(layout, mean, cov, n_slots))
            fitted = min(max(fitted, SIDE_SD_BOUNDS[0]), SIDE_SD_BOUNDS[1])
            moved = abs(fitted - side.rater_sd) / side.rater_sd
            side = replace(side, rater_sd=fitted)
            if moved < SIDE_EM_TOLERANCE:
                break
        form = self._prior_form(hyper.scales, side)
        form.observe(events)
        return side, form

    def _apply_refit(self, refit: Refit, form: PosteriorForm | None = None) -> None:
        """Adopt a refit's values; `form` is the labels' posterior under them, when the
        caller has it already (it does not depend on the noise spread), else derived here."""
        self.config = self._with_refit(self.config, refit)
        self.pair_cuts = outcome_cuts(self.config.tie_margin, self._like)
        thresholds = self.config.emoji_thresholds
        self.level_cuts = None if thresholds is None else level_cuts(thresholds, self._like)
        if form is None:
            form = self._prior_form()
            form.observe(self._events(self._clip_log))
        self._form = form
        self._raters.refit_all(self.config, self._grid_scorer())
        self._history.record(refit)

    @staticmethod
    def _with_refit(config: CampaignConfig, refit: Refit) -> CampaignConfig:
        """`config` with a refit's values."""
        return replace(
            config,
            prior=refit.scales,
            tie_margin=refit.tie_margin,
            emoji_thresholds=refit.emoji_thresholds,
            noise_prior_spread=refit.noise_prior_spread,
            lapse_prior=config.lapse_prior if refit.keep_prior is None else refit.keep_prior,
            side_bias=config.side_bias
            if refit.side_rater_sd is None or config.side_bias is None
            else replace(config.side_bias, rater_sd=refit.side_rater_sd),
        )

    @property
    def groups(self) -> Tensor:
        """(n,) long group ids."""
        return self._clips.groups

    # raters -----------------------------------------------------------------------------------

    def set_rater_noise(self, rater: Hashable, noise_sd: float) -> None:
        """Use `noise_sd` for this rater's labels and for the gains of their next tasks."""
        if not (noise_sd >= 0 and math.isfinite(noise_sd)):
            raise ValueError(f"noise_sd must be finite and >= 0, got {noise_sd}")
        self._raters.set_noise(rater, noise_sd)
        self._form.forget_shrink()  # pending tasks of this rater shrink differently now

    def noise_sd(self, rater: Hashable | None) -> float:
        """The rater's noise sd: set by `set_rater_noise`, else learned (learn_rater_noise),
        else the campaign's default."""
        return self._raters.noise_sd(rater, self.config)

    # labels -----------------------------------------------------------------------------------

    def observe(self, judgments: Sequence[Judgment], task_ids: Sequence[int] = ()) -> None:
        """Apply labels in order (ADF, MATH.md §2) and release the answered tasks.

        The whole batch is validated before anything changes; on an error nothing is applied.
        """
        for j in judgments:
            self._validate(j)
        self._tasks.check_answerable(task_ids)
        resolved = self._apply_labels(judgments, task_ids)
        count = self._history.label_count
        if any(count - len(resolved) < at <= count for at in self.config.refit_prior_at):
            self.fit_prior()

    def _apply_labels(
        self, judgments: Sequence[Judgment], task_ids: Sequence[int] = ()
    ) -> list[Judgment]:
        """Apply validated labels and record them (`observe` without its refits); returns
        them as applied."""
        resolved = self._place([self._resolve(j) for j in judgments])
        self._add_side_raters(resolved)
        if resolved:
            # a gold answer teaches the rater's reliability only (engine.gold)
            on_clips = [j for j in resolved if j.gold is None]
            if on_clips:
                self._form.observe(self._events(on_clips))
            if self.config.lapse_prior is not None or self.config.learn_rater_noise:
                self._raters.learn(resolved, self.config, self._grid_scorer())
        self._history.record_labels(resolved)
        self._tasks.answered(((j.rater, j.question) for j in resolved), task_ids)
        for judgment in resolved:
            if judgment.seconds is not None:
                self._clock.observe(judgment.question, 0.0, judgment.seconds)
        for judgment in resolved:
            if judgment.gold is not None:
                self._gold.answered(judgment.rater, [judgment.question.key[1:]])
        return resolved

    def _add_side_raters(self, judgments: Sequence[Judgment]) -> None:
        """Give each rater's first comparison with a recorded side a slot in the side block."""
        side = self.config.side_bias
        if side is None:
            return
        new = self._raters.add_side_slots(j.rater for j in judgments if j.left is not None)
        if new:
            self._form.grow_block(SIDE_RATERS, side.rater_variances(new, self._like))

    def side_offsets(self) -> SideOffsets:
        """The side offsets' posterior (engine.position): the global offset and each rater's
        with a recorded side; positive favours the clip shown left.

        Raises:
            ValueError: the campaign has no side bias.
        """
        if self.config.side_bias is None:
            raise ValueError("this campaign does not model a side bias (CampaignConfig.side_bias)")
        layout, mean, cov = self._form.border()
        return side_offsets(layout, mean, cov, dict(self._raters.side_slots))

    def _place(self, judgments: Sequence[Judgment]) -> list[Judgment]:
        """The judgments with the positions their events will take among the form's sites
        (after the events already applied, in order; none for a gold answer)."""
        position = len(self._form.sites)
        placed = []
        for judgment in judgments:
            if judgment.gold is not None:
                placed.append(replace(judgment, event=None))
                continue
            placed.append(replace(judgment, event=position))
            position += self._n_events(judgment)
        return placed

    def _resolve(self, judgment: Judgment) -> Judgment:
        """The judgment with the noise (and lapse keep probability) it is applied with."""
        if judgment.noise_sd is None:
            judgment = replace(judgment, noise_sd=self.noise_sd(judgment.rater))
        if judgment.keep is None and self.config.lapse_prior is not None:
            judgment = replace(judgment, keep=self.keep_probability(judgment.rater))
        return judgment

    def _noise_scale(self, judgment: Judgment) -> float:
        """A criterion answer's noise per unit of the rater's (CriterionQuestions.noise_scale);
        1 for every other answer."""
        questions = self.config.criterion_questions
        if questions is None or judgment.question.kind != Criterion.kind:
            return 1.0
        return questions.noise_scale

    def _n_outcomes(self, judgment: Judgment) -> int:
        """How many answers a random click chooses among."""
        question = judgment.question
        count = question.n_answers(self.config.tie_margin, self.config.emoji_thresholds)
        both = self.config.both_threshold is not None and question.kind == Pair.kind
        return count + 2 if both else count  # "both good" and "both bad"

    def _n_events(self, judgment: Judgment) -> int:
        """How many interval events the judgment's answer is (a K-set's comparisons; a tie
        and the pair's sum for "both good" or "both bad")."""
        question = judgment.question
        if isinstance(question, KSet):
            return len(question.comparisons(judgment.answer))
        return 2 if judgment.answer in BOTH_ANSWERS else 1

    def _event_moments(self, form: PosteriorForm, events: Events) -> tuple[Tensor, Tensor]:
        """Each event's (E z, Var z) under `form`: `pair_moments` for differences and single
        clips; for a pair's sum, E f_i + E f_j and 2 Var f_i + 2 Var f_j - Var(f_i - f_j)."""
        mu, var = form.pair_moments(events.first, events.second)
        questions = self.config.criterion_questions
        if questions is not None and events.border_index is not None:
            # a criterion event's z = g_ik - g_jk: its moments from the dense posterior
            start = form.border_blocks()[CRITERIA].start
            on = torch.nonzero((events.border_index >= start).any(dim=1)).flatten()
            if on.numel():
                first, second = events.first[on], events.second[on]
                n_asked = len(questions.criteria)
                slot = events.border_index[on, 0] - start - first * n_asked
                mu, var = mu.clone(), var.clone()
                mu[on], var[on], _ = criterion_moments(form.dense(), first, second, slot, n_asked)
        if events.second_sign is None:
            return mu, var
        summed = torch.nonzero(events.second_sign > 0).flatten()
        alone = torch.full_like(summed, NO_SECOND)
        mean_i, var_i = form.pair_moments(events.first[summed], alone)
        mean_j, var_j = form.pair_moments(events.second[summed], alone)
        mu, var = mu.clone(), var.clone()
        mu[summed] = mean_i + mean_j
        var[summed] = (2 * var_i + 2 * var_j - var[summed]).clamp_min(0.0)
        return mu, var

    def _grid_scorer(self) -> GridScorer:
        """Scores raters' labels on the (keep, sigma) grid, each under its cavity in the
        current posterior."""
        return lambda owns: self._rater_grids_of(owns, self._form)

    def _rater_grids_of(
        self,
        owns: Sequence[Sequence[Judgment]],
        form: PosteriorForm,
        hyper: Hyperparameters | None = None,
    ) -> list[RaterGrid]:
        """Each list of labels on the (keep, sigma) grid, each event under its cavity in
        `form` (docs/MATH.md §2, eq. (2.2)): `form`'s marginal with the event's own site
        divided out, i.e. the posterior of all the other labels. Under the posterior that
        holds a label, the label looks surer and more agreed with than it was, and each
        rater's learned noise ran to ~0.6x the truth (docs/MATH.md §3, rater noise). Their
        events concatenated, one `pair_moments`, one `rater_grids` over a rater index.

        Raises:
            ValueError: a label on the clips that was never applied (no event position).
        """
        judgments = [j for own in owns for j in own]
        events = self._events(judgments, hyper)
        mu, var = self._event_moments(form, events)
        counts = [self._n_events(j) for j in judgments]
        per_event = [j for j, c in zip(judgments, counts, strict=True) for _ in range(c)]
        positions: list[int] = []  # the events on the clips (a gold answer's z is z*, below)
        for judgment, count in zip(judgments, counts, strict=True):
            if judgment.gold is not None:
                continue
            if judgment.event is None:
                raise ValueError("a label must be applied before its rater's grid scores it")
            positions.extend(range(judgment.event, judgment.event + count))
        if positions:
            on_clips = torch.tensor([j.gold is None for j in per_event], device=mu.device)
            mu, var = mu.clone(), var.clone()
            mu[on_clips], var[on_clips] = cavity_moments(
                mu[on_clips], var[on_clips], form.sites.take(positions, mu)
            )
        if any(j.gold is not None for j in judgments):
            # a gold pair's z is the known point z*, not the posterior marginal (engine.gold)
            margin = self.config.gold_margin * self.config.noise_sd
            is_gold = torch.tensor([j.gold is not None for j in per_event], device=mu.device)
            point = like_tensor(
                mu, [0.0 if j.gold is None else gold_point(j.gold, margin) for j in per_event]
            )
            mu = torch.where(is_gold, point, mu)
            var = torch.where(is_gold, torch.zeros_like(var), var)
        rater = torch.repeat_interleave(
            torch.arange(len(owns), device=mu.device),
            torch.tensor(
                [sum(self._n_events(j) for j in own) for own in owns],
                dtype=torch.long,
                device=mu.device,
            ),
        )  # N: which list each event came from
        n_outcomes = events.n_outcomes  # there when some label was applied with lapses
        if n_outcomes is None:
            n_outcomes = like_tensor(mu, [self._n_outcomes(j) for j in per_event])
        return rater_grids(
            mu,
            var,
            events.lo,
            events.hi,
            n_outcomes,
            rater,
            len(owns),
            default_noise_sd=self.config.noise_sd,
            keep_prior=self.config.lapse_prior,
            random_share=self.config.random_rater_share,
            learn_noise=self.config.learn_rater_noise,
        )

    def _held_out_rater_grids(
        self,
        log: Sequence[Judgment],
        events: Events,
        hyper: Hyperparameters,
        form: PosteriorForm,
    ) -> list[RaterGrid]:
        """Each rater's labels on the (keep, sigma) grid, every label scored under its EP
        cavity: the joint posterior of all the other labels (docs/MATH.md §3, the noise
        spread's refit). Under the posterior that holds a label itself, a rater's labels look
        surer than they were, precise raters look more precise and the spread fitted over
        raters runs wide. Where EP does not converge, damped or not, the labels are scored
        under their ADF cavities in `form` (`_rater_grids_of`)."""
        per_event = [j for j in log for _ in range(self._n_events(j))]
        raters = [j.rater for j in per_event]
        known = list(dict.fromkeys(r for r in raters if r is not None))
        if not known:
            return []
        for damping, sweeps in ((1.0, 50), (0.5, 200)):
            try:
                refined, refinement = self._prior_form(hyper.scales).refine(events, sweeps, damping)
                break
            except RuntimeError:
                continue
        else:
            return self._rater_grids_of(self._raters.labelled(), form, hyper)
        mu, var = self._event_moments(refined, events)
        cavity_mu, cavity_var = cavity_moments(mu, var, refinement.sites)
        labelled = torch.tensor([r is not None for r in raters], device=mu.device)
        slot = {rater: k for k, rater in enumerate(known)}
        index = torch.tensor([slot[r] for r in raters if r is not None], device=mu.device)
        n_outcomes = like_tensor(mu, [self._n_outcomes(j) for j in per_event])
        return rater_grids(
            cavity_mu[labelled],
            cavity_var[labelled],
            events.lo[labelled],
            events.hi[labelled],
            n_outcomes[labelled],
            index,
            len(known),
            default_noise_sd=self.config.noise_sd,
            keep_prior=self.config.lapse_prior,
            random_share=self.config.random_rater_share,
            learn_noise=self.config.learn_rater_noise,
        )

    def _rater_grid(
        self, own: Sequence[Judgment], form: PosteriorForm, hyper: Hyperparameters | None = None
    ) -> RaterGrid:
        """One rater's labels on the (keep, sigma) grid under `form`'s marginals."""
        (grid,) = self._rater_grids_of([own], form, hyper)
        return grid

    def keep_probability(self, rater: Hashable | None) -> float:
        """The posterior mean probability that `rater` answers as the model says (the prior
        mean before their first label; 1 when lapses are not modelled)."""
        return self._raters.keep_probability(rater, self.config)

    def rater_reliability(self) -> dict[Hashable, RaterReliability]:
        """Per rater with labels: keep probability and noise posterior, label count, and
        whether their labels look random (flagged: they weigh little and need a look)."""
        return dict(self._raters.reliability)

    def observe_pair(
        self,
        first: int,
        second: int,
        outcome: Outcome | str,
        *,
        rater: Hashable | None = None,
        task_id: int | None = None,
    ) -> None:
        """One comparison: `outcome` of `first` against `second` (win = first is better)."""
        judgment = Judgment.pair(rater, first, second, outcome)
        self.observe([judgment], () if task_id is None else (task_id,))

    def observe_rating(
        self, item: int, level: int, *, rater: Hashable | None = None, task_id: int | None = None
    ) -> None:
        """One emoji rating: `level` (0 = worst) of clip `item`."""
        judgment = Judgment.rating(rater, item, level)
        self.observe([judgment], () if task_id is None else (task_id,))

    def _validate(self, judgment: Judgment) -> None:
        n = self.n_items
        if judgment.noise_sd is not None and not (
            judgment.noise_sd >= 0 and math.isfinite(judgment.noise_sd)
        ):
            raise ValueError(f"noise_sd must be finite and >= 0, got {judgment.noise_sd}")
        if judgment.keep is not None and not 0 < judgment.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {judgment.keep}")
        if judgment.seconds is not None and not (
            judgment.seconds >= 0 and math.isfinite(judgment.seconds)
        ):
            raise ValueError(f"seconds must be finite and >= 0, got {judgment.seconds}")
        question = judgment.question
        if not isinstance(question, tuple(QUESTION_KINDS.values())):
            raise TypeError(f"not a question the engine knows: {question!r}")
        for item in question.items:
            if not 0 <= item < n:
                raise IndexError(f"clip {item} does not exist (0..{n - 1})")
        first, *others = question.items
        if isinstance(question, Criterion):
            questions = self.config.criterion_questions
            asked = () if questions is None else questions.criteria
            if question.criterion not in asked:
                raise ValueError(
                    f"this campaign does not ask about criterion {question.criterion!r}"
                    + (f" (it asks about {list(asked)})" if asked else "")
                )
        if isinstance(question, KSet) and not all(
            self._clips.same_group(first, other) for other in others
        ):
            raise ValueError(f"a K-set shows clips of one prompt, got {list(question.items)}")
        if self.config.structure == "blocks" and not all(
            self._clips.same_group(first, other) for other in others
        ):
            raise ValueError(
                f"clips {list(question.items)} are in different prompt groups: a campaign kept "
                'in blocks (structure="blocks") asks about clips of one prompt'
            )
        if judgment.left is not None and (
            question.kind != Pair.kind or judgment.left not in question.items
        ):
            raise ValueError(
                f"left must be one of the compared clips {list(question.items)}, got "
                f"{judgment.left!r}"
            )
        config = self.config
        answer_specs(
            question,
            judgment.answer,
            config.tie_margin,
            config.emoji_thresholds,
            config.both_threshold,
        )
        if judgment.gold is not None:
            if question.kind != Pair.kind:
                raise ValueError("a gold question is a comparison of two clips")
            question.interval(Outcome(judgment.gold), self.config.tie_margin, None)

    @property
    def _clip_log(self) -> list[Judgment]:
        """The labels that are events on the clips: the log without gold answers."""
        return [j for j in self.log if j.gold is None]

    def refine(self, max_sweeps: int = 50, damping: float = 1.0) -> Refinement:
        """Replace the ADF posterior by the EP posterior of every label so far (engine.ep).

        The result no longer depends on the order labels arrived in. Later labels are applied
        by ADF on top until the next refine; `replay()` repeats the refine at the same point.

        Raises:
            RuntimeError: EP did not converge (nothing changes then).
        """
        form, result = self._prior_form().refine(self._events(self._clip_log), max_sweeps, damping)
        self._form = form
        self._history.record(Refine(max_sweeps, damping))
        return result

    def _events(
        self, judgments: Sequence[Judgment], hyper: Hyperparameters | None = None
    ) -> Events:
        """Every judgment as one interval event, in order (noise as it was applied), under the
        campaign's tie margin and thresholds or those of `hyper`."""
        tie_margin = self.config.tie_margin if hyper is None else hyper.tie_margin
        thresholds = self.config.emoji_thresholds if hyper is None else hyper.emoji_thresholds
        # a K-set answer is several events (its rank-broken comparisons), each with the
        # judgment's noise and keep probability
        # and "both good" two (a tie and the pair's sum)
        both = self.config.both_threshold
        per_judgment = [
            answer_specs(j.question, j.answer, tie_margin, thresholds, both) for j in judgments
        ]
        lapses = any(j.keep is not None and j.keep < 1 for j in judgments)
        events = [(j, e) for j, own in zip(judgments, per_judgment, strict=True) for e in own]
        border: list[tuple[list[int], list[float]] | None] | None = None
        questions = self.config.criterion_questions
        if self.config.side_bias is not None or questions is not None:
            layout = self._form.border_blocks()  # positions only: no copy of the border
            slots = self._raters.side_slots
            border = []
            for j, e in events:
                positions: list[int] = []
                coefficients: list[float] = []
                # a side loads on a comparison, not on where the pair stands
                if self.config.side_bias is not None and j.left is not None and e.sign < 0:
                    positions, coefficients = side_part(
                        layout, slots.get(j.rater), j.left == e.first
                    )
                if questions is not None and isinstance(j.question, Criterion):
                    # docs/MATH.md §9: g_ik - g_jk = f_i - f_j + t_ik - t_jk; first in the
                    # part, which `_event_moments` reads back
                    slot = questions.criteria.index(j.question.criterion)
                    extra = criterion_part(layout, len(questions.criteria), e.first, e.second, slot)
                    positions, coefficients = extra[0] + positions, extra[1] + coefficients
                border.append((positions, coefficients) if positions else None)
        return interval_events(
            [e.first for _, e in events],
            [e.second for _, e in events],
            [(e.lo, e.hi) for _, e in events],
            [float(j.noise_sd) * e.noise_scale * self._noise_scale(j) for j, e in events],  # type: ignore[arg-type]
            self._like,
            keep=[1.0 if j.keep is None else j.keep for j, _ in events] if lapses else None,
            n_outcomes=[self._n_outcomes(j) for j, _ in events] if lapses else None,
            border=border,
            second_sign=[e.sign for _, e in events],
        )

    # stopping ---------------------------------------------------------------------------------

    def progress(self) -> Progress:
        """Where the campaign stands against its targets (engine.stopping): each target set,
        its current value and the distance still to go, and whether all are met."""
        targets = self.config.targets
        key = (len(self._history), self._history.label_count, self.n_items, targets)
        if self._progress_cache is not None and self._progress_cache[0] == key:
            return self._progress_cache[1]
        tau = None
        if targets.kendall_tau is not None and targets.confidence is None:
            tau = self.expected_kendall_tau()
        elif targets.kendall_tau is not None and targets.confidence is not None:
            generator = torch.Generator(self.device).manual_seed(TAU_SEED)
            tau = tau_quantile(self.kendall_tau_draws(TAU_SAMPLES, generator), targets.confidence)
        width = None
        if targets.interval_width is not None:
            # the widest central interval is the largest sd's: no ranks, no intervals per clip
            _, var = self._form.item_moments()
            largest = var.max().clamp_min(0.0).sqrt() if self.n_items else var.new_zeros(())
            width = float(2.0 * credible_halfwidth(largest, INTERVAL_LEVEL))
        status = progress(targets, tau, width, self._history.label_count)
        self._progress_cache = (key, status)
        return status

    def set_targets(self, targets: Targets) -> None:
        """Replace the stopping targets (raise them to reopen a done campaign)."""
        self.config = replace(self.config, targets=targets)

    def _check_not_done(self) -> None:
        if self.config.targets.any:
            status = self.progress()
            if status.done:
                raise CampaignDone(status)

    # selection --------------------------------------------------------------------------------

    def _pending_tasks(self) -> list[PendingTask]:
        """The pending tasks in hand-out order: (id, first, second or NO_SECOND, noise var); a
        K-set as the pair directions of its predicted answer (`_kset_directions`), each
        under the K-set's id."""
        pending: list[PendingTask] = []
        for task in self._tasks.pending:
            if task.gold is not None or task.question.kind == Criterion.kind:
                # a gold answer never moves the clips: nothing to shrink; a criterion question
                # moves them through its loading only, and is left out rather than shrunk
                continue
            noise = self.noise_sd(task.rater) ** 2
            question = task.question
            if isinstance(question, KSet):
                pending.extend(
                    (task.id, first, second, noise)
                    for first, second in self._kset_directions(question)
                )
            else:
                pending.append((task.id, *question.direction, noise))
        return pending

    def _kset_directions(self, question: KSet) -> tuple[tuple[int, int], ...]:
        """The comparisons a pending K-set's believer shrink runs along: those of the answer
        the posterior mean predicts (its K clips by mean, best first; MATH.md §4, "a pending
        K-set"). A pair's expected shrink sums over its outcomes, so only which pairs, not
        which way, matters."""
        index = torch.tensor(question.items, device=self.device)
        mean, _ = self._form.pair_moments(index, torch.full_like(index, NO_SECOND))
        order = torch.argsort(mean, descending=True, stable=True).tolist()
        ranked = tuple(question.items[k] for k in order)
        size = {"best": 1, "best_worst": 2, "rank": len(ranked)}[question.mode]
        predicted = ranked[:1] + ranked[-1:] if size == 2 else ranked[:size]
        return question.comparisons(predicted)

    def _excluded(self, exclude: Sequence[int]) -> Tensor:
        return torch.tensor(sorted(set(exclude)), dtype=torch.long, device=self.device)

    def _exposure(self, excluded: Tensor, unheld: Sequence[Task] = ()) -> Exposure | None:
        """The clips below `min_labels` that a rater barred from `excluded` may be shown,
        counting answered labels, pending tasks and `unheld` (chosen for this batch, not held
        yet) (engine.exposure); None while the rule changes nothing."""
        minimum = self.config.min_labels
        if minimum <= 0:
            return None
        out = [*self._tasks.pending, *unheld]
        pending = [item for t in out if t.gold is None for item in t.question.items]
        # the block form searches prompts: which hold an owed clip is kept per group
        groups = self.groups if self.config.structure == "blocks" else None
        return self._history.clip_counts.starved(
            self.n_items, pending, excluded.tolist(), minimum, self.device, groups
        )

    def label_counts(self) -> Tensor:
        """(n,) long labels each clip took (answered, gold answers aside), on the CPU."""
        return self._history.clip_counts.counts(self.n_items)

    def set_min_labels(self, min_labels: int) -> None:
        """Change `CampaignConfig.min_labels` (the posterior does not depend on it)."""
        self.config = replace(self.config, min_labels=min_labels)

    def next_pairs(
        self,
        rater: Hashable | None = None,
        count: int = 1,
        *,
        exclude: Sequence[int] = (),
        hold: bool = True,
        repeat_pairs: bool = False,
        forbidden_pairs: Tensor | Sequence[tuple[int, int]] | None = None,
        generator: torch.Generator | None = None,
    ) -> list[Task]:
        """The next `count` pairs for `rater`, by expected information gain (MATH.md §3-4).
        While clips the rater may be shown are owed labels (`CampaignConfig.min_labels`,
        engine.exposure), the batch's first pairs each hold one of them.

        Args:
            rater: who will answer (their noise, lapse rate and judged pairs matter).
            count: batch size; each pair is pending for the next.
            exclude: clips this rater must not see (content filters).
            hold: record the pairs as pending (until answered or `release`d).
            repeat_pairs: allow pairs this rater already judged.
            forbidden_pairs: (F, 2) further pairs not to ask (either order), for example pairs
                a recorded log holds no answer for.
            generator: randomness for the softmax rule.

        Raises:
            CampaignDone: every target of `CampaignConfig.targets` is met.
            NoEligibleTaskError: no eligible pair is left for this rater.
        """
        self._check_not_done()
        judged = None if repeat_pairs else self._tasks.judged_pairs(rater)
        if forbidden_pairs is not None:
            extra = torch.as_tensor(forbidden_pairs, dtype=torch.long).reshape(-1, 2).cpu()
            if extra.numel() and not (int(extra.min()) >= 0 and int(extra.max()) < self.n_items):
                raise IndexError(f"forbidden pairs name clips outside 0..{self.n_items - 1}")
            judged = extra if judged is None else torch.cat((judged, extra))
        excluded = self._excluded(exclude)
        request = PairRequest(
            noise_var=self.noise_sd(rater) ** 2,
            pair_cuts=self.pair_cuts,
            keep=self.keep_probability(rater),
            count=count,
            excluded_items=excluded,
            judged_pairs=judged,
            level_cuts=self.level_cuts,
            options=self.config.selection,
            generator=generator,
            both_threshold=self.config.both_threshold,
        )
        groups = self.groups if self.config.pair_scope == "group" else None
        pending = self._pending_tasks()
        tasks: list[Task] = []

        def choose(request: PairRequest) -> None:
            """Add `request`'s choices to the batch, each pending for the later ones."""
            before = (*self._tasks.pending_ids, *(t.id for t in tasks if not hold))
            choices = self._form.select_pairs(pending, groups, request)
            new = [self._task(rater, Pair(c.first, c.second), c, hold) for c in choices]
            self._form.note_batch(before, [t.id for t in new])
            pending.extend((t.id, t.first, t.second, request.noise_var) for t in new)
            tasks.extend(new)

        # The exposure rule (engine.exposure): while clips are owed labels, the batch's first
        # picks hold one; a round takes at most half the deficit (a pair may pay two clips),
        # then the owed clips are counted again with the round's picks pending.
        while len(tasks) < count:
            starved = self._exposure(excluded, [] if hold else tasks)
            if starved is None:
                break
            size = min(count - len(tasks), (starved.deficit + 1) // 2)
            try:
                choose(
                    replace(request, focus=starved.focus, focus_groups=starved.groups, count=size)
                )
            except NoEligibleTaskError:  # no pair of an owed clip is left for this rater
                break
        if len(tasks) < count:
            rest = replace(request, count=count - len(tasks))
            if not tasks:
                choose(rest)
            else:
                with contextlib.suppress(NoEligibleTaskError):
                    choose(rest)
        return tasks

    def next_rating(
        self,
        rater: Hashable | None = None,
        *,
        exclude: Sequence[int] = (),
        hold: bool = True,
        generator: torch.Generator | None = None,
    ) -> Task:
        """The clip whose emoji rating by `rater` is most informative (never one they rated).

        Raises:
            CampaignDone: every target of `CampaignConfig.targets` is met.
            NoEligibleTaskError: no emoji scale, or no clip left to rate.
        """
        self._check_not_done()
        if self.level_cuts is None:
            raise NoEligibleTaskError("this campaign has no emoji scale")
        request = RatingRequest(
            noise_var=self.noise_sd(rater) ** 2,
            level_cuts=self.level_cuts,
            pair_cuts=self.pair_cuts,
            keep=self.keep_probability(rater),
            excluded_items=self._excluded([*exclude, *self._tasks.rated(rater)]),
            options=self.config.selection,
            generator=generator,
        )
        pending = self._pending_tasks()
        starved = self._exposure(self._excluded(exclude))
        choice = None
        if starved is not None:
            # a rating of a starved clip is one of its labels: only those while it is owed
            others = torch.nonzero(~starved.focus).flatten()
            forced = replace(request, excluded_items=torch.cat((request.excluded_items, others)))
            with contextlib.suppress(NoEligibleTaskError):
                choice = self._form.select_rating(pending, forced)
        if choice is None:
            choice = self._form.select_rating(pending, request)
        return self._task(rater, Level(choice.item), choice, hold)

    def next_criterion(
        self,
        rater: Hashable | None = None,
        *,
        exclude: Sequence[int] = (),
        forbidden_pairs: Tensor | Sequence[tuple[int, int]] | None = None,
        hold: bool = True,
    ) -> Task:
        """The criterion question ("which is better aligned?", ...) with the most gain for
        `rater` (CriterionQuestions.gain; docs/MATH.md §9), never one they answered nor one
        about a pair of `forbidden_pairs` (either order).

        Candidates: every asked criterion on the pairs of each prompt's most uncertain clips
        (engine.task_choice.kset_candidates with size 2; one prompt of all clips when pairs
        may cross prompts).

        Raises:
            CampaignDone: every target of `CampaignConfig.targets` is met.
            NoEligibleTaskError: no criterion questions, or none left for this rater.
        """
        self._check_not_done()
        questions = self.config.criterion_questions
        if questions is None:
            raise NoEligibleTaskError("this campaign asks no criterion questions")
        posterior = self._form.dense()
        groups = self.groups.to(self.device)
        if self.config.pair_scope != "group":
            groups = torch.zeros_like(groups)
        keep = torch.ones(self.n_items, dtype=torch.bool, device=self.device)
        keep[self._excluded(exclude)] = False
        clips = torch.nonzero(keep).flatten()
        pairs = clips[kset_candidates(groups[clips], posterior.item_cov.diagonal()[clips], 2)]
        n = self.n_items
        if forbidden_pairs is not None:
            barred = torch.as_tensor(forbidden_pairs, dtype=torch.long, device=self.device)
            barred = barred.reshape(-1, 2)
            barred_code = barred.min(dim=1).values * n + barred.max(dim=1).values
            code = pairs.min(dim=1).values * n + pairs.max(dim=1).values
            pairs = pairs[~torch.isin(code, barred_code)]
        n_asked = len(questions.criteria)
        first = pairs[:, 0].repeat_interleave(n_asked)
        second = pairs[:, 1].repeat_interleave(n_asked)
        slot = torch.arange(n_asked, device=self.device).repeat(pairs.shape[0])
        # what the rater answered or holds, as one code per (lower clip, upper clip, criterion)
        keys = {key for key in self._tasks.asked(rater) if key[0] == Criterion.kind}
        keys |= {
            t.question.key
            for t in self._tasks.pending
            if t.rater == rater and t.question.kind == Criterion.kind
        }
        if keys:
            slots = {name: k for k, name in enumerate(questions.criteria)}
            asked = torch.tensor(
                [(low * n + high) * n_asked + slots[name] for _, name, low, high in keys],
                device=self.device,
            )
            code = (first.minimum(second) * n + first.maximum(second)) * n_asked + slot
            fresh = ~torch.isin(code, asked)
            first, second, slot = first[fresh], second[fresh], slot[fresh]
        if first.numel() == 0:
            raise NoEligibleTaskError("no criterion question is left for this rater")
        noise_var = (self.noise_sd(rater) * questions.noise_scale) ** 2
        gains = criterion_gains(
            posterior,
            first,
            second,
            slot,
            n_asked,
            noise_var,
            self.pair_cuts,
            questions.gain,
            self.keep_probability(rater),
        )
        pick = int(torch.argmax(gains))
        mu, var, _ = criterion_moments(
            posterior,
            first[pick : pick + 1],
            second[pick : pick + 1],
            slot[pick : pick + 1],
            n_asked,
        )
        probabilities = outcome_probabilities(mu, var, noise_var, self.pair_cuts)[0]
        question = Criterion(
            int(first[pick]), int(second[pick]), questions.criteria[int(slot[pick])]
        )
        task = self._tasks.new(rater, question, float(gains[pick]), tuple(probabilities.tolist()))
        if hold:
            self._tasks.hold(task)
        return task

    def criterion_values(self) -> tuple[Tensor, Tensor]:
        """(n, Kc) posterior mean and sd of each clip's criterion values g_ik, columns in the
        order of `CriterionQuestions.criteria` (docs/MATH.md §9).

        Raises:
            ValueError: the campaign asks no criterion questions.
        """
        questions = self.config.criterion_questions
        if questions is None:
            raise ValueError("this campaign asks no criterion questions")
        return criterion_values(self._form.dense(), len(questions.criteria))

    def next_task(
        self,
        rater: Hashable | None = None,
        *,
        exclude: Sequence[int] = (),
        hold: bool = True,
        generator: torch.Generator | None = None,
    ) -> Task:
        """A pair or an emoji rating, whichever teaches more per second of rater time
        (`next_tasks` with count 1)."""
        return self.next_tasks(rater, exclude=exclude, hold=hold, generator=generator)[0]

    def next_tasks(
        self,
        rater: Hashable | None = None,
        count: int = 1,
        *,
        exclude: Sequence[int] = (),
        forbidden_pairs: Tensor | Sequence[tuple[int, int]] | None = None,
        skip_ratings: Sequence[int] = (),
        skip_ksets: Sequence[Sequence[int]] = (),
        hold: bool = True,
        generator: torch.Generator | None = None,
        gold: bool = True,
    ) -> list[Task]:
        """Up to `count` tasks: a gold task alone when `next_gold` draws one (engine.gold), else
        a batch of pairs (`next_pairs`), or one K-set (`CampaignConfig.kset`) or one emoji
        rating when it teaches more per second than the batch's best pair.

        Gain per second: a task's gain over the expected seconds of its kind, learned from the
        answers' times (`Judgment.seconds`; Ye and Doermann 2014; MATH.md §3). Whether a K-set
        beats the best pair is decided by `task_choice.choose_task_from_moments` on one
        footing (a pair as the K = 2 set), under the pending tasks' shrink.

        Args:
            rater, exclude, hold, generator: as for `next_pairs`.
            count: the most pairs; a rating comes alone.
            forbidden_pairs: pairs not to ask (either order), as for `next_pairs`.
            skip_ratings: clips not to offer for rating, besides those `rater` rated.
            skip_ksets: K-sets (their clips) not to offer, besides those `rater` answered.
            gold: False never draws a gold task (for a caller that asks `next_gold` itself).

        Raises:
            CampaignDone: every target of `CampaignConfig.targets` is met.
            NoEligibleTaskError: no pair and no clip to rate is left for this rater.
        """
        self._check_not_done()
        if gold and rater is not None and self.config.gold_rate > 0:
            listed = forbidden_pairs
            if isinstance(listed, Tensor):
                listed = listed.tolist()
            gold_task = self.next_gold(
                rater,
                exclude=exclude,
                forbidden=[(int(i), int(j)) for i, j in listed or ()],
                hold=hold,
            )
            if gold_task is not None:
                return [gold_task]
        pairs: list[Task] = []
        with contextlib.suppress(NoEligibleTaskError):
            pairs = self.next_pairs(
                rater,
                count,
                exclude=exclude,
                hold=False,
                forbidden_pairs=forbidden_pairs,
                generator=generator,
            )
        rating = None
        if self.level_cuts is not None:
            with contextlib.suppress(NoEligibleTaskError):
                rating = self.next_rating(
                    rater, exclude=[*exclude, *skip_ratings], hold=False, generator=generator
                )
        chosen: list[Task] = pairs
        if self.config.kset is not None:
            kset = self._next_kset(rater, exclude, skip_ksets, against_pairs=bool(pairs))
            if kset is not None:
                chosen = [kset]
        if rating is not None and (
            not chosen
            or rating.gain / self._seconds(rating) > chosen[0].gain / self._seconds(chosen[0])
        ):
            chosen = [rating]
        if self.config.criterion_questions is not None:
            criterion = None
            with contextlib.suppress(NoEligibleTaskError):
                criterion = self.next_criterion(
                    rater, exclude=exclude, forbidden_pairs=forbidden_pairs, hold=False
                )
            if criterion is not None and (
                not chosen
                or criterion.gain / self._seconds(criterion)
                > chosen[0].gain / self._seconds(chosen[0])
            ):
                chosen = [criterion]
        if not chosen:
            raise NoEligibleTaskError("no pair and no clip to rate is left for this rater")
        if hold:
            for task in chosen:
                self._tasks.hold(task)
        return chosen

    def _next_kset(
        self,
        rater: Hashable | None,
        exclude: Sequence[int],
        skip: Sequence[Sequence[int]],
        *,
        against_pairs: bool = True,
    ) -> Task | None:
        """The best K-set of `CampaignConfig.kset` for `rater` (not held) when it teaches more
        per second than the best pair on the same footing (`choose_task_from_moments`, under
        the pending tasks' believer shrink, over the clips `rater` may see), or at all when
        not `against_pairs` (no pair is left to them); None otherwise, or when that set is one
        they answered or `skip` lists."""
        offer, form = self.config.kset, self._form
        if offer is None or not isinstance(form, DenseForm):
            return None
        shrink = form.pending_shrink(self._pending_tasks(), self.pair_cuts, self.level_cuts)
        posterior = form.posterior
        # an excluded clip gets a prompt of its own: no candidate set holds it, and nothing
        # n x n is copied
        groups = self.groups.to(self.device).clone()
        excluded = self._excluded(exclude)
        if excluded.numel():
            start = int(groups.max()) + 1
            groups[excluded] = torch.arange(
                start, start + excluded.numel(), device=self.device, dtype=groups.dtype
            )
        try:
            choice = choose_task_from_moments(
                posterior.item_mean,
                posterior.item_cov,
                groups,
                self._clock,
                noise_var=self.noise_sd(rater) ** 2,
                sizes=(2, offer.size) if against_pairs else (offer.size,),
                mode=offer.mode,
                shrink=(shrink.columns, shrink.factor),
            )
        except ValueError:  # no prompt holds enough clips this rater may see
            return None
        question = choice.question
        if not isinstance(question, KSet):
            return None
        items = question.items
        barred = {tuple(sorted(int(i) for i in clips)) for clips in skip}
        if question.key in self._tasks.asked(rater) or items in barred:
            return None
        return self._tasks.new(rater, question, choice.gain, choice.probabilities)

    # gold questions ---------------------------------------------------------------------------

    def add_gold(self, first: int, second: int, answer: Outcome | str) -> GoldPair:
        """Mark `first` vs `second` as a gold pair whose answer is `answer` (win = first is
        better). The same pair again with the same answer (either order) changes nothing.

        Raises:
            IndexError: a clip that does not exist.
            ValueError: the same clip twice, an answer the campaign does not allow (a tie
                without a tie margin), or the pair is gold already with another answer.
        """
        pair = GoldPair(int(first), int(second), Outcome(answer))
        question = Pair(pair.first, pair.second)
        for item in question.items:
            if not 0 <= item < self.n_items:
                raise IndexError(f"clip {item} does not exist (0..{self.n_items - 1})")
        if self.config.structure == "blocks" and not self._clips.same_group(*question.items):
            raise ValueError(
                f"clips {list(question.items)} are in different prompt groups: a campaign kept "
                'in blocks (structure="blocks") asks about clips of one prompt'
            )
        question.interval(pair.answer, self.config.tie_margin, None)
        self._gold.add(pair)
        return pair

    @property
    def gold_pairs(self) -> tuple[GoldPair, ...]:
        """The gold pairs, in the order they were added."""
        return self._gold.pairs

    def next_gold(
        self,
        rater: Hashable | None,
        *,
        index: int | None = None,
        exclude: Sequence[int] = (),
        forbidden: Sequence[tuple[int, int]] = (),
        hold: bool = True,
    ) -> Task | None:
        """A gold task for `rater` with probability `gold_rate`, else None (engine.gold).

        The draw depends only on (gold_seed, rater, index): `index` counts the rater's tasks
        (default: the questions they answered plus their pending tasks). The pair is drawn
        among the gold pairs they have neither answered (as gold or as an ordinary pair) nor
        hold, leaving out pairs with a clip of `exclude` and the `forbidden` pairs (either
        order); None when none is left.
        """
        rate = self.config.gold_rate
        if rate <= 0 or not len(self._gold):
            return None
        mine = [t for t in self._tasks.pending if t.rater == rater]
        if index is None:
            index = self._tasks.answer_count(rater) + len(mine)
        seed = self.config.gold_seed
        if uniform_draw(seed, rater, index, "gold") >= rate:
            return None
        barred = {task.question.key[1:] for task in mine if task.is_pair}
        barred |= {key[1:] for key in self._tasks.asked(rater) if key[0] == Pair.kind}
        barred |= {(min(pair), max(pair)) for pair in forbidden}
        unused = self._gold.unused(rater, barred, exclude)
        if not unused:
            return None
        pair = unused[int(uniform_draw(seed, rater, index, "pair") * len(unused))]
        question = Pair(pair.first, pair.second)
        probabilities = self.predict(pair.first, pair.second, rater)
        task = self._tasks.new(rater, question, 0.0, probabilities, pair.answer)
        if hold:
            self._tasks.hold(task)
        return task

    def _seconds(self, task: Task) -> float:
        """The rater time a task of this kind takes: the clock's running mean of the answer
        times seen, shrunk toward CampaignConfig.pair_seconds, rating_seconds, the criterion
        questions' seconds or the stated K-set model (engine.task_choice)."""
        return self._clock.seconds(task_kind(task.question))

    def task_seconds(self, kind: str) -> float:
        """Expected seconds of rater time for a task kind: "pair", "level", or
        "kset:<mode>:<K>" (engine.task_choice.kset_kind), learned from `Judgment.seconds`."""
        return self._clock.seconds(kind)

    def _task(
        self,
        rater: Hashable | None,
        question: Question,
        choice: PairChoice | RatingChoice,
        hold: bool,
    ) -> Task:
        task = self._tasks.new(rater, question, choice.gain, choice.probabilities)
        if hold:
            self._tasks.hold(task)
        return task

    def answered_questions(self) -> dict[Hashable | None, tuple[Question, ...]]:
        """Per rater, the questions they answered among the labels applied: what `next_tasks`
        and `next_gold` never ask them again (pairs, ratings and K-sets; criteria per
        criterion)."""
        return self._tasks.answered_questions()

    def hold(self, task: Task) -> None:
        """Mark a task as pending (handed out, awaiting its answer)."""
        self._tasks.hold(task)

    def release(self, task_id: int) -> None:
        """Forget a pending task (its lease expired or it was skipped); unknown ids are an error."""
        self._tasks.release(task_id)

    @property
    def pending(self) -> tuple[Task, ...]:
        return self._tasks.pending

    # read-outs --------------------------------------------------------------------------------

    def leaderboard(self, level: float = 0.9) -> ClipSummary:
        """Per clip mean, sd, central `level` credible interval and rank (1 = best)."""
        return summarise_moments(*self._form.item_moments(), level)

    def weights(self) -> WeightSummary:
        """The criterion weights' posterior: global and per context (w + w_c)."""
        return self._form.weights()

    def gate_columns(self) -> tuple[Tensor, Tensor]:
        """The feature gate's W by column, `W[:, d]` (how feature d moves each weight): (D, K)
        posterior means and sds (engine.gating, MATH.md §8).

        Raises:
            ValueError: the campaign has no feature gate.
        """
        if not self.config.feature_dim:
            raise ValueError("this campaign has no feature gate (CampaignConfig.feature_dim)")
        layout, mean, cov = self._form.border()
        return gate_columns(layout, mean, cov)

    def gate_weights(
        self,
        features: Sequence[Sequence[float]] | Tensor,
        contexts: Sequence[Hashable | None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The criterion weights at feature vectors p, `w(p) = w + W p`, plus each context's
        offsets when `contexts` names them (None: the default context): their posterior mean
        (B, K) and covariance (B, K, K) (engine.gating, MATH.md §8). With `contexts`, a clip
        of these scores, features and context has prior mean `s' w(p)` over them.

        Raises:
            ValueError: the campaign has no feature gate, a bad feature vector, or an unknown
                context.
        """
        if not self.config.feature_dim:
            raise ValueError("this campaign has no feature gate (CampaignConfig.feature_dim)")
        if isinstance(features, Tensor):
            count = features.shape[0]
        else:
            features = list(features)
            count = len(features)
        values = check_features(features, count, self.config.feature_dim, self._like)
        index = None
        if contexts is not None:
            names = {name: c for c, name in enumerate(self.context_names)}
            chosen = [DEFAULT_CONTEXT if c is None else c for c in contexts]
            unknown = [c for c in chosen if c not in names]
            if unknown or len(chosen) != count:
                raise ValueError(f"one known context per feature vector; unknown: {unknown}")
            index = torch.tensor([names[c] for c in chosen], device=self.device)
        layout, mean, cov = self._form.border()
        return gate_weights(layout, mean, cov, values, index)

    def expected_kendall_tau(self) -> float:
        """How right the current ranking is expected to be: E[Kendall tau] between the posterior
        mean order and the truth, over the pairs in scope (engine.summaries)."""
        groups = self.groups if self.config.pair_scope == "group" else None
        return self._form.expected_kendall_tau(groups)

    def kendall_tau_draws(self, n_samples: int, generator: torch.Generator) -> Tensor:
        """(n_samples,) Kendall tau between posterior draws of the qualities and the posterior
        mean order, over the pairs `expected_kendall_tau` reads: its distribution, of which
        the mean estimates `expected_kendall_tau` (engine.summaries.sampled_kendall_tau).

        Args:
            n_samples: how many draws.
            generator: the source of the draws (on the campaign's device).

        Returns:
            (n_samples,) taus; NaN when no pair is in scope.
        """
        groups = self.groups if self.config.pair_scope == "group" else None
        return self._form.kendall_tau_draws(groups, n_samples, generator)

    def probability_better(self, first: int, second: int) -> float:
        """`P(f_first > f_second)` under the posterior."""
        index = torch.tensor([first, second], device=self.device)
        return float(probability_positive(*self._form.pair_moments(index[:1], index[1:])))

    def predict(self, first: int, second: int, rater: Hashable | None = None) -> tuple[float, ...]:
        """Predictive (loss, [tie,] win) probabilities of `first` vs `second` for `rater`."""
        index = torch.tensor([first, second], device=self.device)
        noise = self.noise_sd(rater) ** 2
        return tuple(predict(self._form, index[:1], index[1:], noise, self.pair_cuts)[0].tolist())

    @property
    def context_names(self) -> tuple[Hashable, ...]:
        return self._clips.context_names

    @property
    def log(self) -> list[Judgment]:
        """Every label applied so far, in order, each with the noise sd it was applied with."""
        return self._history.log

    @property
    def refits(self) -> tuple[tuple[int, Refit], ...]:
        """The prior refits applied so far (`fit_prior`, `apply_refit`, `adopt_refit`), each
        with the number of labels before it."""
        return self._history.refits

    def replay(self) -> Campaign:
        """A fresh campaign that re-runs this one's history: the same clip batches and labels,
        interleaved in the same order and with the noise each label was applied with. The
        posterior is bit-for-bit the same on the CPU."""
        fresh = self._replayed(len(self._history))
        fresh.config = self.config
        return fresh

    def _replayed(self, until: int) -> Campaign:
        """A fresh campaign that re-runs this one's first `until` history entries (`replay`)."""
        # the recorded refits are replayed as they happened, not re-fitted on the way
        quiet = replace(self._initial_config, refit_prior_at=())
        fresh = Campaign(quiet, device=self.device, dtype=self.dtype)
        fresh._raters = self._raters.with_set_noise()
        fresh._gold = self._gold.with_pairs()
        for entry in list(self._history)[:until]:
            if isinstance(entry, Refine):
                fresh.refine(entry.max_sweeps, entry.damping)
            elif isinstance(entry, Refit):
                fresh._apply_refit(entry)
            elif isinstance(entry, ClipsAdded):
                fresh._add_recorded_clips(entry)
            else:
                fresh.observe(entry)
        fresh._initial_config = self._initial_config
        return fresh

    def _add_recorded_clips(self, entry: ClipsAdded) -> None:
        """Add a clip batch as the history recorded it."""
        self.add_clips(
            entry.raw_scores if entry.raw_scores.shape[1] else None,
            count=entry.raw_scores.shape[0],
            contexts=entry.contexts,
            groups=entry.groups,
            features=entry.features,
        )


# a history entry as `pack_entries` gives it: a label batch as its labels' field values
PackedEntry = ClipsAdded | Refine | Refit | tuple[tuple[object, ...], ...]
_JUDGMENT_FIELDS = tuple(f.name for f in fields(Judgment))


def pack_entries(entries: Sequence[Entry]) -> list[PackedEntry]:
    """`entries` with each label batch as a tuple of its labels' field values (in `Judgment`'s
    field order), for another process (`unpack_entries`): a label pickled as itself gets a
    `__dict__` made for it, kept from then on, one more object for the cyclic GC to walk."""
    return [
        tuple(tuple(getattr(j, name) for name in _JUDGMENT_FIELDS) for j in entry)
        if isinstance(entry, tuple)
        else entry
        for entry in entries
    ]


def unpack_entries(packed: Sequence[PackedEntry]) -> list[Entry]:
    """The history entries `pack_entries` packed."""
    return [
        tuple(Judgment(*values) for values in entry)  # type: ignore[arg-type]
        if isinstance(entry, tuple)
        else entry
        for entry in packed
    ]


def reapplied(entries: Sequence[Entry]) -> Iterator[tuple[int, list[Judgment] | Entry, bool]]:
    """History entries taken since a refit's copy, in the segments a refit's adoption applies
    them in (`Campaign.adopt_refit`, `Campaign.catch_up`): each clip batch and refine alone,
    each run of label batches between them as one batch, closed at the end of the first label
    batch that brings it to REAPPLY_LABELS labels. Each with the count of entries up to its end
    and whether it is settled (a later entry could not join it: all but a trailing run of
    labels below REAPPLY_LABELS). A segment depends only on the entries up to its end, so
    catching up in rounds applies the same batches as adopting in one go."""
    labels: list[Judgment] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, tuple):
            labels.extend(entry)
            if len(labels) >= REAPPLY_LABELS:
                yield index + 1, labels, True
                labels = []
            continue
        if labels:
            yield index, labels, True
            labels = []
        yield index + 1, entry, True
    if labels:
        yield len(entries), labels, False


def _same_segment(entry: TakenEntry, segment: list[Judgment] | Entry) -> bool:
    """Whether a refitted copy's history entry (`RefitResult.taken`) is what applying
    `segment` recorded."""
    if isinstance(segment, list):
        return isinstance(entry, int) and entry == len(segment)
    return type(entry) is type(segment)


def like_tensor(like: Tensor, values: Sequence[float]) -> Tensor:
    """`values` as a tensor of `like`'s dtype and device."""
    return like.new_tensor([float(v) for v in values])


__all__ = [
    "DEFAULT_CRITERIA",
    "MAX_FEATURE_DIM",
    "REAPPLY_LABELS",
    "Campaign",
    "CampaignConfig",
    "Judgment",
    "PackedEntry",
    "pack_entries",
    "unpack_entries",
]
