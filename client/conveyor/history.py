"""Job history from the worker's side: the results of kept jobs, and what the
locker's resolution statements say about each attempt (when it started, which
worker made it) -- see docs/how-to/history-and-cleanup.md.

A kept (finished) job's result is the JSON text of what ``run`` returned,
encoded on the worker thread that ran the job, so the locker only joins
strings. The SQL (``conveyor.finish_jobs``) caps a result at
``job_limit('result')`` bytes; the same cap is checked here first, so that a
result too large fails its own job with a clear error instead of the
locker's whole batch of resolutions.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from . import sql
from .errors import ConveyorError
from .protocol import Action, Resolution, Statement, StatementKind

__all__ = ["MAX_RESULT_BYTES", "ResultError"]

#: conveyor.job_limit('result'): bytes of a result's JSON text.
MAX_RESULT_BYTES = 1_048_576

#: Who made an attempt, as ``jobs.attempted_by`` and the error history's
#: ``worker`` say: ``host:pid`` of the worker process (the pid at import:
#: a forked child process imports nothing again, so :func:`worker_id` reads
#: it afresh).
_HOSTNAME = socket.gethostname()


def worker_id() -> str:
    return f"{_HOSTNAME}:{os.getpid()}"


class ResultError(ConveyorError, ValueError):
    """What a kept job's ``run`` returned cannot be stored as its result:
    not JSON-serialisable, or larger than :data:`MAX_RESULT_BYTES`. Handled
    as the job's error (``handle_error``: retried by default)."""


def encode_result(value: Any, job_class: str, job_id: int | None) -> str | None:
    """The JSON text to store as a kept job's result; None for None (no
    result). Raises :class:`ResultError`."""
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as error:
        raise ResultError(
            f"the value {job_class}.run returned (job {job_id}) cannot be stored as the job's "
            f"result: it is not JSON-serialisable ({type(error).__name__}: {error}); return "
            "None, or a dict, list, str, int, float or bool"
        ) from None
    size = len(text.encode("utf-8"))
    if size > MAX_RESULT_BYTES:
        raise ResultError(
            f"the value {job_class}.run returned (job {job_id}) cannot be stored as the job's "
            f"result: its JSON is {size} bytes, more than the {MAX_RESULT_BYTES} allowed; store "
            "large results elsewhere and return a reference"
        )
    return text


def started_at(epoch: float) -> datetime:
    """An attempt's start (``time.time()``) as ``jobs.attempted_at``."""
    return datetime.fromtimestamp(epoch, UTC)


def attempt(epoch: float | None) -> tuple[datetime | None, str | None]:
    """``(attempted_at, attempted_by)`` for an attempt started at ``epoch``
    (``time.time()``) by this process; (None, None) when not known."""
    if epoch is None:
        return None, None
    return started_at(epoch), worker_id()


def retry_statement(result: Resolution) -> Statement:
    """The locker's ``retry_job`` statement for a retry resolution."""
    params = (result.job_id, result.message, result.backtrace, result.delay, result.expire)
    return Statement(sql.RETRY_JOB, (*params, *attempt(result.started_at)), StatementKind.RESOLVE)


def finish_statement(plain: Statement, results: Sequence[Resolution]) -> Statement:
    """The locker's ``finish_jobs`` statement ``plain`` (ids, held: the
    FINISH resolutions of ``results``, in order), given the kept jobs' results
    (a JSON array, one element per id) and when each attempt started, when
    any is known. The JSON texts are only joined: each was encoded (and
    checked) on the worker thread that ran its job."""
    finished = [r for r in results if r.action is Action.FINISH]
    results_json: str | None = None
    if any(r.result is not None for r in finished):
        results_json = "[" + ",".join(r.result or "null" for r in finished) + "]"
    attempted: list[datetime | None] | None = None
    if any(r.started_at is not None for r in finished):
        attempted = [None if r.started_at is None else started_at(r.started_at) for r in finished]
    if results_json is None and attempted is None:
        return plain
    ids, held = plain.params
    params = (ids, held, results_json, attempted, worker_id())
    return Statement(sql.FINISH_JOBS_KEPT, params, plain.kind)
