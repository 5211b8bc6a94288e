"""JSON-lines logging through the standard :mod:`logging` module.

conveyor logs to the ``conveyor`` logger. Each record is an *event* (its
message, such as ``job_worked``) with fields (``job_id``, ``elapsed`` ...).
:class:`JSONFormatter` renders a record as one JSON object::

    {"lib": "conveyor", "hostname": "web1", "pid": 4242, "thread": "conveyor-worker-2",
     "time": "2024-01-01T12:00:00.123456+00:00", "level": "info",
     "event": "job_worked", "job_id": 1, "job_class": "Hello", "elapsed": 0.0012}

A *line formatter* -- any ``callable(dict) -> str | None`` -- can replace the
JSON rendering; with :class:`JSONHandler`, returning None drops the line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["JSONFormatter", "JSONHandler", "LineFormatter", "configure_logging"]

LOGGER = logging.getLogger("conveyor")

#: Renders one event (a dict) as a line, or None to drop it.
LineFormatter = Callable[[dict[str, Any]], str | None]

_HOSTNAME = socket.gethostname()

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "critical": logging.CRITICAL,
}


def log(level: int, event: str, *, exc_info: BaseException | None = None, **fields: Any) -> None:
    """Log ``event`` with ``fields`` on the conveyor logger, if enabled; with
    ``exc_info``, the error's traceback too (for a bug: a crash)."""
    if LOGGER.isEnabledFor(level):
        LOGGER.log(level, event, exc_info=exc_info, extra={"conveyor": fields})


def event_dict(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of a record, as a line formatter receives them."""
    data: dict[str, Any] = {
        "lib": "conveyor",
        "hostname": _HOSTNAME,
        "pid": os.getpid(),
        "thread": record.threadName or threading.current_thread().name,
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
        "level": record.levelname.lower(),
    }
    fields = getattr(record, "conveyor", None)
    if isinstance(fields, dict):
        data["event"] = record.msg
        data.update(fields)
    else:
        data["event"] = "log"
        data["logger"] = record.name
        data["message"] = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        data["exception"] = logging.Formatter().formatException(record.exc_info)
    return data


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, default=str, separators=(", ", ": "))


class JSONFormatter(logging.Formatter):
    """A :class:`logging.Formatter` writing one JSON object per record (or
    what ``line_formatter`` returns; an empty line if it returns None --
    use :class:`JSONHandler` to drop lines instead)."""

    def __init__(self, line_formatter: LineFormatter | None = None) -> None:
        super().__init__()
        self.line_formatter = line_formatter

    def render(self, record: logging.LogRecord) -> str | None:
        data = event_dict(record)
        if self.line_formatter is not None:
            return self.line_formatter(data)
        return _dumps(data)

    def format(self, record: logging.LogRecord) -> str:
        return self.render(record) or ""


class JSONHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing JSON lines; a line formatter returning None
    drops the record."""

    def __init__(
        self, stream: IO[str] | None = None, *, line_formatter: LineFormatter | None = None
    ) -> None:
        super().__init__(stream if stream is not None else sys.stdout)
        self.json_formatter = JSONFormatter(line_formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.json_formatter.render(record)
            if line is None:
                return
            self.stream.write(line + self.terminator)
            self.flush()
        except Exception:
            self.handleError(record)


def configure_logging(
    level: int | str = logging.INFO,
    *,
    line_formatter: LineFormatter | None = None,
    stream: IO[str] | None = None,
) -> JSONHandler:
    """Send the conveyor logger's records at ``level`` and above to ``stream``
    (stdout) as JSON lines; used by the CLI. Returns the handler installed."""
    if isinstance(level, str):
        level = LEVELS[level.lower()]
    handler = JSONHandler(stream, line_formatter=line_formatter)
    for old in list(LOGGER.handlers):
        if isinstance(old, JSONHandler):
            LOGGER.removeHandler(old)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    LOGGER.propagate = False
    return handler
