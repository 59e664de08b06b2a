"""Errors the client raises: each carries the service's status and message.

The service answers a client error with `{status_code, detail}` (Litestar's error body), the
detail saying what is wrong; `ServiceError.message` is that detail.
"""

from __future__ import annotations


class ServiceError(Exception):
    """The service refused or failed a request.

    Args:
        status: the HTTP status (None when no response came back).
        message: the service's detail, or what went wrong on the way.
        body: the decoded error body, when there was one.
    """

    def __init__(self, status: int | None, message: str, body: object = None) -> None:
        super().__init__(f"{status}: {message}" if status is not None else message)
        self.status = status
        self.message = message
        self.body = body


class BadRequest(ServiceError):
    """400: the request asks for something invalid (the message names what)."""


class Unauthorized(ServiceError):
    """401: no key or token, or an unknown one."""


class Forbidden(ServiceError):
    """403: a valid token that may not do this (another campaign's)."""


class NotFound(ServiceError):
    """404: no such campaign or assignment, for this caller."""


class Conflict(ServiceError):
    """409: clashes with what is stored (another answer, an existing external id)."""


class Gone(ServiceError):
    """410: the assignment's lease expired."""


class PayloadTooLarge(ServiceError):
    """413: more clips or bytes in one request than the service takes."""


class TooManyOpen(ServiceError):
    """429: the rater holds the most open assignments allowed."""


class Unavailable(ServiceError):
    """503 (or 502/504 from a proxy): the service could not serve the request now."""


class Unreachable(ServiceError):
    """No response: the connection failed or broke, after the retries the call allows."""


BY_STATUS: dict[int, type[ServiceError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    429: TooManyOpen,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}

__all__ = [
    "BY_STATUS",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Gone",
    "NotFound",
    "PayloadTooLarge",
    "ServiceError",
    "TooManyOpen",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
]
