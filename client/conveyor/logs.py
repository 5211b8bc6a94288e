"""Logging through the standard :mod:`logging` module, as JSON lines or text.

conveyor logs to the ``conveyor`` logger. Each record is an *event* (its
message, such as ``job_worked``) with fields (``job_id``, ``elapsed`` ...).
:class:`JSONFormatter` renders a record as one JSON object::

    {"lib": "conveyor", "hostname": "web1", "pid": 4242, "thread": "conveyor-worker-2",
     "time": "2024-01-01T12:00:00.123456+00:00", "level": "info",
     "event": "job_worked", "job_id": 1, "job_class": "Hello", "elapsed": 0.0012}

:class:`TextFormatter` renders it for a person at a terminal, with a
traceback printed as a traceback below its line::

    2024-01-01 12:00:00.123 INFO  conveyor-worker-2 job_worked job_id=1 elapsed=0.0012

Records of other loggers (job code's ``logging.getLogger(__name__)``) are
rendered the same way, as the event ``log`` with ``logger`` and ``message``.

A *line formatter* -- any ``callable(dict) -> str | None`` -- can replace the
rendering; with an :class:`EventHandler`, returning None drops the line.
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

__all__ = [
    "LOG_FORMATS",
    "EventHandler",
    "JSONFormatter",
    "JSONHandler",
    "LineFormatter",
    "TextFormatter",
    "configure_logging",
]

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

#: The values of ``--log-format``.
LOG_FORMATS = ("text", "json")


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
    use :class:`EventHandler` to drop lines instead)."""

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


#: Fields the text format leaves out: the same on every line of a process.
_TEXT_OMITS = frozenset(("lib", "hostname", "pid", "time", "level", "thread", "event"))


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        if value and not any(c.isspace() or c in '"=' for c in value):
            return value
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, default=str, ensure_ascii=False)


class TextFormatter(JSONFormatter):
    """One line per record for a person at a terminal -- time (UTC), level,
    thread, event, ``key=value`` fields -- with multi-line fields (a
    traceback, a job's ``error_backtrace``) printed below it as they are."""

    def render(self, record: logging.LogRecord) -> str | None:
        data = event_dict(record)
        if self.line_formatter is not None:
            return self.line_formatter(data)
        when = datetime.fromtimestamp(record.created, UTC)
        parts = [
            when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}",
            f"{record.levelname:<5}",
            str(data["thread"]),
        ]
        below: list[str] = []
        if data["event"] == "log":
            parts.append(f"{data.pop('logger')}: {data.pop('message')}")
        else:
            parts.append(str(data["event"]))
        for key, value in data.items():
            if key in _TEXT_OMITS:
                continue
            if isinstance(value, str) and "\n" in value.strip():
                below.append(value.rstrip("\n"))
            else:
                parts.append(f"{key}={_text_value(value)}")
        return "\n".join([" ".join(parts), *below])


class EventHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler writing what its formatter (:class:`JSONFormatter`
    or :class:`TextFormatter`) renders; a line formatter returning None drops
    the record."""

    def __init__(self, stream: IO[str] | None = None, *, formatter: JSONFormatter) -> None:
        super().__init__(stream if stream is not None else sys.stdout)
        self.event_formatter = formatter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.event_formatter.render(record)
            if line is None:
                return
            self.stream.write(line + self.terminator)
            self.flush()
        except Exception:
            self.handleError(record)


class JSONHandler(EventHandler):
    """An :class:`EventHandler` writing JSON lines."""

    def __init__(
        self, stream: IO[str] | None = None, *, line_formatter: LineFormatter | None = None
    ) -> None:
        super().__init__(stream, formatter=JSONFormatter(line_formatter))
        self.json_formatter = self.event_formatter


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(
    level: int | str = logging.INFO,
    *,
    line_formatter: LineFormatter | None = None,
    stream: IO[str] | None = None,
    log_format: str | None = None,
) -> EventHandler:
    """Log at ``level`` and above to ``stream`` (stdout), as ``log_format``
    says: ``"json"`` lines, or ``"text"``; None picks text when the stream is
    a terminal, JSON otherwise. Used by the CLI; returns the handler installed.

    The handler goes on the root logger, which takes ``level`` too, so that
    any logger -- job code's ``logging.getLogger(__name__)``, libraries' --
    comes out in the same format; the ``conveyor`` logger propagates to it
    (and has no handler of its own, so no line is written twice). A handler
    installed by an earlier call is replaced; other handlers stay."""
    if isinstance(level, str):
        level = LEVELS[level.lower()]
    target = stream if stream is not None else sys.stdout
    if log_format is None:
        log_format = "text" if _is_terminal(target) else "json"
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {LOG_FORMATS}, not {log_format!r}")
    formatter = (
        TextFormatter(line_formatter) if log_format == "text" else JSONFormatter(line_formatter)
    )
    handler = EventHandler(target, formatter=formatter)
    root = logging.getLogger()
    for logger in (root, LOGGER):
        for old in list(logger.handlers):
            if isinstance(old, EventHandler):
                logger.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    LOGGER.setLevel(level)
    LOGGER.propagate = True
    return handler
