"""The tasks of the test project."""

import asyncio
import time

from conveyor.contrib.django.compat import (
    FRAMEWORK,
    task_backends,  # noqa: F401
)
from django.db import connection, connections

if FRAMEWORK == "django.tasks":
    from django.tasks import task
else:
    from django_tasks import task

from .log import write


class ShopError(Exception):
    """An error a task raises on purpose."""


@task
def add(a, b):
    return a + b


@task(queue_name="mail")
def send_mail(to, *, subject):
    return {"to": to, "subject": subject}


@task
def fail(message):
    raise ShopError(message)


@task
async def add_async(a, b):
    await asyncio.sleep(0.01)
    return a + b


@task(takes_context=True)
def describe_context(context, label):
    return {
        "label": label,
        "attempt": context.attempt,
        "id": context.task_result.id,
        "status": str(context.task_result.status),
        "args": context.task_result.args,
    }


@task(takes_context=True, backend="other", queue_name="other")
def flaky(context):
    """Fails on its first attempt, succeeds on the second (backend 'other'
    allows one retry)."""
    if context.attempt == 1:
        raise ShopError("first attempt fails")
    return context.attempt


@task(backend="other", queue_name="other")
def search_path():
    with connections["tasks"].cursor() as cursor:
        cursor.execute("SHOW search_path")
        return cursor.fetchone()[0]


@task(queue_name="ordered")
def record(label):
    write("ran", label)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@task(takes_context=True, queue_name="held")
def hold(context):
    """Runs until the test writes a ("release", id) row to shop_log, so that
    the test sees it running from another process."""
    me = context.task_result.id
    write("holding", f"{me} started")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM shop_log WHERE event = 'release' AND what = %s",
                [me],
            )
            if cursor.fetchone()[0]:
                return me
        time.sleep(0.05)
    raise TimeoutError(f"task {me} was never released")


@task(queue_name="cli")
def connection_pid():
    """The server pid of the task's Django connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]
