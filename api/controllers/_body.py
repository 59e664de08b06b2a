"""Request bodies: JSON only, strictly typed, and never a server error whatever the bytes.

Litestar converts bodies in msgspec's lax mode (`"5"` becomes 5.0 and `"true"` True), which
hides client bugs. Handlers that take a body re-read it here in strict mode; the body is
cached by the request, so this costs one small decode.

`JsonRequest` is the app's request class. Litestar decodes a body as JSON whatever its
content type, and its untyped decode of deeply nested arrays raises `RecursionError` (a 500);
this class refuses a body that is not labelled JSON (415) and turns nesting too deep to decode
into a 400.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

from api.errors import UnsupportedMediaType

T = TypeVar("T")
JSON_TYPES = ("application/json",)
NUL_MESSAGE = "Text must not contain NUL characters (\\u0000)"


class JsonRequest(Request):
    """A Litestar request whose JSON body is checked before it is decoded."""

    async def json(self) -> Any:
        """The body decoded as JSON (None when empty).

        Raises:
            UnsupportedMediaType: a non-empty body not sent as `application/json`.
            ValidationException: nesting too deep to decode (400).
        """
        await check_json(self)
        try:
            return await super().json()
        except RecursionError as error:
            raise ValidationException(detail=_too_deep(self)) from error


async def check_json(request: Request) -> bytes:
    """The raw body, once its content type says JSON (any body may be empty).

    Raises:
        UnsupportedMediaType: a non-empty body with another content type.
    """
    raw = await request.body()
    if raw.strip():
        media_type = request.content_type[0].lower()
        if media_type not in JSON_TYPES and not media_type.endswith("+json"):
            sent = f"not {media_type!r}" if media_type else "no content type was given"
            raise UnsupportedMediaType(
                detail=f"the body must be JSON sent as 'content-type: application/json'; {sent}"
            )
    return raw


async def strict_body(request: Request, model: type[T], empty: T | None = None) -> T:
    """The request's JSON body as `model`, decoded without type coercion (`empty` stands in
    for a missing body where one is optional).

    Raises:
        UnsupportedMediaType: a body that is not JSON (415).
        ValidationException: what is wrong and where (400).
    """
    raw = await check_json(request)
    if empty is not None and not raw.strip():
        return empty
    try:
        return msgspec.json.decode(raw, type=model, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        message = str(error)
        key = message.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in message else None
        raise ValidationException(
            detail=f"Validation failed for {request.method} {request.url.path}",
            extra=[{"message": readable(message.split(" - at ")[0]), "key": key, "source": "body"}],
        ) from error
    except RecursionError as error:  # typed decoding stops at the first wrong type; be safe
        raise ValidationException(detail=_too_deep(request)) from error


def readable(message: str) -> str:
    """A msgspec validation message with the NUL pattern said in words."""
    # msgspec names the pattern it checked (schemas.NO_NUL), its backslash escaped
    return NUL_MESSAGE if "matching regex" in message and "x00]" in message else message


def _too_deep(request: Request) -> str:
    return f"the JSON body of {request.method} {request.url.path} is nested too deeply"


__all__ = ["JsonRequest", "check_json", "readable", "strict_body"]
