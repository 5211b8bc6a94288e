"""The worker threads (``conveyor-worker-N``): take a job from the buffer,
run it, report back.

Each thread has a priority ceiling (``--worker-priorities``): it only takes
jobs whose priority is at most that number, or any job for ``any`` (None).
A job's outcome -- destroy (the default), finish, expire, retry, or "already
resolved by the job itself, just unlock" -- goes back through the buffer to
the locker, which sends them in batches.

Anything a job raises is that job's error, including ``SystemExit``,
``KeyboardInterrupt`` and ``GeneratorExit``: the thread records it and goes
on. So do an unknown job class and arguments that do not fit ``run``.

An ``async def run`` job is handed to the process's event loop
(:mod:`conveyor.event_loop`) and the thread takes its next job at once; the
job's task reports its resolution to the buffer when it ends. With job
middleware installed, an async job runs inside the middleware chain on its
worker thread instead (the chain is synchronous), so it holds that thread
until it ends: concurrency is then the number of worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from json import loads

from ._hooks import ErrorNotifier, JobMiddleware, run_chain
from .buffer import JobBuffer, Waiter
from .errors import describe, format_error, leaked_connections_error
from .event_loop import EventLoopThread
from .history import encode_result
from .job import Job, resolve_job_class
from .job_context import JobContext
from .logs import LEVELS, LOGGER, log
from .metrics import WorkerMetrics
from .protocol import Action, LockedJob, Resolution, job_row_dict

__all__ = ["DEFAULT_WORKER_PRIORITIES", "parse_worker_priorities", "worker_priorities"]

#: Que's default: three workers reserved for urgent jobs, three for any job.
DEFAULT_WORKER_PRIORITIES: tuple[int | None, ...] = (10, 30, 50, None, None, None)


def parse_worker_priorities(text: str) -> list[int | None]:
    """``"10,30,50,any"`` -> ``[10, 30, 50, None]``."""
    result: list[int | None] = []
    for raw in text.split(","):
        part = raw.strip().lower()
        if not part:
            continue
        if part in ("any", "nil", "none"):
            result.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"invalid worker priority {part!r}: use integers or 'any'") from None
        if value < 0:
            raise ValueError(f"invalid worker priority {value}: must not be negative")
        result.append(value)
    if not result:
        raise ValueError("worker priorities must name at least one worker")
    return result


def worker_priorities(
    priorities: Sequence[int | None] | None, count: int | None
) -> list[int | None]:
    """Que's rule for ``--worker-priorities`` and ``--worker-count``.

    Priorities alone are used as given (default ``10,30,50,any,any,any``); a
    count alone means that many ``any`` workers; both: the count trims the
    list or pads it with ``any``.
    """
    if count is not None and count < 1:
        raise ValueError("worker count must be at least 1")
    if priorities is None:
        if count is None:
            return list(DEFAULT_WORKER_PRIORITIES)
        return [None] * count
    result = list(priorities)
    if count is not None:
        result = (result + [None] * count)[:count]
    if not result:
        raise ValueError("worker priorities must name at least one worker")
    return result


class WorkerThreads:
    """The pool of worker threads of one :class:`~conveyor.Worker`."""

    def __init__(
        self,
        buffer: JobBuffer,
        priorities: Sequence[int | None],
        *,
        context: JobContext,
        event_loop: EventLoopThread,
        error_notifier: ErrorNotifier | None,
        job_middleware: Sequence[JobMiddleware],
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._buffer = buffer
        self._metrics = metrics
        #: The jobs' metrics not folded yet (metrics.JobRecord; None: no metrics).
        self._pending = None if metrics is None else metrics.pending
        self._fold_at = 0 if metrics is None else metrics.fold_at
        self._fold: Callable[..., None] = _no_fold if metrics is None else metrics.fold
        self._context = context
        self._event_loop = event_loop
        self._error_notifier = error_notifier
        self._middleware = tuple(job_middleware)
        self.threads = [
            threading.Thread(
                target=self._loop,
                args=(buffer.waiter(ceiling),),
                name=f"conveyor-worker-{index}",
                daemon=True,
            )
            for index, ceiling in enumerate(priorities, start=1)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, deadline: float | None) -> bool:
        """Wait for the threads to exit, until ``deadline`` (monotonic);
        True if all did."""
        for thread in self.threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(thread.is_alive() for thread in self.threads)

    # --- one thread ---------------------------------------------------------------

    def _loop(self, waiter: Waiter) -> None:
        buffer = self._buffer
        work = self._work
        try:
            row = buffer.take(waiter)
            while row is not None:
                result = work(row)  # None: an async job, which its task reports
                row = buffer.take(waiter) if result is None else buffer.finish(waiter, result)
        except BaseException as error:  # a bug in conveyor: say so, don't die silently
            log(logging.CRITICAL, "worker_crashed", exc_info=error, error=describe(error))
            raise

    def _work(self, row: LockedJob) -> Resolution | None:
        """Run one job, or hand an async one to the event loop (None); never
        raises."""
        try:
            cls = resolve_job_class(row.job_class)
            args = loads(row.args)
            data = loads(row.data) if row.data != "{}" else {}
        except BaseException as error:
            return self._errored(None, row, error, 0.0)
        job = cls._from_row(row, self._context, args, data)
        job._started = time.time()
        if not self._middleware and cls._is_async():
            try:
                self._event_loop.submit(self._awork(job, row, args, data), self._buffer.report)
            except BaseException as error:
                return self._errored(job, row, error, 0.0)
            return None
        start = time.perf_counter()
        try:
            if self._middleware:
                value = run_chain(self._middleware, (job,), lambda: job._invoke(args, data))
            else:
                value = job._invoke(args, data)
            leaked = self._context.leftovers()
            if leaked:
                raise leaked_connections_error(leaked)
            resolution = _kept(job, value)
        except BaseException as error:
            return self._errored(job, row, error, time.perf_counter() - start)
        return self._worked(job, row, time.perf_counter() - start, resolution)

    async def _awork(
        self, job: Job, row: LockedJob, args: list[object], data: dict[str, object]
    ) -> Resolution:
        """Run one async job on the event loop; never raises."""
        task = asyncio.current_task()
        if task is not None:  # the blocked-loop watchdog names the job by it
            task.set_name(f"conveyor-job-{row.id} {row.job_class}")
        start = time.perf_counter()
        try:
            value = await job._ainvoke(args, data)
            leaked = await self._context.aleftovers()
            if leaked:
                raise leaked_connections_error(leaked)
            resolution = _kept(job, value)
        except asyncio.CancelledError as error:
            await self._context.aleftovers()
            if not self._event_loop.closing:  # cancelled by the job's own code
                return self._errored(job, row, error, time.perf_counter() - start, own_thread=False)
            # Given up at the shutdown deadline: the locker is gone, and the
            # job's lock with its session, so the job runs again elsewhere.
            log(logging.WARNING, "job_abandoned", job_id=row.id, job_class=row.job_class)
            return Resolution(Action.UNLOCK, row.id)
        except BaseException as error:
            await self._context.aleftovers()
            return self._errored(job, row, error, time.perf_counter() - start, own_thread=False)
        return self._worked(job, row, time.perf_counter() - start, resolution)

    def _worked(
        self, job: Job, row: LockedJob, elapsed: float, resolution: Resolution | None
    ) -> Resolution:
        """A job that returned: its resolution, and its ``job_worked`` line."""
        if resolution is None:
            resolution = Resolution(Action.DESTROY, row.id)
        try:
            level = job.log_level(elapsed)
            if level is not None:
                if isinstance(level, str):
                    level = LEVELS.get(level.lower())
                if level is not None and LOGGER.isEnabledFor(level):
                    log(
                        level,
                        "job_worked",
                        job_id=row.id,
                        job_class=row.job_class,
                        queue=row.queue,
                        priority=row.priority,
                        elapsed=round(elapsed, 6),
                    )
        except BaseException as error:
            log(
                logging.ERROR,
                "log_level_failed",
                job_id=row.id,
                job_class=row.job_class,
                error=describe(error),
            )
        pending = self._pending
        if pending is not None:  # WorkerMetrics.job_done inline (`or`: _work set _started)
            pending.append((row, elapsed, resolution, False, job._started or time.time() - elapsed))
            if len(pending) >= self._fold_at:
                self._fold(wait=False)
        return resolution

    def _errored(
        self,
        job: Job | None,
        row: LockedJob,
        error: BaseException,
        elapsed: float,
        *,
        own_thread: bool = True,
    ) -> Resolution:
        """Handle a job's error the way Que does; never raises. ``own_thread``:
        the job ran on this thread, whose leftover connections are its own
        (not so on the event loop's thread, shared by every async job)."""
        job_id = row.id
        error_count = row.error_count + 1
        resolution: Resolution | None = None
        notify = True
        try:
            if own_thread:
                self._context.leftovers()
            if job is not None:
                job._error = error
                job._error_count = error_count
                job._resolution = None
                try:
                    notify = bool(job.handle_error(error))
                except BaseException as handler_error:
                    log(
                        logging.ERROR,
                        "handle_error_failed",
                        job_id=job_id,
                        job_class=row.job_class,
                        error=describe(handler_error),
                    )
                    self._notify(handler_error, row, error_count)
                    notify = True
                if job._resolution is None:
                    job.retry_in(job._default_retry_delay())
                resolution = job._resolution
        except BaseException as fallback_error:
            log(
                logging.ERROR,
                "retry_failed",
                job_id=job_id,
                job_class=row.job_class,
                error=describe(fallback_error),
            )
            resolution = None
        message, backtrace = format_error(error)
        if resolution is None:
            resolution = Resolution(Action.RETRY, job_id, message, backtrace)
        if resolution.action is Action.RETRY and job is not None and job._started is not None:
            resolution = resolution._replace(started_at=job._started)
        if LOGGER.isEnabledFor(logging.ERROR):
            log(
                logging.ERROR,
                "job_errored",
                job_id=job_id,
                job_class=row.job_class,
                queue=row.queue,
                priority=row.priority,
                error_count=error_count,
                elapsed=round(elapsed, 6),
                error_class=type(error).__name__,
                error_message=message.partition(": ")[2],
                error_backtrace=backtrace,
            )
        if notify:
            self._notify(error, row, error_count)
        if self._metrics is not None:
            self._metrics.job_done(
                row, elapsed, resolution, True, None if job is None else job._started
            )
        return resolution

    def _notify(self, error: BaseException, row: LockedJob, error_count: int) -> None:
        notifier = self._error_notifier
        if notifier is None:
            return
        try:
            notifier(error, job_row_dict(row, error_count))
        except BaseException as notifier_error:
            log(
                logging.ERROR,
                "error_notifier_failed",
                job_id=row.id,
                job_class=row.job_class,
                error=describe(notifier_error),
            )


def _no_fold(*, wait: bool) -> None:
    pass


def _kept(job: Job, value: object) -> Resolution | None:
    """The job's resolution; a finish (kept job) carries when the attempt
    started and, unless ``finish(result)`` gave one, the value ``run``
    returned as its result (raises ResultError when it cannot be stored:
    the job's error)."""
    resolution = job._resolution
    if resolution is None or resolution.action is not Action.FINISH:
        return resolution
    result = resolution.result
    if result is None and value is not None:
        result = encode_result(value, job.job_class, job.id)
    return resolution._replace(result=result, started_at=job._started)
