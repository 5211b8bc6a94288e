"""What the ``conveyor`` commands share: one-line errors, the database URL
option, JSON arguments, plain-text tables."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import click
import psycopg

from .errors import ConveyorError, first_line

__all__ = [
    "check_text",
    "cwd_on_path",
    "database_url_option",
    "errors_as_one_line",
    "fail",
    "first_line",
    "json_arg",
    "load_modules",
    "require_url",
    "table",
]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    click.echo(f"conveyor: error: {message}", err=True)
    sys.exit(1)


def errors_as_one_line(func: F) -> F:
    """Expected failures -- the database unreachable or refusing a statement,
    a module that cannot be imported, a ConveyorError -- become one line on
    stderr and exit status 1 (with ``--debug``, after their traceback).
    Anything else is a bug: its traceback goes out as Python prints it."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except psycopg.OperationalError as error:
            _expected(error, f"cannot connect to the database: {first_line(error)}")
        except (ConveyorError, psycopg.Error) as error:
            _expected(error, first_line(error) + _missing_schema_hint(error))
        return None

    return wrapper  # type: ignore[return-value]


#: SQLSTATEs of a schema, table or function that does not exist.
_UNDEFINED = {"3F000", "42P01", "42883"}


def _missing_schema_hint(error: BaseException) -> str:
    """What to do when a command meets a conveyor object that is not there:
    the schema was never installed, or is older than this client."""
    if getattr(error, "sqlstate", None) in _UNDEFINED and "conveyor" in str(error):
        return " (the conveyor schema is missing or older than this client: run `conveyor migrate`)"
    return ""


def _expected(error: BaseException, message: str) -> None:
    context = click.get_current_context(silent=True)
    if context is not None and context.find_root().params.get("debug"):
        traceback.print_exception(error, file=sys.stderr)
    fail(message)


def database_url_option(func: F) -> F:
    return click.option(
        "--database-url",
        envvar=["CONVEYOR_DATABASE_URL", "DATABASE_URL"],
        show_envvar=True,
        metavar="URL",
        help="PostgreSQL connection URL (or libpq conninfo).",
    )(func)


def require_url(database_url: str | None) -> str:
    if not database_url:
        fail("no database: pass --database-url or set DATABASE_URL")
    assert database_url is not None
    return database_url


def table(headers: list[str], rows: list[tuple[Any, ...]]) -> str:
    cells = [headers] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_text(value: str, what: str) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates, which no
    database text can hold: an input error, said as one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConveyorError(f"{what} is not valid UTF-8: {value!r}") from None


def json_arg(value: str, what: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as error:
        raise ConveyorError(f"{what} is not valid JSON: {error}") from None
    except RecursionError:
        raise ConveyorError(f"{what} is nested too deeply") from None


# --- modules named on the command line ----------------------------------------------


def _import_module(name: str) -> ModuleType:
    if name.endswith(".py") or os.sep in name:
        path = Path(name).resolve()
        if not path.is_file():
            raise ConveyorError(f"cannot load {name}: no such file")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ConveyorError(f"cannot load {name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(name)


def cwd_on_path() -> None:
    """The current directory importable, as `python -m` and manage.py have it."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def load_modules(names: tuple[str, ...]) -> None:
    """Import each module name or .py file; a failure is a one-line ConveyorError."""
    cwd_on_path()
    for name in names:
        try:
            _import_module(name)
        except ConveyorError:
            raise
        except ModuleNotFoundError as error:
            raise ConveyorError(f"cannot import {name}: {error}") from None
        except Exception as error:
            raise ConveyorError(f"cannot import {name}: {type(error).__name__}: {error}") from None
