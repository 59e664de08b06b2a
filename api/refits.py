"""A campaign's prior refits, run off the request path (`PriorRefits`).

The label-efficiency suite scores strategies under an engine campaign that refits its prior by
empirical Bayes at `engine.refit_schedule(n)` labels (2n, 4n, 8n, ... for n clips; the split
of the prior's quality variance between the criteria and the residual, rater lapses and noise
learned: docs/MATH.md §1, "Learning the split"). The service follows the same schedule, but a
fit (`Campaign.fit_prior`: up to 200 ADF passes over every label) takes seconds, and the
campaign's engine answers its calls one at a time. So:

1. Once the labels applied cross a point of the schedule, the pump asks the engine for a copy
   of its state (`CampaignEngine.refit_copy`: the campaign pickled), and a worker
   fits on that copy: a process of its own (from the engine hosts' forkserver) where the
   engine runs in processes, a thread where it runs in a thread. The engine keeps answering
   calls, and taking labels and clips, meanwhile.
2. The worker returns the copy refitted, its posterior rebuilt under the new prior (the pass
   over every label is the worker's). The pump hands it to the engine (`adopt_refit`), which
   applies again only the clip and label batches that came during the fit
   (`Campaign.adopt_refit`): the state the refit would have left had it been applied where
   the copy was made. The engine's stall is that, not a pass over every label.
3. At most one fit is in flight per campaign. A fit that fails is logged and skipped (the
   next point of the schedule tries again); closing the campaign cancels the fit (its
   process is killed; a thread's result is dropped).

Durability: right after adopting a refit the pump saves a snapshot of the engine state (the
refit is an entry of the engine's history inside it), so a restart that loads it serves the
same posterior and replays only the labels after it. A refit is not a row of its own: the
values it found are a deterministic function of the log up to the copy, the snapshot already
carries them with the posterior built under them, and a second record would need a table, a
migration and a step kind in the replay, to cover only a restart without a usable snapshot
(snapshots off, or one written by another version). That restart replays the log under the
campaign's stated prior, its engine history holds no refit, so the first label batch after
the load starts the refit the schedule asks for, from the whole log, in the background again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch

from api.engine_host import process_context
from api.errors import Unavailable
from engine import Campaign, refit_schedule

if TYPE_CHECKING:
    from api.campaigns import CampaignRuntime

log = logging.getLogger("ratingparty.api")

PRIOR_REFITS = ("split", "scales", "off")  # a campaign's `prior_refit` setting
MAX_EVALUATIONS = 200  # evidence evaluations per fit, as `Campaign.fit_prior`'s default


def fit_copy(data: bytes, max_evaluations: int = MAX_EVALUATIONS) -> bytes:
    """`CampaignEngine.refit_copy`'s campaign with its prior refitted (`Campaign.fit_prior`),
    pickled again.

    Raises:
        ValueError: the bytes are not a campaign, or it has no labels to fit to.
    """
    campaign = pickle.loads(data)
    if not isinstance(campaign, Campaign):
        raise ValueError(f"a refit copy holds a {type(campaign).__name__}, not a Campaign")
    campaign.fit_prior(max_evaluations)
    return pickle.dumps(campaign, pickle.HIGHEST_PROTOCOL)


def _fit_in_process(channel: Any, data: bytes, max_evaluations: int, threads: int) -> None:
    """The worker process: fit, send (ok, the refitted copy or why it failed), exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service stops its workers itself
    torch.set_num_threads(threads)
    try:
        reply: tuple[bool, Any] = (True, fit_copy(data, max_evaluations))
    except Exception as error:
        reply = (False, f"{type(error).__name__}: {error}")
    with contextlib.suppress(OSError):
        channel.send(reply)
    channel.close()


class ProcessFit:
    """One fit in a worker process; `cancel` kills it (its `run` then raises at once)."""

    def __init__(self) -> None:
        self._process: Any = None

    async def run(self, data: bytes, max_evaluations: int) -> bytes:
        """The refitted copy, pickled.

        Raises:
            RuntimeError: the fit failed, or its process ended without an answer.
        """
        context = process_context()
        ours, theirs = context.Pipe(duplex=False)
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
        try:
            # the thread's read ends when the process answers or ends (killed by `cancel`)
            ok, value = await asyncio.shield(loop.run_in_executor(None, _receive, ours))
        finally:
            await loop.run_in_executor(None, self._process.join)
        if not ok:
            raise RuntimeError(value)
        return value

    def cancel(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()


def _receive(channel: Any) -> tuple[bool, Any]:
    """The worker's answer, or (False, why) when it ended without one; closes the channel."""
    try:
        return channel.recv()
    except EOFError:
        return False, "its process ended without an answer"
    finally:
        channel.close()


class ThreadFit:
    """One fit on a thread of this process; `cancel` cannot stop it, only drop its result."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="prior-refit")

    async def run(self, data: bytes, max_evaluations: int) -> bytes:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fit_copy, data, max_evaluations)
        finally:
            self._executor.shutdown(wait=False)

    def cancel(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


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
        self.ready: tuple[bytes, int] | None = None  # a refitted copy and its label count
        self.in_flight = False
        self._fit: ProcessFit | ThreadFit | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

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
        """Copy the engine state (a pump step) and fit on the copy in the background."""
        rt = self._rt
        self.due = False
        data, labels = await rt.engine_calls.run("refit_copy")
        if self._closed:
            return
        self.in_flight = True
        self._fit = ProcessFit() if rt.settings.engine_process else ThreadFit()
        self._task = asyncio.create_task(
            self._run(self._fit, data, labels), name=f"refit-{rt.record.id}"
        )

    async def _run(self, fit: ProcessFit | ThreadFit, data: bytes, labels: int) -> None:
        rt = self._rt
        started = time.perf_counter()
        try:
            refitted = await fit.run(data, MAX_EVALUATIONS)
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
        rt.metrics.prior_refit_seconds.observe(time.perf_counter() - started)
        if not self._closed:
            self.ready = (refitted, labels)
            rt.pump.wake()

    async def finish(self) -> None:
        """Have the engine adopt the refitted copy (a pump step), then save a snapshot: what
        makes the refit survive a restart."""
        rt = self._rt
        assert self.ready is not None
        data, labels = self.ready
        self.ready = None
        try:
            await rt.engine_calls.run("adopt_refit", data)
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
            await rt.snapshots.take()
        finally:
            self.labels = labels
            self.in_flight = False
            self._task = None
        self.applied(rt.pump.n_applied)  # points the labels crossed during the fit

    async def close(self) -> None:
        """Cancel the fit in flight, if any."""
        self._closed = True
        if self._fit is not None:
            self._fit.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


__all__ = ["MAX_EVALUATIONS", "PRIOR_REFITS", "PriorRefits", "fit_copy"]
