"""What each rater of a campaign answered, as the event loop sees it: `Answered`.

The engine's task book owns what each rater answered among the labels applied to the posterior
(`Campaign.answered_questions`); its choices for a rater leave those out by themselves. Between a
label's commit and its application (the pump gathers labels into batches) only the service
knows it. This object keeps those waiting answers per rater, drained as the engine applies
them, and a copy of the engine's record: read from the engine once its state is loaded
(snapshot and replay), then extended by each batch the engine applied. The checks on the event
loop (`TaskQueue.barred`, on every hand-out) read the copy and never wait for the engine; an
engine call is sent only the waiting answers.

A prior refit the engine adopts keeps its task book, so the copy stays true; an engine that
stopped takes its runtime with it, and the next load reads the record again.

Answers are task keys (api/task_keys.py): a criterion question answered counts as its pair.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping

Key = tuple[int, ...]


class Answered:
    """Per rater: the engine's record of their applied answers (a copy) and their answers
    committed and not applied yet."""

    def __init__(self) -> None:
        self._applied: dict[Hashable, set[Key]] = {}
        self._waiting: dict[Hashable, Counter[Key]] = {}

    def load(self, applied: Mapping[Hashable, Iterable[Key]]) -> None:
        """Take the engine's record after a load (nothing waits then: the load applied every
        committed label)."""
        self._applied = {rater: set(keys) for rater, keys in applied.items()}
        self._waiting = {}

    def committed(self, rater_id: Hashable, key: Key) -> None:
        """A label of `rater_id` was committed; it waits for the engine."""
        self._waiting.setdefault(rater_id, Counter())[key] += 1

    def applied(self, answers: Iterable[tuple[Hashable, Key]]) -> None:
        """The engine applied these committed labels (rater, key): they leave the waiting ones
        for the copy of its record."""
        for rater_id, key in answers:
            waiting = self._waiting.get(rater_id)
            if waiting is not None:
                waiting[key] -= 1
                if waiting[key] <= 0:
                    del waiting[key]
                if not waiting:
                    del self._waiting[rater_id]
            self._applied.setdefault(rater_id, set()).add(key)

    def waiting(self, rater_id: Hashable) -> list[Key]:
        """The keys of `rater_id`'s labels committed and not applied yet (what an engine call
        for them must bar: the engine bars the rest itself)."""
        return list(self._waiting.get(rater_id, ()))

    def has(self, rater_id: Hashable, key: Key) -> bool:
        """Whether `rater_id` answered the task `key` (applied or not)."""
        waiting = self._waiting.get(rater_id)
        return key in self._applied.get(rater_id, ()) or (waiting is not None and key in waiting)

    def keys(self, rater_id: Hashable) -> set[Key]:
        """Every task key `rater_id` answered (applied or not); a new set."""
        return set(self._applied.get(rater_id, ())).union(self._waiting.get(rater_id, ()))
