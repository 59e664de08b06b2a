"""Strict request bodies: the wrong JSON type is a 400, never a silent coercion.

Litestar converts bodies in msgspec's lax mode (`"5"` becomes 5.0 and `"true"` True), which
hides client bugs. Handlers that take a body re-read it here in strict mode; the body is
cached by the request, so this costs one small decode.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

T = TypeVar("T")


async def strict_body(request: Request, model: type[T], empty: T | None = None) -> T:
    """The request's JSON body as `model`, decoded without type coercion (`empty` stands in
    for a missing body where one is optional).

    Raises:
        ValidationException: what is wrong and where (400).
    """
    raw = await request.body()
    if empty is not None and not raw.strip():
        return empty
    try:
        return msgspec.json.decode(raw, type=model, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        message = str(error)
        key = message.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in message else None
        raise ValidationException(
            detail=f"Validation failed for {request.method} {request.url.path}",
            extra=[{"message": message.split(" - at ")[0], "key": key, "source": "body"}],
        ) from error


__all__ = ["strict_body"]
