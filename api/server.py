"""How uvicorn serves the app: deadlines and limits that a slow or silent client cannot outwait.

Uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but a connection
that never finishes its request line and headers, or never finishes its body, stays open for
as long as the client likes (each holding a socket, a parser and the bytes sent so far). The
protocol here gives every request a deadline for its headers (counted from the connection, or
from the end of the previous response) and one for its body (counted from the end of its
headers; for a bulk clip upload, from the last body bytes that arrived, so a large upload
that keeps coming is never cut off), and caps the bytes of a request's head. A request that
misses a deadline gets a 408 and the connection is closed; a connection with nothing sent at
all is just closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from litestar import Litestar
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.settings import Settings

MAX_HEAD_BYTES = 65_536  # request line and headers; ours are well under 8 kB
STREAMED_SUFFIX = b"/clips/bulk"  # the path whose body deadline is one of no progress


def _plain_response(status: str, detail: str) -> bytes:
    """A whole HTTP/1.1 error response with the service's JSON error body; it closes."""
    code = status.split(" ", 1)[0]
    body = f'{{"status_code":{code},"detail":"{detail}"}}'.encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a body deadline and a head cap.

    The deadlines are class attributes, set by `protocol_class`.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._reading_head = True
        self._streamed = False  # the request is a bulk upload (its body deadline restarts)

    # the connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._reading_head
        super().data_received(data)
        # a chunk that completes the head may carry body bytes too: count only unfinished heads
        if before and self._reading_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(
                    "431 Request Header Fields Too Large",
                    f"the request line and headers exceed {MAX_HEAD_BYTES} bytes",
                )

    # one request ------------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()
        # a bulk upload may take longer than any fixed deadline to send and check: its
        # deadline counts from the last bytes that arrived instead (see on_body)
        self._streamed = self.url.split(b"?", 1)[0].endswith(STREAMED_SUFFIX)
        self._arm(self.body_timeout_s, self._body_late)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        cycle = self.cycle
        if self._streamed and cycle is not None and not cycle.response_started:
            self._arm(self.body_timeout_s, self._body_late)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        if self.cycle.response_complete:  # answered before its body was read
            self._next_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # a body still coming keeps its deadline; the next head's starts once it is in
        if not self.cycle.more_body:
            self._next_head()

    def _next_head(self) -> None:
        """Give the next request's head its deadline (the keep-alive timer stops at its first
        byte, and a head sent a byte at a time would otherwise never time out)."""
        if not self.transport.is_closing() and not self.pipeline:
            self._reading_head = True
            self._head_bytes = 0
            self._arm(self.header_timeout_s, self._head_late)

    # deadlines --------------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_late(self) -> None:
        self._deadline = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # an idle connection: nobody to answer
            return
        self._refuse(
            "408 Request Timeout",
            f"the request's headers did not arrive within {self.header_timeout_s:g} s",
        )

    def _body_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            self.transport.close()  # answered already (the body was not needed): just close
            return
        self._refuse(
            "408 Request Timeout",
            f"the request's body did not arrive within {self.body_timeout_s:g} s",
        )

    def _refuse(self, status: str, detail: str) -> None:
        """Answer `status` and close; a request the app is reading sees a disconnect."""
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() now returns http.disconnect
            cycle.message_event.set()
        if not self.transport.is_closing():
            self.transport.write(_plain_response(status, detail))
            self.transport.close()


def protocol_class(settings: Settings) -> type[DeadlineProtocol]:
    """`DeadlineProtocol` with the deadlines of `settings`."""
    return type(
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
        },
    )


def uvicorn_config(app: Litestar, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration the service runs under (`options`: host, port, log_level...).

    Beyond the deadlines: idle keep-alive connections close after `keep_alive_s`, and past
    `max_connections` open connections new requests get a 503 instead of more memory.
    """
    return uvicorn.Config(
        app,
        http=protocol_class(settings),
        timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.max_connections,
        log_config=None,  # uvicorn's records go to the root logger (api/logs.py)
        **options,
    )


__all__ = ["MAX_HEAD_BYTES", "DeadlineProtocol", "protocol_class", "uvicorn_config"]
