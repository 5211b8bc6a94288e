"""``conveyor enqueue``: one job from the command line, with every option the
Python client has (queue, priority, run_at, data, retries, unique key,
concurrency key, labels, batch), the class's attributes as defaults when the
class can be imported."""

from __future__ import annotations

import importlib
import sys
from datetime import datetime

import click
import psycopg

from . import enqueueing
from .cli_support import (
    check_text,
    cwd_on_path,
    database_url_option,
    errors_as_one_line,
    json_arg,
    load_modules,
    require_url,
)
from .errors import ConveyorError, describe
from .job import Job, resolve_job_class

#: Exit status when the database declined the job (an enqueue_limit is full).
NOT_ENQUEUED = 3


def _importable_job_class(name: str, modules: tuple[str, ...]) -> type[Job] | None:
    """The Job subclass ``conveyor enqueue`` finds for ``name``, whose class
    attributes then give the defaults: with ``--module``, the class those
    modules define (or a dotted path); without, a dotted path whose module
    imports. A dotted name whose top module does not exist is no Python class
    (a job for a worker in another language): None, and the SQL defaults."""
    if modules:
        load_modules(modules)
        return resolve_job_class(name)
    module_name, _, attribute = name.rpartition(".")
    if not module_name or not all(part.isidentifier() for part in name.split(".")):
        return None  # not a Python path: leave it to whichever worker knows it
    cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            return None
        raise ConveyorError(f"cannot import {module_name}: {error}") from None
    except Exception as error:
        raise ConveyorError(f"cannot import {module_name}: {describe(error)}") from None
    found = getattr(module, attribute, None)
    if not (isinstance(found, type) and issubclass(found, Job)):
        raise ConveyorError(f"{module_name} defines no conveyor.Job named {attribute!r}")
    return found


@click.command()
@click.argument("job_class")
@click.argument("args_json", default="[]", metavar="[ARGS_JSON]")
@database_url_option
@click.option(
    "-m",
    "--module",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE (a module name or .py file) first, so that JOB_CLASS's "
    "class attributes give the defaults; repeat for several.",
)
@click.option("--queue", help="Queue name. [default: the class's, else default]")
@click.option(
    "--priority", type=int, help="Priority, lower runs first. [default: the class's, else 100]"
)
@click.option(
    "--run-at", help="When to run, ISO 8601 (e.g. 2030-01-01T09:00:00+00:00). [default: now]"
)
@click.option("--data", "data_json", metavar="JSON", help="A JSON object of metadata.")
@click.option(
    "--maximum-retry-count",
    type=int,
    help="Errors before the job expires. [default: the class's, else 15]",
)
@click.option(
    "--unique-key",
    metavar="KEY",
    help="While an unresolved job has KEY, insert nothing and print that job's id.",
)
@click.option(
    "--concurrency-key",
    metavar="KEY",
    help="The key whose concurrency limits apply. [default: the class's]",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="LABEL",
    help="A label (repeat for several). [default: the class's]",
)
@click.option("--batch-id", type=int, metavar="ID", help="Add the job to this open batch.")
@errors_as_one_line
def enqueue(
    job_class: str,
    args_json: str,
    database_url: str | None,
    modules: tuple[str, ...],
    queue: str | None,
    priority: int | None,
    run_at: str | None,
    data_json: str | None,
    maximum_retry_count: int | None,
    unique_key: str | None,
    concurrency_key: str | None,
    labels: tuple[str, ...],
    batch_id: int | None,
) -> None:
    """Enqueue one job of JOB_CLASS with ARGS_JSON (a JSON array, default [])
    and print its id.

    When JOB_CLASS is a conveyor.Job subclass that can be imported -- defined
    by a --module, or a dotted path such as myapp.jobs.SendWelcomeEmail --
    its class attributes (queue, priority, maximum_retry_count, unique_key,
    concurrency_key, labels) are the defaults, as from Python; the options
    given here win. The job is stored under JOB_CLASS as typed, and always
    inserted (never run here). When the key's enqueue_limit is full nothing
    is inserted: a line on stderr and exit status 3.
    """
    check_text(job_class, "JOB_CLASS")
    cls = _importable_job_class(job_class, modules)
    if queue is not None:
        check_text(queue, "--queue")
    args = json_arg(args_json, "ARGS_JSON")
    if not isinstance(args, list):
        raise ConveyorError("ARGS_JSON must be a JSON array, such as '[1, \"two\"]'")
    data = json_arg(data_json, "--data") if data_json is not None else None
    if data is not None and not isinstance(data, dict):
        raise ConveyorError("--data must be a JSON object")
    when: datetime | None = None
    if run_at is not None:
        try:
            when = datetime.fromisoformat(run_at)
        except ValueError:
            raise ConveyorError(f"--run-at {run_at!r} is not an ISO 8601 time") from None
    options = enqueueing.options(
        cls,
        queue=queue,
        priority=priority,
        run_at=when,
        data=data,
        maximum_retry_count=maximum_retry_count,
        kwargs=None,
        unique_key=unique_key,
        concurrency_key=concurrency_key,
        labels=list(labels) if labels else None,
        batch_id=batch_id,
        args=args,
    )
    with psycopg.connect(require_url(database_url)) as conn:
        job_id = enqueueing.insert_job(conn, job_class, args, options)
    if job_id is None:
        key = options.get("concurrency_key")
        click.echo(
            f"conveyor: not enqueued: the enqueue_limit of concurrency key {key!r} is full",
            err=True,
        )
        sys.exit(NOT_ENQUEUED)
    click.echo(job_id)
