"""One writer thread per database with group commit.

Every write goes through `Writer.run(op)`: ops queued while the previous transaction was
committing are run together in one transaction (one fsync for many labels), and each caller's
future resolves only after that commit. A failing op does not sink its neighbours: the group
is rolled back and each op re-run in a transaction of its own. One writer also means SQLite
never sees two writers at once (no "database is locked").

A group's coroutine callers are woken by one callback per event loop, not one per op: each
`call_soon_threadsafe` costs the writer and the loop a wake-up, and a group holds up to
`MAX_GROUP` ops.
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
        self._queue: queue.SimpleQueue[tuple[Op, Target] | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="ratingparty-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[Connection], T]) -> Future[T]:
        """Queue `op(connection)`; the future holds its result once the transaction committed."""
        self._check_alive()
        future: Future[T] = Future()
        self._queue.put((op, future))
        return future

    async def run(self, op: Callable[[Connection], T]) -> T:
        """`submit` for coroutines: waits without blocking the event loop. Cancelled before the
        writer took it, the op never runs; once taken, it commits (or fails) regardless."""
        self._check_alive()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((op, future))
        return await future

    def close(self) -> None:
        """Finish every queued write, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _check_alive(self) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the database writer has stopped")

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                return
            group = [item]
            while len(group) < MAX_GROUP:
                try:
                    extra = self._queue.get_nowait()
                except queue.Empty:
                    break
                if extra is _STOP:
                    stopping = True
                    break
                group.append(extra)
            self._commit(group)  # type: ignore[arg-type]

    def _commit(self, group: list[tuple[Op, Target]]) -> None:
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
