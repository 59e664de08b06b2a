"""The task book: which questions are out (pending, in hand-out order) and what each rater has
already answered. One owner for these facts; the campaign asks it.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.likelihoods import Outcome
from engine.questions import Level, Pair, Question, question_of_key


@dataclass(frozen=True)
class Task:
    """A question (engine.questions) handed to a rater, with its expected information gain and
    the predictive probabilities of its answers. `gold` is the known answer of a gold
    question (engine.gold): for the service to store the answer as gold, never for the rater's
    eyes."""

    id: int
    rater: Hashable | None
    question: Question
    gain: float
    probabilities: tuple[float, ...]
    gold: Outcome | None = None

    @property
    def first(self) -> int:
        return self.question.items[0]

    @property
    def second(self) -> int:
        """The second clip of a comparison; NO_SECOND for a question about one clip."""
        return self.question.direction[1]

    @property
    def is_pair(self) -> bool:
        return self.question.kind == Pair.kind


class TaskBook:
    """Pending tasks by id, in hand-out order; per rater the questions they answered (by
    `Question.key`: never asked again unless a caller allows repeats)."""

    def __init__(self) -> None:
        self._pending: dict[int, Task] = {}
        self._ids = itertools.count(1)
        self._asked: dict[Hashable, set[tuple]] = {}
        # the pairs of _asked as a tensor, and the pairs answered since it was built: a rater's
        # next request appends a row rather than rebuilding it from every answer
        self._judged_tensor: dict[Hashable, Tensor] = {}
        self._judged_new: dict[Hashable, list[tuple[int, int]]] = {}

    def new(
        self,
        rater: Hashable | None,
        question: Question,
        gain: float,
        probabilities: tuple[float, ...],
        gold: Outcome | None = None,
    ) -> Task:
        """A task with the next id (not held yet)."""
        return Task(next(self._ids), rater, question, gain, probabilities, gold)

    def hold(self, task: Task) -> None:
        """Mark a task as pending (handed out, awaiting its answer)."""
        self._pending[task.id] = task

    def release(self, task_id: int) -> None:
        """Forget a pending task; unknown ids are an error.

        Raises:
            KeyError: the task is not pending.
        """
        if task_id not in self._pending:
            raise KeyError(f"task {task_id} is not pending")
        del self._pending[task_id]

    def check_answerable(self, task_ids: Sequence[int]) -> None:
        """Raise unless every id is pending and none repeats (before anything changes).

        Raises:
            ValueError: an id appears twice.
            KeyError: an id is not pending.
        """
        if len(set(task_ids)) != len(task_ids):
            raise ValueError("a task id appears twice in one batch")
        for task_id in task_ids:
            if task_id not in self._pending:
                raise KeyError(f"task {task_id} is not pending")

    def answered(
        self, labels: Iterable[tuple[Hashable | None, Question]], task_ids: Sequence[int]
    ) -> None:
        """Record (rater, question) answers and release the answered tasks."""
        for rater, question in labels:
            asked = self._asked.setdefault(rater, set())
            key = question.key
            if key in asked:
                continue
            asked.add(key)
            if key[0] == Pair.kind and rater in self._judged_tensor:
                self._judged_new.setdefault(rater, []).append(key[1:])
        for task_id in task_ids:
            self._pending.pop(task_id)

    @property
    def pending(self) -> tuple[Task, ...]:
        """The pending tasks in hand-out order."""
        return tuple(self._pending.values())

    @property
    def pending_ids(self) -> tuple[int, ...]:
        return tuple(self._pending)

    def judged_pairs(self, rater: Hashable | None) -> Tensor | None:
        """(F, 2) the pairs `rater` judged (first < second), or None when none."""
        judged = self._judged_tensor.get(rater)
        if judged is None:
            pairs = sorted(key[1:] for key in self._asked.get(rater, ()) if key[0] == Pair.kind)
            judged = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
        elif rater in self._judged_new:
            fresh = torch.tensor(self._judged_new.pop(rater), dtype=torch.long)
            judged = torch.cat((judged, fresh))
        self._judged_tensor[rater] = judged
        return judged if judged.numel() else None

    def asked(self, rater: Hashable | None) -> frozenset[tuple]:
        """The `Question.key`s of what `rater` answered."""
        return frozenset(self._asked.get(rater, ()))

    def answered_questions(self) -> dict[Hashable | None, tuple[Question, ...]]:
        """Per rater, the questions they answered (in key order)."""
        return {
            rater: tuple(question_of_key(key) for key in sorted(keys))
            for rater, keys in self._asked.items()
        }

    def answer_count(self, rater: Hashable | None) -> int:
        """How many different questions `rater` answered."""
        return len(self._asked.get(rater, ()))

    def rated(self, rater: Hashable | None) -> frozenset[int]:
        """The clips `rater` rated."""
        return frozenset(key[1] for key in self._asked.get(rater, ()) if key[0] == Level.kind)


__all__ = ["Task", "TaskBook"]
