"""A campaign's prior refits, run off the request path (`PriorRefits`).

The label-efficiency suite scores strategies under an engine campaign that refits its prior by
empirical Bayes at `engine.refit_schedule(n)` labels (2n, 4n, 8n, ... for n clips; the split
of the prior's quality variance between the criteria and the residual, rater lapses and noise
learned: docs/MATH.md §1, "Learning the split"). The service follows the same schedule, but a
fit (`Campaign.fit_prior`: up to 200 ADF passes over every label) takes seconds, and the
campaign's engine answers its calls one at a time. So:

1. Once the labels applied cross a point of the schedule, the pump asks the engine for a copy
   of its state (`CampaignEngine.refit_copy_to`: the campaign pickled into a file, by a child
   forked from the engine's process where it runs in one, so the engine does not wait for
   the pickling), and once the file is whole a worker fits on that copy: a process of its
   own (from the engine hosts' forkserver) where the engine runs in processes, a thread
   where it runs in a thread (at the service's priority). The engine keeps answering calls,
   and taking labels and clips, meanwhile.
2. The worker fits the copy, at the lowest CPU priority (nice 19: it takes only the CPU the
   engine and the service leave), then catches it up (`catch_up`): in rounds, the pump asks
   the engine for its history entries since those the copy holds (`refit_entries`: the clip
   batches, refines and label batches it took meanwhile, in order, as far as CATCH_UP_FETCH
   labels) and the worker applies them as the adoption would (`Campaign.catch_up`), until at
   most CATCH_UP_TAIL labels are left or a round no longer shrinks them. Then it returns the
   copy's state without the labels of its history (`Campaign.refit_result`: the engine holds
   them, and rebuilding tens of thousands of label objects would stall it), and the pump
   writes it to a file for the engine (`receive_refit` reads and unpickles it, then
   `adopt_refit`: two calls, and the engine reads a file rather than waiting for the bytes
   to stream through its channel), which applies again only what is left
   (`Campaign.adopt_refit`): the state the refit would have left had it been applied where
   the copy was made, the same whether the copy caught up or not. The engine's stall is that
   tail, not a pass over every label, nor over the labels of a fit's minutes at a party's
   rate.
3. At most one fit is in flight per campaign. A fit that fails is logged and skipped (the
   next point of the schedule tries again); closing the campaign cancels the fit (its
   process is killed; a thread's result is dropped).

Durability: before the engine adopts a refit, its row is written (`store.insert_refit`: its
values, the history entries its copy was made after, and the label batch and clip batch it is
adopted after), behind the batch marks of every label applied so far. A replay of the log
adopts it at the same place (`Campaign.adopt_refit_at`: the copy replayed, the refit applied,
the rest applied again as the adoption did), so a restart serves the posterior the service
served, from a snapshot or from the whole log; adopting a refit also requests a snapshot,
after which a restart replays only the labels after it. A row whose engine settings differ
from the campaign's (an operator changed them), or that does not follow the refits before
it, is left out of the replay with those after it, and the schedule refits again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch

from api import replay, snapshots, store
from api.engine_host import process_context
from api.errors import Unavailable
from api.restore import read_when_whole
from engine import Campaign, refit_schedule
from engine.campaign import REAPPLY_LABELS, unpack_entries
from engine.empirical_bayes import SCALE_REFITS

if TYPE_CHECKING:
    from api.campaigns import CampaignRuntime

log = logging.getLogger("ratingparty.api")

PRIOR_REFITS = (*SCALE_REFITS, "off")  # a campaign's `prior_refit` setting
MAX_EVALUATIONS = 200  # evidence evaluations per fit, as `Campaign.fit_prior`'s default
# the copy catches up with the engine until at most this many labels are left to its adoption:
# as many as the open run of labels a catch-up cannot take yet may hold (REAPPLY_LABELS)
CATCH_UP_TAIL = REAPPLY_LABELS
# labels sent to the copy per round at most: the engine pickles them, and its other calls
# wait meanwhile
CATCH_UP_FETCH = 1024
# while requests wait for tasks the fit's worker is stopped, at most this long at a time, then
# it runs at least RUN_MIN_S before it may be stopped again
PAUSE_MAX_S = 0.5
RUN_MIN_S = 0.5


def fit_copy(data: bytes, max_evaluations: int = MAX_EVALUATIONS) -> Campaign:
    """`CampaignEngine.refit_copy_to`'s campaign with its prior refitted (`Campaign.fit_prior`).

    Raises:
        ValueError: the bytes are not a campaign, or it has no labels to fit to.
    """
    campaign = pickle.loads(data)
    if not isinstance(campaign, Campaign):
        raise ValueError(f"a refit copy holds a {type(campaign).__name__}, not a Campaign")
    campaign.fit_prior(max_evaluations)
    return campaign


class CopyFit:
    """A worker's side of one refit: the copy fitted (`fit_copy`), caught up in rounds with
    the engine's entries since (`catch_up`), and handed back pickled (`result`)."""

    def __init__(self, data: bytes, max_evaluations: int) -> None:
        self.campaign = fit_copy(data, max_evaluations)
        # the engine's history entries the copy holds: all before its refit, to start with
        self.entries = self.campaign.history_length - 1

    def catch_up(self, data: bytes) -> int:
        """Apply the engine's entries since the copy's (`CampaignEngine.refit_entries`, as
        far as settled); returns the engine's entries the copy now holds."""
        self.entries += self.campaign.catch_up(unpack_entries(pickle.loads(data)))
        return self.entries

    def result(self) -> bytes:
        """The copy's state for the engine's adoption (`Campaign.refit_result`), pickled."""
        return pickle.dumps(self.campaign.refit_result(), pickle.HIGHEST_PROTOCOL)


def _fit_in_process(channel: Any, data: bytes, max_evaluations: int, threads: int) -> None:
    """The worker process: fit, answer (ok, the engine entries the copy holds or why it
    failed), then answer each request, ("catch_up", entries) or ("result", None), the same
    way, until the result is sent or the channel closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service stops its workers itself
    # the lowest CPU priority, before torch starts its threads (they inherit it): the fit
    # takes only the CPU the engine and the service leave idle. Nice 19 alone does not: on
    # two cores under load a nice-19 loop still took turns with the requests' work;
    # SCHED_IDLE runs it only when nothing else wants the CPU
    os.nice(19)
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    torch.set_num_threads(threads)
    worker: CopyFit | None = None
    try:
        worker = CopyFit(data, max_evaluations)
        reply: tuple[bool, Any] = (True, worker.entries)
    except Exception as error:
        reply = (False, f"{type(error).__name__}: {error}")
    with contextlib.suppress(OSError, EOFError):  # EOF: the service closed the channel
        channel.send(reply)
        while worker is not None:
            kind, payload = channel.recv()
            try:
                reply = (True, worker.catch_up(payload) if kind == "catch_up" else worker.result())
            except Exception as error:
                reply = (False, f"{type(error).__name__}: {error}")
            channel.send(reply)
            if kind != "catch_up":
                break
    channel.close()


class ProcessFit:
    """One refit in a worker process (`fit`, `catch_up` rounds, `result`); `cancel` kills it
    (a call waiting on it then raises at once)."""

    def __init__(self) -> None:
        self._process: Any = None
        self._channel: Any = None

    async def fit(self, data: bytes, max_evaluations: int) -> int:
        """Start the worker and fit; returns the engine entries the fitted copy holds.

        Raises:
            RuntimeError: the fit failed, or its process ended without an answer.
        """
        context = process_context()
        self._channel, theirs = context.Pipe()
        self._process = context.Process(
            target=_fit_in_process,
            args=(theirs, data, max_evaluations, torch.get_num_threads()),
            name="prior-refit",
            daemon=True,
        )
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._process.start)
        finally:
            theirs.close()
        return await self._answer()

    async def catch_up(self, entries: bytes) -> int:
        """Have the copy apply the engine's entries since; returns the entries it holds."""
        await self._send(("catch_up", entries))
        return await self._answer()

    async def result(self) -> bytes:
        """The refitted, caught-up copy's state (`CopyFit.result`); the worker then ends."""
        await self._send(("result", None))
        try:
            return await self._answer()
        finally:
            self._channel.close()
            await asyncio.get_running_loop().run_in_executor(None, self._process.join)

    async def _send(self, request: tuple[str, Any]) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._channel.send, request)
        except OSError as error:
            raise RuntimeError(f"its process ended: {error}") from error

    async def _answer(self) -> Any:
        loop = asyncio.get_running_loop()
        # the thread's read ends when the process answers or ends (killed by `cancel`)
        ok, value = await asyncio.shield(loop.run_in_executor(None, _receive, self._channel))
        if not ok:
            self.cancel()
            raise RuntimeError(value)
        return value

    def cancel(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    def pause(self, paused: bool) -> None:
        """Stop the worker (SIGSTOP), or let it go on (SIGCONT)."""
        # alive: a child not yet reaped keeps its pid, so the signal cannot reach another
        if self._process is not None and self._process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGSTOP if paused else signal.SIGCONT)


def _receive(channel: Any) -> tuple[bool, Any]:
    """The worker's answer, or (False, why) when it ended without one."""
    try:
        return channel.recv()
    except (EOFError, OSError):
        return False, "its process ended without an answer"


class ThreadFit:
    """One refit on a thread of this process; `cancel` cannot stop it, only drop its result.
    Nor can the thread's CPU priority be lowered below the engine's and the service's: on
    Linux a nice value is per thread but torch's intra-op threads are shared, and elsewhere
    it is the whole process's."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="prior-refit")
        self._worker: CopyFit | None = None

    async def fit(self, data: bytes, max_evaluations: int) -> int:
        self._worker = await self._run(CopyFit, data, max_evaluations)
        return self._worker.entries

    async def catch_up(self, entries: bytes) -> int:
        assert self._worker is not None
        return await self._run(self._worker.catch_up, entries)

    async def result(self) -> bytes:
        assert self._worker is not None
        try:
            return await self._run(self._worker.result)
        finally:
            self._executor.shutdown(wait=False)

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    def cancel(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def pause(self, paused: bool) -> None:
        """A thread cannot be stopped from outside: the fit goes on."""


async def catch_up(
    fit: ProcessFit | ThreadFit,
    held: int,
    entries_since: Callable[[int], Awaitable[tuple[bytes, int]]],
) -> tuple[bytes, int, int]:
    """Bring a fitted copy up to date (`fit`, holding the engine's first `held` history
    entries): in rounds, ask the engine for its entries since (`entries_since`: the
    engine's `refit_entries`) and have the copy apply them, until at most CATCH_UP_TAIL
    labels are left for the engine's adoption or a round no longer shrinks them. Returns the
    copy pickled, the rounds, and the labels left."""
    rounds, left = 0, None
    while True:
        entries, pending = await entries_since(held)
        if pending <= CATCH_UP_TAIL or (left is not None and pending >= left):
            return await fit.result(), rounds, pending
        held = await fit.catch_up(entries)
        rounds, left = rounds + 1, pending


class PriorRefits:
    """When a campaign's prior is refitted, the fit in the background, and its adoption (see
    the module's docstring). The pump drives it: `applied` after each label batch, `start`
    while `due`, `finish` once `ready`.

    Args:
        runtime: the campaign's runtime (its engine calls, pump, snapshots and settings).
        mode: the campaign's `prior_refit` setting; "off" never refits.
    """

    def __init__(self, runtime: CampaignRuntime, mode: str) -> None:
        if mode not in PRIOR_REFITS:
            raise ValueError(f"prior_refit must be one of {PRIOR_REFITS}, got {mode!r}")
        self._rt = runtime
        self.mode = mode
        self.labels = 0  # the labels before the latest refit (or failed fit)
        self.due = False
        # a refitted copy's file (`CopyFit.result`'s bytes) and its label count
        self.ready: tuple[str, int] | None = None
        self.in_flight = False
        # a catch-up round waiting for the engine's entries: those the copy holds, the answer
        self.wanted: tuple[int, asyncio.Future[tuple[bytes, int]]] | None = None
        self.caught_up = (0, 0)  # the latest refit's catch-up rounds, labels left to adopt
        self._fit: ProcessFit | ThreadFit | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._folder: str | None = None  # where the engine writes its copies
        self._stop = threading.Event()  # closed: stop waiting for a copy's file
        self._pause: asyncio.TimerHandle | None = None  # the worker is stopped until then
        self._no_pause_until = 0.0

    def requests_waiting(self, waiting: bool) -> None:
        """Requests wait for the engine's next tasks (`waiting`), or none does any more: the
        fit's worker stops meanwhile, for at most PAUSE_MAX_S, after which it runs at least
        RUN_MIN_S (a saturated engine, whose requests always wait, must not stop the fit for
        good). Even at nice 19 and SCHED_IDLE a running fit slowed the engine's refills about
        twofold at 500 requests a second on two cores."""
        if not waiting:
            self._end_pause(False)
        elif (
            self._fit is not None
            and self.in_flight
            and self._pause is None
            and time.monotonic() >= self._no_pause_until
        ):
            self._fit.pause(True)
            self._pause = asyncio.get_running_loop().call_later(PAUSE_MAX_S, self._end_pause, True)

    def _end_pause(self, forced: bool) -> None:
        """Let the stopped worker go on; `forced`: it reached PAUSE_MAX_S."""
        if self._pause is None:
            return
        self._pause.cancel()
        self._pause = None
        if self._fit is not None:
            self._fit.pause(False)
        if forced:
            self._no_pause_until = time.monotonic() + RUN_MIN_S

    @property
    def busy(self) -> bool:
        """Whether a refit is due, fitting, or waiting for its adoption."""
        return self.due or self.in_flight or self.ready is not None

    def resume(self, labels: int, n_applied: int) -> None:
        """Go on after a load: the engine's latest refit came after `labels` labels, and
        `n_applied` are applied."""
        self.labels = labels
        self.applied(n_applied)

    def applied(self, n_applied: int) -> None:
        """Labels were applied, `n_applied` in all: a fit is due once that reached a point of
        `refit_schedule(clips)` past the latest refit, unless one is in flight."""
        if self.mode == "off" or self.in_flight or self.ready is not None or self._closed:
            return
        n_items = len(self._rt.clips)
        if any(self.labels < at <= n_applied for at in refit_schedule(n_items)):
            self.due = True

    async def start(self) -> None:
        """Have the engine copy its state to a file (a pump step) and, in the background, fit
        on the copy once the file is whole."""
        rt = self._rt
        self.due = False
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix=f"ratingparty-refit-{rt.record.id}-")
        path = os.path.join(self._folder, f"copy-{rt.pump.n_applied}")
        labels = await rt.engine_calls.run("refit_copy_to", path)
        if self._closed:
            return
        self.in_flight = True
        self._pause, self._no_pause_until = None, 0.0
        self._fit = ProcessFit() if rt.settings.engine_process else ThreadFit()
        self._task = asyncio.create_task(
            self._run(self._fit, path, labels), name=f"refit-{rt.record.id}"
        )

    async def _run(self, fit: ProcessFit | ThreadFit, path: str, labels: int) -> None:
        rt = self._rt
        started = time.perf_counter()
        try:
            data = await asyncio.to_thread(read_when_whole, path, self._stop)
            if data is None:
                raise RuntimeError(f"the engine wrote no copy to {path}")
            held = await fit.fit(data, MAX_EVALUATIONS)
            fitted = time.perf_counter()
            refitted, rounds, pending = await catch_up(fit, held, self._entries_since)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning(
                "campaign %s: the prior refit at %d labels failed and is skipped: %s",
                rt.record.id,
                labels,
                error,
            )
            rt.metrics.prior_refits.labels("failed").inc()
            self.labels = labels
            self.in_flight = False
            return
        finally:
            self._end_pause(False)
            fit.cancel()  # a worker left waiting ends
        rt.metrics.prior_refit_seconds.observe(time.perf_counter() - started)
        self.caught_up = (rounds, pending)
        log.info(
            "campaign %s: prior refit at %d labels fitted in %.1f s, caught up in %d rounds "
            "(%.1f s), %d labels left to adopt",
            rt.record.id,
            labels,
            fitted - started,
            rounds,
            time.perf_counter() - fitted,
            pending,
        )
        if not self._closed:
            result = os.path.join(os.path.dirname(path), f"result-{labels}")
            await asyncio.to_thread(snapshots.write_whole, result, lambda f: f.write(refitted))
            self.ready = (result, labels)
            rt.pump.wake()

    async def _entries_since(self, held: int) -> tuple[bytes, int]:
        """The engine's entries from the `held`-th on and the labels they hold, as a pump
        step (`send_entries`): the pump is the one caller of the engine."""
        future: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()
        self.wanted = (held, future)
        self._rt.pump.wake()
        return await future

    async def send_entries(self) -> None:
        """Answer the fit's catch-up round (a pump step)."""
        assert self.wanted is not None
        (held, future), self.wanted = self.wanted, None
        try:
            reply = await self._rt.engine_calls.run("refit_entries", held, CATCH_UP_FETCH)
        except Exception as error:
            if not future.done():
                future.set_exception(error)
            if isinstance(error, Unavailable):
                raise
        else:
            if not future.done():
                future.set_result(reply)

    async def finish(self) -> None:
        """Have the engine adopt the refitted copy (a pump step), then request a snapshot:
        what makes the refit survive a restart."""
        rt = self._rt
        assert self.ready is not None
        path, labels = self.ready
        self.ready = None
        try:
            adopted = await rt.engine_calls.run("receive_refit", path)
            # recorded before the engine adopts it (the writer commits after the batch marks
            # of every label applied so far): a replay adopts it at the same place, so a
            # restart serves what was served, snapshot or not
            row = replay.refit_record(
                rt.record, adopted, rt.pump.last_batch, rt.next_clip_batch - 1
            )
            await rt.writer.run(rt.fenced(store.insert_refit(rt.record.id, row)))
            try:
                await rt.engine_calls.run("adopt_refit")
            except Exception as error:
                if not isinstance(error, Unavailable):  # refused: a replay must not adopt it
                    await rt.writer.run(
                        rt.fenced(store.delete_refit(rt.record.id, row.config, row.ordinal))
                    )
                raise
        except Unavailable:
            raise
        except Exception as error:
            log.warning(
                "campaign %s: the prior refit at %d labels was not adopted: %s",
                rt.record.id,
                labels,
                error,
            )
            rt.metrics.prior_refits.labels("failed").inc()
        else:
            rt.metrics.prior_refits.labels("adopted").inc()
            rt.pump.refitted()
            rt.snapshots.request()  # a restart then replays only what came after
        finally:
            self.labels = labels
            self.in_flight = False
            self._task = None
        self.applied(rt.pump.n_applied)  # points the labels crossed during the fit

    async def close(self) -> None:
        """Cancel the fit in flight, if any, and remove the copies' folder."""
        self._closed = True
        self._stop.set()
        self._end_pause(False)
        if self._fit is not None:
            self._fit.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


__all__ = [
    "CATCH_UP_FETCH",
    "CATCH_UP_TAIL",
    "MAX_EVALUATIONS",
    "PRIOR_REFITS",
    "PriorRefits",
    "ProcessFit",
    "catch_up",
    "fit_copy",
]
