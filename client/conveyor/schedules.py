"""Recurring jobs from Python: declare schedules beside the job classes, and
upsert the declared ones through ``conveyor.set_schedule``.

The schedule itself lives in SQL (``conveyor.schedules``); this module is a
thin client of it::

    import conveyor
    from conveyor.schedules import schedule

    class NightlyReport(conveyor.Job):
        queue = "reports"

        def run(self, kind: str) -> None: ...

    schedule("nightly-report", "0 3 * * *", NightlyReport, "full", time_zone="Europe/Berlin")

    with psycopg.connect(url) as conn:   # as the schema owner
        apply_schedules(conn)             # creates or replaces every declared one

Declaring a schedule again with the same cron and time zone keeps its pending
occurrence (``set_schedule``'s rule), so applying them at every start-up loses
no run. Semantics (time zones, DST, missed runs, exactly once):
docs/how-to/recurring-jobs.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from .errors import first_line
from .job import Job
from .logs import log
from .registry import job_classes

__all__ = [
    "Schedule",
    "ScheduleRow",
    "apply_schedules",
    "class_schedule",
    "declared_schedules",
    "delete_schedule",
    "enqueue_due_schedules",
    "enqueue_schedule_now",
    "list_schedules",
    "next_schedule_at",
    "schedule",
    "set_schedule_enabled",
]


@dataclass(frozen=True)
class Schedule:
    """A declared schedule: the arguments of ``conveyor.set_schedule``.

    ``queue`` and ``priority`` None take the job class's attributes, else the
    SQL defaults (``'default'``, 100). As a job class's ``schedule``
    attribute, ``name`` and ``job_class`` may be left empty: they default to
    the class's ``job_class``.
    """

    name: str = ""
    cron: str = ""
    job_class: str = ""
    args: Sequence[Any] = ()
    queue: str | None = None
    priority: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    time_zone: str = "UTC"
    enabled: bool = True
    catch_up: bool = False


@dataclass(frozen=True)
class ScheduleRow:
    """A row of ``conveyor.schedules``."""

    name: str
    cron: str
    time_zone: str
    job_class: str
    args: list[Any]
    queue: str
    priority: int
    data: dict[str, Any]
    enabled: bool
    catch_up: bool
    last_run_at: datetime | None
    next_run_at: datetime
    created_at: datetime
    updated_at: datetime


_declared: dict[str, Schedule] = {}
_declared_lock = threading.Lock()

_SET_SCHEDULE = """
SELECT (conveyor.set_schedule(%(name)s, %(cron)s, %(job_class)s, args => %(args)s,
          queue => coalesce(%(queue)s, 'default'), priority => coalesce(%(priority)s, 100),
          data => %(data)s, time_zone => %(time_zone)s, enabled => %(enabled)s,
          catch_up => %(catch_up)s)).name
"""
_LIST = "SELECT * FROM conveyor.schedules ORDER BY name"
_DELETE = "SELECT conveyor.delete_schedule(%s)"
_ENABLE = "SELECT conveyor.set_schedule_enabled(%s, %s)"
_ENQUEUE_DUE = "SELECT conveyor.enqueue_due_schedules()"
_NEXT_AT = "SELECT conveyor.next_schedule_at()"


def schedule(
    name: str,
    cron: str,
    job: str | type[Job],
    *args: Any,
    queue: str | None = None,
    priority: int | None = None,
    data: Mapping[str, Any] | None = None,
    time_zone: str = "UTC",
    enabled: bool = True,
    catch_up: bool = False,
) -> Schedule:
    """Declare the schedule ``name`` (replacing an earlier declaration of it)
    and return it. ``job`` is a :class:`Job` subclass or a job_class name;
    ``args`` are the job's positional arguments. Nothing touches the database
    until :func:`apply_schedules`."""
    if isinstance(job, type) and issubclass(job, Job):
        job_class = job.job_class
        queue = job.queue if queue is None else queue
        priority = job.priority if priority is None else priority
    elif isinstance(job, str):
        job_class = job
    else:
        raise TypeError(f"job must be a Job subclass or a job_class name, not {job!r}")
    declared = Schedule(
        name=name,
        cron=cron,
        job_class=job_class,
        args=tuple(args),
        queue=queue,
        priority=priority,
        data=dict(data or {}),
        time_zone=time_zone,
        enabled=enabled,
        catch_up=catch_up,
    )
    with _declared_lock:
        _declared[name] = declared
    return declared


def declared_schedules() -> list[Schedule]:
    """The schedules declared in this process, by name: those given to
    :func:`schedule`, and the ``schedule`` attributes of the loaded job
    classes (a :func:`schedule` of the same name wins)."""
    found = {s.name: s for cls in job_classes() if (s := class_schedule(cls)) is not None}
    with _declared_lock:
        found.update(_declared)
    return [found[name] for name in sorted(found)]


def class_schedule(cls: type[Job]) -> Schedule | None:
    """The schedule a job class declares with its own ``schedule`` attribute."""
    value = cls.__dict__.get("schedule")
    if value is None:
        return None
    if isinstance(value, str):
        value = Schedule(cron=value)
    elif not isinstance(value, Schedule):
        raise TypeError(
            f"{cls.__qualname__}.schedule must be a cron string or a conveyor.Schedule, "
            f"not {value!r}"
        )
    return replace(
        value,
        name=value.name or cls.job_class,
        job_class=value.job_class or cls.job_class,
        queue=cls.queue if value.queue is None else value.queue,
        priority=cls.priority if value.priority is None else value.priority,
    )


def apply_schedules(
    conn: psycopg.Connection[Any], schedules: Iterable[Schedule] | None = None
) -> list[str]:
    """Create or replace ``schedules`` (default: every declared one) through
    ``conveyor.set_schedule``, in ``conn``'s transaction; return their names.
    Needs a role allowed to execute set_schedule (the schema owner, unless
    granted). Errors: psycopg's DataException subclasses (SQLSTATE 22023 for a
    malformed cron expression or an unknown time zone)."""
    names = []
    for item in declared_schedules() if schedules is None else schedules:
        row = conn.execute(
            _SET_SCHEDULE,
            {
                "name": item.name,
                "cron": item.cron,
                "job_class": item.job_class,
                "args": Jsonb(list(item.args)),
                "queue": item.queue,
                "priority": item.priority,
                "data": Jsonb(dict(item.data)),
                "time_zone": item.time_zone,
                "enabled": item.enabled,
                "catch_up": item.catch_up,
            },
        ).fetchone()
        assert row is not None
        names.append(row[0])
    return names


def list_schedules(conn: psycopg.Connection[Any]) -> list[ScheduleRow]:
    """Every row of ``conveyor.schedules``, by name."""
    with conn.cursor(row_factory=class_row(ScheduleRow)) as cursor:
        return cursor.execute(_LIST).fetchall()


def delete_schedule(conn: psycopg.Connection[Any], name: str) -> bool:
    """Delete the schedule ``name``; True if there was one."""
    row = conn.execute(_DELETE, (name,)).fetchone()
    return bool(row and row[0])


def set_schedule_enabled(conn: psycopg.Connection[Any], name: str, enabled: bool) -> bool:
    """Enable or disable the schedule ``name``; True if it exists."""
    row = conn.execute(_ENABLE, (name, enabled)).fetchone()
    return bool(row and row[0])


def enqueue_due_schedules(conn: psycopg.Connection[Any]) -> list[int]:
    """Enqueue every due occurrence (``conveyor.enqueue_due_schedules``) in
    ``conn``'s transaction; return the new job ids."""
    return [row[0] for row in conn.execute(_ENQUEUE_DUE).fetchall()]


def next_schedule_at(conn: psycopg.Connection[Any]) -> datetime | None:
    """When the next occurrence of an enabled schedule falls due (None: no schedule)."""
    row = conn.execute(_NEXT_AT).fetchone()
    return None if row is None else row[0]


def enqueue_schedule_now(conn: psycopg.Connection[Any], name: str) -> int | None:
    """Enqueue one job of schedule ``name`` now, outside its timetable, and
    return its id (None: no such schedule). The job's data.schedule has the
    name and ``"at": null``; the schedule's occurrences are untouched. Used by
    ``conveyor schedules run-now`` and the dashboard's "enqueue now"."""
    from .client import enqueue

    row = next((r for r in list_schedules(conn) if r.name == name), None)
    if row is None:
        return None
    return enqueue(
        conn,
        row.job_class,
        *row.args,
        queue=row.queue,
        priority=row.priority,
        data={**row.data, "schedule": {"name": row.name, "at": None}},
    )


def apply_declared_schedules(url: str) -> None:
    """A worker's start: create or update the schedules the loaded job
    modules declare (:func:`schedule`, ``Job.schedule``). A role that may not
    change schedules, or a database not reachable yet, gets one warning: the
    worker still enqueues the schedules already in the database."""
    declared = declared_schedules()
    if not declared:
        return
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            names = apply_schedules(conn, declared)
    except psycopg.Error as error:
        log(
            logging.WARNING,
            "schedules_not_applied",
            schedules=[item.name for item in declared],
            error=first_line(error),
        )
        return
    log(logging.INFO, "schedules_applied", schedules=names)
