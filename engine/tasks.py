"""The task book: which questions are out (pending, in hand-out order) and what each rater has
already answered. One owner for these facts; the campaign asks it.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.update import NO_SECOND


@dataclass(frozen=True)
class Task:
    """A question handed to a rater: a pair (second >= 0) or one clip to rate (second == -1)."""

    id: int
    rater: Hashable | None
    first: int
    second: int
    gain: float
    probabilities: tuple[float, ...]

    @property
    def is_pair(self) -> bool:
        return self.second != NO_SECOND


class TaskBook:
    """Pending tasks by id, in hand-out order; per rater the pairs they judged and the clips
    they rated (never asked again unless a caller allows repeats)."""

    def __init__(self) -> None:
        self._pending: dict[int, Task] = {}
        self._ids = itertools.count(1)
        self._judged: dict[Hashable, set[tuple[int, int]]] = {}
        self._judged_tensor: dict[Hashable, Tensor] = {}  # cache of _judged, rebuilt on change
        self._rated: dict[Hashable, set[int]] = {}

    def new(
        self,
        rater: Hashable | None,
        first: int,
        second: int,
        gain: float,
        probabilities: tuple[float, ...],
    ) -> Task:
        """A task with the next id (not held yet)."""
        return Task(next(self._ids), rater, first, second, gain, probabilities)

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
        self, labels: Iterable[tuple[Hashable | None, int, int]], task_ids: Sequence[int]
    ) -> None:
        """Record (rater, first, second or -1) answers and release the answered tasks."""
        for rater, first, second in labels:
            if second == NO_SECOND:
                self._rated.setdefault(rater, set()).add(first)
            else:
                self._judged_tensor.pop(rater, None)
                self._judged.setdefault(rater, set()).add((min(first, second), max(first, second)))
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
        if not self._judged.get(rater):
            return None
        judged = self._judged_tensor.get(rater)
        if judged is None:
            judged = torch.tensor(sorted(self._judged[rater]), dtype=torch.long)
            self._judged_tensor[rater] = judged
        return judged

    def rated(self, rater: Hashable | None) -> frozenset[int]:
        """The clips `rater` rated."""
        return frozenset(self._rated.get(rater, ()))


__all__ = ["Task", "TaskBook"]
