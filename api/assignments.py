"""A campaign's assignments and their leases: `Assignments`.

An assignment is a task handed to one rater (`AssignmentState`). From the moment a task is
claimed for a rater (being handed out, then open) until it is answered, expires or is withdrawn,
the rater holds it (`RaterState.holding`, by task key) and so does the campaign (`held`, pairs
and K-sets only): a request prefers tasks nobody holds. An open assignment's lease is a heap
entry; once it ran out unanswered, the assignment is closed and its engine task given back
through the pump.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from api.task_keys import question_key
from engine import Outcome
from engine.questions import NO_SECOND, Criterion, KSet, Level, Question, question_of

if TYPE_CHECKING:
    from api.campaigns import RaterState


class Releaser(Protocol):
    """Where engine tasks no rater will answer are given back (the pump)."""

    def give_back(self, task_ids: Iterable[int]) -> None: ...

    def wake(self) -> None: ...


@dataclass(frozen=True)
class Answer:
    """A committed answer to an assignment (`ranking`: a K-set's, clip positions best
    first)."""

    judgment_id: int
    choice: str | None
    level: int | None
    ranking: tuple[int, ...] | None = None


@dataclass
class AssignmentState:
    """A handed-out task. `task_id` is its engine pending-task id."""

    id: int
    rater_id: int
    task_id: int
    first: int
    second: int
    swapped: bool
    expires_at: float
    answer: Answer | None = None
    committing: asyncio.Future[Any] | None = None
    released: bool = False  # expired and released from the engine's pending set
    withdrawn: str | None = None  # why the operator took it back (an answer then gets a 410)
    gold: Outcome | None = None  # a gold task's known answer (never shown to the rater)
    # a K-set: its clips' positions in the order shown, and what it asks (`first` and
    # `second` are then its two lowest positions)
    items: tuple[int, ...] | None = None
    mode: str | None = None
    criterion: str | None = None  # what a criterion question asks about; None: overall

    @property
    def question(self) -> Question:
        if self.items is not None:
            return KSet(tuple(sorted(self.items)), self.mode or "best")
        if self.criterion is not None:
            return Criterion(self.first, self.second, self.criterion)
        return question_of(self.first, self.second)

    @property
    def is_kset(self) -> bool:
        return self.items is not None

    @property
    def is_pair(self) -> bool:
        return self.items is None and self.second != NO_SECOND

    @property
    def shown(self) -> tuple[int, ...]:
        """The clips it shows (a K-set's in the order shown)."""
        if self.items is not None:
            return self.items
        return (self.first,) if self.second == NO_SECOND else (self.first, self.second)

    @property
    def left(self) -> int:
        return self.second if self.swapped else self.first

    @property
    def right(self) -> int:
        return self.first if self.swapped else self.second

    @property
    def pair(self) -> tuple[int, int]:
        return (min(self.first, self.second), max(self.first, self.second))

    @property
    def is_open(self) -> bool:
        """Handed out and neither answered, being answered, expired nor withdrawn."""
        return self.answer is None and self.committing is None and not self.released


class Assignments:
    """Every assignment of one campaign by id, the leases of the open ones, and the tasks
    claimed for raters.

    Args:
        raters: the campaign's raters by id (shared with the runtime, which adds to it).
        pump: where the engine tasks of closed assignments are given back.
    """

    def __init__(self, raters: dict[int, RaterState], pump: Releaser) -> None:
        self.by_id: dict[int, AssignmentState] = {}
        self._raters = raters
        self._pump = pump
        self._leases: list[tuple[float, int]] = []  # heap of (expires_at, assignment id)
        # pairs held by some rater (open or being handed out), by `task_key`
        self._held: Counter[tuple[int, ...]] = Counter()

    def get(self, assignment_id: int) -> AssignmentState | None:
        return self.by_id.get(assignment_id)

    def __getitem__(self, assignment_id: int) -> AssignmentState:
        return self.by_id[assignment_id]

    def add(self, state: AssignmentState) -> None:
        """Track an assignment (stored already), open or not."""
        self.by_id[state.id] = state

    def open_count(self) -> int:
        """Assignments handed out and neither answered nor expired."""
        return sum(len(rater.open) for rater in self._raters.values())

    def held(self, question: Question) -> int:
        """How many raters hold this task (a pair or K-set) now."""
        return self._held[question_key(question)]

    def next_expiry(self) -> float | None:
        """When the earliest open lease runs out (epoch seconds), None with none open."""
        return self._leases[0][0] if self._leases else None

    # claims -----------------------------------------------------------------------------------

    def claim(self, rater: RaterState, question: Question) -> None:
        """`rater` holds this task from now on (it is being handed out or is open)."""
        key = question_key(question)
        rater.holding[key] += 1
        if not isinstance(question, Level):
            self._held[key] += 1

    def unclaim(self, rater: RaterState, question: Question) -> None:
        key = question_key(question)
        for held in (rater.holding, self._held):
            if held[key]:
                held[key] -= 1
                if not held[key]:
                    del held[key]

    # leases -----------------------------------------------------------------------------------

    def open(self, state: AssignmentState) -> None:
        """Open the lease of a claimed task's assignment."""
        self._raters[state.rater_id].open.add(state.id)
        heapq.heappush(self._leases, (state.expires_at, state.id))

    def close(self, state: AssignmentState) -> None:
        rater = self._raters[state.rater_id]
        rater.open.discard(state.id)
        self.unclaim(rater, state.question)

    def expire_due(self) -> None:
        """Close the assignments whose lease ran out and give back their engine tasks."""
        now = time.time()
        while self._leases and self._leases[0][0] <= now:
            _, assignment_id = heapq.heappop(self._leases)
            state = self.by_id[assignment_id]
            if state.is_open:
                state.released = True
                self.close(state)
                self._pump.give_back([state.task_id])
                self._pump.wake()

    def withdraw(self, ids: Sequence[int], why: str) -> None:
        """Take back open assignments (already marked withdrawn in the database); one whose
        answer is being committed keeps it."""
        for assignment_id in ids:
            state = self.by_id[assignment_id]
            if state.is_open:
                state.released = True
                state.withdrawn = why
                self.close(state)
                self._pump.give_back([state.task_id])
        self._pump.wake()

    def showing(self, positions: Iterable[int]) -> list[int]:
        """The open assignments that show any of the clips at `positions`."""
        positions = set(positions)
        return sorted(
            a.id
            for a in self.by_id.values()
            if a.answer is None and not a.released and any(clip in positions for clip in a.shown)
        )
