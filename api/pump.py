"""A campaign's pump: the one coroutine that calls its engine (`Pump`).

It runs, in this priority, (1) the committed labels not yet applied, as one ordered batch, once
`apply_batch` of them gathered or the oldest waited `apply_wait_s`, or before a queued call that
must see them (a read, a clip batch), but after a refill while the queue of tasks chosen ahead
is below its target (micro-batching: a posterior update costs a pass over the covariance
whatever its size; a request finding the queue empty waits for the next refill), (2)
queued calls (clip batches, per-rater selections, reads), (3) a prior refit's adoption once its
background fit returned, or the copy a due one starts from (api/refits.py), (4) a snapshot when
one is due, (5) releases of expired or skipped tasks, (6) refills of the queue of tasks chosen
ahead, (7) when idle, the replacement of queued tasks chosen before the latest labels. An update
and a refill due together are sent back to back, with no round trip between them.

The pump owns the labels on their way to the engine: their commit order (`seq`), the engine
batches they were applied in, and the number of batches applied (`version`), which dates cached
reads and queued tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from api import store
from api.campaign_config import ACTIVE, stored_targets
from api.errors import Unavailable
from api.task_keys import question_key
from api.task_queue import IDLE_WAKE_S
from engine import Judgment

if TYPE_CHECKING:
    from api.campaigns import CampaignRuntime

log = logging.getLogger("ratingparty.api")
T = TypeVar("T")

# queued tasks chosen before the latest labels are replaced only after this long without a
# request: under load every engine second goes to tasks someone waits for
REFRESH_IDLE_S = 0.25
CLOSE_WAIT_S = 10.0  # longest engine step a shutdown waits for before cancelling it
# a progress point's apply-and-tau call that takes longer than PROGRESS_DEAR_S spaces the next
# points so that such calls take at most PROGRESS_SHARE of the engine's time
PROGRESS_DEAR_S = 0.05
PROGRESS_SHARE = 0.05


@dataclass(frozen=True)
class Label:
    """A committed label waiting for the engine."""

    seq: int
    judgment: Judgment
    task_id: int


class Pump:
    """Runs one campaign's engine work in order (see the module's docstring).

    Args:
        runtime: the campaign's runtime, whose queue, assignments, snapshots and engine calls
            the pump drives.
    """

    def __init__(self, runtime: CampaignRuntime) -> None:
        self._rt = runtime
        # queued calls: (fn, its future, whether it must see every committed label)
        self._calls: deque[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any], bool]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._to_release: list[int] = []
        self._unapplied: list[Label] = []
        self._unapplied_since = math.inf  # when the oldest waiting label was committed
        self._next_seq = 1
        self.applied_seq = 0  # the latest label applied (clip batches are stored after it)
        self._next_batch = 1
        self.version = 0  # engine batches applied (for cached reads and stale queue entries)
        self._last_progress = -math.inf
        self._progress_labels = 0  # labels at the last recorded progress point
        # least seconds between progress points: progress_every_s, or longer where the
        # expected Kendall tau a point records is dear (see `PROGRESS_SHARE`)
        self._progress_gap = 0.0
        self.n_applied = 0  # labels applied to the posterior (n_labels minus the waiting ones)
        self._read_cache: dict[tuple[str, float], tuple[int, Any]] = {}

    # the labels -------------------------------------------------------------------------------

    def resume(self, last_seq: int, last_batch: int, n_applied: int) -> None:
        """Go on from the log: labels up to `last_seq` in batches up to `last_batch`, every
        one of the `n_applied` applied (the replay did)."""
        self._next_seq = last_seq + 1
        self.applied_seq = last_seq
        self._next_batch = last_batch + 1
        self.n_applied = self._progress_labels = n_applied

    @property
    def last_batch(self) -> int:
        """The latest label batch sent to the engine."""
        return self._next_batch - 1

    def next_seq(self) -> int:
        """The commit order of the next label."""
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        return seq

    def add_labels(self, labels: Iterable[Label]) -> None:
        """Committed labels, for the engine (in their `seq` order, whatever the order here)."""
        labels = list(labels)
        if labels and not self._unapplied:
            self._unapplied_since = time.monotonic()
        self._unapplied.extend(labels)
        for label in labels:
            self._rt.answered.committed(label.judgment.rater, question_key(label.judgment.question))

    def refitted(self) -> None:
        """The engine adopted a prior refit: its posterior changed without a label batch, so
        cached reads and the tasks queued before it are dated as before a batch."""
        self.version += 1

    def give_back(self, task_ids: Iterable[int]) -> None:
        """Release these engine tasks at the pump's next step that has nothing before it."""
        self._to_release.extend(task_ids)

    def wake(self) -> None:
        """Look for work now (the pump otherwise wakes at least every `IDLE_WAKE_S`)."""
        self._wake.set()

    # calls ------------------------------------------------------------------------------------

    async def call(self, fn: Callable[[], Awaitable[T]], *, fresh: bool = True) -> T:
        """Run `fn` on the pump; when `fresh`, after the labels committed so far are applied
        (a read reflects every acknowledged label)."""
        if self._rt.failed:
            raise Unavailable(detail=self._rt.failure)
        if self._rt.closing:
            raise Unavailable(detail="the service is shutting down")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.append((fn, future, fresh))
        self._wake.set()
        return await future

    async def read(self, name: str, level: float, n_labels: int) -> Any:
        """An engine read cached per applied batch; a read reflects every label acknowledged
        before it (`n_labels` of them): with labels still waiting for the engine it goes
        through the pump, which applies them first."""
        key = (name, level)
        hit = self._read_cache.get(key)
        if hit is not None and hit[0] == self.version and self.n_applied == n_labels:
            return hit[1]

        async def fresh() -> Any:
            again = self._read_cache.get(key)
            if again is not None and again[0] == self.version:
                return again[1]
            version = self.version
            value = await self._rt.engine_calls.run(name, level)
            self._read_cache[key] = (version, value)
            return value

        return await self.call(fresh)

    def fail_calls(self, why: str) -> None:
        """Answer every queued call with a 503 saying `why`."""
        while self._calls:
            _, future, _ = self._calls.popleft()
            if not future.done():
                future.set_exception(Unavailable(detail=why))

    # the loop ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name=f"pump-{self._rt.record.id}")

    async def stop(self) -> None:
        """Let the current engine step finish (an applied batch gets its batch mark), at most
        `CLOSE_WAIT_S`, then stop; the runtime is closing already."""
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_WAIT_S)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _pump(self) -> None:
        while not self._rt.closing and not self._rt.failed:
            self._wake.clear()
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("campaign %s: engine step failed", self._rt.record.id)
                await asyncio.sleep(0.1)  # do not spin on a persistent failure

    async def _step(self) -> None:
        """One unit of engine work, in priority order; waits when there is none."""
        rt = self._rt
        queue = rt.queue
        rt.expire_due()
        short = self._refill_wanted()
        if self._unapplied and (
            (self._calls and self._calls[0][2])
            or (self._apply_due() and not (short and self._apply_can_wait()))
        ):
            # a read sees every committed label; otherwise a queue below its target is refilled
            # first: an update is a pass over the covariance (tens of milliseconds under load),
            # and put in front of the refill it would let the queue run dry while requests keep
            # taking from it; the labels change the next choices little
            await self._apply(refill=not self._calls and short)
        elif self._calls:
            fn, future, _ = self._calls.popleft()
            try:
                result = await fn()
            except Exception as error:
                if not future.done():
                    future.set_exception(error)
            else:
                if not future.done():
                    future.set_result(result)
        elif rt.refits.wanted is not None:
            await rt.refits.send_entries()
        elif rt.refits.ready is not None:
            await rt.refits.finish()
        elif rt.refits.due:
            await rt.refits.start()
        elif rt.snapshots.due:
            await rt.snapshots.take()
        elif self._to_release:
            released, self._to_release = self._to_release, []
            await rt.engine_calls.run("release", released)
        elif self._refill_wanted():
            await self._refill(apply=bool(self._unapplied) and self._apply_due())
        elif (
            not self._unapplied
            and queue.depth
            and (queue.oldest_version() or 0) < self.version
            and time.monotonic() - queue.last_demand > REFRESH_IDLE_S
        ):
            await self._refresh_oldest()
        else:
            timeout = IDLE_WAKE_S
            expiry = rt.assignments.next_expiry()
            if expiry is not None:
                timeout = min(timeout, max(0.0, expiry - time.time()) + 0.001)
            if self._unapplied:  # until the waiting labels are due
                due_at = self._unapplied_since + rt.settings.apply_wait_s
                timeout = min(timeout, max(0.0, due_at - time.monotonic()) + 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _apply_due(self) -> bool:
        """Whether the waiting labels go to the engine now: `apply_batch` of them, or the
        oldest waited `apply_wait_s`. Until then they gather, so each posterior update (one
        pass over the covariance, whatever the batch) carries more labels; while they wait
        their tasks count as pending, as they did before the answer."""
        waited = time.monotonic() - self._unapplied_since
        return len(self._unapplied) >= self._rt.settings.apply_batch or (
            waited >= self._rt.settings.apply_wait_s
        )

    def _apply_can_wait(self) -> bool:
        """Whether the waiting labels may wait for one more refill: fewer than a full update
        (`max_apply_batch`) of them, the oldest committed less than a second ago."""
        waited = time.monotonic() - self._unapplied_since
        return len(self._unapplied) < self._rt.settings.max_apply_batch and waited < 1.0

    def _refill_wanted(self) -> bool:
        queue = self._rt.queue
        return (
            self._rt.record.state == ACTIVE
            and not (queue.exhausted or queue.spent)
            and queue.depth < queue.target()
        )

    async def _apply(self, *, refill: bool = False) -> None:
        """Apply the oldest committed labels as one ordered batch (micro-batching); with
        `refill`, a refill follows in the engine at once (no round trip between them)."""
        applying = self._start_apply()
        refilling = self._start_refill(self.version + 1) if refill else None
        try:
            await applying
        finally:  # sent, so awaited whatever happened to the first
            if refilling is not None:
                await refilling

    async def _refill(self, *, apply: bool = False) -> None:
        """Choose more tasks ahead (see `_start_refill`); with `apply`, the waiting labels'
        update follows in the engine at once, after the choice the requests wait for."""
        refilling = self._start_refill(self.version)
        applying = self._start_apply() if apply else None
        try:
            await refilling
        finally:  # sent, so awaited whatever happened to the first
            if applying is not None:
                await applying

    def _start_apply(self) -> Awaitable[None]:
        """Send the oldest committed labels to the engine as one ordered batch; the returned
        awaitable ends once they are applied (and their batch mark is on its way)."""
        rt = self._rt
        settings = rt.settings
        self._unapplied.sort(key=lambda label: label.seq)
        size = settings.max_apply_batch
        batch, self._unapplied = self._unapplied[:size], self._unapplied[size:]
        self._unapplied_since = time.monotonic() if self._unapplied else math.inf
        batch_no = self._next_batch
        self._next_batch += 1
        now = time.monotonic()
        # thinned: at most one point per progress_every_s and one per 2 % more labels, so a
        # long campaign keeps a few hundred points, a short one a point per label
        labels_after = self.n_applied + len(batch)
        record_progress = now - self._last_progress >= max(
            settings.progress_every_s, self._progress_gap
        ) and labels_after >= self._progress_labels + max(1, self._progress_labels // 50)
        if record_progress:  # claimed now: a pipelined batch must not record one too
            self._last_progress = now
        observed = rt.engine_calls.submit(
            "observe",
            [label.judgment for label in batch],
            [label.task_id for label in batch],
            record_progress,
        )

        async def applied() -> None:
            tau = await observed
            if record_progress:
                # the expected tau scores every pair in scope: about a second of the engine's
                # time at 1e5 clips in prompts of 20, which must not crowd out the choices
                spent = time.monotonic() - now
                self._progress_gap = spent / PROGRESS_SHARE if spent > PROGRESS_DEAR_S else 0.0
            self.applied_seq = batch[-1].seq
            self.n_applied += len(batch)
            # answered until now as waiting (also while the batch was on its way): a batch
            # that failed stays so, as the engine does not know it
            rt.answered.applied(
                (label.judgment.rater, question_key(label.judgment.question)) for label in batch
            )
            rt.queue.spent = False
            self.version += 1
            if stored_targets(rt.record.engine_config).any:
                await self._drop_if_done()
            seqs = [label.seq for label in batch]
            rt.writer.submit(rt.fenced(store.mark_batch(rt.record.id, seqs, batch_no)))
            rt.snapshots.applied(self.n_applied)
            rt.refits.applied(self.n_applied)
            if record_progress:
                self._progress_labels = self.n_applied
                rt.writer.submit(
                    rt.fenced(store.insert_progress(rt.record.id, self.n_applied, tau))
                )

        return applied()

    async def _drop_if_done(self) -> None:
        """Once every stopping target is met, give back the tasks chosen ahead: they were
        chosen before, and handing them out would ask for labels the campaign no longer
        needs (the next choice says why there is none)."""
        status = await self._rt.engine_calls.submit("progress")
        if not status["done"]:
            return
        self._rt.queue.drop_all()
        self._wake.set()

    def _start_refill(self, version: int) -> Awaitable[None]:
        """Send a choice of more tasks ahead (held as pending for no rater in particular),
        chosen under the posterior of `version` applied batches.

        `refill_batch` tasks at most per engine call, by `Campaign.next_tasks`: a batch of pairs
        (each pending for the next), or one emoji rating when it teaches more per second. The
        queue may end above its target by up to half of it, never above `queue_max`.
        """
        rt = self._rt
        queue, settings = rt.queue, rt.settings
        target, queued = queue.target(), queue.depth
        # at least half the target at once: a refill's screen and shrink rebuild cost the same
        # for 2 tasks as for 20, so topping up one or two at a time would waste them
        wanted = max(target - queued, target // 2)
        count = max(1, min(settings.refill_batch, settings.queue_max - queued, wanted))
        spent = queue.spent_pairs()
        chosen = rt.engine_calls.submit("choose", None, count, spent)

        async def refilled() -> None:
            tasks = rt.drop_for_nobody(await chosen)
            if not tasks and spent:
                queue.spent = True
            elif not tasks:
                queue.exhausted = True
            queue.extend(tasks, version)
            queue.notify()

        return refilled()

    async def _refresh_oldest(self) -> None:
        """Idle only: replace the oldest task chosen before the latest labels."""
        rt = self._rt
        stale = rt.queue.pop_oldest()
        version = self.version
        task = await rt.engine_calls.run("replace", stale.task.id, rt.queue.spent_pairs())
        if task is not None and not rt.drop_for_nobody([task]):
            return
        if task is not None:
            rt.queue.extend([task], version)
            rt.queue.notify()
