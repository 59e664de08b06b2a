"""Structured logs: one JSON object a line, on stderr, with keys and tokens redacted.

Every record of the process (the service's, uvicorn's, Litestar's) goes through the root
logger's one handler, whose formatter writes JSON and blanks out, in the finished line, the
admin key and anything that looks like a credential: a bearer token, a `token=` or `key=`
query parameter (the pages' addresses), a `"token": "..."` JSON field (a rater's
registration).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

REDACTED = "[redacted]"
_CREDENTIALS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"(?i)([?&](?:token|key)=)[^&\s\"']+"),
    re.compile(r"(?i)(\"token\"\s*:\s*\")[^\"]+"),
)
# attributes every LogRecord has; anything else was passed as `extra` and is logged as a field
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets and anything shaped like a credential replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _CREDENTIALS:
        text = pattern.sub(lambda match: match.group(1) + REDACTED, text)
    return text


class JsonFormatter(logging.Formatter):
    """A record as one JSON line: time, level, logger, message, its `extra` fields and any
    exception, with credentials redacted.

    Args:
        secrets: strings never to write (the admin key).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                payload[name] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str), self.secrets)


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """Send every log record of the process as JSON to stderr, at `level` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


__all__ = ["REDACTED", "JsonFormatter", "configure_logging", "redact"]
