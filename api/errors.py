"""The service's client errors: each an HTTP status with a detail that says what is wrong.

They subclass Litestar's `HTTPException`, so the standard error JSON `{status_code, detail}`
comes out without a custom handler.
"""

from __future__ import annotations

from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec

from api.schemas import Error


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


class UnsupportedMediaType(HTTPException):
    """415: a body in another format than JSON."""

    status_code = 415


class TooManyOpen(HTTPException):
    """429: the rater already holds the most open assignments allowed."""

    status_code = 429


class Unavailable(HTTPException):
    """503: the database or the engine could not serve the request now; retry."""

    status_code = 503


WHY = {
    400: "invalid input: wrong JSON types, unknown fields, values out of range (detail says which)",
    401: "no bearer token, or not one this endpoint accepts",
    403: "a rater token of another campaign, or of a deactivated rater",
    404: "no such campaign or assignment (for this caller)",
    409: "clashes with what is stored: another answer, an existing external id, a setting "
    "that cannot change now, a state the action does not start from",
    410: "the assignment's lease expired, or the operator withdrew it",
    413: "the body or the batch is larger than the service accepts",
    415: "the body is not sent as application/json",
    429: "the rater holds the most open assignments allowed",
    503: "the database or the campaign's engine cannot serve this now: retry",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """The OpenAPI responses of an endpoint's error statuses (`{status_code, detail}` bodies)."""
    return {
        code: ResponseSpec(Error, description=WHY[code], generate_examples=False) for code in codes
    }


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
    "UnsupportedMediaType",
    "error_responses",
]
