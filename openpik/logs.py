"""JSON log lines: one object per record, so log shippers index fields instead of parsing prose.

Used by the gateway (one line per request) and the worker (one line per task state change).
Only OpenPik's own loggers are configured; Celery's and uvicorn's logs keep their formats.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

import orjson

# Attributes every LogRecord has; whatever else a record carries came from `extra=`.
_STANDARD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, the `extra` fields, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {name: value for name, value in record.__dict__.items() if name not in _STANDARD_FIELDS}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:  # an integer orjson cannot write (beyond 64 bits)
            return json.dumps(entry, default=str)


def configure_json_logging(name: str, level: int = logging.INFO) -> logging.Logger:
    """Logger ``name`` (and its children) write JSON lines to stderr, once however often called.

    It does not propagate: a root handler (Celery installs one) would print every line again
    in its own format. The stream is bound now, before Celery redirects sys.stderr into a logger.
    """
    logger = logging.getLogger(name)
    if not any(isinstance(handler.formatter, JsonFormatter) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
