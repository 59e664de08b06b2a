"""What a rater is asked: one `Question` type, one class per kind, registered in `QUESTION_KINDS`.

Every answer the engine knows is one interval event on a direction `z = a . theta` (docs/MATH.md
§2): a comparison of clips i and j on `f_i - f_j`, an emoji level of clip i on `f_i`. A kind
says which clips it shows, its direction, how an answer becomes the event's interval, how many
answers a random click chooses among (the lapse model), and what "asked before" means for a
rater. A K-set (K clips of one prompt: pick the best, best and worst, or order them) is
broken into forced-choice comparisons on pair directions (`answer_events`). A pair may also be
answered "both good" or "both bad" where the campaign allows it: a tie on `f_i - f_j` and a
level event on the pair's sum `f_i + f_j` (`answer_specs`, docs/MATH.md §2). A criterion
question ("which is better aligned?") is a pair direction plus a border part on the criterion
coordinates, which the campaign adds (docs/MATH.md §9).
The vectorised numerics (engine.update, engine.structured, the selection kernels) carry
directions as (first, second) index tensors, with `second = NO_SECOND` for a single clip; that
encoding lives here and nowhere else in the project. A new kind is one new class here, added
to `QUESTION_KINDS`.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, NamedTuple, Protocol

from engine.likelihoods import Outcome, level_interval, pair_interval

NO_SECOND = -1  # `second` of a single-clip direction in the event and task tensors

Answer = Outcome | int | tuple[int, ...] | str  # an outcome; a level; K-set clips; both good/bad

BOTH_GOOD, BOTH_BAD = "both_good", "both_bad"  # a tie that says where the pair stands
BOTH_ANSWERS = (BOTH_GOOD, BOTH_BAD)


class Question(Protocol):
    """A question of one kind (the classes below are its implementations)."""

    kind: ClassVar[str]

    @property
    def items(self) -> tuple[int, ...]:
        """The clips shown, in the order the engine asks about them."""
        ...

    @property
    def direction(self) -> tuple[int, int]:
        """(first, second) of the event's direction; second is NO_SECOND for one clip."""
        ...

    @property
    def key(self) -> tuple[str, int, ...]:
        """What "asked before" means: equal keys are the same question to a rater."""
        ...

    @classmethod
    def from_key(cls, key: tuple) -> Question:
        """A question whose `key` is `key` (a pair's clips come in key order)."""
        ...

    def interval(
        self, answer: Answer, tie_margin: float, thresholds: Sequence[float] | None
    ) -> tuple[float, float]:
        """The interval on the rater's noisy z that `answer` reports. Raises ValueError for an
        answer this question cannot have under the campaign's tie margin and thresholds."""
        ...

    def n_answers(self, tie_margin: float, thresholds: Sequence[float] | None) -> int:
        """How many answers a rater clicking at random chooses among."""
        ...


@dataclass(frozen=True)
class Pair:
    """ "Which of these two clips is better?": an outcome of `first` against `second`
    (win = first is better; a tie when the campaign has a tie margin). MATH.md §2."""

    first: int
    second: int
    kind: ClassVar[str] = "pair"

    def __post_init__(self) -> None:
        if self.first < 0 or self.second < 0:
            raise IndexError(f"clip indices must be >= 0, got ({self.first}, {self.second})")
        if self.first == self.second:
            raise ValueError("a comparison needs two different clips")

    @property
    def items(self) -> tuple[int, ...]:
        return (self.first, self.second)

    @property
    def direction(self) -> tuple[int, int]:
        return (self.first, self.second)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.kind, min(self.first, self.second), max(self.first, self.second))

    @classmethod
    def from_key(cls, key: tuple) -> Pair:
        return cls(key[1], key[2])

    def interval(
        self, answer: Answer, tie_margin: float, thresholds: Sequence[float] | None
    ) -> tuple[float, float]:
        if not isinstance(answer, Outcome):
            try:
                answer = Outcome(answer)
            except ValueError:
                raise ValueError(
                    f"a comparison's answer is one of {[o.value for o in Outcome]}, got {answer!r}"
                ) from None
        return pair_interval(answer, tie_margin)

    def n_answers(self, tie_margin: float, thresholds: Sequence[float] | None) -> int:
        return 3 if tie_margin > 0 else 2


@dataclass(frozen=True)
class Level:
    """ "How good is this clip?": an emoji level of `item` (0 = worst), ordered probit on the
    campaign's thresholds. MATH.md §2."""

    item: int
    kind: ClassVar[str] = "level"

    def __post_init__(self) -> None:
        if self.item < 0:
            raise IndexError(f"clip indices must be >= 0, got {self.item}")

    @property
    def items(self) -> tuple[int, ...]:
        return (self.item,)

    @property
    def direction(self) -> tuple[int, int]:
        return (self.item, NO_SECOND)

    @property
    def key(self) -> tuple[str, int]:
        return (self.kind, self.item)

    @classmethod
    def from_key(cls, key: tuple) -> Level:
        return cls(key[1])

    def interval(
        self, answer: Answer, tie_margin: float, thresholds: Sequence[float] | None
    ) -> tuple[float, float]:
        if thresholds is None:
            raise ValueError("this campaign has no emoji scale")
        if not isinstance(answer, numbers.Integral) or isinstance(answer, bool):
            raise ValueError(f"an emoji rating's answer is a level (int), got {answer!r}")
        return level_interval(int(answer), thresholds)

    def n_answers(self, tie_margin: float, thresholds: Sequence[float] | None) -> int:
        return 1 + len(thresholds or ())


@dataclass(frozen=True)
class Criterion:
    """ "Which of these two clips is better on `criterion`?" (better aligned with the prompt,
    safer, finer, ...): an outcome of `first` against `second` on the criterion values,
    an interval event on `g_first,k - g_second,k`, ties as for a pair. MATH.md §9."""

    first: int
    second: int
    criterion: str
    kind: ClassVar[str] = "criterion"

    def __post_init__(self) -> None:
        if self.first < 0 or self.second < 0:
            raise IndexError(f"clip indices must be >= 0, got ({self.first}, {self.second})")
        if self.first == self.second:
            raise ValueError("a comparison needs two different clips")
        if not isinstance(self.criterion, str) or not self.criterion:
            raise ValueError(f"a criterion question names its criterion, got {self.criterion!r}")

    @property
    def items(self) -> tuple[int, ...]:
        return (self.first, self.second)

    @property
    def direction(self) -> tuple[int, int]:
        """The clip part of the direction; the criterion part is a border part (§9)."""
        return (self.first, self.second)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (
            self.kind,
            self.criterion,
            min(self.first, self.second),
            max(self.first, self.second),
        )

    @classmethod
    def from_key(cls, key: tuple) -> Criterion:
        return cls(key[2], key[3], key[1])

    def interval(
        self, answer: Answer, tie_margin: float, thresholds: Sequence[float] | None
    ) -> tuple[float, float]:
        return Pair(self.first, self.second).interval(answer, tie_margin, thresholds)

    def n_answers(self, tie_margin: float, thresholds: Sequence[float] | None) -> int:
        return 3 if tie_margin > 0 else 2


KSET_MODES = ("best", "best_worst", "rank")
KSET_SIZES = range(3, 7)  # K clips in one task: fewer is a pair, more is a rating page
KSET_INTERVAL = (0.0, math.inf)  # a broken-out comparison: the winner's noisy difference > 0


@dataclass(frozen=True)
class KSet:
    """ "Which of these K clips of one prompt is best?" (`mode="best"`), "... best and which
    worst?" (`"best_worst"`), or "order them" (`"rank"`). MATH.md §2, "K-sets".

    An answer is broken into forced-choice comparisons on existing pair directions (rank
    breaking): best beats each other clip; with the worst, each other clip also beats it; an
    order is its K - 1 consecutive wins. Each comparison is one interval event `(0, inf)` on
    `f_winner - f_loser`, so ADF, EP and replay apply them as they apply pairs. The answer is
    a tuple of clip ids: `(best,)`, `(best, worst)`, or the K clips best first.
    """

    items: tuple[int, ...]
    mode: str = "best"
    kind: ClassVar[str] = "kset"

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(int(i) for i in self.items))
        if self.mode not in KSET_MODES:
            raise ValueError(f"a K-set's mode is one of {KSET_MODES}, got {self.mode!r}")
        if len(self.items) not in KSET_SIZES:
            raise ValueError(
                f"a K-set shows {KSET_SIZES.start} to {KSET_SIZES.stop - 1} clips, "
                f"got {len(self.items)}"
            )
        if any(i < 0 for i in self.items):
            raise IndexError(f"clip indices must be >= 0, got {self.items}")
        if len(set(self.items)) != len(self.items):
            raise ValueError(f"a K-set shows distinct clips, got {self.items}")

    @property
    def direction(self) -> tuple[int, int]:
        raise TypeError("a K-set answer is several events: use `comparisons(answer)`")

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, self.mode, *sorted(self.items))

    @classmethod
    def from_key(cls, key: tuple) -> KSet:
        return cls(key[2:], key[1])

    def comparisons(self, answer: Answer) -> tuple[tuple[int, int], ...]:
        """The (winner, loser) comparisons an answer is broken into, in the order applied (the
        other clips by id).

        Raises:
            ValueError: the answer names a clip not shown, repeats one, or has the wrong
                length for the mode.
        """
        if isinstance(answer, numbers.Integral) and not isinstance(answer, bool):
            answer = (int(answer),)
        if isinstance(answer, str) or not isinstance(answer, Sequence):
            raise ValueError(f"a K-set's answer is a tuple of clip ids, got {answer!r}")
        if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in answer):
            raise ValueError(f"a K-set's answer is a tuple of clip ids, got {answer!r}")
        named = tuple(int(i) for i in answer)
        size = {"best": 1, "best_worst": 2, "rank": len(self.items)}[self.mode]
        if len(named) != size:
            raise ValueError(f"a {self.mode!r} K-set answer names {size} clips, got {named}")
        if len(set(named)) != len(named):
            raise ValueError(f"a K-set answer names each clip once, got {named}")
        shown = set(self.items)
        if not shown.issuperset(named):
            raise ValueError(f"answer {named} names clips not shown in {self.items}")
        if self.mode == "rank":
            return tuple(itertools.pairwise(named))
        # by clip id, not by where the page showed them: ADF depends on the order of steps,
        # and the same answer must give the same posterior however the clips were laid out
        others = sorted(self.items)
        best = named[0]
        wins = tuple((best, other) for other in others if other != best)
        if self.mode == "best":
            return wins
        worst = named[1]
        return wins + tuple((other, worst) for other in others if other not in named)

    def interval(
        self, answer: Answer, tie_margin: float, thresholds: Sequence[float] | None
    ) -> tuple[float, float]:
        """The interval of each comparison (a forced choice: no tie option in a K-set).
        Raises ValueError for an answer `comparisons` refuses."""
        self.comparisons(answer)
        return KSET_INTERVAL

    def n_answers(self, tie_margin: float, thresholds: Sequence[float] | None) -> int:
        """Each broken-out comparison is a forced choice: a random click picks one of 2."""
        return 2

    def n_outcomes(self) -> int:
        """How many distinct answers the task has (best K, best and worst K (K - 1), K!)."""
        k = len(self.items)
        return {"best": k, "best_worst": k * (k - 1), "rank": math.factorial(k)}[self.mode]


def kset_answers(size: int, mode: str) -> tuple[tuple[int, ...], ...]:
    """Every answer a K-set of `size` clips can have, as positions 0..size-1 (best K, best and
    worst K (K - 1), orders K!); `size` 2 is a forced-choice pair. Raises ValueError for an
    unknown mode or fewer than 2 clips."""
    if mode not in KSET_MODES:
        raise ValueError(f"a K-set's mode is one of {KSET_MODES}, got {mode!r}")
    if size < 2:
        raise ValueError(f"a K-set needs at least 2 clips, got {size}")
    if mode == "best":
        return tuple((b,) for b in range(size))
    if mode == "best_worst":
        return tuple(itertools.permutations(range(size), 2))
    return tuple(itertools.permutations(range(size)))


def answer_events(
    question: Pair | Level | KSet | Criterion,
    answer: Answer,
    tie_margin: float,
    thresholds: Sequence[float] | None,
) -> tuple[tuple[int, int, float, float], ...]:
    """The interval events `(first, second, lo, hi)` an answer becomes: one for a pair or an
    emoji level, the rank-broken comparisons of a K-set. Raises ValueError for a bad answer."""
    if isinstance(question, KSet):
        return tuple((win, loss, *KSET_INTERVAL) for win, loss in question.comparisons(answer))
    return ((*question.direction, *question.interval(answer, tie_margin, thresholds)),)


class EventSpec(NamedTuple):
    """One interval event of an answer: on z = f_first + sign f_second (sign -1: a
    difference; +1: the pair's sum), observed with the rater's noise sd times `noise_scale`."""

    first: int
    second: int
    lo: float
    hi: float
    sign: float = -1.0
    noise_scale: float = 1.0


def answer_specs(
    question: Pair | Level | KSet | Criterion,
    answer: Answer,
    tie_margin: float,
    thresholds: Sequence[float] | None,
    both_threshold: float | None = None,
) -> tuple[EventSpec, ...]:
    """The events an answer becomes (`answer_events`), and for a pair answered "both good" or
    "both bad" (where `both_threshold` tau is set) two: the tie on f_i - f_j, and the pair's
    mean above tau (good) or below -tau (bad), i.e. f_i + f_j beyond 2 tau, seen with each
    clip's noise: sd sqrt(2) sigma on the sum (docs/MATH.md §2, "both good").

    A label's events are asked for several times (validation, the update, the rater's grid):
    the answer is kept (`ANSWER_SPECS_KEPT` recent ones; questions and answers are immutable,
    and the answer's type is part of the key, as "win" equals Outcome.WIN).

    Raises:
        ValueError: a bad answer, or "both" where the campaign does not allow it.
    """
    kept = None if thresholds is None else tuple(thresholds)
    return _answer_specs(question, type(answer), answer, tie_margin, kept, both_threshold)


ANSWER_SPECS_KEPT = 4096  # answers whose events `answer_specs` keeps: a few batches' labels


@lru_cache(maxsize=ANSWER_SPECS_KEPT)
def _answer_specs(
    question: Pair | Level | KSet | Criterion,
    _: type,
    answer: Answer,
    tie_margin: float,
    thresholds: tuple[float, ...] | None,
    both_threshold: float | None,
) -> tuple[EventSpec, ...]:
    """`answer_specs`, kept per (question, answer type, answer, cuts)."""
    if isinstance(question, Pair) and answer in BOTH_ANSWERS:
        if both_threshold is None:
            raise ValueError("this campaign does not take 'both good' or 'both bad' answers")
        first, second = question.direction
        tie = EventSpec(first, second, *pair_interval(Outcome.TIE, tie_margin))
        level = (
            (2 * both_threshold, math.inf)
            if answer == BOTH_GOOD
            else (
                -math.inf,
                -2 * both_threshold,
            )
        )
        return (tie, EventSpec(first, second, *level, sign=1.0, noise_scale=math.sqrt(2)))
    return tuple(
        EventSpec(*event) for event in answer_events(question, answer, tie_margin, thresholds)
    )


QUESTION_KINDS: dict[str, type[Pair] | type[Level] | type[KSet] | type[Criterion]] = {
    kind.kind: kind for kind in (Pair, Level, KSet, Criterion)
}


def question_of_key(key: tuple) -> Question:
    """A question whose `Question.key` is `key`: the inverse of the key, for records that keep
    keys only (engine.tasks)."""
    return QUESTION_KINDS[key[0]].from_key(key)


def question_of(first: int, second: int) -> Pair | Level:
    """The question whose direction is (first, second): the inverse of `Question.direction`,
    for code that holds directions in tensors."""
    return Level(int(first)) if second == NO_SECOND else Pair(int(first), int(second))


__all__ = [
    "BOTH_ANSWERS",
    "BOTH_BAD",
    "BOTH_GOOD",
    "KSET_INTERVAL",
    "KSET_MODES",
    "KSET_SIZES",
    "NO_SECOND",
    "QUESTION_KINDS",
    "Answer",
    "Criterion",
    "EventSpec",
    "KSet",
    "Level",
    "Pair",
    "Question",
    "answer_events",
    "answer_specs",
    "kset_answers",
    "question_of",
    "question_of_key",
]
