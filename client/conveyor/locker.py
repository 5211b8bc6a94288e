"""The locker: one thread, one dedicated database session.

It registers the process in ``conveyor.lockers``, LISTENs on its channel,
locks announced jobs with ``lock_jobs_by_id`` and polls with ``lock_jobs``
(see :mod:`conveyor.poller`), keeps the buffer between its bounds, and sends
the resolutions the workers report back -- ``destroy_jobs``, ``finish_jobs``,
``expire_jobs``, ``retry_job``, ``unlock_jobs`` -- in batches: everything one
cycle has to say goes out in a single pipelined round trip (one implicit
transaction), whatever the number of jobs.

The thread sleeps in ``select()`` on the connection's socket (notifications)
and on a socket pair the workers write to (a job finished, the buffer runs
low), for at most ``wait_period`` seconds.

If the session drops or is terminated, the locker logs it, forgets the
buffered jobs (their locks went with the session), and reconnects with
backoff, re-registering and re-LISTENing; it keeps trying while the database
is down (refused, timed out, starting up, shutting down, too many connections).
A connection attempt that retrying cannot fix (bad authentication, an unknown
role or database, no CONNECT, a URL that does not parse) stops it, fatally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from . import sql
from ._hooks import run_chain
from .buffer import JobBuffer
from .buffer_sizing import AdaptiveSize
from .errors import (
    NOT_INSTALLED,
    ConveyorError,
    SchemaError,
    describe,
    first_line,
    permanent_connection_error,
)
from .history import finish_statement, retry_statement
from .lock_budget import BufferBounds, is_lock_table_full
from .locker_report import BufferReport
from .locker_statements import execute_cycle, run_one
from .logs import log
from .poller import Poller
from .poolers import require_own_session
from .protocol import (
    NO_LOCKS,
    Action,
    AnnouncedJob,
    LockedJob,
    Locks,
    Notification,
    Resolution,
    Resolutions,
    Statement,
    StatementKind,
)
from .schedule_clock import ScheduleClock
from .waker import Waker

__all__: list[str] = []

_HOSTNAME = socket.gethostname()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


#: The statement that resolves a batch of jobs, by action (retry and unlock
#: have their own handling).
_RELEASE_STATEMENTS = {
    Action.DESTROY: sql.DESTROY_JOBS,
    Action.FINISH: sql.FINISH_JOBS,
    Action.EXPIRE: sql.EXPIRE_JOBS,
}


class Locker:
    """The locker thread of one :class:`~conveyor.Worker`."""

    def __init__(
        self,
        *,
        buffer: JobBuffer,
        waker: Waker,
        connection_url: str,
        queues: Sequence[str],
        priorities: Sequence[int | None],
        poll_interval: float,
        wait_period: float,
        sql_middleware: Sequence[sql.SQLMiddleware],
        log_internals: bool,
        durable_resolutions: bool = False,
        adaptive: AdaptiveSize | None = None,
    ) -> None:
        self._buffer = buffer
        self._bounds = BufferBounds(buffer, adaptive, log_internals=log_internals)
        self._waker = waker
        self._url = connection_url
        self._queues = list(queues)
        self._queue_set = frozenset(queues)
        numbers = [p for p in priorities if p is not None]
        self._ceiling = sys.maxsize if len(numbers) < len(priorities) else max(numbers)
        self._priorities = list(priorities)
        self._poller = Poller(
            poll_interval=poll_interval,
            widest=None if self._ceiling == sys.maxsize else self._ceiling,
        )
        self._schedules = ScheduleClock(poll_interval=poll_interval)
        self._report = BufferReport(buffer)
        self._wait_period = wait_period
        self._middleware = tuple(sql_middleware)
        self._internals = log_internals
        self._durable = durable_resolutions
        self._conn: psycopg.Connection[Any] | None = None
        self._announced: list[AnnouncedJob] = []
        self._unlock: list[int] = []
        # The jobs this session holds the advisory locks of: locked and not yet
        # released (buffered, running, or resolved but not yet reported). Passed
        # to the SQL functions as `held`, it spares each call a pg_locks read.
        self._held: set[int] = set()
        self._carry: list[Resolution] = []
        self._stopping = threading.Event()
        self._deadline = 0.0
        #: Set once the first connection attempt is over (either way).
        self.ready = threading.Event()
        #: A fatal error (no schema, no privileges) that stopped the locker.
        self.fatal: BaseException | None = None
        #: Whether the locker is connected and registered now.
        self.connected = False
        self.reconnects = 0
        self.on_round_trip: Callable[[float], None] = lambda seconds: None  # metrics' timer
        self.thread = threading.Thread(target=self._main, name="conveyor-locker", daemon=True)

    # --- control, from other threads ---------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self, deadline: float) -> None:
        """Stop locking; let running jobs finish until ``deadline`` (monotonic)."""
        self._deadline = deadline
        self._stopping.set()
        self._waker.wake()

    # --- the thread ------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._work()
            self._shutdown()
        except BaseException as error:
            self.fatal = self.fatal or error
            log(logging.CRITICAL, "locker_crashed", exc_info=error, error=describe(error))
        finally:
            self._close()
            self._buffer.stop()
            self.ready.set()

    def _work(self) -> None:
        delay = 0.0
        while not self._stopping.is_set():
            if self._conn is None:
                if delay:
                    self._sleep(delay)
                    if self._stopping.is_set():
                        return
                try:
                    self._connect()
                except psycopg.OperationalError as error:
                    # Back off 0.1, 0.2, 0.4, 0.8 s, then retry every second:
                    # a database back up is noticed within a second, which a
                    # restart's recovery needs (within 5 s, tests/python/
                    # test_chaos.py); a 5 s cap cost up to 5 s after an outage
                    # of a few seconds. One refused attempt a second per worker
                    # is far less than a worker sends when it is working.
                    delay = min(max(delay * 2, 0.1), 1.0)
                    log(
                        logging.ERROR,
                        "database_unreachable",
                        error=str(error).strip(),
                        retry_in=delay,
                    )
                    self.ready.set()
                    continue
                except ConveyorError as error:  # a bad URL or login; require_own_session
                    self.fatal = error
                    log(logging.CRITICAL, "locker_failed", error=str(error))
                    return
                except psycopg.errors.InvalidSchemaName:
                    self.fatal = SchemaError(NOT_INSTALLED)
                    log(logging.CRITICAL, "locker_failed", error=str(self.fatal))
                    return
                except psycopg.Error as error:
                    reason = first_line(error)
                    self.fatal = SchemaError(
                        "cannot register the worker (is the conveyor schema up to date? "
                        f"run `conveyor migrate`): {reason}"
                    )
                    log(logging.CRITICAL, "locker_failed", error=str(self.fatal))
                    return
                delay = 0.0
                self.ready.set()
            try:
                self._cycle()
                self._wait()
            except psycopg.Error as error:
                if not (is_lock_table_full(error) and self._lock_table_full(error)):
                    self._lost(error)
                    delay = 0.1
            except Exception as error:  # a bug or an unsendable value: start afresh
                log(logging.ERROR, "locker_cycle_failed", exc_info=error, error=describe(error))
                self._lost(error)
                delay = 0.1

    def _sleep(self, seconds: float) -> None:
        select.select([self._waker.fileno()], [], [], seconds)
        self._waker.drain()

    def _connect(self) -> None:
        try:
            conn = psycopg.connect(self._url, autocommit=True)
        except psycopg.OperationalError as error:
            if permanent_connection_error(error):
                raise ConveyorError(
                    f"cannot connect to the database (not retrying): {_one_line(error)}"
                ) from error
            raise  # an outage: retried with backoff
        except psycopg.ProgrammingError as error:  # the URL does not parse
            raise ConveyorError(f"invalid database URL: {_one_line(error)}") from error
        try:
            require_own_session(conn, self._url)
            channel = self._run_one(
                conn,
                sql.REGISTER_LOCKER,
                (self._queues, self._priorities, _HOSTNAME, os.getpid(), True),
            )[0][0]
            if not self._durable:
                self._run_one(conn, sql.ASYNC_COMMIT, ())
            may_schedule = bool(self._run_one(conn, sql.CAN_ENQUEUE_SCHEDULES, ())[0][0])
            may_report = bool(self._run_one(conn, sql.CAN_REPORT_LOCKER, ())[0][0])
            listen = sql.listen(channel)
            run_chain(self._middleware, (listen.as_string(conn), ()), lambda: conn.execute(listen))
        except BaseException:
            conn.close()
            raise
        conn.add_notify_handler(self._on_psycopg_notify)
        self._conn = conn
        self._held = set()
        self._poller.reset()
        self._schedules.reset()
        self._report.reset(enabled=may_report)
        if self._schedules.enabled and not may_schedule:
            log(
                logging.WARNING,
                "schedules_not_enqueued",
                reason="no EXECUTE on enqueue_due_schedules",
            )
        self._schedules.enabled = may_schedule
        self.connected = True
        log(
            logging.INFO,
            "locker_connected",
            channel=channel,
            queues=self._queues,
            worker_priorities=self._priorities,
            reconnects=self.reconnects,
        )

    def _lock_table_full(self, error: BaseException) -> bool:
        """Recover in the same session from a cycle that failed on a full lock
        table (see lock_budget); False if that failed too (then reconnect)."""
        conn = self._conn
        resolving = [r.job_id for r in self._carry if r.job_id is not None]
        if conn is None or conn.closed:
            return False
        try:
            self._held = self._bounds.after_full_lock_table(conn, error, self._held, resolving)
        except psycopg.Error:
            return False
        self._poller.hint()
        return True

    def _lost(self, error: BaseException) -> None:
        self.connected = False
        self.reconnects += 1
        dropped = self._buffer.clear()
        log(
            logging.WARNING,
            "locker_connection_lost",
            error=str(error).strip(),
            dropped_jobs=len(dropped),
        )
        self._announced.clear()
        self._unlock.clear()
        self._held.clear()  # the session's locks went with it
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # --- one cycle: handle results, poll, send, take the locked jobs ------------------

    def _cycle(self, *, locking: bool = True) -> None:
        """One round trip: release the jobs workers are done with, lock what
        the buffer needs, and hand the locked jobs to the buffer."""
        results = self._collect_results()
        statements, released, unlocking = self._resolution_statements(results)
        locks = self._lock_statements(topping_up=bool(statements)) if locking else NO_LOCKS
        # After the locks: the jobs they enqueue are announced at commit.
        schedules = self._schedule_statements() if locking else []
        # The buffer's size for operators, every few seconds (locker_report):
        # first, so the lock statements' outputs stay where they are.
        statements = self._report.statements(time.monotonic()) + statements
        if not statements and not locks.statements and not schedules:
            return
        started = time.perf_counter()
        try:
            outputs = self._execute(statements + locks.statements + schedules)
        except psycopg.OperationalError:
            # The session broke: send these resolutions again on the next one.
            # (Other errors drop them: resending a statement that fails would
            # loop; those jobs will simply run again.) A full lock table keeps
            # the session: its unlocks are sent again too (lock_budget).
            self._carry = [r for r in results if r.action is not Action.UNLOCK]
            carried = {r.job_id for r in self._carry}
            self._unlock[:0] = [i for i in released if i not in carried]
            raise
        self.on_round_trip(time.perf_counter() - started)
        self._held.difference_update(released)
        locked = self._take_locked(locks, outputs[len(statements) : len(outputs) - len(schedules)])
        if schedules:
            self._schedules_called(outputs[-2], outputs[-1])
        if unlocking:
            # A poll in the same transaction as unlock_jobs skips the jobs it
            # unlocked (their locks live until it commits): poll again later.
            self._poller.hint()
        if self._internals:
            self._log_cycle(results, statements, locks, locked)

    def _collect_results(self) -> list[Resolution]:
        results = self._buffer.collect()
        if self._carry:
            results = self._carry + results
            self._carry = []
        return results

    def _resolution_statements(self, results: list[Resolution]) -> Resolutions:
        """The statements that resolve and release the jobs of ``results``
        (one per action, retries one each), and the ids they release."""
        statements: list[Statement] = []
        released: list[int] = []
        batches: dict[Action, list[int]] = {action: [] for action in _RELEASE_STATEMENTS}
        for result in results:
            action, job_id = result.action, result.job_id
            assert job_id is not None  # a worker's jobs have rows
            if action is Action.UNLOCK:
                self._unlock.append(job_id)
            elif action is Action.RETRY:
                statements.append(retry_statement(result))
                released.append(job_id)
            else:
                batches[action].append(job_id)
        for action, query in _RELEASE_STATEMENTS.items():
            if ids := batches[action]:
                statement = self._release(query, ids)
                if action is Action.FINISH:  # with results and attempts, when known
                    statement = finish_statement(statement, results)
                statements.append(statement)
                released.extend(ids)
        unlocking = bool(self._unlock)
        if unlocking:
            unlock, self._unlock = self._unlock, []
            statements.append(self._release(sql.UNLOCK_JOBS, unlock))
            released.extend(unlock)
        return Resolutions(statements, released, unlocking)

    def _release(self, query: str, ids: list[int]) -> Statement:
        return Statement(query, (sql.ids(ids), self._mine(ids)), StatementKind.RESOLVE)

    def _lock_statements(self, *, topping_up: bool) -> Locks:
        """Lock the announced jobs by id, then poll as the poller plans."""
        self._unlock.extend(self._bounds.adapt(self._conn, backlog=self._poller.backlog))
        buffer = self._buffer
        now = time.monotonic()
        # Includes the jobs released in this transaction: a release leaves a
        # transaction-level lock until commit, so the lock statements in the
        # same transaction must skip them too.
        held = sql.ids(self._held)
        statements: list[Statement] = []
        by_id = 0
        if self._announced:
            ids, declined = buffer.accept(self._announced)
            self._announced = []
            if declined:
                self._poller.hint()
            if ids:
                by_id = len(ids)
                by_id_params = (sql.ids(ids), self._queues, held)
                statements.append(
                    Statement(sql.LOCK_JOBS_BY_ID, by_id_params, StatementKind.LOCK_BY_ID)
                )
        requests, full = self._poller.plan(
            buffer.demand(), buffer.low, now, topping_up=topping_up or bool(statements)
        )
        if by_id and requests and not full:
            count, ceiling = requests[-1]
            count -= by_id
            requests = [(count, ceiling)] if count > 0 else []
        for count, ceiling in requests:
            params = (self._queues, count, ceiling, held)
            statements.append(Statement(sql.LOCK_JOBS, params, StatementKind.POLL))
        return Locks(statements, requests, full, by_id, now)

    def _schedule_statements(self) -> list[Statement]:
        """enqueue_due_schedules and next_schedule_at, when the clock says so."""
        if not self._schedules.due(time.monotonic()):
            return []
        return [
            Statement(sql.ENQUEUE_DUE_SCHEDULES, (), StatementKind.SCHEDULES),
            Statement(sql.NEXT_SCHEDULE_IN, (), StatementKind.SCHEDULES),
        ]

    def _schedules_called(self, enqueued: list[Any], next_in: list[Any]) -> None:
        self._schedules.called(time.monotonic(), next_in[0][0])
        if enqueued[0][0]:
            log(logging.INFO, "schedules_enqueued", jobs=enqueued[0][0])

    def _take_locked(
        self, locks: Locks, outputs: Sequence[list[LockedJob] | None]
    ) -> list[LockedJob]:
        """Record the jobs the lock statements locked, give back those not
        for this worker, and push the others into the buffer."""
        rows: list[LockedJob] = []
        counts: list[int] = []
        for statement, output in zip(locks.statements, outputs, strict=True):
            got = output or []
            self._held.update(r.id for r in got)
            if statement.kind is StatementKind.POLL:
                counts.append(len(got))
                rows.extend(got)
                continue
            # Announced jobs: a NOTIFY can come from anyone allowed to send
            # one. Never work a job of another queue, nor one no worker here
            # may take: give it back.
            for row in got:
                if row.queue not in self._queue_set or row.priority > self._ceiling:
                    self._unlock.append(row.id)
                else:
                    rows.append(row)
        if locks.requests:
            self._poller.polled(locks.requests, counts, locks.full, locks.now)
        if rows:
            if len(locks.statements) > 1:
                rows.sort()
            evicted = self._buffer.push(rows)
            if evicted:
                self._unlock.extend(row.id for row in evicted)
                self._poller.hint()
        return rows

    def _log_cycle(
        self,
        results: list[Resolution],
        statements: list[Statement],
        locks: Locks,
        locked: list[LockedJob],
    ) -> None:
        buffer = self._buffer
        log(
            logging.INFO,
            "locker_cycle",
            resolved=len(results),
            statements=len(statements) + len(locks.statements),
            locked_by_id=locks.by_id,
            polls=locks.requests,
            locked=len(locked),
            full_poll=locks.full,
            buffer_size=buffer.size,
            running=buffer.running,
            idle_workers=buffer.idle,
            unlock_next=len(self._unlock),
        )

    def _mine(self, ids: list[int]) -> str:
        """The given jobs whose locks this session holds (after a reconnect,
        jobs locked by the lost session are reported here too), for `held`."""
        return sql.ids(i for i in ids if i in self._held)

    def _execute(self, statements: list[Statement]) -> list[Any]:
        assert self._conn is not None
        return execute_cycle(self._conn, self._middleware, statements)

    def _run_one(
        self, conn: psycopg.Connection[Any], query: str, params: Sequence[Any]
    ) -> list[Any]:
        return run_one(conn, self._middleware, query, params)

    # --- waiting and notifications --------------------------------------------------

    def _wait(self) -> None:
        conn = self._conn
        assert conn is not None
        if self._unlock or self._announced:
            timeout = 0.0
        else:
            now = time.monotonic()
            timeout = min(
                self._wait_period, self._poller.timeout(now), self._schedules.timeout(now)
            )
        sock = conn.pgconn.socket
        ready, _, _ = select.select([sock, self._waker.fileno()], [], [], timeout)
        for fd in ready:
            if fd == sock:
                self._read_notifications(conn)
            else:
                self._waker.drain()

    def _read_notifications(self, conn: psycopg.Connection[Any]) -> None:
        pgconn = conn.pgconn
        pgconn.consume_input()
        if pgconn.status != psycopg.pq.ConnStatus.OK:
            raise psycopg.OperationalError("the locker's connection is broken")
        while (notify := pgconn.notifies()) is not None:
            self._on_notify(notify.extra.decode())

    def _on_psycopg_notify(self, notify: psycopg.Notify) -> None:
        self._on_notify(notify.payload)

    def _on_notify(self, payload: str) -> None:
        try:
            notification = Notification.parse(payload)
        except Exception:  # anyone allowed to NOTIFY can send anything
            log(logging.WARNING, "notification_malformed", payload=payload[:200])
            self._poller.hint()
            return
        if self._stopping.is_set():
            return
        self._announced.extend(notification.jobs)
        if notification.more:
            self._poller.hint()
        if notification.wake_in is not None:
            self._poller.wake_at(time.monotonic() + notification.wake_in)
        if self._internals:
            log(
                logging.INFO,
                "locker_notified",
                jobs=[job.id for job in notification.jobs],
                more=notification.more,
                wake_in=notification.wake_in,
            )

    # --- shutdown -----------------------------------------------------------------------

    def _shutdown(self) -> None:
        buffer = self._buffer
        released = buffer.stop()
        self._unlock.extend(row.id for row in released)
        log(logging.INFO, "worker_stopping", unlocked=len(self._unlock), running=buffer.running)
        if self._conn is not None:
            try:
                self._run_one(self._conn, sql.UNLISTEN_ALL, ())
                self._cycle(locking=False)
            except psycopg.Error as error:
                self._lost(error)
        while buffer.running > 0:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                log(logging.WARNING, "shutdown_timeout", abandoned_jobs=buffer.running)
                break
            self._sleep(min(self._wait_period, remaining))
            self._flush()
        self._flush()
        if self._conn is not None:
            try:
                self._run_one(self._conn, sql.UNREGISTER_LOCKER, ())
            except psycopg.Error as error:
                self._lost(error)

    def _flush(self) -> None:
        if self._conn is None:
            self._buffer.collect()
            return
        try:
            self._cycle(locking=False)
        except psycopg.Error as error:
            self._lost(error)
