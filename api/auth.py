"""Bearer tokens: the admin key and rater tokens (stored only as SHA-256 hashes)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from api.errors import Unauthorized

TOKEN_BYTES = 24  # 192 bits: unguessable, short enough to paste into a curl line


def bearer(connection: ASGIConnection) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    return bearer_value(connection.headers.get("authorization", ""))


def bearer_value(header: str) -> str | None:
    """The token of an `Authorization` header's value `Bearer <token>`, or None."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_admin(connection: ASGIConnection) -> bool:
    """Whether the request carries the service's admin key (compared in constant time)."""
    token = bearer(connection)
    key: str = connection.app.state.settings.admin_key
    return token is not None and hmac.compare_digest(token.encode(), key.encode())


async def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Litestar guard: only the admin key passes. A coroutine: Litestar runs a sync guard in
    its thread pool, a round trip through a worker thread per request for a dict lookup."""
    if not is_admin(connection):
        raise Unauthorized(
            detail="this endpoint needs the admin key: send 'Authorization: Bearer <admin key>'"
        )


async def rater_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Litestar guard: a known rater token passes. Guards run before the body is read, so a
    caller without a token never gets the service to buffer or decode what they send. A
    coroutine, as `admin_guard`: the lookup never blocks, and a sync guard would cost each
    judgment a hop through Litestar's thread pool."""
    connection.app.state.service.rater_ids(bearer(connection))


def new_token() -> str:
    """A fresh rater token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


__all__ = [
    "admin_guard",
    "bearer",
    "bearer_value",
    "hash_token",
    "is_admin",
    "new_token",
    "rater_guard",
]
