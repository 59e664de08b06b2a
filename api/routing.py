"""Requests for a campaign another service process runs go to that process.

Several service processes may share one PostgreSQL database (api/ownership.py); a load
balancer may send any request to any of them. This middleware finds the campaign a request
is about (the path's `campaign_id`, or the campaign of the rater token a judgment carries)
and, when another live process owns it, forwards the request there as it came (method,
path, query, headers, body) and hands back its answer. A forwarded request is marked and
never forwarded again: the process it reaches answers it (a 503 with Retry-After when it
does not own the campaign either, say mid-takeover). A request for a campaign nobody owns
is served here, and this process claims it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import bearer_value

if TYPE_CHECKING:
    from api.service import Service

log = logging.getLogger("ratingparty.api")
FORWARDED = "x-ratingparty-forwarded"  # the process that forwarded this request
STREAMED_PATH = "/clips/bulk"  # bulk uploads: forwarded as they arrive, never held whole
# not passed on: they describe this hop's connection, not the request
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    "proxy-connection",
}


def _service(scope: Scope) -> Service | None:
    return scope["app"].state.get("service")


def _error(status: int, detail: str, retry_after: float | None = None) -> tuple[int, list, bytes]:
    """An error answer like Litestar's (`{status_code, detail}`), with Retry-After when given."""
    body = json.dumps({"status_code": status, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    return status, headers, body


async def _answer(send: Send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def route_to_owner(
    max_body_bytes: int, max_streamed_bytes: int | None = None
) -> Callable[[ASGIApp], ASGIApp]:
    """Litestar middleware: forward a campaign's requests to the process that owns it. A bulk
    clip upload is passed on as it arrives (up to `max_streamed_bytes`), other bodies whole
    (up to `max_body_bytes`)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def routed(scope: Scope, receive: Receive, send: Send) -> None:
            service = _service(scope) if scope["type"] == "http" else None
            if service is None:
                await app(scope, receive, send)
                return
            headers = dict(scope["headers"])
            token = bearer_value(headers.get(b"authorization", b"").decode("latin-1"))
            campaign_id = (scope.get("path_params") or {}).get("campaign_id")
            if token is not None:
                # a rater registered through another process: known here from the database
                found = await service.learn_token(token)
                if campaign_id is None and found is not None:
                    campaign_id = found[1]
            if (
                not isinstance(campaign_id, int)
                or FORWARDED.encode() in headers
                or (address := await service.owner_address(campaign_id)) is None
            ):
                await app(scope, receive, send)
                return
            streamed = scope["path"].endswith(STREAMED_PATH)
            limit = max_streamed_bytes if streamed and max_streamed_bytes else max_body_bytes
            status, out_headers, body = await _forward(
                service, scope, receive, address, campaign_id, limit, streamed=streamed
            )
            await _answer(send, status, out_headers, body)

        return routed

    return middleware


async def _forward(
    service: Service,
    scope: Scope,
    receive: Receive,
    address: str,
    campaign_id: int,
    max_body_bytes: int,
    *,
    streamed: bool = False,
) -> tuple[int, list, bytes]:
    """Send the request to `address`; its answer, or a 503 when it could not be reached.
    A `streamed` body goes on chunk by chunk as it arrives, any other is read whole first."""
    too_large = _error(
        413, f"the request body is larger than the service accepts ({max_body_bytes} bytes)"
    )
    content: bytes | AsyncIterator[bytes]
    if streamed:
        content = _passed_on(receive, max_body_bytes)
    else:
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return 499, [], b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body_bytes:
                return too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        content = b"".join(chunks)
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name.decode("latin-1").lower() not in HOP_BY_HOP
    ]
    headers.append((FORWARDED.encode(), service.leases.worker.encode()))
    query = scope.get("query_string", b"")
    url = address + scope["raw_path"].decode("latin-1") + ("?" + query.decode() if query else "")
    try:
        response = await service.forwarder().request(
            scope["method"], url, headers=headers, content=content
        )
    except _BodyTooLarge:
        return too_large
    except _ClientGone:
        return 499, [], b""
    except httpx.HTTPError as error:
        left = service.forget_owner(campaign_id)
        log.warning("campaign %s: its owner at %s did not answer: %s", campaign_id, address, error)
        return _error(
            503,
            f"campaign {campaign_id} is run by the service process at {address}, which did not "
            f"answer ({type(error).__name__}); another process takes the campaign over once "
            "that one's claim lapses: retry",
            left,
        )
    out: list[Any] = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.items()
        if name.lower() not in HOP_BY_HOP and name.lower() != "content-encoding"
    ]
    return response.status_code, out, response.content


class _BodyTooLarge(Exception):
    """A streamed body passed its limit while it was being forwarded."""


class _ClientGone(Exception):
    """The client went away while its streamed body was being forwarded."""


async def _passed_on(receive: Receive, limit: int) -> AsyncIterator[bytes]:
    """The request's body chunks as they arrive, for httpx to send on."""
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


__all__ = ["FORWARDED", "STREAMED_PATH", "route_to_owner"]
