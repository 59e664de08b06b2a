"""What a rater is asked: one `Question` type, one class per kind, registered in `QUESTION_KINDS`.

Every answer the engine knows is one interval event on a direction `z = a . theta` (docs/MATH.md
§2): a comparison of clips i and j on `f_i - f_j`, an emoji level of clip i on `f_i`. A kind
says which clips it shows, its direction, how an answer becomes the event's interval, how many
answers a random click chooses among (the lapse model), and what "asked before" means for a
rater. The vectorised numerics (engine.update, engine.structured, the selection kernels) carry
directions as (first, second) index tensors, with `second = NO_SECOND` for a single clip; that
encoding lives here and nowhere else in the project. A new kind is one new class here, added
to `QUESTION_KINDS`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from engine.likelihoods import Outcome, level_interval, pair_interval

NO_SECOND = -1  # `second` of a single-clip direction in the event and task tensors

Answer = Outcome | int  # a comparison's outcome; an emoji level (0 = worst)


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


QUESTION_KINDS: dict[str, type[Pair] | type[Level]] = {kind.kind: kind for kind in (Pair, Level)}


def question_of(first: int, second: int) -> Pair | Level:
    """The question whose direction is (first, second): the inverse of `Question.direction`,
    for code that holds directions in tensors."""
    return Level(int(first)) if second == NO_SECOND else Pair(int(first), int(second))


__all__ = [
    "NO_SECOND",
    "QUESTION_KINDS",
    "Answer",
    "Level",
    "Pair",
    "Question",
    "question_of",
]
