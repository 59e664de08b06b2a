"""One writer thread per database with group commit.

Every write goes through `Writer.run(op)`: ops queued while the previous transaction was
committing are run together in one transaction (one fsync for many labels), and each caller's
future resolves only after that commit. A failing op does not sink its neighbours: the group
is rolled back and each op re-run in a transaction of its own. One writer also means SQLite
never sees two writers at once (no "database is locked").

Wake-ups are batched both ways, because each one is a futex call that can also get the woken
thread scheduled in place of the waker while the waker holds the GIL: the ops a loop submits in
one iteration reach the writer as one queue item (one wake-up of the writer thread), and a
group's coroutine callers are woken by one `call_soon_threadsafe` per event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

T = TypeVar("T")
Op = Callable[[Connection], Any]
# where an op's outcome goes: a concurrent Future (`submit`) or an event loop's future (`run`)
Target = Future[Any] | asyncio.Future[Any]
Job = tuple[Op, Target]
Outcome = tuple[Target, Any, BaseException | None]
MAX_GROUP = 256  # ops per transaction: bounds how long one commit holds the writer
_STOP = object()


class Writer:
    """The database's only writer (a daemon thread).

    Args:
        engine: the SQLAlchemy engine to write through.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SimpleQueue: put and get are C calls, where queue.Queue takes a Python lock dance
        self._queue: queue.SimpleQueue[list[Job] | object] = queue.SimpleQueue()
        # per event loop: the jobs its coroutines queued in the current iteration (see run)
        self._pending: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        self._closing = False
        self._lock = threading.Lock()  # orders the last flushes against close()
        self._thread = threading.Thread(target=self._loop, name="ratingparty-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[Connection], T]) -> Future[T]:
        """Queue `op(connection)`; the future holds its result once the transaction committed."""
        self._check_alive()
        self._flush_current()  # ops of one loop reach the writer in the order they came
        future: Future[T] = Future()
        self._queue.put([(op, future)])
        return future

    async def run(self, op: Callable[[Connection], T]) -> T:
        """`submit` for coroutines: waits without blocking the event loop. Cancelled before the
        writer took it, the op never runs; once taken, it commits (or fails) regardless.

        The op is handed to the writer at the end of the loop's current iteration, together
        with every other op queued in it.
        """
        self._check_alive()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._flush, loop)
        pending.append((op, future))
        return await future

    async def aclose(self) -> None:
        """`close` from a coroutine: what this loop queued in its current iteration is written
        too."""
        self._flush_current()
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Finish every queued write, then stop the thread (ops queued after this fail)."""
        self._flush_current()
        with self._lock:
            self._closing = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _check_alive(self) -> None:
        if self._closing or not self._thread.is_alive():
            raise RuntimeError("the database writer has stopped")

    def _flush_current(self) -> None:
        """`_flush` the running loop of this thread, if it has ops waiting."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop runs in this thread
            return
        if loop in self._pending:
            self._flush(loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """On `loop`: hand the ops it queued since the last flush to the writer thread."""
        jobs = self._pending.pop(loop, None)
        if not jobs:
            return
        with self._lock:
            if not self._closing:
                self._queue.put(jobs)
                return
        stopped = RuntimeError("the database writer has stopped")
        _settle_on_loop([(target, None, stopped) for _, target in jobs])

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                return
            group: list[Job] = list(item)  # type: ignore[call-overload]
            while len(group) < MAX_GROUP:
                try:
                    extra = self._queue.get_nowait()
                except queue.Empty:
                    break
                if extra is _STOP:
                    stopping = True
                    break
                group.extend(extra)  # type: ignore[arg-type]
            self._commit(group)

    def _commit(self, group: list[Job]) -> None:
        live = [(op, target) for op, target in group if _start(target)]
        if not live:
            return
        try:
            with self.engine.begin() as connection:
                results = [op(connection) for op, _ in live]
        except Exception:
            # isolate the failing op: each one again in its own transaction
            outcomes: list[Outcome] = []
            for op, target in live:
                try:
                    with self.engine.begin() as connection:
                        result = op(connection)
                except Exception as error:
                    outcomes.append((target, None, error))
                else:
                    outcomes.append((target, result, None))
            _settle(outcomes)
            return
        _settle([(target, result, None) for (_, target), result in zip(live, results, strict=True)])


def _start(target: Target) -> bool:
    """Whether the op is still wanted (its caller did not cancel); a `submit` future can no
    longer be cancelled after this."""
    if isinstance(target, Future):
        return target.set_running_or_notify_cancel()
    # an event loop's future is read from the writer thread: a cancel racing this check makes
    # the op run with nobody waiting, as a concurrent future already running would
    return not target.cancelled()


def _settle(outcomes: list[Outcome]) -> None:
    """Hand each op's result or error to its caller: concurrent futures at once, event-loop
    futures by one callback per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        target, result, error = outcome
        if isinstance(target, Future):
            if error is None:
                target.set_result(result)
            else:
                target.set_exception(error)
        else:
            by_loop.setdefault(target.get_loop(), []).append(outcome)
    for loop, settled in by_loop.items():
        # a closed loop raises RuntimeError: nobody is left to wait for these results
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_on_loop, settled)


def _settle_on_loop(outcomes: list[Outcome]) -> None:
    """On the callers' event loop: resolve their futures (those not cancelled meanwhile)."""
    for target, result, error in outcomes:
        if target.done():
            continue
        if error is None:
            target.set_result(result)
        else:
            target.set_exception(error)


__all__ = ["Writer"]
