"""One writer thread per database with group commit.

Every write goes through `Writer.run(op)`: ops queued while the previous transaction was
committing are run together in one transaction (one fsync for many labels), and each caller's
future resolves only after that commit. A failing op does not sink its neighbours: the group
is rolled back and each op re-run in a transaction of its own. One writer also means SQLite
never sees two writers at once (no "database is locked").
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

T = TypeVar("T")
Op = Callable[[Connection], Any]
MAX_GROUP = 256  # ops per transaction: bounds how long one commit holds the writer
_STOP = object()


class Writer:
    """The database's only writer (a daemon thread).

    Args:
        engine: the SQLAlchemy engine to write through.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: queue.Queue[tuple[Op, Future[Any]] | object] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="ratingparty-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Callable[[Connection], T]) -> Future[T]:
        """Queue `op(connection)`; the future holds its result once the transaction committed."""
        if not self._thread.is_alive():
            raise RuntimeError("the database writer has stopped")
        future: Future[T] = Future()
        self._queue.put((op, future))
        return future

    async def run(self, op: Callable[[Connection], T]) -> T:
        """`submit` for coroutines: waits without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(op))

    def close(self) -> None:
        """Finish every queued write, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

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

    def _commit(self, group: list[tuple[Op, Future[Any]]]) -> None:
        live = [(op, future) for op, future in group if future.set_running_or_notify_cancel()]
        try:
            with self.engine.begin() as connection:
                results = [op(connection) for op, _ in live]
        except Exception:
            # isolate the failing op: each one again in its own transaction
            for op, future in live:
                try:
                    with self.engine.begin() as connection:
                        result = op(connection)
                except Exception as error:
                    future.set_exception(error)
                else:
                    future.set_result(result)
            return
        for (_, future), result in zip(live, results, strict=True):
            future.set_result(result)


__all__ = ["Writer"]
