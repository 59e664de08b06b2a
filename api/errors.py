"""The service's client errors: each an HTTP status with a detail that says what is wrong.

They subclass Litestar's `HTTPException`, so the standard error JSON `{status_code, detail}`
comes out without a custom handler.
"""

from __future__ import annotations

from litestar.exceptions import HTTPException


class BadRequest(HTTPException):
    """400: the request is well-formed JSON but asks for something invalid."""

    status_code = 400


class Unauthorized(HTTPException):
    """401: no or unknown bearer token."""

    status_code = 401


class Forbidden(HTTPException):
    """403: a valid token that may not do this."""

    status_code = 403


class NotFound(HTTPException):
    """404: no such campaign or assignment (for this caller)."""

    status_code = 404


class Conflict(HTTPException):
    """409: clashes with what is already stored (another answer, an existing external id)."""

    status_code = 409


class Gone(HTTPException):
    """410: the assignment's lease expired."""

    status_code = 410


class PayloadTooLarge(HTTPException):
    """413: a batch larger than the service accepts."""

    status_code = 413


class TooManyOpen(HTTPException):
    """429: the rater already holds the most open assignments allowed."""

    status_code = 429


class Unavailable(HTTPException):
    """503: the database or the engine could not serve the request now; retry."""

    status_code = 503


__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Gone",
    "NotFound",
    "PayloadTooLarge",
    "TooManyOpen",
    "Unauthorized",
    "Unavailable",
]
