"""The exceptions conveyor raises (all derive from :class:`ConveyorError`), and
how an error is described in logs and in a job's row."""

from __future__ import annotations

import traceback

__all__ = [
    "ConveyorError",
    "SchemaError",
    "UnknownJobClassError",
]


class ConveyorError(Exception):
    """Root of every exception conveyor raises itself."""


class UnknownJobClassError(ConveyorError):
    """A job's ``job_class`` names no known :class:`~conveyor.Job` subclass.

    Raised inside a worker (and recorded as that job's error) when the class is
    neither registered by an imported module nor importable as a dotted path.
    """


class SchemaError(ConveyorError):
    """The database has no conveyor schema, or one of another version."""


def leaked_connections_error(count: int) -> ConveyorError:
    """A job's error when it kept borrowed connections after run() returned."""
    return ConveyorError(
        f"the job kept {count} borrowed connection(s) after run() returned: "
        "closed, and what was not committed is lost"
    )


# --- how an error is described in logs and in a job's row -----------------------

#: The SQL's limits on ``conveyor.jobs.last_error_message`` and
#: ``last_error_backtrace``.
MAX_MESSAGE = 1_000
MAX_BACKTRACE = 10_000


def describe(error: BaseException) -> str:
    """``"ValueError: message"``, even for an exception whose ``str()`` fails."""
    try:
        text = str(error)
    except BaseException:
        text = "<str() failed>"
    return f"{type(error).__name__}: {text}"


def format_error(error: BaseException) -> tuple[str, str]:
    """(message, backtrace) recorded for an error, as Que records them, cut
    to the SQL's limits, with what PostgreSQL text cannot hold escaped."""
    message = describe(error)[:MAX_MESSAGE]
    try:
        backtrace = "".join(traceback.format_exception(error))[-MAX_BACKTRACE:]
    except BaseException:
        backtrace = message
    return _text(message), _text(backtrace)


def _text(value: str) -> str:
    """``value`` as PostgreSQL text can hold it: NULs and lone surrogates
    (which UTF-8 cannot encode) are escaped."""
    value = value.replace("\x00", "\\0")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value
