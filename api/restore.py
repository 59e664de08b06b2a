"""How a campaign's runtime comes back from the database, and the snapshots it saves on the way.

`load` takes the latest snapshot when it fits (api/snapshots.py) and replays the clips, labels
and prior refits after it in exactly their interleaved, batched order (api/replay.py), so the
posterior after a restart equals the one before (float64, CPU); `restore` rebuilds the
loop-side state from the log (clips, raters, reports, skips, answer counts, gold pairs), and
open assignments whose lease has not expired are held again; what each rater answered is the
loaded engine's record (`Answered.load`). Every `snapshot_every` applied labels the pump saves
a new snapshot (`Snapshots`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

from api import replay, snapshots, store
from api.assignments import Answer, AssignmentState
from api.db import as_utc
from engine import Outcome, Task

if TYPE_CHECKING:
    from api.campaigns import CampaignRuntime
    from api.store import CampaignLog

log = logging.getLogger("ratingparty.api")
SNAPSHOT_PART_BYTES = 1 << 20  # a snapshot part: one short transaction of the writer
SNAPSHOT_POLL_S = 0.01  # how often the wait for a snapshot file looks for it
# a forked child that wrote no snapshot (or refit copy) by then failed: the next snapshot
# covers its labels (the next point of the refit schedule tries again)
SNAPSHOT_WAIT_S = 600.0
SNAPSHOT_CLOSE_WAIT_S = 5.0  # how long a closing runtime waits for a snapshot being written
# a snapshot due by its labels waits until this many times the latest one's duration (from
# its start to its row stored) has passed since that one started: the engine's write, the
# file's read and the writer's transactions stay under 1/SNAPSHOT_SPACING of the time. At
# 1e5 clips and 500 labels/s, one every 1,000 labels took the assignment p99 from 11 ms to
# 90-212 ms
SNAPSHOT_SPACING = 20.0


async def load(runtime: CampaignRuntime) -> None:
    """Load the campaign's log and its latest snapshot; take the snapshot's state when it fits
    and replay the log after it, else replay the whole log; then hold the open assignments'
    tasks and bar what no choice may offer."""
    rt = runtime
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    logged, snapshot = await loop.run_in_executor(
        None, replay.read, rt.db, rt.record.id, rt.settings.snapshot_every > 0
    )
    await rt.engine.start()
    try:
        after = await replay.take_snapshot(rt.engine, rt.record, snapshot, rt.metrics)
        batches = replay.label_batches(
            logged, rt.settings.max_apply_batch, 0 if after is None else after[0]
        )
        config = snapshots.config_digest(rt.record.engine_config)
        steps = replay.steps(
            logged, batches, bool(rt.record.engine_config["criteria"]), after, config
        )
        left_out = await rt.engine.call("replay", steps)
        if left_out:
            # the schedule refits again from the labels so far, in the background, and its
            # refits take these ordinals: their rows go
            log.warning(
                "campaign %s: refits left out of the replay: %s",
                rt.record.id,
                "; ".join(f"refit {ordinal}: {why}" for ordinal, why in left_out),
            )
            for ordinal, _ in left_out:
                rt.writer.submit(rt.fenced(store.delete_refit(rt.record.id, config, ordinal)))
        # every committed label is applied now: what each rater answered is the engine's
        rt.answered.load(await rt.engine.call("answered"))
        held = restore(rt, logged, replay.unmarked(batches))
        await rt.engine.call("add_gold", [(*key, a.value) for key, a in rt.gold.items()])
        await rt.engine.call("hold", held)
        await rt.engine.call("bar", *rt.bars())
        refit_labels = await rt.engine.call("refit_labels")
    except BaseException:
        await rt.engine.close()
        raise
    replayed = sum(len(step) for step in steps if isinstance(step, list))
    rt.metrics.replayed_labels.labels("log" if after is None else "snapshot").inc(replayed)
    rt.snapshots.labels = rt.pump.n_applied if after is None else snapshot.labels  # type: ignore[union-attr]
    # a refit the snapshot holds counts; without one, the schedule asks for it again
    rt.refits.resume(refit_labels, rt.pump.n_applied)
    rt.metrics.replays.observe(time.perf_counter() - started)


def restore(runtime: CampaignRuntime, logged: CampaignLog, unmarked: list[list[int]]) -> list[Task]:
    """Loop-side state from the log, and batch marks for the labels the replay applied in
    the batches `unmarked` (their seqs) that had none; returns the tasks of open, unexpired
    assignments, for the engine to hold as pending again."""
    # here, not at the top: api.campaigns imports this module
    from api.campaigns import ClipState, RaterState, Report, epoch, safety_score

    rt = runtime
    held = []
    for clip in logged.clips:
        rt.clips.append(
            ClipState(
                clip.id,
                clip.position,
                clip.external_id,
                clip.uri,
                clip.group,
                clip.context,
                retired=clip.retired,
                safety=safety_score(rt.record.criteria, clip.scores),
                withheld=clip.withheld,
                withheld_at=None if clip.withheld_at is None else as_utc(clip.withheld_at),
                restored=clip.restored_at is not None,
            )
        )
        rt.clip_index[clip.external_id] = clip.position
        rt.clip_positions[clip.id] = clip.position
        if clip.skips_cleared:
            rt.skips_cleared[clip.position] = clip.skips_cleared
    rt.next_clip_batch = 1 + max((c.batch for c in logged.clips), default=0)
    rt.gold = {(g.first, g.second): Outcome(g.answer) for g in logged.gold}
    for rater in logged.raters:
        rt.raters[rater.id] = RaterState(rater.id, rater.name, active=rater.active)
    cleared = {c.id: c.reports_cleared for c in logged.clips}
    for report in logged.reports:
        if report.id > cleared[report.clip_id]:
            position = rt.clip_positions[report.clip_id]
            rt.clips[position].reports.append(
                Report(report.id, report.rater_id, report.assignment_id, as_utc(report.created_at))
            )
            rt.raters[report.rater_id].reported.add(position)
    answers = {j.assignment_id: j for j in logged.judgments}
    now = time.time()
    for record in logged.assignments:
        judgment = answers.get(record.id)
        state = AssignmentState(
            record.id,
            record.rater_id,
            -record.id,
            record.first,
            record.second,
            record.swapped,
            epoch(record.expires_at),
            gold=None if record.gold is None else Outcome(record.gold),
            items=record.items,
            mode=record.kset_mode,
            criterion=record.criterion,
        )
        rt.assignments.add(state)
        if judgment is not None:
            state.answer = Answer(judgment.id, judgment.choice, judgment.level, judgment.ranking)
            rt.count_answer(state, judgment.choice, judgment.level, judgment.id)
        elif record.status == "withdrawn":
            state.released = True
            state.withdrawn = "it was withdrawn by the operator"
        elif state.expires_at > now:
            # engine task ids of restored tasks are negative: the engine counts up from 1
            held.append(Task(state.task_id, record.rater_id, state.question, 0.0, (), state.gold))
            rt.assignments.claim(rt.raters[state.rater_id], state.question)
            rt.assignments.open(state)
        else:
            state.released = True
    seqs = [j.seq for j in logged.judgments if j.seq is not None]
    last_batch = max((j.batch or 0 for j in logged.judgments), default=0)
    # labels applied before their owner died wrote no batch mark: the replay applied them
    # in batches of its own, marked now as such (after every mark there is, as they came),
    # so that a snapshot taken from here on holds them and a replay after it does not
    # apply them again
    for batch in unmarked:
        last_batch += 1
        rt.writer.submit(rt.fenced(store.mark_batch(rt.record.id, batch, last_batch)))
    rt.pump.resume(max(seqs, default=0), last_batch, len(seqs))
    rt.recount_withdrawals()
    return held


class Snapshots:
    """When the pump saves the engine state, and the saving (`take`).

    The engine writes the snapshot to a file of this runtime's temporary folder (from a
    forked child when it runs in a process of its own: `CampaignEngine.snapshot_to`), and a
    worker thread hands the file's bytes to the database writer once it is whole: neither the
    engine's next calls nor the event loop wait for the tens of megabytes of a dense
    campaign's snapshot.

    Args:
        runtime: the campaign's runtime (its pump's counters, engine calls and writer).
    """

    def __init__(self, runtime: CampaignRuntime) -> None:
        self._rt = runtime
        self.labels = 0  # labels applied when the latest snapshot was taken
        self._due = False
        self._folder: str | None = None  # where the engine writes snapshot files
        self._storing: asyncio.Future[None] | None = None  # the latest snapshot on its way
        # the latest snapshot's start and its duration (monotonic seconds)
        self._started, self._took = -math.inf, 0.0
        self._stop = threading.Event()  # the runtime closes: stop waiting for a file

    @property
    def due(self) -> bool:
        """Whether the pump takes a snapshot now: one is due, the one before is stored (or
        given up), and SNAPSHOT_SPACING times its duration has passed since it started."""
        return (
            self._due
            and (self._storing is None or self._storing.done())
            and time.monotonic() >= self._started + SNAPSHOT_SPACING * self._took
        )

    def request(self) -> None:
        """Take a snapshot at the pump's next chance, once the one before is stored."""
        self._due = True

    def applied(self, n_applied: int) -> None:
        """Labels were applied, `n_applied` in all: a snapshot is due once that crossed a
        multiple of `snapshot_every`."""
        every = self._rt.settings.snapshot_every
        if every and n_applied // every > self.labels // every:
            self._due = True

    async def take(self) -> None:
        """Save the engine state, while `due` (one store at a time: each deletes the parts no
        snapshot row names, which would include those of another store on its way), as it is
        between two pump steps: after the pump's latest label
        batch and clip batch `next_clip_batch - 1`, every call before applied. Written after
        those batches' marks (the writer commits in order, and the snapshot is handed to it
        later still)."""
        rt = self._rt
        self._due = False
        self._started = time.monotonic()
        labels, label_batch = rt.pump.n_applied, rt.pump.last_batch
        clip_batch = rt.next_clip_batch - 1
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix=f"ratingparty-campaign-{rt.record.id}-")
        path = os.path.join(self._folder, f"snapshot-{label_batch}-{clip_batch}")
        await rt.engine_calls.run("snapshot_to", path)
        self.labels = labels
        self._storing = asyncio.ensure_future(self._store(path, labels, label_batch, clip_batch))

    async def _store(self, path: str, labels: int, label_batch: int, clip_batch: int) -> None:
        """Store the snapshot file at `path` once it is whole: its parts of
        `SNAPSHOT_PART_BYTES`, each in a transaction of its own (with whatever else the writer
        has then), the snapshot row naming them, then the parts of the snapshots before it,
        again one per transaction."""
        rt = self._rt
        data = await asyncio.to_thread(read_when_whole, path, self._stop)
        if data is None:  # the log still has every label: the next snapshot covers them
            if not self._stop.is_set():
                log.warning("campaign %s: no snapshot was written to %s", rt.record.id, path)
            return
        key = uuid.uuid4().hex
        record = replay.snapshot_record(rt.record, labels, label_batch, clip_batch, b"")
        view = memoryview(data)
        parts = range(0, max(1, len(data)), SNAPSHOT_PART_BYTES)
        try:
            for part, start in enumerate(parts):
                if self._stop.is_set():
                    return  # parts without a row: the next snapshot deletes them
                chunk = view[start : start + SNAPSHOT_PART_BYTES]
                await rt.writer.run(
                    rt.fenced(store.insert_snapshot_part(rt.record.id, key, part, chunk))
                )
            await rt.writer.run(
                rt.fenced(store.insert_snapshot(rt.record.id, replace(record, parts_key=key)))
            )
            rt.metrics.snapshots.labels("written").inc()
            self._took = time.monotonic() - self._started
            while not self._stop.is_set() and await rt.writer.run(
                rt.fenced(store.delete_stale_snapshot_part(rt.record.id))
            ):
                pass
        except Exception as error:  # the log still has every label: the next snapshot, or a
            # full replay, covers them
            log.warning("campaign %s: storing a snapshot failed: %s", rt.record.id, error)

    async def close(self) -> None:
        """Hand a snapshot being written to the database writer once it is whole, waiting at
        most `SNAPSHOT_CLOSE_WAIT_S` (then it is given up: the log has every label), and
        remove the folder."""
        if self._storing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._storing), SNAPSHOT_CLOSE_WAIT_S)
            self._stop.set()
            with contextlib.suppress(Exception):
                await self._storing
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def read_when_whole(path: str, stop: threading.Event) -> bytes | None:
    """The bytes of the file `path` once it exists (it appears whole: `snapshots.write`,
    `CampaignEngine.refit_copy_to`), removed after reading; None if it did not appear within
    `SNAPSHOT_WAIT_S` or `stop` was set first."""
    deadline = time.monotonic() + SNAPSHOT_WAIT_S
    while not os.path.exists(path):
        if stop.wait(SNAPSHOT_POLL_S) or time.monotonic() > deadline:
            return None
    try:
        with open(path, "rb") as file:
            return file.read()
    finally:
        os.remove(path)
