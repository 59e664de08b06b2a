"""Which task next for a rater: a pair, a K-set or one clip's rating, by gain per second.

Gains (MATH.md §3): a pair and a K-set by `objectives.kset_information_gain` (a pair is the
K = 2 forced choice of the same rank-broken form, so the kinds compare on one footing), one
clip's emoji rating by the exact interval gain. Seconds per task kind come from a `TaskClock`:
a running mean of the answer times seen (answered-at minus shown-at), shrunk toward a stated
prior. Candidates: within each prompt, every combination of its clips when there are few,
else the combinations of its most uncertain clips (`kset_candidates`). Where the posterior
holds criterion values (engine.criteria), criterion questions on the candidate pairs compete
too, by their gain about the clips' qualities or about everything (MATH.md §9). Dense
posterior only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine.criteria import CriterionGain, criterion_gains, criterion_moments
from engine.likelihoods import level_cuts
from engine.objectives import (
    expected_information_gain,
    kset_information_gain,
    outcome_probabilities,
)
from engine.questions import KSET_MODES, KSET_SIZES, Criterion, KSet, Level, Pair
from engine.state import Posterior

# Prior seconds per task (stated rater-time model; learned from timestamps as answers come):
# a pair 6 s, one clip's rating 4 s, a K-set 4 s to take in the task plus per clip 2.5 s
# (best), 3 s (best and worst) or 4 s (a full order).
PAIR_SECONDS = 6.0
RATING_SECONDS = 4.0
CRITERION_SECONDS = 6.0  # a pair again, asked about one criterion
KSET_BASE_SECONDS = 4.0
KSET_SECONDS_PER_CLIP = {"best": 2.5, "best_worst": 3.0, "rank": 4.0}
PRIOR_TASKS = 5.0  # the prior counts as this many answers of each kind
MAX_TASK_SECONDS = 600.0  # a longer answer is a rater who stepped away: counted as this long
MAX_PER_GROUP = 20  # candidate K-sets per prompt and size


def task_kind(question: Pair | Level | KSet | Criterion) -> str:
    """The clock's key: "pair", "level", "criterion", or "kset:<mode>:<K>"."""
    if isinstance(question, KSet):
        return kset_kind(len(question.items), question.mode)
    return question.kind


def kset_kind(size: int, mode: str) -> str:
    """The clock's key of a K-set of `size` clips (size 2 is a pair)."""
    return "pair" if size == 2 else f"kset:{mode}:{size}"


def prior_seconds(kind: str) -> float:
    """The stated rater-time model's seconds for a task kind."""
    if kind == "pair":
        return PAIR_SECONDS
    if kind == "level":
        return RATING_SECONDS
    if kind == Criterion.kind:
        return CRITERION_SECONDS
    _, mode, size = kind.split(":")
    return KSET_BASE_SECONDS + KSET_SECONDS_PER_CLIP[mode] * int(size)


@dataclass
class TaskClock:
    """Seconds per task kind: (PRIOR_TASKS x prior + sum of seen) / (PRIOR_TASKS + count).

    `priors` overrides the stated model's prior seconds of a kind (a campaign's own
    `pair_seconds` and `rating_seconds`)."""

    totals: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    priors: dict[str, float] = field(default_factory=dict)

    def observe(
        self, question: Pair | Level | KSet | Criterion, shown_at: float, answered_at: float
    ) -> None:
        """One answer's time (timestamps in seconds).

        Raises:
            ValueError: a timestamp that is not finite, or an answer before its showing.
        """
        if not (math.isfinite(shown_at) and math.isfinite(answered_at)):
            raise ValueError("task timestamps must be finite")
        if answered_at < shown_at:
            raise ValueError(f"answered at {answered_at} before shown at {shown_at}")
        kind = task_kind(question)
        self.totals[kind] = self.totals.get(kind, 0.0) + min(
            answered_at - shown_at, MAX_TASK_SECONDS
        )
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def seconds(self, kind: str) -> float:
        """The running mean for `kind`, shrunk toward its prior."""
        count = self.counts.get(kind, 0)
        total = self.totals.get(kind, 0.0)
        prior = self.priors.get(kind)
        if prior is None:
            prior = prior_seconds(kind)
        return (PRIOR_TASKS * prior + total) / (PRIOR_TASKS + count)


def kset_candidates(
    groups: Tensor, var: Tensor, size: int, max_per_group: int = MAX_PER_GROUP
) -> Tensor:
    """(C, size) clip indices: per prompt, the combinations of `size` of its L most uncertain
    clips (largest marginal variance), L the most with C(L, size) <= max_per_group (all of a
    prompt's clips when it has at most L). Prompts with fewer than `size` clips give none."""
    if size < 2:
        raise ValueError(f"a candidate set has at least 2 clips, got {size}")
    device = groups.device
    top = size
    while math.comb(top + 1, size) <= max_per_group:
        top += 1
    by_var = torch.argsort(var, descending=True, stable=True)
    order = by_var[torch.argsort(groups[by_var], stable=True)]  # by prompt, then uncertainty
    _, counts = torch.unique_consecutive(groups[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    combinations = torch.combinations(torch.arange(top, device=device), size)  # (P, size)
    valid = combinations[:, -1].unsqueeze(0) < counts.unsqueeze(1)  # (G, P)
    positions = starts.view(-1, 1, 1) + combinations.unsqueeze(0)  # (G, P, size)
    # each row by clip id: the order KSet.comparisons applies, so its gain is that answer's
    return order[positions[valid]].sort(dim=1).values


@dataclass(frozen=True)
class TaskChoice:
    """The chosen task, its gain in bits, its expected seconds, and its answers'
    probabilities (`kset_answers` order; a pair's: first wins, second wins; a rating's: its
    levels, lowest first)."""

    question: Pair | Level | KSet | Criterion
    gain: float
    seconds: float
    probabilities: tuple[float, ...]

    @property
    def gain_per_second(self) -> float:
        return self.gain / self.seconds


def choose_task(
    posterior: Posterior,
    groups: Tensor,
    clock: TaskClock,
    *,
    noise_var: float,
    sizes: Sequence[int] = (2, 3, 4),
    mode: str = "best",
    thresholds: Sequence[float] | None = None,
    max_per_group: int = MAX_PER_GROUP,
    criteria: Sequence[str] = (),
    criterion_gain: CriterionGain = "quality",
    criterion_noise_scale: float = 1.0,
) -> TaskChoice:
    """The task with the most information per second of rater time (MATH.md §3, K-sets).

    Args:
        posterior: the dense posterior.
        groups: (n,) prompt of each clip; pairs and K-sets stay inside a prompt.
        clock: seconds per task kind.
        noise_var: the rater's noise variance.
        sizes: the set sizes offered: 2 is a pair, 3..6 K-sets of `mode`.
        mode: what a K-set asks, "best", "best_worst" or "rank".
        thresholds: emoji cuts; given, single-clip ratings compete too.
        max_per_group: candidate sets per prompt and size.
        criteria: the asked criteria, in the order of the posterior's criteria block
            (engine.criteria); given, criterion questions on the candidate pairs compete too.
        criterion_gain: what their gain counts (engine.criteria.CriterionQuestions.gain).
        criterion_noise_scale: a criterion answer's noise sd per unit of the rater's
            (engine.criteria.CriterionQuestions.noise_scale).

    Raises:
        ValueError: an unknown mode or a size outside 2..6; no candidate at all.
    """
    mean = posterior.item_mean
    best = choose_task_from_moments(
        mean,
        posterior.item_cov,
        groups,
        clock,
        noise_var=noise_var,
        sizes=sizes,
        mode=mode,
        thresholds=thresholds,
        max_per_group=max_per_group,
    )
    var = posterior.item_cov.diagonal()
    if criteria:
        pairs = kset_candidates(groups, var, 2, max_per_group)
        n_asked = len(criteria)
        first = pairs[:, 0].repeat_interleave(n_asked)
        second = pairs[:, 1].repeat_interleave(n_asked)
        slot = torch.arange(n_asked, device=mean.device).repeat(pairs.shape[0])
        cuts = mean.new_zeros(1)  # forced choice, as the pairs and K-sets here
        criterion_noise = noise_var * criterion_noise_scale**2
        gains = criterion_gains(
            posterior, first, second, slot, n_asked, criterion_noise, cuts, criterion_gain
        )
        seconds = clock.seconds(Criterion.kind)
        if gains.numel():
            pick = int(torch.argmax(gains))
            if best is None or float(gains[pick]) / seconds > best.gain_per_second:
                at = slice(pick, pick + 1)
                mu, var_z, _ = criterion_moments(
                    posterior, first[at], second[at], slot[at], n_asked
                )
                answers = outcome_probabilities(mu, var_z, criterion_noise, cuts)[0]
                question = Criterion(int(first[pick]), int(second[pick]), criteria[int(slot[pick])])
                # a pair's order: first wins, second wins
                probabilities = (float(answers[1]), float(answers[0]))
                best = TaskChoice(question, float(gains[pick]), seconds, probabilities)
    return best


def choose_task_from_moments(
    mean: Tensor,
    cov: Tensor,
    groups: Tensor,
    clock: TaskClock,
    *,
    noise_var: float,
    sizes: Sequence[int] = (2, 3, 4),
    mode: str = "best",
    thresholds: Sequence[float] | None = None,
    max_per_group: int = MAX_PER_GROUP,
    shrink: tuple[Tensor, Tensor] | None = None,
) -> TaskChoice:
    """`choose_task` on the clips' joint moments: (n,) `mean` and (n, n) `cov`, less
    `V diag(k) V'` when `shrink` = (V (n, Q), k (Q,)) is given (the pending tasks' believer
    shrink, MATH.md §4: only the candidates' K x K blocks of it are formed). Other arguments
    and errors as `choose_task`'s."""
    if mode not in KSET_MODES:
        raise ValueError(f"mode is one of {KSET_MODES}, got {mode!r}")
    if any(not 2 <= size <= 6 for size in sizes):
        raise ValueError(f"set sizes are 2 (a pair) to 6, got {list(sizes)}")
    var = cov.diagonal()
    if shrink is not None:
        columns, factor = shrink
        var = var - (columns.square() * factor).sum(-1)
    best: TaskChoice | None = None
    for size in sorted(set(sizes)):
        candidates = kset_candidates(groups, var, size, max_per_group)
        if candidates.shape[0] == 0:
            continue
        kind = kset_kind(size, mode)
        blocks = cov[candidates.unsqueeze(-1), candidates.unsqueeze(-2)]  # C x size x size
        if shrink is not None:
            scaled = columns[candidates]  # C x size x Q
            blocks = blocks - (scaled * factor) @ scaled.transpose(-1, -2)
        result = kset_information_gain(
            mean[candidates], blocks, "best" if size == 2 else mode, noise_var
        )
        seconds = clock.seconds(kind)
        pick = int(torch.argmax(result.gain))
        gain = float(result.gain[pick])
        if best is None or gain / seconds > best.gain_per_second:
            items = tuple(candidates[pick].tolist())
            question = Pair(*items) if size == 2 else KSet(items, mode)
            probabilities = tuple(result.probabilities[pick].tolist())
            best = TaskChoice(question, gain, seconds, probabilities)
    if thresholds is not None:
        cuts = level_cuts(thresholds, mean)
        gains = expected_information_gain(mean, var, noise_var, cuts)
        pick = int(torch.argmax(gains))
        seconds = clock.seconds(Level.kind)
        if best is None or float(gains[pick]) / seconds > best.gain_per_second:
            levels = outcome_probabilities(mean[pick], var[pick], noise_var, cuts)
            best = TaskChoice(Level(pick), float(gains[pick]), seconds, tuple(levels.tolist()))
    if best is None:
        raise ValueError("no prompt has enough clips for the set sizes offered")
    return best


@dataclass(frozen=True)
class KSetOffer:
    """K-sets a campaign may hand out (`CampaignConfig.kset`): `size` clips of one prompt
    asking `mode` ("best", "best_worst" or "rank"), whenever `choose_task` finds the best
    such set worth more per second than the best pair (MATH.md §3, K-sets). `seconds` is
    the prior seconds of such a task (None: the stated model's, `prior_seconds`); answer
    times refine it either way.

    Raises:
        ValueError: a size outside 3..6, an unknown mode, or seconds not finite and > 0.
    """

    size: int = 4
    mode: str = "best"
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in KSET_MODES:
            raise ValueError(f"a K-set's mode is one of {KSET_MODES}, got {self.mode!r}")
        if self.size not in KSET_SIZES:
            raise ValueError(
                f"a K-set shows {KSET_SIZES.start} to {KSET_SIZES.stop - 1} clips, got {self.size}"
            )
        if self.seconds is not None and not (0 < self.seconds < math.inf):
            raise ValueError(f"a K-set's seconds must be finite and > 0, got {self.seconds}")


__all__ = [
    "CRITERION_SECONDS",
    "KSET_BASE_SECONDS",
    "KSET_SECONDS_PER_CLIP",
    "PAIR_SECONDS",
    "PRIOR_TASKS",
    "RATING_SECONDS",
    "KSetOffer",
    "TaskChoice",
    "TaskClock",
    "choose_task",
    "choose_task_from_moments",
    "kset_candidates",
    "kset_kind",
    "prior_seconds",
    "task_kind",
]
