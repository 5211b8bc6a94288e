"""Process-wide hooks: the error notifier, middleware and log formatter.

A module passed to ``conveyor worker`` can set them at import time (as Que's
``Que.error_notifier = ...``)::

    import conveyor

    conveyor.hooks.error_notifier = lambda error, job: sentry_sdk.capture_exception(error)
    conveyor.hooks.job_middleware.append(timing_middleware)

A :class:`~conveyor.Worker` reads them when it starts, unless it is given its
own through keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .logs import LineFormatter
from .sql import SQLMiddleware

if TYPE_CHECKING:
    from .job import Job

__all__ = ["ErrorNotifier", "Hooks", "JobMiddleware", "hooks"]

T = TypeVar("T")

#: ``notifier(error, job_row)``: told of job errors (``job_row`` is a dict of
#: the job's row, empty if there is none). Its own exceptions are logged and
#: never reach the worker.
ErrorNotifier = Callable[[BaseException, dict[str, Any]], object]

#: ``middleware(job, proceed)``: wraps one job's run; must call ``proceed()``.
JobMiddleware = Callable[["Job", Callable[[], None]], object]


@dataclass
class Hooks:
    """The process-wide hooks (one instance: :data:`conveyor.hooks`)."""

    error_notifier: ErrorNotifier | None = None
    job_middleware: list[JobMiddleware] = field(default_factory=list)
    sql_middleware: list[SQLMiddleware] = field(default_factory=list)
    #: Used by the CLI's logging: a ``callable(dict) -> str | None``.
    log_formatter: LineFormatter | None = None


hooks = Hooks()


def run_chain(
    middleware: Sequence[Callable[..., Any]], args: tuple[Any, ...], proceed: Callable[[], T]
) -> T:
    """Run ``proceed`` through a middleware chain, outermost first: each layer
    is called as ``layer(*args, next)`` and must call ``next()``. One chain
    for both kinds: job middleware (``args`` is ``(job,)``) and SQL
    middleware (``(query, params)``, whose layers return ``next()``'s rows)."""
    if not middleware:
        return proceed()

    def call(index: int) -> T:
        if index == len(middleware):
            return proceed()
        result: T = middleware[index](*args, lambda: call(index + 1))
        return result

    return call(0)
