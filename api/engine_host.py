"""Where a campaign's engine runs: a process of its own (the default) or a thread.

`CampaignEngine` holds one engine `Campaign` and does every piece of engine work a
`CampaignRuntime` asks for, as named calls whose arguments and results are plain picklable
values (tasks, judgments, lists of floats). Two hosts run it behind the same
`await host.call(name, *args)`; calls run one at a time, in the order they were made, and
`host.submit(name, *args)` sends one at once and returns its future, so a caller can queue a
second call behind the first without a round trip between them:

- `ProcessEngine` (default): a child process per campaign, forked from a server process that
  imported the engine once (multiprocessing's forkserver), so a campaign's engine starts in
  tens of milliseconds. The service's event loop, its database writer and the engine then run
  on different cores: on one process they took turns at one GIL, and under load the engine
  thread held it ~85 % of the time (benchmarks/results/service_load.md).
- `ThreadEngine`: a thread of the service's process. One process uses less memory when a
  deployment holds many quiet campaigns (`RATINGPARTY_ENGINE_PROCESS=0`).

A process that dies fails its waiting calls, and every later one, with `EngineStopped`; the
runtime then stops, and the service rebuilds the campaign from its database log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import multiprocessing
import os
import pickle
import signal
import socket
import struct
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch

from api import snapshots
from api.task_keys import question_key
from engine import (
    Campaign,
    CampaignConfig,
    Judgment,
    NoEligibleTaskError,
    RefitResult,
    Task,
)
from engine.campaign import pack_entries
from engine.history import Refit
from engine.stopping import Targets
from engine.summaries import credible_halfwidth
from engine.task_choice import kset_kind

log = logging.getLogger("ratingparty.api")

# forkserver: the children fork from a process that imported torch and the engine once, and
# never from the service itself, whose threads (writer, event loop) a plain fork would copy
# mid-state. Where it does not exist (not POSIX), spawn: slower to start, same behaviour.
_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
_CONTEXT = multiprocessing.get_context(_METHOD)
if _METHOD == "forkserver":
    _CONTEXT.set_forkserver_preload([__name__])


def process_context() -> Any:
    """The multiprocessing context engine processes start from (forkserver where it exists)."""
    return _CONTEXT


_CLOSE = "close"
_HEADER = struct.Struct("!Q")  # a message's length, before its pickle
_READ_LIMIT = 2**20  # the reply stream's buffer (readexactly reads past it as needed)
STOP_WAIT_S = 5.0  # how long a closing host waits for its process to exit before killing it


class EngineStopped(RuntimeError):
    """The campaign's engine process ended; its state is gone until it is rebuilt."""


@dataclass(frozen=True)
class ClipBatch:
    """A batch of clips for `Campaign.add_clips`: scores aligned with the criteria (None when
    the campaign has none; rows with None, or an array with NaN, where a score is missing),
    each clip's context and group, and its feature vector where the campaign has a feature
    gate (rows or an (n, D) array; None otherwise)."""

    scores: list[list[float | None]] | np.ndarray | None
    contexts: list[str | None]
    groups: list[str | None]
    features: list[list[float]] | np.ndarray | None = None


@dataclass(frozen=True)
class AdoptedRefit:
    """A prior refit as a replay adopts it (`Campaign.adopt_refit_at`): the campaign's
    `ordinal`-th, its copy made after `copy_entries` history entries (`refit` None: its
    stored values did not read, and the replay leaves it out)."""

    ordinal: int
    copy_entries: int
    refit: Refit | None


@dataclass(frozen=True, eq=False)
class Board:
    """The leaderboard as arrays by engine position (float64; rank int64, 1 = best), the
    positions best first (`order`), and the expected Kendall tau. Arrays, not lists: a
    million clips cross the process boundary as five buffers."""

    mean: np.ndarray
    sd: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    rank: np.ndarray
    order: np.ndarray
    tau: float | None
    # the prior the posterior is under: (weight, context, residual) scales, and how many
    # empirical-Bayes refits made it (api/refits.py)
    prior: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    refits: int = 0

    def __eq__(self, other: object) -> bool:
        """Equal when every array holds the same numbers and the tau and prior are the same."""
        if not isinstance(other, Board):
            return NotImplemented
        fields = ("mean", "sd", "lower", "upper", "rank", "order")
        same = (self.tau, self.prior, self.refits) == (other.tau, other.prior, other.refits)
        return same and all(
            np.array_equal(getattr(self, name), getattr(other, name)) for name in fields
        )

    __hash__ = None  # type: ignore[assignment]  # arrays: not hashable, as a list-valued board


def _write_pickle(campaign: Campaign, path: str) -> None:
    """The campaign pickled into the file `path`, found whole (`snapshots.write_whole`)."""
    snapshots.write_whole(path, lambda file: pickle.dump(campaign, file, pickle.HIGHEST_PROTOCOL))


RaterStats = dict[int, tuple[float, float, float | None, bool]]
WeightRows = dict[str, Any]


class CampaignEngine:
    """One campaign's engine state and the calls the service makes on it.

    Args:
        config: the campaign's engine configuration.
        device: torch device of the posterior; None = the engine's default.
        fork_writes: write snapshots and refit copies from a forked child (`snapshot_to`,
            `refit_copy_to`); only for an engine in a process of its own (a fork copies only
            the calling thread: forked from the service, a child would inherit its event
            loop's and writer's locks mid-state).
    """

    def __init__(
        self, config: CampaignConfig, device: str | None, *, fork_writes: bool = False
    ) -> None:
        self.campaign = Campaign(config, device=device)
        self._fork_writes = fork_writes and hasattr(os, "fork")
        self._writing: list[int] = []  # forked children writing a file, not reaped yet
        # the stopping targets are the service's setting, not the snapshot's: one taken before
        # a change of targets must not bring the old ones back
        self._targets = config.targets
        # likewise the floor of labels per clip (engine.exposure)
        self._min_labels = config.min_labels
        # barred for every rater by the operator or by repeated skips (see `bar`)
        self._clips: list[int] = []
        self._pairs: list[tuple[int, int]] = []
        self._rating_clips: list[int] = []
        self._ratings = True
        self._ksets: list[tuple[int, ...]] = []
        self._received: RefitResult | None = None  # a refit's result, until it is adopted

    def bar(
        self,
        clips: Sequence[int],
        pairs: Sequence[tuple[int, int]],
        rating_clips: Sequence[int],
        ratings: bool,
        ksets: Sequence[Sequence[int]] = (),
    ) -> None:
        """What no choice may offer from now on, for any rater: `clips` in any task, `pairs`,
        emoji ratings of `rating_clips`, any emoji rating unless `ratings`, and `ksets` (their
        clips). Tasks pending already stay pending (the service releases them)."""
        self._clips = sorted(set(clips))
        self._pairs = sorted(set(pairs))
        self._rating_clips = sorted(set(rating_clips))
        self._ratings = ratings
        self._ksets = sorted({tuple(sorted(k)) for k in ksets})

    def snapshot(self) -> bytes:
        """The engine state as snapshot bytes (api/snapshots.py)."""
        return snapshots.dump(self.campaign)

    def snapshot_to(self, path: str) -> bool:
        """Write the snapshot bytes to the file `path`, through `path` + ".part" renamed once
        whole. Returns whether a forked child writes it: then this call returns at once and
        the file appears later (or never, if the child fails); otherwise it is written.

        The dump walks every object of the campaign (its label history grows with the
        labels): in line, it would hold up the calls behind it, refills included, for as
        long. The child shares the state as it is now (copy-on-write) and exits once done.
        """
        return self._write(snapshots.write, path)

    def _write(self, write: Callable[[Campaign, str], None], path: str) -> bool:
        """`write(campaign, path)`, from a forked child where this engine may fork (then this
        returns True at once), else in line (False)."""
        self._reap()
        if not (self._fork_writes and self.campaign.device.type == "cpu"):
            write(self.campaign, path)
            return False
        pid = os.fork()
        if pid == 0:  # the child: write and leave, running nothing of the parent's on exit
            code = 1
            try:
                write(self.campaign, path)
                code = 0
            finally:
                os._exit(code)
        self._writing.append(pid)
        return True

    def _reap(self) -> None:
        """Collect the writing children that exited (no zombies left behind)."""
        for pid in list(self._writing):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            self._writing.remove(pid)

    def restore(self, data: bytes) -> str | None:
        """Take the state of a snapshot; None when it did, else why it did not (the engine is
        then unchanged, for a full replay)."""
        try:
            self.campaign = snapshots.load(data, self.campaign)
        except ValueError as error:
            return str(error)
        self.campaign.set_targets(self._targets)
        self.campaign.set_min_labels(self._min_labels)
        return None

    def refit_copy_to(self, path: str) -> int:
        """What a background prior refit starts from (api/refits.py): the engine's campaign
        pickled into the file `path`, through `path` + ".part" renamed once whole, as
        `snapshot_to` writes (from a forked child where it does: the pickle walks the label
        history, and this call returns at once); returns the labels the campaign holds.
        Pickle, not a snapshot: the copy goes to a worker of this service, never through the
        database; the restricted unpickler a snapshot is read with takes seconds for a long
        history."""
        self._write(_write_pickle, path)
        return len(self.campaign.log)

    def receive_refit(self, path: str) -> AdoptedRefit:
        """Hold what a background refit returned for `adopt_refit`: the file `path`, read and
        removed, holds the copy's `Campaign.refit_result` pickled (`refit_copy_to`'s copy
        refitted and caught up with some of what came since, its history's labels left out).
        A call of its own, apart from the adoption, and a file rather than bytes sent along
        the call: this engine reads it at once, where a message of its size streams through
        the channel as fast as the service's event loop writes it. Returns the refit as a
        replay of the log adopts it, for the service to record before the adoption.

        Raises:
            ValueError: the file holds no refit's result (nothing is held).
        """
        with open(path, "rb") as file:
            data = file.read()
        os.remove(path)
        refitted = pickle.loads(data)
        if not isinstance(refitted, RefitResult):
            raise ValueError(f"a refit returned a {type(refitted).__name__}, not a RefitResult")
        self._received = refitted
        return AdoptedRefit(len(self.campaign.refits) + 1, refitted.entries, refitted.refit)

    def adopt_refit(self) -> None:
        """Adopt the refit `receive_refit` holds, applying again the rest
        (`Campaign.adopt_refit`): only the labels and clips that arrived since the copy's
        latest catch-up, not every label.

        Raises:
            ValueError: none is held, or it is not a refitted copy of this campaign (nothing
                changes).
        """
        refitted, self._received = self._received, None
        if refitted is None:
            raise ValueError("no refit was received to adopt")
        self.campaign.adopt_refit(refitted)

    def refit_entries(self, since: int, max_labels: int) -> tuple[bytes, int]:
        """What a refitted copy catches up with (api/refits.py, `Campaign.catch_up`): the
        history's entries from the `since`-th on, as far as about `max_labels` labels (whole
        entries; the pickling is the engine's time), packed (`engine.campaign.pack_entries`)
        and pickled, and the labels in all the entries from the `since`-th on."""
        entries = self.campaign.history_since(since)
        sent, labels = len(entries), 0
        for index, entry in enumerate(entries):
            if isinstance(entry, tuple):
                if labels >= max_labels and sent == len(entries):
                    sent = index
                labels += len(entry)
        return pickle.dumps(pack_entries(entries[:sent]), pickle.HIGHEST_PROTOCOL), labels

    def refit_labels(self) -> int:
        """The labels before the latest prior refit (0: none yet)."""
        refits = self.campaign.refits
        return refits[-1][0] if refits else 0

    def replay(
        self, steps: Sequence[ClipBatch | list[Judgment] | AdoptedRefit]
    ) -> list[tuple[int, str]]:
        """Clip batches, label batches and adopted refits, in the order the service applied
        them. A refit the campaign holds already (from a snapshot) is passed over; one that
        does not follow the refits it holds, or does not adopt, is left out with the refits
        after it (the campaign then refits again on its schedule): returns their ordinals
        and why."""
        left_out: list[tuple[int, str]] = []
        for step in steps:
            if isinstance(step, ClipBatch):
                self.add_clips(step)
            elif not isinstance(step, AdoptedRefit):
                self.campaign.observe(step)
            elif left_out or len(self.campaign.refits) != step.ordinal - 1:
                if len(self.campaign.refits) < step.ordinal:
                    left_out.append((step.ordinal, "it does not follow the refits before"))
            elif step.refit is None:
                left_out.append((step.ordinal, "its stored values do not read"))
            else:
                try:
                    self.campaign.adopt_refit_at(step.copy_entries, step.refit)
                except ValueError as error:
                    left_out.append((step.ordinal, str(error)))
        return left_out

    def add_clips(self, batch: ClipBatch) -> None:
        scores = batch.scores
        if isinstance(scores, np.ndarray):
            scores = torch.from_numpy(scores)
        features = batch.features
        if isinstance(features, np.ndarray):
            features = torch.from_numpy(features)
        self.campaign.add_clips(
            scores,
            count=len(batch.contexts),
            contexts=batch.contexts,
            groups=batch.groups,
            features=features,
        )

    def answered(self) -> dict[Hashable, list[tuple[int, ...]]]:
        """Per rater, the task keys (api/task_keys.py) of what they answered among the labels
        applied: the engine's record, which the runtime's copy starts from after a load."""
        return {
            rater: [question_key(question) for question in questions]
            for rater, questions in self.campaign.answered_questions().items()
        }

    def hold(self, tasks: Sequence[Task]) -> None:
        """Hold tasks handed out before a restart (pending again)."""
        for task in tasks:
            self.campaign.hold(task)

    def choose(
        self,
        rater: int | None,
        count: int,
        forbidden_pairs: Sequence[tuple[int, int]] = (),
        skip_ratings: Sequence[int] = (),
        exclude: Sequence[int] = (),
        skip_ksets: Sequence[Sequence[int]] = (),
    ) -> list[Task]:
        """`Campaign.next_tasks` (held), never a task `bar` rules out nor one showing a clip
        in `exclude` (this rater's own exclusions) nor a K-set of `skip_ksets`, and never a
        gold task (the service asks for those by `gold`); empty when nothing is left to ask."""
        forbidden = [*forbidden_pairs, *self._pairs] or None
        excluded = [*self._clips, *exclude]
        ratings = self._ratings and self.campaign.level_cuts is not None
        criteria = self.campaign.config.criterion_questions is not None
        try:
            if not (ratings or criteria) and self.campaign.config.kset is None:
                return self.campaign.next_pairs(
                    rater, count, exclude=excluded, forbidden_pairs=forbidden
                )
            # with rating tasks off, every clip is left out of the ratings offered
            no_ratings = range(self.campaign.n_items) if not ratings else ()
            return self.campaign.next_tasks(
                rater,
                count,
                exclude=excluded,
                forbidden_pairs=forbidden,
                skip_ratings=[*skip_ratings, *self._rating_clips, *no_ratings],
                skip_ksets=[*skip_ksets, *self._ksets],
                gold=False,
            )
        except NoEligibleTaskError:
            return []

    def add_gold(self, pairs: Sequence[tuple[int, int, str]]) -> None:
        """Gold pairs `(first, second, answer)`; a pair the engine has already (a snapshot's)
        changes nothing."""
        for first, second, answer in pairs:
            self.campaign.add_gold(first, second, answer)

    def gold(
        self, rater: int, index: int, forbidden_pairs: Sequence[tuple[int, int]] = ()
    ) -> Task | None:
        """`Campaign.next_gold` (held) for the rater's `index`-th task: a gold task, or None
        (not drawn, or no gold pair left to them); never one of `forbidden_pairs` (the
        rater's labels not applied yet, skips and held tasks) or a pair `bar` rules out."""
        if self.campaign.config.targets.any and self.campaign.progress().done:
            return None  # a campaign whose targets are met asks nothing, gold included
        barred = [*forbidden_pairs, *self._pairs]
        return self.campaign.next_gold(rater, index=index, exclude=self._clips, forbidden=barred)

    def set_min_labels(self, min_labels: int) -> None:
        """Replace the campaign's floor of labels per clip (engine.exposure; 0: none)."""
        self._min_labels = min_labels
        self.campaign.set_min_labels(min_labels)

    def set_targets(self, targets: dict[str, float]) -> None:
        """Replace the campaign's stopping targets (`Targets` keywords; empty: none)."""
        self._targets = Targets(**targets)
        self.campaign.set_targets(self._targets)

    def progress(self) -> dict[str, Any]:
        """`Campaign.progress` as plain data (it crosses the process boundary): `done`,
        `reason`, per target its name, target, value, distance and whether it is met, and the
        expected seconds of each task kind the campaign asks (learned from answer times)."""
        status = self.campaign.progress()
        config = self.campaign.config
        kinds = ["pair"]
        if self.campaign.level_cuts is not None:
            kinds.append("level")
        if config.kset is not None:
            kinds.append(kset_kind(config.kset.size, config.kset.mode))
        return {
            "done": status.done,
            "reason": status.reason,
            "labels": status.labels,
            "task_seconds": {kind: self.campaign.task_seconds(kind) for kind in kinds},
            "targets": [
                {
                    "name": t.name,
                    "target": t.target,
                    "value": t.value,
                    "distance": t.distance,
                    "met": t.met,
                }
                for t in status.targets
            ],
        }

    def replace(
        self, stale_id: int, forbidden_pairs: Sequence[tuple[int, int]] = ()
    ) -> Task | None:
        """Release a task chosen before the latest labels and choose one (held, for no rater in
        particular, not one of `forbidden_pairs`) in its place."""
        self.campaign.release(stale_id)
        tasks = self.choose(None, 1, forbidden_pairs)
        return tasks[0] if tasks else None

    def release(self, task_ids: Sequence[int]) -> None:
        """Forget pending tasks; ids released before are ignored."""
        pending = {task.id for task in self.campaign.pending}
        for task_id in task_ids:
            if task_id in pending:
                self.campaign.release(task_id)

    def observe(
        self, judgments: Sequence[Judgment], task_ids: Sequence[int], with_tau: bool
    ) -> float | None:
        """Apply one ordered batch, releasing its tasks that are still pending; the expected
        Kendall tau afterwards when `with_tau` (None when undefined)."""
        pending = {task.id for task in self.campaign.pending}
        self.campaign.observe(judgments, task_ids=[t for t in task_ids if t in pending])
        return self._tau() if with_tau else None

    def _tau(self) -> float | None:
        if self.campaign.n_items < 2:
            return None
        tau = self.campaign.expected_kendall_tau()
        return None if math.isnan(tau) else tau

    def leaderboard(self, level: float) -> Board:
        board = self.campaign.leaderboard(level)

        def array(values: torch.Tensor) -> np.ndarray:
            return values.detach().to("cpu", torch.float64).numpy()

        rank = board.rank.detach().cpu().numpy().astype(np.int64)
        prior = self.campaign.config.prior
        return Board(
            array(board.mean),
            array(board.sd),
            array(board.lower),
            array(board.upper),
            rank,
            np.argsort(rank, kind="stable"),
            self._tau(),
            (prior.weight_scale, prior.context_scale, prior.residual_scale),
            len(self.campaign.refits),
        )

    def weights(self, level: float) -> WeightRows:
        """Global and per-context weights: (mean, sd, half-width of the `level` interval)."""
        summary = self.campaign.weights()
        sd, context_sd = summary.sd, summary.context_sd
        half, context_half = summary.halfwidths(level)
        return {
            "global": (summary.mean.tolist(), sd.tolist(), half.tolist()),
            "contexts": [
                (
                    str(name),
                    summary.context_mean[c].tolist(),
                    context_sd[c].tolist(),
                    context_half[c].tolist(),
                )
                for c, name in enumerate(self.campaign.context_names)
            ],
            "gate": self._gate_rows(level),
        }

    def _gate_rows(self, level: float) -> list[tuple[list[float], list[float], list[float]]]:
        """The feature gate's columns W[:, d], one (mean, sd, half-width) row per feature;
        none without a gate."""
        if not self.campaign.config.feature_dim:
            return []
        mean, sd = self.campaign.gate_columns()
        half = credible_halfwidth(sd, level)
        return [(mean[d].tolist(), sd[d].tolist(), half[d].tolist()) for d in range(mean.shape[0])]

    def rater_stats(self, rater_ids: Sequence[int]) -> RaterStats:
        """Per rater: (noise sd, keep probability, P(random clicker), flagged)."""
        reliability = self.campaign.rater_reliability()
        out = {}
        for rater_id in rater_ids:
            known = reliability.get(rater_id)
            out[rater_id] = (
                self.campaign.noise_sd(rater_id),
                self.campaign.keep_probability(rater_id),
                None if known is None else known.probability_random,
                False if known is None else known.flagged,
            )
        return out

    def side_offsets(self) -> dict[str, Any] | None:
        """The side offsets' posterior: {"global": (mean, sd), "raters": {id: (mean, sd)}};
        None when the campaign has no side bias."""
        if self.campaign.config.side_bias is None:
            return None
        offsets = self.campaign.side_offsets()
        return {
            "global": (offsets.global_mean, offsets.global_sd),
            "raters": {
                rater: (offsets.rater_mean[rater], offsets.rater_sd[rater])
                for rater in offsets.rater_mean
            },
        }

    def pending(self) -> tuple[Task, ...]:
        """The tasks pending in the engine (for tests and diagnostics)."""
        return self.campaign.pending

    def log(self) -> list[Judgment]:
        """Every label applied, with the noise it was applied with (for tests)."""
        return self.campaign.log


class EngineHost(Protocol):
    """Runs a `CampaignEngine`: `call` its methods by name, one at a time, in order."""

    async def start(self) -> None: ...

    def submit(self, name: str, *args: Any) -> asyncio.Future[Any]: ...

    async def call(self, name: str, *args: Any) -> Any: ...

    async def close(self) -> None: ...


def make_host(
    config: CampaignConfig, device: str | None, *, process: bool, name: str
) -> EngineHost:
    """A `ProcessEngine` or a `ThreadEngine` (not started) for one campaign."""
    return ProcessEngine(config, device, name) if process else ThreadEngine(config, device, name)


class ThreadEngine:
    """`CampaignEngine` on one thread of this process."""

    def __init__(self, config: CampaignConfig, device: str | None, name: str) -> None:
        self._config, self._device = config, device
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.local: CampaignEngine | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.local = await loop.run_in_executor(
            self._executor, CampaignEngine, self._config, self._device
        )

    def submit(self, name: str, *args: Any) -> asyncio.Future[Any]:
        fn = getattr(self.local, name)
        return asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    async def call(self, name: str, *args: Any) -> Any:
        return await self.submit(name, *args)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)


def _serve(
    channel: socket.socket, config: CampaignConfig, device: str | None, threads: int
) -> None:
    """The engine process: build the engine, then answer calls until told to close or until
    the service's end of the socket closes. Each reply is (ok, result or exception)."""
    # Ctrl-C reaches the whole process group; the service closes its engines itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    # what is loaded now (torch and the engine: ~10^5 objects) lives as long as the process;
    # frozen, the cyclic GC's full collections stop walking it (each one a stall of every
    # request waiting for this campaign's engine)
    gc.freeze()
    channel.setblocking(True)
    incoming = channel.makefile("rb")
    try:
        engine = CampaignEngine(config, device, fork_writes=True)
        reply: tuple[bool, Any] = (True, None)
    except Exception as error:
        engine, reply = None, (False, error)
    while True:
        try:
            channel.sendall(_frame(_dumps(reply)))
            if engine is None:
                return
            header = incoming.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return  # the service is gone
            (size,) = _HEADER.unpack(header)
            name, args = pickle.loads(incoming.read(size))
        except OSError:  # the service is gone
            return
        if name == _CLOSE:
            return
        try:
            reply = (True, getattr(engine, name)(*args))
        except Exception as error:
            reply = (False, error)


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def _dumps(reply: tuple[bool, Any]) -> bytes:
    try:
        return pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # an exception that does not pickle still reaches the caller
        return pickle.dumps((False, RuntimeError(f"{reply[1]!r} (unpicklable: {error})")))


class ProcessEngine:
    """`CampaignEngine` in a child process, over a socket pair the event loop reads and
    writes as a stream (length-prefixed pickles).

    asyncio streams, not multiprocessing's `Connection`: its blocking reads and writes broke
    under uvloop, which makes a polled descriptor non-blocking, so a large message failed
    half-sent or half-read. Replies come back in the order of the calls, so the stream needs
    only a queue of the futures waiting for them; a call whose caller went away still gets
    its reply read (and dropped), which keeps the order.
    """

    def __init__(self, config: CampaignConfig, device: str | None, name: str) -> None:
        self._config, self._device, self._name = config, device, name
        self._process: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._stopped: EngineStopped | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        self._process = _CONTEXT.Process(
            target=_serve,
            args=(theirs, self._config, self._device, torch.get_num_threads()),
            name=self._name,
            daemon=True,
        )
        try:
            # the first start launches the fork server (it imports torch: seconds); later ones
            # fork from it; either way not on the event loop
            await loop.run_in_executor(None, self._process.start)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_connection(sock=ours, limit=_READ_LIMIT)
        ready: asyncio.Future[None] = loop.create_future()
        self._waiting.append(ready)  # the process's first reply: the engine is built
        self._reading = asyncio.create_task(self._read(reader), name=f"{self._name}-replies")
        try:
            await ready
        except BaseException:
            await self.close()
            raise

    def submit(self, name: str, *args: Any) -> asyncio.Future[Any]:
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._stopped is not None:
            future.set_exception(self._stopped)
            return future
        assert self._writer is not None
        # buffered by the transport, never blocking the loop; the process reads whenever it
        # is between calls
        self._writer.write(_frame(pickle.dumps((name, args), pickle.HIGHEST_PROTOCOL)))
        self._waiting.append(future)
        return future

    async def call(self, name: str, *args: Any) -> Any:
        return await self.submit(name, *args)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Hand each reply to the oldest waiting call, until the stream ends."""
        why = "it exited"
        try:
            while True:
                (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                ok, value = pickle.loads(await reader.readexactly(size))
                future = self._waiting.popleft()
                if future.done():  # its caller went away
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            why = f"it exited: {type(error).__name__}"
        except asyncio.CancelledError:
            why = "closed"
        except Exception as error:  # a reply that does not unpickle, say
            why = f"{type(error).__name__}: {error}"
        self._stop(why, unexpected=why != "closed")

    def _stop(self, why: str, *, unexpected: bool = True) -> None:
        """The process is gone (or its stream is): fail what waits, refuse what comes."""
        if self._stopped is not None:
            return
        code = None if self._process is None else self._process.exitcode
        self._stopped = EngineStopped(
            f"the engine process of {self._name} stopped ({why}; exit code {code})"
        )
        if unexpected:
            log.error("%s", self._stopped)
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(self._stopped)

    async def close(self) -> None:
        """Ask the process to exit, wait for it (killing it if it does not), free the socket."""
        writer, process = self._writer, self._process
        if writer is not None and self._stopped is None:
            with contextlib.suppress(OSError, RuntimeError):
                writer.write(_frame(pickle.dumps((_CLOSE, ()), pickle.HIGHEST_PROTOCOL)))
                await writer.drain()
        self._stop("closed", unexpected=False)
        if process is not None and self._loop is not None:
            await self._loop.run_in_executor(None, _finish, process)
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self._writer = None


def _finish(process: Any) -> None:
    process.join(STOP_WAIT_S)
    if process.is_alive():
        process.kill()
        process.join()


__all__ = [
    "AdoptedRefit",
    "Board",
    "CampaignEngine",
    "ClipBatch",
    "EngineHost",
    "EngineStopped",
    "ProcessEngine",
    "ThreadEngine",
    "make_host",
    "process_context",
]
