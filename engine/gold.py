"""Gold questions: pairs whose answer the operator knows, mixed into a rater's tasks to learn
how reliable the rater is (docs/MATH.md §3, gold paragraph). One owner for these facts (the
gold pairs, which rater answered which); the campaign asks it.

A gold answer is never an event on the clips. It is scored on the rater's (keep, sigma) grid
(engine.reliability) as a label whose `z = f_first - f_second` is known to be the point

    z* = +m (win), -m (loss), 0 (tie),    m = gold_margin x the campaign's noise sd,

so that `Z(sigma) = P(z* + eps in the answer's interval)` with `eps ~ N(0, sigma^2)`, and the
answer's likelihood is `keep Z(sigma) + (1 - keep) / L`: the ordinary labels' lapse model with
the posterior marginal `N(mu, s2)` replaced by the point mass at z*.

Which task is gold is drawn from a hash of (campaign seed, rater, the rater's task index): the
same campaign seed and the same sequence of requests give the same gold tasks, on any machine
and in any process (Python's own `hash` of a string changes between processes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from engine.likelihoods import Outcome

_UNIT = float(2**64)  # a draw's 8 hash bytes as an integer, divided by this: uniform in [0, 1)


@dataclass(frozen=True)
class GoldPair:
    """A pair whose `answer` (of `first` against `second`) the operator knows."""

    first: int
    second: int
    answer: Outcome

    @property
    def key(self) -> tuple[int, int]:
        """(low, high): the pair in either order."""
        return (min(self.first, self.second), max(self.first, self.second))


def gold_point(answer: Outcome, margin: float) -> float:
    """z* of a gold pair whose answer is `answer`: +margin, -margin or 0 (module docstring)."""
    return {Outcome.WIN: margin, Outcome.LOSS: -margin, Outcome.TIE: 0.0}[Outcome(answer)]


def uniform_draw(seed: int, rater: Hashable | None, index: int, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, rater, index, purpose): the same in every
    process, which Python's salted `hash` is not."""
    text = f"{seed}|{rater!r}|{index}|{purpose}".encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _UNIT


class GoldBook:
    """The campaign's gold pairs in the order they were added, and per rater the gold pairs
    they answered (by key: never asked again)."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[int, int], GoldPair] = {}
        self._answered: dict[Hashable | None, set[tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def pairs(self) -> tuple[GoldPair, ...]:
        return tuple(self._pairs.values())

    def get(self, first: int, second: int) -> GoldPair | None:
        """The gold pair of these two clips (either order), or None."""
        return self._pairs.get((min(first, second), max(first, second)))

    def add(self, pair: GoldPair) -> bool:
        """Add a gold pair; False when that very pair is gold already (nothing changes).

        Raises:
            ValueError: the pair is gold already with another answer.
        """
        known = self._pairs.get(pair.key)
        if known is not None:
            same = known == pair or (
                known.first == pair.second
                and known.second == pair.first
                and known.answer == _reverse(pair.answer)
            )
            if not same:
                raise ValueError(
                    f"clips {pair.key} are a gold pair already, with another answer "
                    f"({known.first} vs {known.second}: {known.answer.value})"
                )
            return False
        self._pairs[pair.key] = pair
        return True

    def answered(self, rater: Hashable | None, keys: Iterable[tuple[int, int]]) -> None:
        self._answered.setdefault(rater, set()).update(keys)

    def unused(
        self, rater: Hashable | None, barred: set[tuple[int, int]], excluded: Sequence[int]
    ) -> list[GoldPair]:
        """The gold pairs `rater` has not answered, in the order added, leaving out the pairs
        in `barred` (pending for them, or judged as ordinary pairs) and pairs showing a clip of
        `excluded`."""
        done = self._answered.get(rater, set())
        out = set(excluded)
        return [
            pair
            for key, pair in self._pairs.items()
            if key not in done and key not in barred and not out.intersection(key)
        ]

    def with_pairs(self) -> GoldBook:
        """A new book with the same gold pairs and no answers (what a replay starts from)."""
        book = GoldBook()
        book._pairs = dict(self._pairs)
        return book


def _reverse(answer: Outcome) -> Outcome:
    return {Outcome.WIN: Outcome.LOSS, Outcome.LOSS: Outcome.WIN, Outcome.TIE: Outcome.TIE}[answer]


__all__ = ["GoldBook", "GoldPair", "gold_point", "uniform_draw"]
