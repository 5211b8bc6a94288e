"""Enqueueing for :class:`conveyor.Job` and the fronts :func:`conveyor.enqueue`,
:func:`conveyor.enqueue_many` and their async forms: one job or many, inserted,
or run at once in synchronous mode. Split from :mod:`conveyor.job` to keep
modules small; :class:`Job` imports it, so it imports Job only where it runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import enqueueing
from .connections import (
    AsyncConnectable,
    Connectable,
    async_psycopg_connection,
    psycopg_connection,
)
from .job_context import AsyncSyncContext, SyncContext
from .registry import resolve_job_class

if TYPE_CHECKING:
    import psycopg

    from .job import Job

__all__ = [
    "aenqueue_job",
    "aenqueue_jobs",
    "enqueue_job",
    "enqueue_jobs",
    "job_class_and_name",
]


def job_class_and_name(job_class: str | type[Job]) -> tuple[type[Job] | None, str]:
    """(the class, if one is given, and the name to store)."""
    if isinstance(job_class, str):
        return None, job_class
    from .job import Job  # here: conveyor.job imports this module

    if isinstance(job_class, type) and issubclass(job_class, Job):
        return job_class, job_class.job_class
    raise TypeError(f"job_class must be a str or a Job subclass, not {job_class!r}")


def enqueue_job(
    conn: Connectable,
    cls: type[Job] | None,
    name: str,
    args: Sequence[Any],
    options: dict[str, Any],
) -> int | None:
    """Insert one job (see :func:`conveyor.enqueue`), or run it now in
    synchronous mode and return None."""
    conn = psycopg_connection(conn)
    if enqueueing.synchronous(cls, options):
        _run_now(conn, cls, name, args, options)
        return None
    return enqueueing.insert_job(conn, name, args, options)


async def aenqueue_job(
    conn: AsyncConnectable,
    cls: type[Job] | None,
    name: str,
    args: Sequence[Any],
    options: dict[str, Any],
) -> int | None:
    """:func:`enqueue_job` on an async connection (see :func:`conveyor.aio.enqueue`)."""
    conn = await async_psycopg_connection(conn)
    if enqueueing.synchronous(cls, options):
        await _arun_now(conn, cls, name, args, options)
        return None
    return await enqueueing.ainsert_job(conn, name, args, options)


class _Planned(NamedTuple):
    cls: type[Job] | None
    name: str
    args: list[Any]
    options: dict[str, Any]
    now: bool  # synchronous mode: run it instead of inserting it


def _plan(jobs: Iterable[Mapping[str, Any]]) -> list[_Planned]:
    """The jobs of an ``enqueue_many``, checked, with their options."""
    planned: list[_Planned] = []
    for index, job in enumerate(jobs):
        unknown = set(job) - enqueueing.JOB_KEYS
        if unknown:
            raise TypeError(f"enqueue_many: job {index} has unknown keys {sorted(unknown)}")
        if "job_class" not in job:
            raise TypeError(f"enqueue_many: job {index} has no job_class")
        cls, name = job_class_and_name(job["job_class"])
        options = enqueueing.options(
            cls,
            queue=job.get("queue"),
            priority=job.get("priority"),
            run_at=job.get("run_at"),
            data=job.get("data"),
            maximum_retry_count=job.get("maximum_retry_count"),
            kwargs=job.get("kwargs"),
            unique_key=job.get("unique_key"),
            concurrency_key=job.get("concurrency_key"),
            labels=job.get("labels"),
            batch_id=job.get("batch_id"),
            args=list(job.get("args") or ()),
        )
        args = list(job.get("args") or ())
        planned.append(_Planned(cls, name, args, options, enqueueing.synchronous(cls, options)))
    return planned


def enqueue_jobs(conn: Connectable, jobs: Iterable[Mapping[str, Any]]) -> list[int]:
    """Insert many jobs in one statement (see :func:`conveyor.enqueue_many`)."""
    conn = psycopg_connection(conn)
    specs: list[dict[str, Any]] = []
    for job in _plan(jobs):
        if job.now:
            _run_now(conn, job.cls, job.name, job.args, job.options)
        else:
            specs.append(enqueueing.job_spec(job.name, job.args, job.options))
    return enqueueing.insert_jobs(conn, specs)


async def aenqueue_jobs(conn: AsyncConnectable, jobs: Iterable[Mapping[str, Any]]) -> list[int]:
    """:func:`enqueue_jobs` on an async connection."""
    conn = await async_psycopg_connection(conn)
    specs: list[dict[str, Any]] = []
    for job in _plan(jobs):
        if job.now:
            await _arun_now(conn, job.cls, job.name, job.args, job.options)
        else:
            specs.append(enqueueing.job_spec(job.name, job.args, job.options))
    return await enqueueing.ainsert_jobs(conn, specs)


def _loaded(
    cls: type[Job] | None, name: str, args: Sequence[Any], options: Mapping[str, Any]
) -> tuple[type[Job], list[Any], dict[str, Any]]:
    """A synchronous job's class, and its args and data through a JSON round trip."""
    job_cls = cls if cls is not None else resolve_job_class(name)
    loaded_args = json.loads(enqueueing.dumps(list(args), "args"))
    data = json.loads(enqueueing.dumps(dict(options.get("data") or {}), "data"))
    return job_cls, loaded_args, data


def _run_now(
    conn: psycopg.Connection[Any],
    cls: type[Job] | None,
    name: str,
    args: Sequence[Any],
    options: Mapping[str, Any],
) -> None:
    job_cls, loaded_args, data = _loaded(cls, name, args, options)
    job_cls._from_row(None, SyncContext(conn))._invoke(loaded_args, data)


async def _arun_now(
    conn: psycopg.AsyncConnection[Any],
    cls: type[Job] | None,
    name: str,
    args: Sequence[Any],
    options: Mapping[str, Any],
) -> None:
    job_cls, loaded_args, data = _loaded(cls, name, args, options)
    await job_cls._from_row(None, AsyncSyncContext(conn))._ainvoke(loaded_args, data)
