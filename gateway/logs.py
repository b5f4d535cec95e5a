"""Structured JSON logs, written off the event loop.

Handlers on the hot path only enqueue; a listener thread formats and writes,
so a slow stderr never stalls a request. Records carry fixed fields passed as
`extra={...}`; callers never pass message content, user ids or secrets.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any, TextIO

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_text:
            entry["traceback"] = record.exc_text
        return json.dumps(entry, default=str)


class _Enqueue(logging.handlers.QueueHandler):
    """Enqueue a copy with its message merged; format nothing else on the caller's thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = _PLAIN.formatException(record.exc_info)
            record.exc_info = None
        return record


_PLAIN = logging.Formatter()


def configure_logging(level: str, *, stream: TextIO | None = None) -> logging.handlers.QueueListener:
    """Route every log record through a queue to one JSON writer; returns the listener to stop."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler, respect_handler_level=False)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(_Enqueue(records))
    root.setLevel(level.upper())
    # uvicorn's own access log would duplicate ours at a higher cost.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    listener.start()
    return listener
