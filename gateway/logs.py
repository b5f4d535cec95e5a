"""Structured JSON logs, written off the event loop.

The handler on the hot path only appends the record to a list; a writer
thread wakes a few times a second, formats what gathered and writes it in one
go. A slow stderr never stalls a request, and the event loop does not hand
the GIL to a logging thread for every line. Records carry fixed fields
passed as `extra={...}`; callers never pass message content, user ids or
secrets.

The access log (`AccessLog`, one line per proxied call) goes through the same
logging machinery, so any handler sees its records, but builds them without
what a `LogRecord` gathers on every call (the caller's file and line, thread,
process and task names) and formats them without a dictionary per line; its
lines are the same JSON objects as `JsonFormatter` writes for any record.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import sys
import threading
import time
from typing import Any, TextIO

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


class AccessRecord(logging.LogRecord):
    """One access-log line: `fields` (JSON-ready values) are its attributes, as `extra` would make them.

    Built without `LogRecord.__init__`: the attributes a formatter may read
    and a proxied call has no use for (source location, thread, process,
    task) are constants (in the instance's dictionary, where `%`-style
    formats look them up).
    """

    def __init__(self, name: str, message: str, fields: dict[str, Any]) -> None:
        self.__dict__.update(_ACCESS_CONSTANTS)
        self.__dict__.update(fields)
        self.fields = fields
        self.name = name
        self.msg = message
        self.created = created = time.time()
        self.msecs = (created - int(created)) * 1000
        self.relativeCreated = (created - _LOGGING_STARTED) * 1000


_ACCESS_CONSTANTS: dict[str, Any] = {
    "levelno": logging.INFO, "levelname": "INFO", "args": None, "exc_info": None, "exc_text": None,
    "stack_info": None, "pathname": "", "filename": "", "module": "", "funcName": "", "lineno": 0, "thread": None,
    "threadName": None, "process": None, "processName": None, "taskName": None,
}


class AccessLog:
    """Writes access-log records to `logger` at INFO, when it is enabled for them."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def write(self, message: str, fields: dict[str, Any]) -> None:
        """One line: `message`, then `fields` (str, int, float, bool or None values; no content, ids or secrets)."""
        logger = self._logger
        if logger.isEnabledFor(logging.INFO):
            logger.handle(AccessRecord(logger.name, message, fields))


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record, AccessRecord):
            return self._access_line(record)
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
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

    def _timestamp(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def _access_line(self, record: AccessRecord) -> str:
        """What `json.dumps` would write for the record's entry, without building it."""
        parts = [f'{{"ts": "{self._timestamp(record)}", "level": "info", "logger": {_json_text(record.name)}, '
                 f'"msg": {_json_text(record.getMessage())}']
        for key, value in record.fields.items():
            # The common values written here; anything else as `_json_value` writes it.
            kind = type(value)
            if kind is str and value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
                text = f'"{value}"'
            elif kind is bool or value is None:
                text = _CONSTANTS[value]
            elif kind is int:
                text = repr(value)
            else:
                text = _json_value(value)
            prefix = _KEYS.get(key)
            if prefix is None:
                prefix = _KEYS[key] = f"{_json_text(key)}: "
            parts.append(prefix + text)
        return ", ".join(parts) + "}"


# The access log's keys as written (`"key": `), and the JSON of its constants.
_KEYS: dict[str, str] = {}
_CONSTANTS = {None: "null", True: "true", False: "false"}


def _json_text(text: str) -> str:
    # Plain ASCII needs no escaping: the common case, written as json.dumps would write it.
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text)


def _json_value(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is str:
        return _json_text(value)
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return repr(value)
    return json.dumps(value, default=str)


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
# When logging started, as LogRecord.relativeCreated counts from it.
_LOGGING_STARTED: float = getattr(logging, "_startTime", time.time())


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
