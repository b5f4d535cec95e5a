"""Structured JSON logs, written off the event loop.

The handler on the hot path only appends the record to a list; a writer
thread wakes a few times a second, formats what gathered and writes it in one
go. A slow stderr never stalls a request, and the event loop does not hand
the GIL to a logging thread for every line. Records carry fixed fields
passed as `extra={...}`; callers never pass message content, user ids or
secrets.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import threading
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


class BatchingHandler(logging.Handler):
    """Collects records on the caller's thread; a writer thread formats and writes them in batches."""

    def __init__(self, stream: TextIO, *, interval_s: float = 0.2, max_pending: int = 100_000) -> None:
        super().__init__()
        self._stream = stream
        self._interval = interval_s
        self._max_pending = max_pending
        self._pending: collections.deque[logging.LogRecord] = collections.deque()
        self._dropped = 0
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self.setFormatter(JsonFormatter())

    def start(self) -> None:
        self._writer.start()

    def stop(self) -> None:
        """Write what is pending and stop the writer."""
        self._stopping.set()
        if self._writer.is_alive():
            self._writer.join(5)
        self._write_pending()

    def emit(self, record: logging.LogRecord) -> None:
        if len(self._pending) >= self._max_pending:
            self._dropped += 1  # the stream cannot keep up: memory stays bounded
            return
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = _PLAIN.formatException(record.exc_info)
            record.exc_info = None
        self._pending.append(record)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._write_pending()

    def _write_pending(self) -> None:
        lines = []
        while self._pending:
            record = self._pending.popleft()
            try:
                lines.append(self.format(record))
            except Exception:  # noqa: BLE001 - one odd record must not stop the log
                lines.append(json.dumps({"level": "error", "msg": "unformattable log record"}))
        if self._dropped:
            lines.append(json.dumps({"level": "error", "msg": f"{self._dropped} log lines dropped"}))
            self._dropped = 0
        if lines:
            try:
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed or broken: nowhere left to say so


_PLAIN = logging.Formatter()


def configure_logging(level: str, *, stream: TextIO | None = None) -> BatchingHandler:
    """Route every log record to one batching JSON writer; returns the handler to stop at exit."""
    handler = BatchingHandler(stream or sys.stderr)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own access log would duplicate ours at a higher cost.
    logging.getLogger("uvicorn.access").disabled = True
    # Libraries that log every call at INFO would double the log and its cost.
    for noisy in ("alembic", "httpx", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    handler.start()
    return handler
