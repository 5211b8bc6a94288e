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


#: What every command says about a database without the conveyor schema.
NOT_INSTALLED = "the conveyor schema is not installed in this database: run `conveyor migrate`"

# --- connection failures: an outage, or a mistake retrying cannot fix --------------

#: What libpq and the server say when a connection attempt fails for a reason
#: that waiting does not change: the credentials, the role, the database, a
#: privilege, the URL itself. Anything else (connection refused, a timeout, a
#: host name that does not resolve yet, the server starting up or shutting
#: down, too many connections) is treated as an outage and retried. libpq
#: gives no SQLSTATE for a failed connection, so this matches the (English)
#: messages; a message it does not know is retried, never fatal.
_PERMANENT_CONNECTION_ERRORS = (
    "authentication failed",  # password, scram, md5, peer, ident, cert...
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
    "does not exist",  # role "x" / database "x" does not exist
    "permission denied",  # CONNECT privilege
    "is not permitted to log in",
    "no password supplied",
    "password is required",
    "is not currently accepting connections",  # datallowconn = false
    "invalid port number",
    "invalid connection option",
    "invalid uri",
    "invalid sslmode",
    "server does not support ssl",
)


def permanent_connection_error(error: BaseException) -> bool:
    """Whether a failed connection attempt is one retrying cannot fix."""
    text = str(error).lower()
    return any(pattern in text for pattern in _PERMANENT_CONNECTION_ERRORS)


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


def first_line(error: BaseException) -> str:
    """The first line of an error's text (its type's name when it has none)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


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
