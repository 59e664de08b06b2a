"""The one object per campaign that serves it: `CampaignRuntime`, a facade over the parts that
each own one fact of the campaign's live state.

- the engine host and the calls sent to it: `EngineCalls` (api/engine_calls.py);
- the pump, the one coroutine that calls the engine, and the labels on their way to it (their
  commit order, batches, the posterior's version, cached reads): `Pump` (api/pump.py);
- what each rater answered: the engine's record of the labels it applied (a copy the loop
  reads) and the labels committed and not applied yet: `Answered` (api/answered.py);
- the tasks chosen ahead, the raters' reserves, what the latest choices found: `TaskQueue`
  (api/task_queue.py);
- the assignments, their leases and the tasks claimed for raters: `Assignments`
  (api/assignments.py);
- the load from the database (a snapshot, the replay of the log after it, the loop-side state
  rebuilt from the log) and the snapshots the pump saves: api/restore.py;
- the engine settings stored with the campaign: api/campaign_config.py.

The runtime itself keeps the rest: the clips and the campaign's clip policy (safety threshold,
reports, retirement, skips that withdraw a task for everyone), the raters and what each
skipped and reported, and the requests that span the parts (assign, judge, import, the
operator's controls).

Threads and order. The engine `Campaign` lives in the runtime's engine host (a process of its
own by default, or a thread: api/engine_host.py) and is called only by the pump, in the
priority its module describes. Everything else (the queue, leases, who holds or skipped what,
the copy of who answered what) lives on the event loop, so hand-outs and idempotency checks
never wait for the engine.

A request takes its rater's reserve first, then the first queued task they may answer: not a
pair they judged (every committed label, applied to the posterior yet or not) or skipped, not a
clip they rated, nothing they hold (an open assignment, or a task on its way to becoming one).
When none fits, the engine chooses `RATER_BATCH` tasks for that rater with the same pairs and
clips barred; the rest are their reserve. When idle the pump also replaces tasks chosen before
the latest labels, so a quiet campaign hands out tasks from the current posterior.

Durability and replay. A judgment is acknowledged once its transaction committed; it then
joins the batch for the engine. Labels carry `seq` (commit order) and, once applied, `batch`
(the engine call); clip batches carry `after_seq`. `CampaignRuntime.start` takes the latest
snapshot and replays the clips and labels after it in exactly that interleaved, batched order
(api/restore.py, api/replay.py), so the posterior after a restart equals the one before
(float64, CPU); every `snapshot_every` labels the pump saves a new snapshot. Open assignments
whose lease has not expired are held again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Connection, Engine

from api import replay, restore, store
from api.answered import Answered
from api.assignments import Answer, Assignments, AssignmentState
from api.auth import hash_token, new_token
from api.bulk import ClipColumns
from api.campaign_config import (
    ACTIVE,
    CLOSED,
    PAUSED,
    build_config,
    emoji_thresholds,
    engine_config,
    scale_levels,
    stored_both_threshold,
    stored_feature_dim,
    stored_min_labels,
    stored_prior_refit,
    stored_targets,
    target_values,
)
from api.clip_stream import StreamedClips
from api.db import as_utc, utcnow
from api.engine_calls import EngineCalls
from api.engine_host import Board, ClipBatch, RaterStats, WeightRows, make_host
from api.errors import BadRequest, Conflict, Gone, NotFound, TooManyOpen, Unavailable
from api.imports import PastJudgment
from api.metrics import Metrics
from api.ownership import LeaseLost
from api.pump import Label, Pump
from api.refits import PriorRefits
from api.restore import Snapshots
from api.settings import Settings
from api.store import CampaignRecord
from api.task_keys import kset_keys, pair_keys, question_key
from api.task_queue import TaskQueue
from api.writer import Writer
from engine import Judgment, Outcome, Task
from engine.questions import (
    BOTH_ANSWERS,
    NO_SECOND,
    Criterion,
    KSet,
    Level,
    Question,
)

log = logging.getLogger("ratingparty.api")
T = TypeVar("T")

RATER_BATCH = 8  # tasks chosen at once for a rater whom no queued task fits (the rest queue)
ENGINE_STOPPED = (
    "this campaign's engine stopped; the service rebuilds it from the database on the next "
    "request: retry"
)
LEASE_LOST = (
    "another service process took this campaign over (this one stopped renewing its claim "
    "in time); nothing more is written here: retry, and the request goes to the new owner"
)


# the criterion a campaign's safety threshold reads, by name: MJ-VIDEO's "safety" score,
# higher is safer like every reward-model score
SAFETY_CRITERION = "safety"
# why the campaign's policy withholds a clip: its safety score, or raters' reports
THRESHOLD, REPORTS = "threshold", "reports"
# not a stored state: what an assignment request answers while every stopping target is met
DONE = "done"
_STATE_MESSAGES = {
    PAUSED: "campaign {id} is paused: no new tasks until the operator resumes it",
    CLOSED: "campaign {id} is closed: it hands out no more tasks",
}


def _withheld_why(external_id: str, reason: str) -> str:
    """Why an assignment was withdrawn when a clip it shows was withheld."""
    cause = "its safety score" if reason == THRESHOLD else "raters reported it unsafe or broken"
    return f"clip {external_id!r} was withheld ({cause})"


def safety_score(criteria: Sequence[str], scores: Sequence[float | None]) -> float | None:
    """A clip's score on the `SAFETY_CRITERION` (None: missing, or no such criterion)."""
    if SAFETY_CRITERION not in criteria:
        return None
    return scores[list(criteria).index(SAFETY_CRITERION)]


def below_threshold(safety: float | None, threshold: float | None) -> bool:
    """Whether the campaign's policy withholds a clip for its safety score: a threshold is
    set and the score is known and strictly below it (a missing score withholds nothing)."""
    return threshold is not None and safety is not None and safety < threshold


def _clip_states(
    columns: ClipColumns,
    start: int,
    safety: Sequence[float | None],
    reasons: Sequence[str | None] | None,
    now: datetime,
) -> list[ClipState]:
    """The states of new clips at positions `start`... (withheld for `reasons`, when given,
    since `now`), with id 0 until the database gives theirs."""
    withheld: Any = itertools.repeat(None) if reasons is None else reasons
    withheld_at: Any = (
        itertools.repeat(None) if reasons is None else (now if r else None for r in reasons)
    )
    return list(
        map(
            ClipState,
            itertools.repeat(0),
            range(start, start + len(columns)),
            columns.external_ids,
            columns.uris,
            columns.groups,
            columns.contexts,
            itertools.repeat(0),  # labels
            itertools.repeat(False),  # retired
            safety,
            withheld,
            withheld_at,
        )
    )


def epoch(moment: datetime) -> float:
    """Seconds since the epoch of a database datetime."""
    return as_utc(moment).timestamp()


def utc(seconds: float) -> datetime:
    """An aware UTC datetime from seconds since the epoch."""
    return datetime.fromtimestamp(seconds, UTC)


# loop-side bookkeeping ----------------------------------------------------------------------


@dataclass
class ClipState:
    """A clip as the service shows it; `position` is its engine index."""

    id: int
    position: int
    external_id: str
    uri: str
    group: str | None
    context: str | None
    labels: int = 0
    retired: bool = False
    safety: float | None = None  # its score on SAFETY_CRITERION
    # withheld by the campaign's policy (THRESHOLD or REPORTS) until the operator decides
    withheld: str | None = None
    withheld_at: datetime | None = None
    restored: bool = False  # the operator restored it at least once
    # raters' reports of it since the operator last restored it
    reports: list[Report] = field(default_factory=list)

    @property
    def offered(self) -> bool:
        """Whether a task may show it: neither retired nor withheld."""
        return not self.retired and self.withheld is None

    @property
    def status(self) -> str:
        """`active`, `retired` or `withheld` (the operator's decision wins)."""
        return "retired" if self.retired else "active" if self.withheld is None else "withheld"


@dataclass(frozen=True)
class Report:
    """A rater's report that a clip is unsafe or broken."""

    id: int
    rater_id: int
    assignment_id: int
    at: datetime


@dataclass(frozen=True)
class ReportResult:
    """What `POST /v1/assignments/{id}/report` returns."""

    clip: ClipState
    reports: int  # distinct raters who reported it since the operator last restored it
    duplicate: bool  # this rater had reported it already: nothing written


@dataclass
class RaterState:
    """What the service knows about one rater of this campaign."""

    id: int
    name: str | None
    # clips they reported unsafe or broken (since the operator last restored each): never
    # shown to them again (an index of `ClipState.reports`)
    reported: set[int] = field(default_factory=set)
    # task keys (`question_key`) they skipped; what they answered is `Answered`'s
    skipped: set[tuple[int, ...]] = field(default_factory=set)
    open: set[int] = field(default_factory=set)  # open assignment ids
    # tasks held open or being handed out, by `task_key`: never given to this rater again
    holding: Counter[tuple[int, ...]] = field(default_factory=Counter)
    labels: int = 0
    skips: int = 0
    last_asked: float = -math.inf  # when they last asked for a task (monotonic)
    active: bool = True  # deactivated by the operator: no new tasks


OVERALL_QUESTION = "Which one is better?"
# the page's words for the reward model's criteria (MJ-VIDEO's five); another criterion is
# asked as "Which one is better on <criterion>?"
CRITERION_WORDS = {
    "alignment": "Which one is better aligned with the prompt?",
    "safety": "Which one is safer?",
    "fineness": "Which one is finer (sharper, more detailed)?",
    "coherence_consistency": "Which one is more coherent and consistent?",
    "bias_fairness": "Which one is fairer (less biased)?",
}


def question_words(criterion: str | None) -> str:
    """A pair's question in words: overall, or about one criterion."""
    if criterion is None:
        return OVERALL_QUESTION
    return CRITERION_WORDS.get(criterion, f"Which one is better on {criterion.replace('_', ' ')}?")


def task_criterion(task: Task) -> str | None:
    """The criterion a task's question asks about (engine.criteria); None: overall quality."""
    return task.question.criterion if isinstance(task.question, Criterion) else None


@dataclass(frozen=True)
class JudgeResult:
    """What `POST /v1/assignments/{id}/judgment` returns."""

    assignment_id: int
    judgment_id: int
    choice: str | None
    level: int | None
    duplicate: bool
    ranking: list[int] | None = None  # a K-set's answer: clip row ids, best first


@dataclass(frozen=True)
class NewClip:
    """A validated clip of a batch (scores aligned with the campaign's criteria)."""

    external_id: str
    uri: str
    group: str | None
    context: str | None
    scores: tuple[float | None, ...]
    features: tuple[float, ...] | None = None  # where the campaign has a feature gate


# the runtime --------------------------------------------------------------------------------


class CampaignRuntime:
    """Owns one campaign's engine state, queue, leases and answers.

    Args:
        record: the campaign row.
        engine: the database, for the replay's reads.
        writer: the database's writer.
        settings: limits and queue sizes.
        metrics: where engine calls and the replay are timed (a private registry when None).
        fence: wraps each database write with a check that this process still owns the
            campaign (`Leases.fence`); None writes unchecked.
    """

    def __init__(
        self,
        record: CampaignRecord,
        engine: Engine,
        writer: Writer,
        settings: Settings,
        metrics: Metrics | None = None,
        fence: Callable[[int, Callable[[Connection], Any]], Callable[[Connection], Any]]
        | None = None,
    ) -> None:
        self.record = record
        self.metrics = metrics or Metrics()
        self.settings = settings
        self.db = engine
        self.writer = writer
        # the engine stopped or another process took the campaign over: the service rebuilds
        # or routes it; `failure` says which
        self.failed = False
        self.failure = ENGINE_STOPPED
        self.closing = False
        host = make_host(
            build_config(record.engine_config),
            settings.engine_device,
            process=settings.engine_process,
            name=f"campaign-{record.id}",
        )
        self.engine_calls = EngineCalls(host, self.metrics, self._engine_stopped)
        self._fence = fence
        self._rng = random.Random(None if settings.seed is None else settings.seed + record.id)
        self.clips: list[ClipState] = []
        self.clip_index: dict[str, int] = {}  # external id -> position
        self.clip_positions: dict[int, int] = {}  # clip row id -> position
        self.next_clip_batch = 1
        # held by a clip batch from its first row stored to its last: positions are taken
        # in order (a streamed upload holds it while its body arrives)
        self._adding = asyncio.Lock()
        # gold pairs (positions, first < second) -> the known outcome of first vs second
        self.gold: dict[tuple[int, int], Outcome] = {}
        # skips that count towards withdrawing a task for everyone: task key -> raters (skips
        # before the operator last restored one of its clips are forgotten: `skips_cleared`)
        self._skippers: dict[tuple[int, int], set[int]] = {}
        self._clip_keys: dict[int, set[tuple[int, int]]] = {}  # clip -> its skipped task keys
        self.skips_cleared: dict[int, int] = {}  # clip -> the judgment id its skips count after
        self.withdrawn_keys: set[tuple[int, int]] = set()  # tasks skipped by skip_limit raters
        self.withdrawn_clips: set[int] = set()  # clips whose tasks skip_limit raters skipped
        self._reporting: set[tuple[int, int]] = set()  # (clip, rater) reports being written
        self.raters: dict[int, RaterState] = {}
        self.n_labels = 0
        self._in_flight: set[asyncio.Future[Any]] = set()  # database writes under way
        # the collaborators, each the one owner of its fact
        self.answered = Answered()
        self.pump = Pump(self)
        self.assignments = Assignments(self.raters, self.pump)
        self.queue = TaskQueue(settings, self.raters, self.answered, self.assignments, self.pump)
        self.snapshots = Snapshots(self)
        self.refits = PriorRefits(self, stored_prior_refit(record.engine_config))

    @property
    def engine(self) -> Any:
        """The campaign's engine host (api/engine_host.py)."""
        return self.engine_calls.host

    @property
    def n_applied(self) -> int:
        """Labels applied to the posterior (`n_labels` minus the waiting ones)."""
        return self.pump.n_applied

    @property
    def criterion_questions(self) -> tuple[str, ...]:
        """The criteria this campaign's raters may be asked about (engine.criteria)."""
        stored = self.record.engine_config.get("criterion_questions")
        return () if stored is None else tuple(stored["criteria"])

    @property
    def scale_levels(self) -> int | None:
        """Levels of the engine's emoji scale: what a rating is checked against, also while
        the operator has turned rating tasks off."""
        return scale_levels(self.record.engine_config)

    @property
    def queue_depth(self) -> int:
        """Tasks chosen ahead and not handed out yet."""
        return self.queue.depth

    @property
    def open_assignments(self) -> int:
        """Assignments handed out and neither answered nor expired."""
        return self.assignments.open_count()

    @property
    def gold_rate(self) -> float:
        """The share of tasks drawn as gold questions (engine.gold)."""
        return float(self.record.engine_config.get("gold_rate", 0.0))

    # life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the campaign's log and its latest snapshot; take the snapshot's state when it
        fits (api/snapshots.py) and replay the log after it, else replay the whole log
        (api/restore.py); then start the pump."""
        await restore.load(self)
        self.pump.start()

    async def close(self) -> None:
        """Stop the pump and the engine (committed labels are already in the database). Writes
        under way finish first: whatever loads this campaign next sees them."""
        self.closing = True
        self.pump.wake()
        self.queue.changed.set()
        await self.pump.stop()
        await self.refits.close()
        self._fail_calls()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))
        await self.snapshots.close()
        await self.engine.close()

    def _fail_calls(self) -> None:
        self.pump.fail_calls("the service is shutting down" if not self.failed else self.failure)

    def _track(self, future: asyncio.Future[T]) -> asyncio.Future[T]:
        """Count a database write as under way until it ends (see `close`)."""
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return future

    def expire_due(self) -> None:
        """Close the assignments whose lease ran out and release their engine tasks, and the
        reserves of raters who stopped asking."""
        self.queue.drop_idle_reserves()
        self.assignments.expire_due()

    async def call(self, fn: Callable[[], Awaitable[T]], *, fresh: bool = True) -> T:
        """Run `fn` on the pump; when `fresh`, after the labels committed so far are applied
        (a read reflects every acknowledged label)."""
        return await self.pump.call(fn, fresh=fresh)

    # hand-out ---------------------------------------------------------------------------------

    async def assign(self, rater: RaterState) -> tuple[AssignmentState | None, str | None, str]:
        """The next task for `rater`, as an open assignment, or (None, why) when none is left,
        with the state to report: the campaign's, or `DONE` when its targets are met.

        Raises:
            TooManyOpen: the rater already holds `max_open_assignments`.
            Unavailable: the engine did not produce a task in time, or the database failed.
        """
        self.expire_due()
        self.queue.asked(rater)
        if self.record.state != ACTIVE:
            return (
                None,
                _STATE_MESSAGES[self.record.state].format(id=self.record.id),
                self.record.state,
            )
        if len(rater.open) >= self.settings.max_open_assignments:
            raise TooManyOpen(
                detail=f"rater {rater.id} already holds {len(rater.open)} open assignments "
                f"(the most allowed); answer or let them expire first"
            )
        deadline = time.monotonic() + self.settings.assign_timeout_s
        task = None
        if self.gold_rate > 0 and self.gold:
            chosen_gold = asyncio.ensure_future(
                self.call(lambda: self._gold_task(rater), fresh=False)
            )
            try:
                task = await asyncio.shield(chosen_gold)
            except asyncio.CancelledError:
                chosen_gold.add_done_callback(lambda done: self._abandon(rater, done))
                raise
        while task is None:
            if self.failed:
                raise Unavailable(detail=self.failure)
            if self.closing:
                raise Unavailable(detail="the service is shutting down")
            task = self.queue.take(rater)
            if task is not None:
                break
            if self.queue.depth or self.queue.exhausted or self.queue.spent:
                self.queue.prune()
                # nothing chosen ahead fits this rater: the engine chooses for them
                chosen = asyncio.ensure_future(
                    self.call(lambda: self._rater_task(rater), fresh=False)
                )
                try:
                    task = await asyncio.shield(chosen)
                except asyncio.CancelledError:
                    # the client went away: give back what the engine chose and holds for it
                    chosen.add_done_callback(lambda done: self._abandon(rater, done))
                    raise
                if task is None:
                    if self.queue.done_reason is not None:
                        return None, self.queue.done_reason, DONE
                    return None, self._nothing_left(rater), self.record.state
                break
            changed = self.queue.changed
            self.queue.waiting += 1
            if self.queue.waiting == 1:
                self.refits.requests_waiting(True)
            self.pump.wake()
            try:
                await asyncio.wait_for(changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                raise Unavailable(detail="the engine is busy; retry the request") from None
            finally:
                self.queue.waiting -= 1
                if not self.queue.waiting:
                    self.refits.requests_waiting(False)
        # the database write must finish even if the client goes away: otherwise the task
        # would stay pending in the engine with no assignment to ever release it
        handing_out = self._track(asyncio.ensure_future(self._hand_out(rater, task)))
        return await asyncio.shield(handing_out), None, self.record.state

    async def _gold_task(self, rater: RaterState) -> Task | None:
        """Pump call: a gold task for this rater's next task when the engine draws one
        (engine.gold), claimed; None otherwise. Barred as `_rater_task` bars: pairs they
        answered (the engine bars those it applied), skipped or hold."""
        waiting = self.answered.waiting(rater.id)
        pairs = pair_keys(rater.skipped | set(rater.holding) | set(waiting))
        index = rater.labels + rater.skips + len(rater.open)
        task = await self.engine_calls.run("gold", rater.id, index, pairs)
        if task is not None:
            self.assignments.claim(rater, task.question)
        return task

    async def _rater_task(self, rater: RaterState) -> Task | None:
        """Pump call: the engine's best task for this rater, claimed; None when none is left.

        Never a task `TaskQueue.barred` for them. The engine's own record of what they
        answered covers only applied labels, so the rater's labels still waiting for the
        engine are barred explicitly, with their skipped pairs and held tasks (applying the
        waiting labels first put a whole update in front of the request's choice). A pair
        pending for someone else may come back when every pair left to this rater is pending
        (the engine's rule), never "nothing left" while such a pair remains.

        The engine chooses `RATER_BATCH` tasks at once; the rest are the rater's reserve,
        handed to them before the queue (and released once they stop asking). A rater gets
        here when every queued task is one they answered, which grows common as a campaign
        goes on (the most informative pairs are the contested ones, judged before): choosing
        one task at a time for them would make the choice per rater, a whole screen each, the
        engine's main cost after a few thousand labels. Queued for everyone instead of
        reserved, the rest would go mostly to other raters, and the rater would be back here at
        their next request.
        """
        while True:
            waiting = self.answered.waiting(rater.id)
            held = {*rater.holding, *waiting}
            pairs = pair_keys(rater.skipped | held)
            clips = sorted(k[0] for k in held if len(k) == 2 and k[1] == NO_SECOND)
            # K-sets they hold, answered (not applied yet: the engine knows the rest) or skipped
            ksets = kset_keys(rater.skipped | held)
            tasks = self.drop_for_nobody(
                await self.engine_calls.run(
                    "choose", rater.id, RATER_BATCH, pairs, clips, sorted(rater.reported), ksets
                )
            )
            self.queue.spent = False
            if not tasks:
                # the engine answers "nothing" alike for a rater who judged everything and
                # for a campaign whose targets are met: ask which (its progress is cached)
                status = await self.engine_calls.run("progress")
                self.queue.done_reason = status["reason"] if status["done"] else None
                return None
            self.queue.reserve(rater, tasks)
            mine = self.queue.take_reserved(rater)
            if mine is not None:
                return mine
            # all barred while the engine chose (this rater took a queued task of the same
            # pair meanwhile, and they are released): choose again

    def _abandon(self, rater: RaterState, chosen: asyncio.Future[Task | None]) -> None:
        """Give back a task the engine chose for a request that is gone."""
        if chosen.cancelled() or chosen.exception() is not None:
            return
        task = chosen.result()
        if task is not None:
            self.assignments.unclaim(rater, task.question)
            self.pump.give_back([task.id])
            self.pump.wake()

    def _nothing_left(self, rater: RaterState) -> str:
        if self.queue.exhausted:
            if len(self.clips) < 2 and self.record.emoji_levels is None:
                return "this campaign has fewer than two clips: nothing to compare yet"
            return (
                "this campaign has nothing to ask yet: no two of its clips share a group, and "
                "its pairing scope is 'group' (pairs of the same prompt)"
            )
        return (
            f"no task is left for rater {rater.id}: they have judged every pair in the "
            f"campaign's pairing scope ({self.record.pair_scope})"
            + ("" if self.record.emoji_levels is None else " and rated every clip")
            + ", or skipped or hold open the rest"
        )

    async def _hand_out(self, rater: RaterState, task: Task) -> AssignmentState:
        """Store the assignment (left/right order, or a K-set's layout, drawn at random) and
        open its lease."""
        question = task.question
        items = mode = None
        if isinstance(question, KSet):
            # the layout is the service's: the engine's answer does not depend on it
            items = tuple(self._rng.sample(question.items, len(question.items)))
            mode = question.mode
            first, second = sorted(question.items)[:2]
            swapped = False
        else:
            first, second = question.direction
            swapped = second != NO_SECOND and self._rng.random() < 0.5
        expires_at = time.time() + self.record.lease_seconds
        values = {
            "campaign_id": self.record.id,
            "rater_id": rater.id,
            "first": first,
            "second": second,
            "swapped": swapped,
            "gain": float(task.gain),
            "gold": None if task.gold is None else task.gold.value,
            "items": None if items is None else json.dumps(items),
            "kset_mode": mode,
            "criterion": task_criterion(task),
            "expires_at": utc(expires_at),
        }
        try:
            assignment_id = await self.writer.run(self.fenced(store.insert_assignment(values)))
        except Exception as error:
            log.exception("storing an assignment failed")
            self.assignments.unclaim(rater, question)
            self.pump.give_back([task.id])
            self.pump.wake()
            raise Unavailable(detail="the database did not store the assignment; retry") from error
        state = AssignmentState(
            assignment_id,
            rater.id,
            task.id,
            first,
            second,
            swapped,
            expires_at,
            gold=task.gold,
            items=items,
            mode=mode,
            criterion=task_criterion(task),
        )
        self.assignments.add(state)
        self.assignments.open(state)
        return state

    # answers ----------------------------------------------------------------------------------

    async def judge(
        self,
        rater: RaterState,
        assignment_id: int,
        choice: str | None,
        level: int | None,
        ranking: Sequence[int] | None = None,
        seconds: float | None = None,
        criterion: str | None = None,
    ) -> JudgeResult:
        """Record an answer: once, idempotently; the label goes to the engine after commit.

        `ranking` answers a K-set (clip row ids, best first: the best, the best and the
        worst, or the whole order, as its mode asks); `seconds` is how long the rater took
        (the engine's clock of seconds per task kind learns from it); `criterion`, when sent,
        must be what a criterion question asks about.

        Raises:
            NotFound: no such assignment of this rater.
            BadRequest: an answer this task does not take.
            Conflict: the assignment already has a different answer.
            Gone: the lease expired.
            Unavailable: the database failed (nothing was recorded).
        """
        state = self.assignments.get(assignment_id)
        if state is None or state.rater_id != rater.id:
            raise NotFound(detail=f"assignment {assignment_id} not found for this rater")
        if criterion is not None and criterion != state.criterion:
            known = self.criterion_questions
            raise BadRequest(
                detail=f"assignment {state.id} "
                + (
                    f"asks about {state.criterion!r}"
                    if state.criterion is not None
                    else "asks which is better overall"
                )
                + f", not about {criterion!r}"
                + ("" if criterion in known else " (a criterion this campaign does not ask about)")
            )
        positions = self._check_ranking(state, choice, level, ranking)
        outcome = None if state.is_kset else self._check_answer(state, choice, level)
        if state.committing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(state.committing)
        if state.answer is not None:
            given = (state.answer.choice, state.answer.level, state.answer.ranking)
            if given == (choice, level, positions):
                answer = state.answer
                return JudgeResult(
                    state.id,
                    answer.judgment_id,
                    answer.choice,
                    answer.level,
                    True,
                    self._clip_ids(answer.ranking),
                )
            raise Conflict(
                detail=f"assignment {assignment_id} was already answered with "
                f"{_describe(*given)}; it cannot change to {_describe(choice, level, positions)}"
            )
        if self.closing:  # a write now could miss the next load of this campaign
            raise Unavailable(
                detail=self.failure if self.failed else "the service is shutting down"
            )
        if state.withdrawn is not None:
            raise Gone(
                detail=f"assignment {assignment_id} is no longer open: {state.withdrawn}; "
                "ask for a new assignment"
            )
        if state.released or time.time() >= state.expires_at:
            raise Gone(
                detail=f"assignment {assignment_id} expired at {utc(state.expires_at).isoformat()} "
                f"(lease {self.record.lease_seconds:g} s); ask for a new assignment"
            )
        state.committing = self._track(
            asyncio.ensure_future(self._commit(state, choice, level, outcome, positions, seconds))
        )
        return await asyncio.shield(state.committing)

    def _check_ranking(
        self,
        state: AssignmentState,
        choice: str | None,
        level: int | None,
        ranking: Sequence[int] | None,
    ) -> tuple[int, ...] | None:
        """A K-set answer's clip positions, best first (None for a skip or another kind).

        Raises:
            BadRequest: a ranking for a task that is no K-set; for a K-set, a level or a
                choice other than skip, no ranking, a clip it did not show, a clip twice, or
                the wrong number of clips for its mode.
        """
        if not state.is_kset:
            if ranking is not None:
                raise BadRequest(detail=f"assignment {state.id} is not a K-set: send no 'ranking'")
            return None
        mode = state.mode or "best"
        asks = {
            "best": "the best clip's id",
            "best_worst": "the best and the worst clip's ids",
            "rank": f"all {len(state.shown)} clip ids, best first",
        }[mode]
        if level is not None or (choice is not None and choice != "skip"):
            raise BadRequest(
                detail=f"assignment {state.id} is a K-set ({mode}): send 'ranking' ({asks}) "
                "or choice 'skip'"
            )
        if choice == "skip":
            if ranking is not None:
                raise BadRequest(detail="send either 'ranking' or choice 'skip', not both")
            return None
        if ranking is None:
            raise BadRequest(
                detail=f"assignment {state.id} is a K-set ({mode}): send 'ranking' ({asks}) "
                "or choice 'skip'"
            )
        positions = []
        for clip_id in ranking:
            position = self.clip_positions.get(clip_id)
            if position is None or position not in state.shown:
                raise BadRequest(
                    detail=f"clip {clip_id} was not shown in assignment {state.id}: rank the "
                    "clips it shows"
                )
            positions.append(position)
        try:
            KSet(state.shown, mode).comparisons(tuple(positions))
        except ValueError:
            raise BadRequest(
                detail=f"a {mode!r} K-set answer is {asks}, each clip once; got {list(ranking)}"
            ) from None
        return tuple(positions)

    def _clip_ids(self, positions: Sequence[int] | None) -> list[int] | None:
        """Clip row ids of positions (None stays None)."""
        return None if positions is None else [self.clips[p].id for p in positions]

    def _check_answer(
        self, state: AssignmentState, choice: str | None, level: int | None
    ) -> Outcome | str | None:
        """The engine outcome of `first` vs `second` for a pair answer ("both_good" and
        "both_bad" as they are); None otherwise."""
        if (choice is None) == (level is None):
            raise BadRequest(detail="send exactly one of 'choice' or 'level'")
        if not state.is_pair:
            if choice is not None and choice != "skip":
                raise BadRequest(
                    detail=f"assignment {state.id} is an emoji rating: send 'level' "
                    f"(0..{(self.scale_levels or 1) - 1}) or choice 'skip', not {choice!r}"
                )
            levels = self.scale_levels or 0
            if level is not None and not 0 <= level < levels:
                raise BadRequest(
                    detail=f"level {level} is out of range: this campaign's emoji scale has "
                    f"levels 0..{levels - 1}"
                )
            return None
        if level is not None:
            raise BadRequest(
                detail=f"assignment {state.id} is a pair: send choice left, right"
                + (", tie" if self.record.ties else "")
                + " or skip, not an emoji level"
            )
        if choice == "tie" and not self.record.ties:
            raise BadRequest(detail="this campaign does not allow ties: choose left, right or skip")
        if choice in BOTH_ANSWERS:
            return self._check_both(state, choice)
        if choice == "skip":
            return None
        if choice == "tie":
            return Outcome.TIE
        left_wins = choice == "left"
        first_is_left = not state.swapped
        return Outcome.WIN if left_wins == first_is_left else Outcome.LOSS

    def _check_both(self, state: AssignmentState, choice: str) -> Outcome | str:
        """The engine answer of "both_good" / "both_bad": itself, or on a gold task a tie (what
        the operator knows of a gold pair is its order, so the tie is what is scored)."""
        if stored_both_threshold(self.record.engine_config) is None:
            raise BadRequest(
                detail=f"this campaign does not take {choice!r}: it has no both_threshold; "
                "choose left, right" + (", tie" if self.record.ties else "") + " or skip"
            )
        return choice if state.gold is None else Outcome.TIE

    async def _commit(
        self,
        state: AssignmentState,
        choice: str | None,
        level: int | None,
        outcome: Outcome | str | None,
        ranking: tuple[int, ...] | None = None,
        seconds: float | None = None,
    ) -> JudgeResult:
        is_label = choice != "skip"
        seq = None
        if is_label:
            seq = self.pump.next_seq()
        values = {
            "campaign_id": self.record.id,
            "assignment_id": state.id,
            "rater_id": state.rater_id,
            "choice": choice,
            "level": level,
            "first": state.first,
            "second": state.second,
            "outcome": None if outcome is None else str(outcome),
            "gold": None if state.gold is None else state.gold.value,
            "ranking": None if ranking is None else json.dumps(ranking),
            "seconds": seconds,
            "criterion": state.criterion,
            "seq": seq,
        }
        try:
            judgment_id = await self.writer.run(
                self.fenced(store.insert_judgment(values, "answered" if is_label else "skipped"))
            )
        except Exception as error:
            log.exception("storing a judgment failed")
            raise Unavailable(detail="the database did not store the judgment; retry") from error
        finally:
            state.committing = None
        state.answer = Answer(judgment_id, choice, level, ranking)
        self.assignments.close(state)
        withdrawn = self.count_answer(state, choice, level, judgment_id)
        if seq is not None:
            answer = ranking if state.is_kset else outcome if state.is_pair else level
            judgment = Judgment(
                state.rater_id,
                state.question,
                answer,  # type: ignore[arg-type]
                # the side bias learns from overall comparisons only
                left=state.left if state.is_pair and state.criterion is None else None,
                gold=state.gold,
                seconds=seconds,
            )
            self.pump.add_labels([Label(seq, judgment, state.task_id)])
        else:
            self.pump.give_back([state.task_id])
        self.pump.wake()
        if withdrawn:
            log.info("campaign %s: tasks withdrawn after repeated skips", self.record.id)
            with contextlib.suppress(Unavailable):  # the skip is stored: acknowledge it
                await self._send_bars()
        return JudgeResult(state.id, judgment_id, choice, level, False, self._clip_ids(ranking))

    def count_answer(
        self, state: AssignmentState, choice: str | None, level: int | None, judgment_id: int
    ) -> bool:
        """Count a committed answer; whether a skip withdrew a task or a clip for everyone."""
        rater = self.raters[state.rater_id]
        if choice == "skip":
            rater.skips += 1
            if state.is_pair or state.is_kset:
                rater.skipped.add(question_key(state.question))
            return self._note_skip(state, judgment_id)
        rater.labels += 1
        self.n_labels += 1
        if state.is_kset:
            for clip in state.shown:
                self.clips[clip].labels += 1
            return False
        if state.gold is None:  # a gold answer is no label on its clips
            self.clips[state.first].labels += 1
        if state.is_pair and state.gold is None:
            self.clips[state.second].labels += 1
        return False

    # skips that withdraw a task for everyone --------------------------------------------------

    def _note_skip(self, state: AssignmentState, judgment_id: int) -> bool:
        """Count a skip towards withdrawing its task (and its clips); whether that withdrew
        something new."""
        key = question_key(state.question)
        clips = [c for c in key if c != NO_SECOND]
        if any(judgment_id <= self.skips_cleared.get(c, 0) for c in clips):
            return False  # skipped before the operator restored the clip
        self._skippers.setdefault(key, set()).add(state.rater_id)
        for clip in clips:
            self._clip_keys.setdefault(clip, set()).add(key)
        before = (len(self.withdrawn_keys), len(self.withdrawn_clips))
        self.recount_withdrawals()
        return (len(self.withdrawn_keys), len(self.withdrawn_clips)) != before

    def recount_withdrawals(self) -> None:
        """Withdraw, for everyone, each task that `skip_limit` distinct raters skipped, and
        each clip whose tasks (two or more different ones) `skip_limit` distinct raters
        skipped between them: one pair skipped by many says the pair is the trouble, several
        pairs of one clip skipped say the clip is (it fails to load, say)."""
        limit = self.record.skip_limit
        self.withdrawn_keys = {k for k, raters in self._skippers.items() if len(raters) >= limit}
        self.withdrawn_clips = set()
        for clip, keys in self._clip_keys.items():
            raters = set().union(*(self._skippers[k] for k in keys))
            if len(keys) >= 2 and len(raters) >= limit:
                self.withdrawn_clips.add(clip)

    def _forget_skips(self, clip: int, after: int) -> None:
        """Forget the skips of `clip`'s tasks up to judgment `after` (the operator restored
        it)."""
        self.skips_cleared[clip] = after
        for key in self._clip_keys.pop(clip, set()):
            self._skippers.pop(key, None)
            for other in key:
                if other not in (clip, NO_SECOND):
                    self._clip_keys.get(other, set()).discard(key)
        self.recount_withdrawals()

    def skip_flags(self) -> tuple[list[tuple[tuple[int, int], int]], list[tuple[int, int, int]]]:
        """The withdrawn tasks with how many raters skipped each, and the withdrawn clips with
        how many raters skipped how many of their tasks."""
        tasks = [(key, len(self._skippers[key])) for key in sorted(self.withdrawn_keys)]
        clips = []
        for clip in sorted(self.withdrawn_clips):
            keys = self._clip_keys[clip]
            raters = set().union(*(self._skippers[k] for k in keys))
            clips.append((clip, len(raters), len(keys)))
        return tasks, clips

    # clips and raters -------------------------------------------------------------------------

    def _safety_policy(self, columns: ClipColumns) -> tuple[list[float | None], list[bool]]:
        """Each new clip's safety score (None: missing, or no such criterion) and whether the
        campaign's threshold withholds it (`below_threshold`, by column)."""
        criteria, threshold = self.record.criteria, self.record.safety_threshold
        if SAFETY_CRITERION not in criteria:
            return [None] * len(columns), [False] * len(columns)
        column = columns.scores[:, list(criteria).index(SAFETY_CRITERION)]
        # a missing score is NaN, which no comparison holds for: it withholds nothing
        safety = np.where(np.isnan(column), None, column).tolist()
        withheld = [False] * len(columns) if threshold is None else (column < threshold).tolist()
        return safety, withheld

    def _withheld_reasons(self, columns: ClipColumns) -> list[str | None] | None:
        """Each clip's reason to be withheld on arrival, or None when none is."""
        _, withheld = self._safety_policy(columns)
        return [THRESHOLD if w else None for w in withheld] if any(withheld) else None

    async def stream_clips(self) -> StreamedClips | None:
        """A transaction for an upload's clips to be written while its body is read
        (PostgreSQL; None elsewhere, or when it cannot be opened); `add_clips` commits it.
        Until the stream is closed no other clip batch is added. See api/clip_stream.py."""
        if self.db.dialect.name != "postgresql":
            return None
        await self._adding.acquire()
        key = (len(self.clips), self.next_clip_batch, self.record.safety_threshold)
        try:
            copy = await asyncio.to_thread(
                store.ClipCopy,
                self.db,
                self.record.id,
                len(self.clips),
                self.next_clip_batch,
                self.pump.applied_seq,
            )
        except Exception:
            log.exception("opening a clip stream failed; the upload is stored at its end")
            self._adding.release()
            return None
        return StreamedClips(
            copy, self.clip_index, self._withheld_reasons, self._adding.release, key
        )

    async def add_clips(
        self, clips: Sequence[NewClip] | ClipColumns, streamed: StreamedClips | None = None
    ) -> list[ClipState]:
        """Add a clip batch to the engine and store it, in order with the labels applied so
        far; all or nothing. The engine takes it first, as it alone knows whether the batch
        fits the posterior (a dense campaign's size limit, one context per prompt); should the
        database then fail, the runtime stops serving and the next request rebuilds the
        campaign from the database, so neither side keeps clips the other lacks.

        `streamed`: the batch's rows written already in a transaction of their own
        (`stream_clips`), committed here instead of a new insert when still usable.

        Raises:
            Conflict: an external id exists already in this campaign.
            BadRequest: the engine refuses the batch (its message says why).
            Unavailable: the database did not store the batch.
        """
        columns = (
            clips
            if isinstance(clips, ClipColumns)
            else ClipColumns.of(
                clips,
                len(self.record.criteria),
                stored_feature_dim(self.record.engine_config),
            )
        )

        async def add() -> list[ClipState]:
            if not self.clip_index.keys().isdisjoint(columns.external_ids):
                existing = [e for e in columns.external_ids if e in self.clip_index]
                raise Conflict(
                    detail=f"external ids already in campaign {self.record.id}: "
                    + ", ".join(repr(e) for e in existing[:10])
                    + (" ..." if len(existing) > 10 else "")
                )
            start, batch = len(self.clips), self.next_clip_batch
            has_criteria = bool(self.record.engine_config["criteria"])
            engine_batch = ClipBatch(
                columns.scores if has_criteria else None,
                columns.contexts,
                columns.groups,
                columns.features,
            )
            safety, withheld = self._safety_policy(columns)
            reasons = [THRESHOLD if held else None for held in withheld] if any(withheld) else None
            now = utcnow()
            key = (start, batch, self.record.safety_threshold)
            stored: asyncio.Future[list[int]] | None = None
            if streamed is not None and await streamed.ready(key, len(columns)):
                # the streamed rows' last steps run beside the engine's add; nothing commits
                # before the engine took the clips
                end = streamed.copy.end(self.pump.applied_seq)
                stored = asyncio.ensure_future(streamed.finish(self.fenced(end)))
            try:
                await self.engine_calls.run("add_clips", engine_batch)
            except ValueError as error:
                raise BadRequest(detail=f"the campaign cannot take these clips: {error}") from None
            if stored is None:
                op = store.insert_clip_columns(
                    self.record.id, columns, start, batch, self.pump.applied_seq, reasons
                )
                stored = asyncio.ensure_future(self.writer.run(self.fenced(op)))
            # made while the database works; their ids once it answers
            added = _clip_states(columns, start, safety, reasons, now)
            try:
                ids = await stored
                if streamed is not None and streamed.finished:
                    await streamed.commit()
            except Exception as error:
                log.exception("storing clips failed")
                self.stop_serving(
                    "the database did not store a clip batch; the campaign is "
                    "rebuilt from the database on the next request"
                )
                raise Unavailable(detail="the database did not store the clips; retry") from error
            self.next_clip_batch += 1
            for state, id_ in zip(added, ids, strict=True):
                state.id = id_
            self.clips.extend(added)
            if reasons is not None:
                # before any refill can see the new clips (this runs on the pump)
                await self.engine_calls.run("bar", *self.bars())
            positions = range(start, start + len(added))
            self.clip_index.update(zip(columns.external_ids, positions, strict=True))
            self.clip_positions.update(zip(ids, positions, strict=True))
            self.queue.exhausted = self.queue.spent = False
            self.pump.version += 1
            return added

        if streamed is not None:  # it holds `_adding` already
            return await self.call(add)
        async with self._adding:
            return await self.call(add)

    # the operator's controls ------------------------------------------------------------------

    async def update(self, values: dict[str, Any]) -> CampaignRecord:
        """Store settings that need no new engine (name, lease, rating tasks on or off with the
        same scale) or a new state. Closing withdraws every open assignment (an answer to one
        gets a 410) and gives back the tasks chosen ahead; pausing only stops hand-outs, so
        the answers to tasks already out still count.

        Raises:
            Unavailable: the database did not store the change (nothing changed).
        """
        closing = values.get("state") == CLOSED and self.record.state != CLOSED
        open_ids = sorted(a for r in self.raters.values() for a in r.open) if closing else []
        try:
            record = await self.writer.run(
                self.fenced(store.update_campaign(self.record.id, values, withdraw=open_ids))
            )
        except Exception as error:
            log.exception("storing a campaign change failed")
            raise Unavailable(detail="the database did not store the change; retry") from error
        ratings_before = self.record.emoji_levels is not None
        limit_before = self.record.skip_limit
        threshold_before, reports_before = self.record.safety_threshold, self.record.report_limit
        targets_before = stored_targets(self.record.engine_config)
        floor_before = stored_min_labels(self.record.engine_config)
        self.record = record
        if closing:
            self.assignments.withdraw(open_ids, f"campaign {record.id} was closed")
        if record.skip_limit != limit_before:
            self.recount_withdrawals()
        if (
            closing
            or (record.emoji_levels is not None) != ratings_before
            or record.skip_limit != limit_before
        ):
            await self._send_bars()
        if record.safety_threshold != threshold_before:
            # clips the operator restored stay offered: their decision stands
            await self._withhold(
                {
                    c.position
                    for c in self.clips
                    if not c.restored and below_threshold(c.safety, record.safety_threshold)
                },
                THRESHOLD,
            )
        if record.report_limit < reports_before:
            await self._withhold(
                {
                    c.position
                    for c in self.clips
                    if len({r.rater_id for r in c.reports}) >= record.report_limit
                },
                REPORTS,
            )
        targets = stored_targets(record.engine_config)
        if targets != targets_before:
            # on the live engine: the check reads the posterior at each choice, so nothing
            # else changes (the flags below let the refills ask the engine again)
            await self.call(
                lambda: self.engine_calls.run("set_targets", target_values(targets)), fresh=False
            )
        floor = stored_min_labels(record.engine_config)
        if floor != floor_before:
            # selection only reads it: the posterior and the log stay as they are
            await self.call(lambda: self.engine_calls.run("set_min_labels", floor), fresh=False)
        self.queue.exhausted = self.queue.spent = False
        self.pump.wake()
        return record

    def bars(
        self,
    ) -> tuple[list[int], list[tuple[int, int]], list[int], bool, list[tuple[int, ...]]]:
        """What no choice may offer (`CampaignEngine.bar`): retired, withheld and withdrawn clips,
        withdrawn pairs and ratings, every rating while rating tasks are off, and withdrawn
        K-sets."""
        clips = sorted(self.withdrawn_clips | {c.position for c in self.clips if not c.offered})
        pairs = pair_keys(self.withdrawn_keys)
        ratings = sorted(k[0] for k in self.withdrawn_keys if len(k) == 2 and k[1] == NO_SECOND)
        ksets = kset_keys(self.withdrawn_keys)
        return clips, pairs, ratings, self.record.emoji_levels is not None, ksets

    def _for_nobody(self, question: Question) -> bool:
        """Whether a task is one no rater may get any more (see `bars`)."""
        for clip in question.items:
            if not self.clips[clip].offered or clip in self.withdrawn_clips:
                return True
        if isinstance(question, Level) and self.record.emoji_levels is None:
            return True
        return question_key(question) in self.withdrawn_keys

    def drop_for_nobody(self, tasks: list[Task]) -> list[Task]:
        """`tasks` less those chosen before the engine heard of the latest bars (given back)."""
        kept = [t for t in tasks if not self._for_nobody(t.question)]
        if len(kept) < len(tasks):
            self.pump.give_back(t.id for t in tasks if t not in kept)
            self.pump.wake()
        return kept

    async def _send_bars(self) -> None:
        """Tell the engine what no choice may offer now, and give back the tasks chosen ahead
        that it rules out (a closed campaign gives back all of them)."""
        closed = self.record.state == CLOSED
        self.queue.drop(lambda task: closed or self._for_nobody(task.question))
        bars = self.bars()
        await self.call(lambda: self.engine_calls.run("bar", *bars), fresh=False)

    async def import_judgments(
        self,
        key: str,
        digest: str,
        records: Sequence[PastJudgment],
        problems: Sequence[tuple[int, str]] = (),
    ) -> tuple[dict[str, Any], bool]:
        """Import past judgments under the client's `key`: all checked first, then written in
        one transaction (new raters by name, an answered assignment and a label each, in the
        order given), then applied to the posterior in that order like any label. The same
        key again returns the first import's result (True: a repeat).

        Raises:
            BadRequest: `problems` (the text's, by line), unknown clips, an ambiguous rater
                name, ties where ties are off, a level off the scale (every problem in one
                message, in line order; nothing written).
            Conflict: the key was used for another import.
            Unavailable: the database did not store it (nothing written).
        """
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, store.find_import, self.db, self.record.id, key)
        if found is not None:
            return self._repeated_import(key, digest, found), True
        by_name: dict[str, list[int]] = {}
        for rater in self.raters.values():
            if rater.name is not None:
                by_name.setdefault(rater.name, []).append(rater.id)
        new_raters: dict[str, int] = {}  # name -> index among the raters to create
        found_problems = list(problems)
        levels = self.scale_levels
        both = stored_both_threshold(self.record.engine_config)
        rows: list[dict[str, Any]] = []
        now = utcnow()
        for record in records:
            where = f"line {record.line}"
            problems = []
            first = self.clip_index.get(record.left)
            second = NO_SECOND if record.right is None else self.clip_index.get(record.right)
            for name, position in ((record.left, first), (record.right, second)):
                if name is not None and position is None:
                    problems.append(f"{where}: no clip with external id {name!r} in this campaign")
            if record.right is None and (levels is None or (record.level or 0) >= levels):
                problems.append(
                    f"{where}: level {record.level} is not on this campaign's emoji scale"
                    + ("" if levels is None else f" (levels 0..{levels - 1})")
                )
            if record.choice == "tie" and not self.record.ties:
                problems.append(f"{where}: this campaign does not allow ties")
            if record.choice in BOTH_ANSWERS and both is None:
                problems.append(f"{where}: this campaign does not take {record.choice!r}")
            known = by_name.get(record.rater, [])
            if len(known) > 1:
                problems.append(
                    f"{where}: {len(known)} raters of this campaign are named {record.rater!r}"
                )
            found_problems.extend((record.line, problem) for problem in problems)
            if problems:
                continue
            outcome: Outcome | str | None = None
            if record.choice in BOTH_ANSWERS:
                outcome = record.choice
            elif record.choice is not None:
                outcome = {"left": Outcome.WIN, "right": Outcome.LOSS, "tie": Outcome.TIE}[
                    record.choice
                ]
            rater_id = (
                known[0] if known else -(new_raters.setdefault(record.rater, len(new_raters)) + 1)
            )
            rows.append(
                {
                    "rater_id": rater_id,
                    "choice": record.choice,
                    "level": record.level,
                    "first": first,
                    "second": second,
                    "outcome": None if outcome is None else str(outcome),
                    "created_at": record.time or now,
                }
            )
        if found_problems:
            ordered = [text for _, text in sorted(found_problems, key=lambda p: p[0])]
            shown = ordered[:10] + (
                [f"... and {len(ordered) - 10} more"] if len(ordered) > 10 else []
            )
            raise BadRequest(detail="nothing imported: " + "; ".join(shown))
        if self.closing:
            raise Unavailable(detail="the service is shutting down")
        for row in rows:
            row["seq"] = self.pump.next_seq()
        result = {"key": key, "imported": len(rows), "raters_created": list(new_raters)}
        tokens = [(name, hash_token(new_token())) for name in new_raters]  # never shown
        try:
            written = await self._track(
                asyncio.ensure_future(
                    self.writer.run(
                        self.fenced(
                            store.insert_import(self.record.id, key, digest, result, tokens, rows)
                        )
                    )
                )
            )
        except Exception as error:
            log.exception("storing an import failed")
            raise Unavailable(detail="the database did not store the import; retry") from error
        if written is None:  # the same key, imported meanwhile
            found = await loop.run_in_executor(
                None, store.find_import, self.db, self.record.id, key
            )
            assert found is not None
            return self._repeated_import(key, digest, found), True
        for name, rater_id in zip(new_raters, written.rater_ids, strict=True):
            self.add_rater(rater_id, name)
        labels = []
        for row, assignment_id, judgment_id in zip(
            rows, written.assignment_ids, written.judgment_ids, strict=True
        ):
            rater_id = row["rater_id"]
            if rater_id < 0:
                rater_id = written.rater_ids[-rater_id - 1]
            state = AssignmentState(
                assignment_id,
                rater_id,
                -assignment_id,
                row["first"],
                row["second"],
                False,
                row["created_at"].timestamp(),
                answer=Answer(judgment_id, row["choice"], row["level"]),
            )
            self.assignments.add(state)
            self.count_answer(state, row["choice"], row["level"], judgment_id)
            answer = (
                row["level"] if row["second"] == NO_SECOND else replay.stored_answer(row["outcome"])
            )
            # an imported pair was shown with `first` on the left
            judgment = Judgment(
                rater_id, state.question, answer, left=state.left if state.is_pair else None
            )
            labels.append(Label(row["seq"], judgment, state.task_id))
        self.pump.add_labels(labels)
        self.queue.spent = False
        self.pump.wake()
        return result, False

    @staticmethod
    def _repeated_import(
        key: str, digest: str, found: tuple[str, dict[str, Any]]
    ) -> dict[str, Any]:
        if found[0] != digest:
            raise Conflict(
                detail=f"import key {key!r} was used for another import (a different text or "
                "format); use a new key"
            )
        return found[1]

    def _taken_out(self, position: int) -> bool:
        """Whether a restore has anything to undo for a clip: it is retired or withheld, its
        tasks were withdrawn after repeated skips, or the operator restored it before (the
        same restore again, as a client's retry, answers as the first did)."""
        clip = self.clips[position]
        return (
            not clip.offered
            or clip.restored
            or position in self.withdrawn_clips
            or any(position in key for key in self.withdrawn_keys)
        )

    async def retire_clip(self, clip_id: int, retired: bool) -> ClipState:
        """Retire a clip (it leaves every queue and its open assignments are withdrawn; its
        labels stay in the log and the posterior) or restore it (offered again, the skips of
        its tasks and the reports of it so far forgotten). Either ends a withholding.

        Raises:
            NotFound: no such clip in this campaign.
            Conflict: a restore of a clip that was never taken out (nothing written).
            Unavailable: the database did not store it (nothing changed).
        """
        position = self.clip_positions.get(clip_id)
        if position is None:
            raise NotFound(detail=f"clip {clip_id} not found in campaign {self.record.id}")
        clip = self.clips[position]
        if not retired and not self._taken_out(position):
            raise Conflict(
                detail=f"clip {clip_id} ({clip.external_id!r}) was never retired, withheld or "
                "withdrawn: there is nothing to restore"
            )
        ids = self.assignments.showing({position}) if retired else []
        try:
            cleared = await self.writer.run(
                self.fenced(store.set_clip_retired(self.record.id, clip_id, retired, ids))
            )
        except Exception as error:
            log.exception("storing a clip's retirement failed")
            raise Unavailable(detail="the database did not store the change; retry") from error
        clip.retired = retired
        clip.withheld = None
        if retired:
            self.assignments.withdraw(ids, f"clip {clip.external_id!r} was retired")
        else:
            clip.restored = True
            for report in clip.reports:
                self.raters[report.rater_id].reported.discard(position)
            clip.reports = []
            self._forget_skips(position, cleared)
        self.queue.exhausted = self.queue.spent = False
        await self._send_bars()
        return clip

    async def _withhold(self, positions: set[int], reason: str) -> None:
        """Withhold the offered clips among `positions` for `reason`: their open assignments
        are withdrawn and tasks chosen ahead that show them given back.

        Raises:
            Unavailable: the database did not store it (nothing changed).
        """
        clips = [self.clips[p] for p in sorted(positions) if self.clips[p].offered]
        if not clips:
            return
        ids = self.assignments.showing({c.position for c in clips})
        try:
            at = await self.writer.run(
                self.fenced(
                    store.withhold_clips(self.record.id, [c.id for c in clips], reason, ids)
                )
            )
        except Exception as error:
            log.exception("storing withheld clips failed")
            raise Unavailable(detail="the database did not store the change; retry") from error
        for clip in clips:
            clip.withheld, clip.withheld_at = reason, at
        self.assignments.withdraw(ids, _withheld_why(clips[0].external_id, reason))
        await self._send_bars()

    async def report(self, rater: RaterState, assignment_id: int, clip_id: int) -> ReportResult:
        """A rater reports a clip of their task as unsafe or broken. The report is stored;
        once `report_limit` distinct raters reported the clip (since the operator last
        restored it) it is withheld in the same transaction and every open assignment that
        shows it is withdrawn; until then the reporter's own assignment is withdrawn, so the
        page moves on. The same rater reporting the clip again writes nothing.

        Raises:
            NotFound: no such assignment of this rater, or no such clip in the campaign.
            BadRequest: the clip is not one the assignment shows (nothing written).
            Unavailable: the database did not store it (nothing changed).
        """
        state = self.assignments.get(assignment_id)
        if state is None or state.rater_id != rater.id:
            raise NotFound(detail=f"assignment {assignment_id} not found for this rater")
        position = self.clip_positions.get(clip_id)
        if position is None:
            raise NotFound(detail=f"clip {clip_id} not found in campaign {self.record.id}")
        if position not in state.shown:
            raise BadRequest(
                detail=f"clip {clip_id} is not in assignment {assignment_id}: report one of "
                "the clips it shows"
            )
        clip = self.clips[position]
        reporters = {r.rater_id for r in clip.reports}
        if rater.id in reporters or (position, rater.id) in self._reporting:
            return ReportResult(clip, len(reporters), True)
        if self.closing:
            raise Unavailable(
                detail=self.failure if self.failed else "the service is shutting down"
            )
        # reports of other raters still being written count too: two raters reporting at
        # once must not both fall short of the limit
        writing = {r for p, r in self._reporting if p == position}
        withhold = clip.offered and len(reporters | writing) + 1 >= self.record.report_limit
        own_open = state.answer is None and state.committing is None and not state.released
        ids = self.assignments.showing({position}) if withhold else [state.id] if own_open else []
        values = {
            "campaign_id": self.record.id,
            "clip_id": clip.id,
            "rater_id": rater.id,
            "assignment_id": state.id,
        }
        self._reporting.add((position, rater.id))
        try:
            written = await self._track(
                asyncio.ensure_future(
                    self.writer.run(self.fenced(store.insert_report(values, ids, withhold)))
                )
            )
        except Exception as error:
            log.exception("storing a report failed")
            raise Unavailable(detail="the database did not store the report; retry") from error
        finally:
            self._reporting.discard((position, rater.id))
        clip.reports.append(Report(written.id, rater.id, state.id, written.created_at))
        rater.reported.add(position)
        if withhold:
            clip.withheld, clip.withheld_at = REPORTS, written.created_at
            self.assignments.withdraw(ids, _withheld_why(clip.external_id, REPORTS))
            with contextlib.suppress(Unavailable):  # the report is stored: acknowledge it
                await self._send_bars()
        else:
            self.assignments.withdraw(ids, f"its rater reported clip {clip.external_id!r}")
        return ReportResult(clip, len(reporters) + 1, False)

    def withheld(self) -> list[ClipState]:
        """The clips the campaign's policy withholds now, by position."""
        return [c for c in self.clips if c.withheld is not None and not c.retired]

    async def set_rater_active(self, rater_id: int, active: bool) -> RaterState:
        """Deactivate a rater (their open assignments are withdrawn and their reserve given
        back; their labels stay) or reactivate them.

        Raises:
            NotFound: no such rater in this campaign.
            Unavailable: the database did not store it (nothing changed).
        """
        rater = self.raters.get(rater_id)
        if rater is None:
            raise NotFound(detail=f"rater {rater_id} not found in campaign {self.record.id}")
        ids = [] if active else sorted(rater.open)
        try:
            await self.writer.run(self.fenced(store.set_rater_active(rater_id, active, ids)))
        except Exception as error:
            log.exception("storing a rater's state failed")
            raise Unavailable(detail="the database did not store the change; retry") from error
        rater.active = active
        if not active:
            self.assignments.withdraw(ids, f"rater {rater_id} was deactivated")
            self.queue.drop_reserve(rater_id)
            self.pump.wake()
        return rater

    async def add_gold(self, pairs: Sequence[tuple[int, int, Outcome]]) -> int:
        """Store gold pairs `(first, second, outcome of first vs second)` (positions, first <
        second; validated by the caller) and give them to the engine; a pair that is gold
        already with the same answer is skipped. Returns how many were new.

        Raises:
            Conflict: a pair is gold already with another answer (nothing is stored).
            Unavailable: the database did not store them (nothing changed).
        """

        async def add() -> int:
            clash = [(f, s) for f, s, a in pairs if self.gold.get((f, s), a) != a]
            if clash:
                first, second = clash[0]
                raise Conflict(
                    detail=f"clips {self.clips[first].external_id!r} and "
                    f"{self.clips[second].external_id!r} are a gold pair already, with another "
                    f"answer ({len(clash)} such pair(s)); nothing was stored"
                )
            new = [(f, s, a) for f, s, a in pairs if (f, s) not in self.gold]
            if new:
                rows = [(f, s, a.value) for f, s, a in new]
                try:
                    await self.writer.run(self.fenced(store.insert_gold(self.record.id, rows)))
                except Exception as error:
                    log.exception("storing gold pairs failed")
                    raise Unavailable(
                        detail="the database did not store the gold pairs; retry"
                    ) from error
                self.gold.update({(f, s): a for f, s, a in new})
                await self.engine_calls.run("add_gold", rows)
            return len(new)

        return await self.call(add, fresh=False)

    def add_rater(self, rater_id: int, name: str | None) -> RaterState:
        """Track a newly registered rater."""
        state = RaterState(rater_id, name)
        self.raters[rater_id] = state
        return state

    # reads ------------------------------------------------------------------------------------

    async def leaderboard(self, level: float) -> Board:
        """Per clip (by position) mean, sd, `level` interval and rank, and the expected Kendall
        tau; cached per applied batch."""
        return await self.pump.read("leaderboard", level, self.n_labels)

    async def weights(self, level: float) -> WeightRows:
        """Global and per-context criterion weights: mean, sd and central `level` interval."""
        return await self.pump.read("weights", level, self.n_labels)

    async def progress(self) -> dict[str, Any]:
        """Where the posterior stands against the stopping targets (`CampaignEngine.progress`),
        after every acknowledged label."""
        return await self.call(lambda: self.engine_calls.run("progress"))

    async def rater_stats(self) -> RaterStats:
        """Per registered rater: (noise sd, keep probability, P(random clicker), flagged)."""
        ids = list(self.raters)
        return await self.call(lambda: self.engine_calls.run("rater_stats", ids))

    async def side_offsets(self) -> dict[str, Any] | None:
        """The side offsets' posterior (`CampaignEngine.side_offsets`); None without a side
        bias."""
        return await self.call(lambda: self.engine_calls.run("side_offsets"))

    async def inspect(self, name: str) -> Any:
        """An engine diagnostic, `pending` or `log` (see `CampaignEngine`), for tests."""
        return await self.call(lambda: self.engine_calls.run(name))

    # the engine host -------------------------------------------------------------------------

    def _engine_stopped(self) -> Unavailable:
        """The engine's process stopped: this runtime stops too; what waits gets a 503, and the
        service rebuilds the campaign from the database on the next request."""
        self.stop_serving(ENGINE_STOPPED)
        return Unavailable(detail=self.failure)

    def stop_serving(self, why: str) -> None:
        """This runtime can serve nothing more (`why`): what waits gets a 503, and the service
        rebuilds the campaign or sends its requests to its new owner."""
        if self.failed:
            return
        self.failed, self.failure = True, why
        self.queue.changed.set()
        self.pump.wake()
        self._fail_calls()

    def fenced(self, op: Callable[[Connection], T]) -> Callable[[Connection], T]:
        """`op`, refused in its own transaction once another process owns this campaign
        (`Leases.fence`); a refusal stops this runtime."""
        if self._fence is None:
            return op
        checked = self._fence(self.record.id, op)
        loop = asyncio.get_running_loop()

        def run(connection: Connection) -> T:
            try:
                return checked(connection)
            except LeaseLost:
                loop.call_soon_threadsafe(self.stop_serving, LEASE_LOST)
                raise

        return run


def _describe(choice: str | None, level: int | None, ranking: tuple[int, ...] | None = None) -> str:
    if ranking is not None:
        return f"ranking {list(ranking)} (clip positions)"
    return f"choice {choice!r}" if choice is not None else f"level {level}"


__all__ = [
    "ACTIVE",
    "CLOSED",
    "PAUSED",
    "CampaignRuntime",
    "ClipState",
    "JudgeResult",
    "NewClip",
    "RaterState",
    "build_config",
    "emoji_thresholds",
    "engine_config",
    "scale_levels",
    "stored_feature_dim",
    "stored_min_labels",
]
