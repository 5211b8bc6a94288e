"""ConveyorBackend against a real worker (`manage.py conveyor_worker`):
enqueue in the caller's transaction, results, errors, async tasks, context,
retries, signals and the DATABASES options."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from typing import Any

import pytest
from conveyor.contrib.django.compat import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
)
from django.db import connection, connections, transaction
from django.utils import timezone
from django_support import log_rows, wait_finished, wait_log

pytestmark = pytest.mark.usefixtures("django_db_url")


class Rollback(Exception):
    pass


def job_count(result_id: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM conveyor.jobs WHERE id = %s", [int(result_id)]
        )
        return cursor.fetchone()[0]


def job_row(result_id: str) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT job_class, queue, priority, args, data, state, run_at"
            " FROM conveyor.jobs_view WHERE id = %s",
            [int(result_id)],
        )
        names = [c.name for c in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


def test_rolled_back_enqueue_leaves_nothing() -> None:
    from shop.tasks import add

    with pytest.raises(Rollback), transaction.atomic():
        result = add.enqueue(1, 2)
        assert job_count(result.id) == 1  # inserted, in the transaction
        raise Rollback
    assert job_count(result.id) == 0
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result(result.id)


def test_committed_enqueue_runs_and_reports_its_return_value(
    session_worker: Any,
) -> None:
    from shop.tasks import add, send_mail

    with transaction.atomic():
        result = add.enqueue(2, 3)
        mail = send_mail.enqueue("ann@example.com", subject="hi")
        assert result.status == TaskResultStatus.READY
    done = wait_finished(add, result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 5
    assert done.args == [2, 3] and done.kwargs == {}
    assert done.enqueued_at is not None and done.finished_at >= done.enqueued_at
    assert done.errors == []
    worker = f"{socket.gethostname()}:{session_worker.process.pid}"
    assert done.worker_ids == [worker] and done.attempts == 1
    assert done.enqueued_at <= done.started_at <= done.finished_at
    assert done.last_attempted_at == done.started_at
    mailed = wait_finished(send_mail, mail.id)
    assert mailed.return_value == {"to": "ann@example.com", "subject": "hi"}
    assert mailed.kwargs == {"subject": "hi"}
    assert mailed.task.queue_name == "mail"
    # refresh() on the first result object reads the same
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 5


def test_invisible_to_the_worker_until_commit(session_worker: Any) -> None:
    import time

    from shop.tasks import add

    with transaction.atomic():
        result = add.enqueue(10, 1)
        time.sleep(1.5)  # a worker that saw it would have run it by now
        row = job_row(result.id)
        assert row["state"] == "ready"
    assert wait_finished(add, result.id).return_value == 11


def test_job_row_is_a_plain_conveyor_job() -> None:
    from shop.tasks import send_mail

    with pytest.raises(Rollback), transaction.atomic():
        result = send_mail.using(priority=30).enqueue("bo@example.com", subject="x")
        row = job_row(result.id)
        raise Rollback
    assert row["job_class"] == "conveyor.contrib.django.job.DjangoTask"
    assert row["queue"] == "mail"
    assert row["priority"] == 70  # 100 - Django's priority
    assert row["args"] in (["bo@example.com"], '["bo@example.com"]')


def test_failure_reports_the_error_and_traceback(session_worker: Any) -> None:
    from shop.tasks import fail

    result = fail.enqueue("out of stock")
    done = wait_finished(fail, result.id)
    assert done.status == TaskResultStatus.FAILED
    with pytest.raises(ValueError, match="failed"):
        done.return_value  # noqa: B018
    assert len(done.errors) == 1
    error = done.errors[0]
    assert error.exception_class_path == "shop.tasks.ShopError"
    from shop.tasks import ShopError

    assert error.exception_class is ShopError
    assert "out of stock" in error.traceback
    assert "raise ShopError(message)" in error.traceback
    assert done.finished_at is not None


def test_async_task(session_worker: Any) -> None:
    from shop.tasks import add_async

    async def enqueue_and_wait() -> Any:
        result = await add_async.aenqueue(20, 22)
        for _ in range(1200):
            found = await add_async.aget_result(result.id)
            if found.is_finished:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError("the async task did not finish")

    done = asyncio.run(enqueue_and_wait())
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 42


def test_context_has_the_attempt_and_the_result(session_worker: Any) -> None:
    from shop.tasks import describe_context

    result = describe_context.enqueue("ctx")
    done = wait_finished(describe_context, result.id)
    assert done.return_value == {
        "label": "ctx",
        "attempt": 1,
        "id": result.id,
        "status": "RUNNING",
        "args": ["ctx"],
    }
    assert done.attempts == 1


def test_retries_on_another_alias_with_its_search_path(session_worker: Any) -> None:
    """Backend 'other': DATABASES alias 'tasks' (search_path without public
    or conveyor), max_retries 1: the first attempt fails, the second
    succeeds, and the result lists both attempts."""
    from shop.tasks import flaky, search_path

    with connections["tasks"].cursor() as cursor:
        cursor.execute("SHOW search_path")
        assert cursor.fetchone()[0] == "shop_schema"
    # An atomic block on 'default' does not hold a task enqueued on 'tasks'.
    with pytest.raises(Rollback), transaction.atomic():
        result = flaky.enqueue()
        raise Rollback
    done = wait_finished(flaky, result.id, timeout=90)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 2
    assert done.attempts == 2
    worker = f"{socket.gethostname()}:{session_worker.process.pid}"
    assert done.worker_ids == [worker, worker]
    assert [e.exception_class_path for e in done.errors] == ["shop.tasks.ShopError"]
    assert "first attempt fails" in done.errors[0].traceback
    shown = wait_finished(search_path, search_path.enqueue().id)
    assert shown.return_value == "shop_schema"
    # and a rollback on 'tasks' does hold it
    with pytest.raises(Rollback), transaction.atomic(using="tasks"):
        held = search_path.enqueue()
        raise Rollback
    with pytest.raises(TaskResultDoesNotExist):
        search_path.get_result(held.id)


def test_deferred_task_waits_for_run_after(session_worker: Any) -> None:
    from shop.tasks import add

    run_after = timezone.now() + dt.timedelta(seconds=3)
    result = add.using(run_after=run_after).enqueue(1, 1)
    assert job_row(result.id)["state"] == "scheduled"
    assert add.get_result(result.id).status == TaskResultStatus.READY
    done = wait_finished(add, result.id)
    assert done.return_value == 2
    assert done.finished_at >= run_after


def test_signals_are_sent_where_the_task_is(session_worker: Any) -> None:
    from shop.tasks import add

    result = add.enqueue(4, 4)
    wait_finished(add, result.id)
    wait_log("finished", result.id)
    events = [
        (event, what.split()[:2])
        for event, what in log_rows()
        if what.startswith(f"{result.id} ")
    ]
    assert events == [
        ("enqueued", [result.id, "READY"]),
        ("started", [result.id, "RUNNING"]),
        ("finished", [result.id, "SUCCESSFUL"]),
    ]
    pids = {
        what.split()[-1]
        for event, what in log_rows()
        if what.startswith(f"{result.id} ")
    }
    assert len(pids) == 2  # enqueued here, started/finished in the worker


def test_failed_task_sends_finished_with_failed(session_worker: Any) -> None:
    from shop.tasks import fail

    result = fail.enqueue("signal")
    wait_finished(fail, result.id)
    finished = wait_log("finished", result.id)
    assert len(finished) == 1 and finished[0].split()[1] == "FAILED"


def test_queue_validation_and_priority_range() -> None:
    from shop.tasks import add

    with pytest.raises(InvalidTask, match="Queue 'nope' is not valid"):
        add.using(queue_name="nope")
    with pytest.raises(InvalidTask, match="priority"):
        add.using(priority=101)
    backend = task_backends["default"]
    assert backend.supports_defer and backend.supports_async_task
    assert backend.supports_get_result and backend.supports_priority


def test_get_result_of_unknown_and_foreign_ids() -> None:
    from shop.tasks import add, send_mail

    for bad in ("0", "not-a-number", "-5"):
        with pytest.raises(TaskResultDoesNotExist):
            add.get_result(bad)
    with connection.cursor() as cursor:
        cursor.execute("SELECT conveyor.enqueue('SomeOtherJob', '[]')")
        other = str(cursor.fetchone()[0]).strip("()").split(",")[0]
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result(other)
    result = add.enqueue(0, 0)
    from conveyor.contrib.django.compat import FRAMEWORK

    mismatch = __import__(f"{FRAMEWORK}.exceptions", fromlist=["x"]).TaskResultMismatch
    with pytest.raises(mismatch):
        send_mail.get_result(result.id)


def test_priorities_order_and_fresh_connections(start_worker: Any) -> None:
    """Higher Django priority first; one worker thread; the task's Django
    connection is closed between tasks (CONN_MAX_AGE 0), as after a request."""
    from shop.tasks import record

    with transaction.atomic():
        results = [
            record.using(priority=p).enqueue(f"p{p}")
            for p in (-100, 0, 50, -20, 100, 10)
        ]
    start_worker("-q", "ordered", "-w", "1")
    done = [wait_finished(record, r.id) for r in results]
    ran = [what for event, what in log_rows("ran")]
    assert ran == ["p100", "p50", "p10", "p0", "p-20", "p-100"]
    pids = [d.return_value for d in done]
    assert len(set(pids)) == len(pids)  # a new connection for every task


def test_a_running_task_reports_its_start_and_worker(start_worker: Any) -> None:
    """get_result from another process while the first attempt runs: RUNNING,
    started_at and last_attempted_at the attempt's start, the worker's id;
    a task locked in the worker's buffer behind it (one thread) is READY,
    not started."""
    from conveyor.contrib.django.job import DjangoTask
    from shop.log import write
    from shop.tasks import hold

    first, second = hold.enqueue(), hold.enqueue()
    before = timezone.now()
    worker = start_worker("-q", "held", "-w", "1")
    wait_log("holding", first.id)
    running = hold.get_result(first.id)
    assert running.status == TaskResultStatus.RUNNING
    assert running.started_at is not None
    assert before <= running.started_at <= timezone.now()
    assert running.last_attempted_at == running.started_at
    assert running.worker_ids == [f"{socket.gethostname()}:{worker.process.pid}"]
    # The second task is locked (conveyor's state running) but not started.
    deadline = time.monotonic() + 30
    while job_row(second.id)["state"] != "running":
        assert time.monotonic() < deadline, "the worker never buffered the second task"
        time.sleep(0.05)
    waiting = hold.get_result(second.id)
    assert waiting.status == TaskResultStatus.READY
    assert waiting.started_at is None and waiting.worker_ids == []
    assert DjangoTask.job_class == job_row(second.id)["job_class"]
    write("release", first.id)
    done = wait_finished(hold, first.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.started_at == running.started_at  # the same attempt
    assert done.worker_ids == running.worker_ids
    write("release", second.id)
    later = wait_finished(hold, second.id)
    assert later.started_at > done.started_at


def test_the_enqueued_job_is_conveyor_enqueues() -> None:
    """The backend's own statement (every parameter given, what depends on
    the task written in once) inserts the very job conveyor.enqueue inserts
    with the same options: every column but the id, in one transaction
    (run_at's default now() is the transaction's start). Also with a quote
    in a constant (the queue's name), written in as a literal."""
    from shop.tasks import add, send_mail

    later = timezone.now() + dt.timedelta(hours=1)
    queues = task_backends["default"].queues
    queues.add("it's")
    try:
        cases = [
            (send_mail, ["ann@example.com"], {"subject": "hi"}),
            (
                send_mail.using(priority=10, run_after=later),
                ["bob@example.com"],
                {"subject": "x"},
            ),
            (add, [1, 2], {}),
            (add, [3, 4], {}),
            (add.using(run_after=later), [5, 6], {}),
            (add.using(queue_name="it's", priority=-100), ["\\'"], {}),
            (add.using(priority=100), [], {"b": "é'"}),
            (add.using(backend="other", queue_name="other"), [7, 8], {}),
        ]
        for task, args, kwargs in cases:
            enqueue_both(task, args, kwargs)
    finally:
        queues.discard("it's")


def enqueue_both(task: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
    import conveyor
    from conveyor.contrib.django.job import DjangoTask

    backend = task.get_backend()
    db = connections[backend.database]
    with pytest.raises(Rollback), transaction.atomic(using=backend.database):
        ours = int(backend.enqueue(task, args, kwargs).id)
        theirs = conveyor.enqueue(
            db.connection,
            DjangoTask.job_class,
            *args,
            queue=task.queue_name,
            priority=100 - task.priority,
            run_at=task.run_after,
            data={"task": task.module_path, "backend": backend.alias},
            maximum_retry_count=backend.max_retries,
            kwargs=kwargs,
        )
        with db.cursor() as cursor:
            cursor.execute(
                "SELECT (to_jsonb(j) - 'id')::text FROM conveyor.jobs j WHERE id = %s"
                " UNION ALL"
                " SELECT (to_jsonb(j) - 'id')::text FROM conveyor.jobs j WHERE id = %s",
                [ours, theirs],
            )
            mine, expected = (row[0] for row in cursor.fetchall())
        assert mine == expected, (task, args, kwargs)
        raise Rollback


def test_enqueue_errors_are_djangos() -> None:
    """An enqueue the server rejects raises Django's exception, as Django's
    cursors translate it (the backend runs the statement on its own
    cursor); the broken transaction is then refused as Django refuses it."""
    import psycopg
    from django.db import DataError
    from django.db.transaction import TransactionManagementError
    from shop.tasks import add

    too_long = "q" * 101  # conveyor.job_limit('queue') is 100
    queues = task_backends["default"].queues
    queues.add(too_long)
    try:
        with transaction.atomic():
            with (
                pytest.raises(DataError) as caught,
                transaction.atomic(savepoint=False),
            ):
                add.using(queue_name=too_long).enqueue(1, 2)
            assert isinstance(
                caught.value.__cause__, psycopg.errors.StringDataRightTruncation
            )
            with pytest.raises(TransactionManagementError):
                add.enqueue(1, 2)
    finally:
        queues.discard(too_long)


def prepared_enqueues() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%conveyor.enqueue(%"],
        )
        return cursor.fetchone()[0]


def test_enqueue_is_prepared_as_the_connection_allows() -> None:
    """Django's default (prepare_threshold None, for poolers) never prepares
    the enqueue; a threshold in OPTIONS prepares it as psycopg does on a
    plain connection -- also under Django's client-side binding cursors,
    which psycopg never prepares (the backend runs it on its own cursor)."""
    from shop.tasks import add

    connection.close()
    try:
        with pytest.raises(Rollback), transaction.atomic():
            for i in range(8):
                add.enqueue(i, 0)
            assert connection.connection.prepare_threshold is None
            assert prepared_enqueues() == 0
            raise Rollback
        connection.close()
        connection.settings_dict["OPTIONS"]["prepare_threshold"] = 2
        with pytest.raises(Rollback), transaction.atomic():
            for i in range(3):
                add.enqueue(i, 0)
            assert prepared_enqueues() == 1
            raise Rollback
    finally:
        connection.settings_dict["OPTIONS"].pop("prepare_threshold", None)
        connection.close()


def test_backend_options_are_checked() -> None:
    from conveyor.contrib.django.backend import ConveyorBackend
    from conveyor.contrib.django.compat import InvalidTaskBackend

    with pytest.raises(InvalidTaskBackend, match="unknown OPTIONS"):
        ConveyorBackend("x", {"OPTIONS": {"databse": "default"}})
    with pytest.raises(InvalidTaskBackend, match="max_retries"):
        ConveyorBackend("x", {"OPTIONS": {"max_retries": -1}})
