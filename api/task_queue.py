"""The tasks a campaign chose ahead: `TaskQueue`.

Tasks are chosen ahead for no rater in particular (`next_tasks(None, count)`), so each is pending
in the engine while queued and later selections avoid it. A request takes its rater's reserve
first (the rest of a choice the engine made for that rater alone), then the first queued task
they may answer (`barred` says which they may not), preferring tasks nobody holds. The queue's
target grows with the number of waiting requests and with the recent request rate (up to
`queue_max`) and falls back to `queue_min` when idle. Whatever leaves the queue unanswered is
given back to the engine through the pump.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from api.task_keys import pair_keys, question_key
from engine import Task
from engine.questions import Question

if TYPE_CHECKING:
    from api.answered import Answered
    from api.assignments import Assignments, Releaser
    from api.campaigns import RaterState
    from api.settings import Settings

# the pump looks at leases at least this often when nothing else happens, and the queue at
# idle reserves
IDLE_WAKE_S = 1.0
DEMAND_WINDOW_S = 2.0  # the request rate that sizes the queue is smoothed over this long
ACTIVE_RATER_S = 30.0  # raters who asked this recently count when pruning the queue
# a busy campaign keeps this much of its request rate chosen ahead: more than one engine
# round (an update and a refill, each tens of milliseconds on a loaded machine), so requests
# arriving meanwhile still find tasks queued
QUEUE_AHEAD_S = 0.25


@dataclass(frozen=True)
class Queued:
    """A task chosen ahead, with the number of engine batches applied when it was chosen."""

    task: Task
    version: int


class TaskQueue:
    """The queue of tasks chosen ahead, the raters' reserves, and what the last choices found.

    Args:
        settings: the queue's sizes.
        raters: the campaign's raters by id (shared with the runtime, which adds to it).
        answered: what each rater answered, applied to the posterior or not.
        assignments: who holds which task (claims are made there).
        pump: where tasks leaving the queue unanswered are given back.
    """

    def __init__(
        self,
        settings: Settings,
        raters: dict[int, RaterState],
        answered: Answered,
        assignments: Assignments,
        pump: Releaser,
    ) -> None:
        self._settings = settings
        self._raters = raters
        self._answered = answered
        self._assignments = assignments
        self._pump = pump
        self._queue: deque[Queued] = deque()
        # tasks the engine chose for one rater beyond the one they asked for, theirs to take
        self._reserves: dict[int, deque[Task]] = {}
        self._reserves_checked = time.monotonic()
        self._changed = asyncio.Event()
        self.waiting = 0  # requests waiting for the queue to change
        self.last_demand = -math.inf  # when a rater last asked for a task (monotonic)
        self._demand_rate = 0.0  # assignment requests per second, smoothed over DEMAND_WINDOW_S
        self.exhausted = False  # no task at all in scope (until clips are added)
        # the last refill found nothing the raters asking lately have not judged (until the
        # next label is applied or a rater's own choice)
        self.spent = False
        # why the latest choice for a rater found nothing because every stopping target is
        # met (None: it was not that); read by the request that made the choice
        self.done_reason: str | None = None

    # reads ------------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Tasks chosen ahead and not handed out yet."""
        return len(self._queue)

    def tasks(self) -> list[Task]:
        """The tasks chosen ahead, in the order they are handed out."""
        return [entry.task for entry in self._queue]

    def oldest_version(self) -> int | None:
        """The applied batches when the oldest queued task was chosen (None: queue empty)."""
        return self._queue[0].version if self._queue else None

    @property
    def changed(self) -> asyncio.Event:
        """Set once the queue changes next (a fresh event after each change)."""
        return self._changed

    def notify(self) -> None:
        """Wake every request waiting for the queue to change."""
        self._changed.set()
        self._changed = asyncio.Event()

    def target(self) -> int:
        """Tasks to keep chosen ahead: `queue_min` plus one per waiting request, or what
        `QUEUE_AHEAD_S` of the recent request rate takes when that is more (a busy campaign
        hands out from the queue instead of waiting for the engine), at most `queue_max`."""
        ahead = math.ceil(self._demand_rate * QUEUE_AHEAD_S)
        return min(self._settings.queue_max, max(self._settings.queue_min + self.waiting, ahead))

    def asked(self, rater: RaterState) -> None:
        """Count a request for a task (the request rate that sizes the queue)."""
        now = time.monotonic()
        # exponentially smoothed request rate: each request adds 1 / DEMAND_WINDOW_S, which
        # decays with time constant DEMAND_WINDOW_S
        self._demand_rate = self._demand_rate * math.exp(
            -(now - self.last_demand) / DEMAND_WINDOW_S
        ) + (1.0 / DEMAND_WINDOW_S)
        self.last_demand = now
        rater.last_asked = now

    # taking -----------------------------------------------------------------------------------

    def take(self, rater: RaterState) -> Task | None:
        """The next task of `rater`'s reserve, else the first queued task they may answer,
        preferring pairs nobody holds; claimed."""
        task = self.take_reserved(rater)
        if task is not None:
            return task
        fallback = None
        for index, entry in enumerate(self._queue):
            task = entry.task
            if self.barred(rater, task.question):
                continue
            if self._assignments.held(task.question):
                if fallback is None:
                    fallback = index
                continue
            break
        else:
            if fallback is None:
                return None
            index = fallback
        task = self._queue[index].task
        del self._queue[index]
        self._assignments.claim(rater, task.question)
        if len(self._queue) < self.target():
            self._pump.wake()  # refill before the queue runs dry, not once a request waits
        return task

    def take_reserved(self, rater: RaterState) -> Task | None:
        """The next task of `rater`'s reserve, claimed (barred ones are released)."""
        reserve = self._reserves.get(rater.id)
        while reserve:
            task = reserve.popleft()
            if not self.barred(rater, task.question):
                self._assignments.claim(rater, task.question)
                return task
            self._pump.give_back([task.id])  # theirs another way meanwhile
            self._pump.wake()
        return None

    def reserve(self, rater: RaterState, tasks: Iterable[Task]) -> None:
        """Keep tasks the engine chose for `rater` alone as theirs to take."""
        self._reserves.setdefault(rater.id, deque()).extend(tasks)

    def barred(self, rater: RaterState, question: Question) -> bool:
        """Whether `rater` may not get this task: one they answered (every committed label,
        applied to the posterior or not: a pair, a clip's rating, a K-set) or skipped, one
        showing a clip they reported, or one they hold."""
        key = question_key(question)
        if rater.holding[key] or any(clip in rater.reported for clip in question.items):
            return True
        return key in rater.skipped or self._answered.has(rater.id, key)

    def active_raters(self) -> list[RaterState]:
        """The raters who asked for a task in the last `ACTIVE_RATER_S`."""
        since = time.monotonic() - ACTIVE_RATER_S
        return [r for r in self._raters.values() if r.last_asked >= since]

    def spent_pairs(self) -> list[tuple[int, int]]:
        """The pairs every rater who asked in the last `ACTIVE_RATER_S` judged or skipped:
        chosen ahead, none of them could hand one out (see `prune`). With few raters who each
        judge much, the most informative pairs are mostly such pairs, and a refill that chose
        them sent every request to a choice for its rater alone."""
        done = []
        for rater in self.active_raters():
            keys = self._answered.keys(rater.id)  # a new set: extended in place
            keys |= rater.skipped
            done.append(keys)
        done.sort(key=len)
        if not done or not done[0]:
            return []
        return pair_keys(done[0].intersection(*done[1:]))

    # giving back ------------------------------------------------------------------------------

    def prune(self) -> None:
        """Release the queued tasks that no rater who asked in the last `ACTIVE_RATER_S` may
        answer. Chosen for no rater in particular, a pair can turn out to be one every active
        rater judged already (the contested pairs stay the most informative); left queued it
        would fill the queue's target for good and send every request to a choice for its
        rater alone."""
        active = self.active_raters()
        if not active:
            return
        kept: deque[Queued] = deque()
        for entry in self._queue:
            task = entry.task
            if all(self.barred(r, task.question) for r in active):
                self._pump.give_back([task.id])
            else:
                kept.append(entry)
        if len(kept) < len(self._queue):
            self._queue = kept
            self._pump.wake()

    def drop_idle_reserves(self) -> None:
        """Release the reserves of raters who have not asked for `ACTIVE_RATER_S`, at most
        once per `IDLE_WAKE_S`."""
        if time.monotonic() - self._reserves_checked < IDLE_WAKE_S:
            return
        now = self._reserves_checked = time.monotonic()
        for rater_id in list(self._reserves):
            if now - self._raters[rater_id].last_asked >= ACTIVE_RATER_S:
                self._pump.give_back(task.id for task in self._reserves.pop(rater_id))
                self._pump.wake()

    def drop_reserve(self, rater_id: int) -> None:
        """Give back a rater's reserve (they were deactivated)."""
        self._pump.give_back(t.id for t in self._reserves.pop(rater_id, ()))

    def drop(self, ruled_out: Callable[[Task], bool]) -> None:
        """Give back the queued and reserved tasks `ruled_out` says no rater may get."""
        kept: deque[Queued] = deque()
        for entry in self._queue:
            if ruled_out(entry.task):
                self._pump.give_back([entry.task.id])
            else:
                kept.append(entry)
        self._queue = kept
        for rater_id, reserve in list(self._reserves.items()):
            dropped = [t for t in reserve if ruled_out(t)]
            self._pump.give_back(t.id for t in dropped)
            self._reserves[rater_id] = deque(t for t in reserve if t not in dropped)

    def drop_all(self) -> None:
        """Give back every task chosen ahead, queued or reserved; nothing is left to choose
        (until clips are added or the settings change)."""
        self._pump.give_back(entry.task.id for entry in self._queue)
        self._queue = deque()
        for reserve in self._reserves.values():
            self._pump.give_back(task.id for task in reserve)
        self._reserves.clear()
        self.exhausted = True

    # filling ----------------------------------------------------------------------------------

    def extend(self, tasks: Iterable[Task], version: int) -> None:
        """Queue tasks chosen under the posterior of `version` applied batches."""
        self._queue.extend(Queued(task, version) for task in tasks)

    def pop_oldest(self) -> Queued:
        return self._queue.popleft()
