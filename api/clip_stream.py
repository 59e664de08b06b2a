"""A bulk upload's clips sent to PostgreSQL while its body is still read.

The service reads a streamed upload chunk by chunk (`api.bulk.ClipReader`). With a stream, each
chunk's rows go to `store.ClipCopy` on a thread while the next chunk is read, all in one
transaction that `CampaignRuntime.add_clips` commits only once the whole body was read and
checked and the engine took the clips. A bad row anywhere in the body therefore leaves
nothing written. Whatever makes the streamed rows unusable (an external id the campaign holds
already, a failed write, a safety threshold changed meanwhile) only spoils the stream: the
upload then takes the ordinary path, one insert through the writer, which stores the clips or
says what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

from sqlalchemy import Connection

from api.bulk import ClipColumns
from api.store import ClipCopy

T = TypeVar("T")
log = logging.getLogger(__name__)


class StreamedClips:
    """An upload's clips on their way into one open transaction.

    Args:
        copy: the open COPY.
        known: the campaign's external ids (a chunk that repeats one spoils the stream).
        withhold: each clip's reason to be withheld on arrival, or None when none is.
        release: called once the stream is closed (the runtime's hold on clip positions).
        key: what the rows were written for (first position, batch, safety threshold);
            `ready` compares it with the campaign's when the engine takes the clips.
    """

    def __init__(
        self,
        copy: ClipCopy,
        known: Mapping[str, int],
        withhold: Callable[[ClipColumns], Sequence[str | None] | None],
        release: Callable[[], None],
        key: Hashable,
    ) -> None:
        self.copy = copy
        self.key = key
        self.spoiled = False
        self._known = known
        self._withhold = withhold
        self._release = release
        self._pending: asyncio.Future[None] | None = None  # the chunk being written
        self._finished = False
        self._done = False  # committed, or dropped by `close`

    async def send(self, columns: ClipColumns) -> None:
        """Write `columns` after the clips sent before, on a thread; returns once the
        previous chunk is written, so that one chunk is written while the next is read."""
        if self.spoiled or not len(columns):
            return
        if not self._known.keys().isdisjoint(columns.external_ids):
            await self._spoil()  # the ordinary path names the ids in its 409
            return
        withheld = self._withhold(columns)
        if await self._settled():
            self._pending = asyncio.ensure_future(
                asyncio.to_thread(self.copy.write, columns, withheld)
            )

    async def ready(self, key: Hashable, n_clips: int) -> bool:
        """Whether the streamed rows are the upload's `n_clips` clips as the campaign would
        store them now (`key` as at the start)."""
        return await self._settled() and key == self.key and self.copy.n_written == n_clips

    @property
    def finished(self) -> bool:
        """Whether `finish` ran: the transaction waits for `commit`."""
        return self._finished

    async def finish(self, op: Callable[[Connection], T]) -> T:
        """End the COPY and run `op` in the upload's transaction (`ClipCopy.finish`); `close`
        waits for it, so that the transaction is dropped only once `op` is done with it."""
        self._finished = True
        pending = asyncio.ensure_future(asyncio.to_thread(self.copy.finish, op))
        self._pending = pending
        return await pending

    async def commit(self) -> None:
        """Commit the upload's transaction (after `finish`)."""
        self._done = True
        await asyncio.to_thread(self.copy.commit)

    async def close(self) -> None:
        """Drop whatever was not committed and let other clip batches in."""
        try:
            if not self._done:
                self._done = True
                with contextlib.suppress(Exception):
                    await self._settled()
                await asyncio.to_thread(self.copy.abandon)
        finally:
            self._release()

    async def _settled(self) -> bool:
        """Wait for the chunk being written; False once the stream is spoiled."""
        pending, self._pending = self._pending, None
        if pending is not None and not self.spoiled:
            try:
                await pending
            except Exception:
                log.exception("streaming clips to the database failed; storing them at the end")
                await self._spoil()
        return not self.spoiled

    async def _spoil(self) -> None:
        """Drop the rows sent so far (once the chunk under way is written: one thread at a
        time uses the connection)."""
        self.spoiled = True
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):
                await pending
        await asyncio.to_thread(self.copy.abandon)


__all__ = ["StreamedClips"]
