"""Structured logs: one JSON object per line on stderr, for every process of the project.

Never log a request body, an event or a participant's data: messages carry ids, counts, rule
ids and offsets. `extra={...}` fields are added to the object.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)

    def formatException(self, ei: Any) -> str:
        """Where it failed and the exception's type, never its message: a database error's
        message carries the statement's values (a participant id, a birth date)."""
        kind, _, tb = ei
        if kind is None:  # exc_info=True outside an except block
            return "no exception"
        frames = traceback.extract_tb(tb)
        where = " <- ".join(
            f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames[::-1]
        )
        return f"{kind.__module__}.{kind.__qualname__} at {where}"


def configure(service: str, level: int = logging.INFO) -> logging.Handler:
    """Routes the root logger (and uvicorn's) to one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    return handler
