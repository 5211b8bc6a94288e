"""The worker's asyncio event loop: one per worker process, in a thread of
its own (``conveyor-asyncio``), started with the first ``async def run`` job.

Worker threads hand async jobs to it without waiting for them: a worker
thread submits the job's coroutine and goes back for the next job, so one
process has up to ``async_concurrency`` async jobs in flight however few
worker threads it has. The slots are a semaphore the submitting thread takes
(it blocks, holding its job, while all are in use) and the job's task gives
back when it ends.

A job that blocks the loop (``time.sleep``, a synchronous driver, a long
computation) stalls every async job in the process. A watchdog thread
(``conveyor-asyncio-watchdog``) asks the loop for a beat every
``block_threshold`` seconds; when the beat does not come in time it logs
``event_loop_blocked`` with the task that holds the loop (its name names the
job) and where the loop thread is, then ``event_loop_unblocked`` with how
long the loop was stuck.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .errors import ConveyorError
from .logs import log

__all__: list[str] = []

T = TypeVar("T")

#: The innermost frames of the loop thread given in an ``event_loop_blocked`` line.
_STACK_FRAMES = 8


class EventLoopThread:
    """An event loop running in its own thread, with a blocked-loop watchdog."""

    def __init__(self, *, concurrency: int, block_threshold: float | None) -> None:
        if concurrency < 1:
            raise ValueError("async_concurrency must be at least 1")
        if block_threshold is not None and block_threshold <= 0:
            raise ValueError("block_threshold must be positive (or None: no watchdog)")
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._block_threshold = block_threshold
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()
        #: The submitted jobs' futures, until they end.
        self._in_flight: set[concurrent.futures.Future[Any]] = set()
        #: Called on the loop thread when the loop closes (the async pool's close).
        self.on_close: list[Callable[[], Awaitable[None]]] = []

    # --- from worker threads --------------------------------------------------------

    def submit(self, coroutine: Coroutine[Any, Any, T], done: Callable[[T], None]) -> None:
        """Run ``coroutine`` as a task on the loop; ``done(result)`` is called
        on the loop thread when it ends. Blocks while every slot is in use.
        ``coroutine`` must not raise: ``done`` gets what it returns."""
        loop = self._started()
        self._slots.acquire()

        def finished(future: concurrent.futures.Future[T]) -> None:
            self._in_flight.discard(future)
            self._slots.release()
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:  # a bug in conveyor: the job's coroutine never raises
                log(logging.CRITICAL, "async_job_crashed", exc_info=error)
                return
            done(future.result())

        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except BaseException:
            self._slots.release()
            coroutine.close()
            raise
        self._in_flight.add(future)
        future.add_done_callback(finished)

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on the loop and wait for its result (the path of a
        job whose run returns an awaitable but is not ``async def``, and of
        job middleware around an async job)."""
        loop = self._started()
        if threading.current_thread() is self._thread:
            raise ConveyorError("cannot wait for a coroutine on the event loop's own thread")

        async def wait() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wait(), loop).result()

    # --- lifecycle ------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` has begun (tasks cancelled now are given up)."""
        return self._closing.is_set()

    @property
    def threads(self) -> list[threading.Thread]:
        return [t for t in (self._thread, self._watchdog) if t is not None]

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closing.is_set():
                raise ConveyorError("the worker's event loop is closed")
            if self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            running = threading.Event()
            loop.call_soon(running.set)
            thread = threading.Thread(
                target=self._main, args=(loop,), name="conveyor-asyncio", daemon=True
            )
            thread.start()
            running.wait()
            self._loop, self._thread = loop, thread
            if self._block_threshold is not None:
                self._watchdog = threading.Thread(
                    target=self._watch,
                    args=(loop, thread, self._block_threshold),
                    name="conveyor-asyncio-watchdog",
                    daemon=True,
                )
                self._watchdog.start()
            return loop

    def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        except BaseException as error:  # a bug in conveyor: say so, don't die silently
            log(logging.CRITICAL, "event_loop_crashed", exc_info=error)
            raise
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def close(self, timeout: float) -> bool:
        """Cancel the tasks still running (their jobs were given up at the
        shutdown deadline: their locks go with the locker's session), run the
        close callbacks, stop the loop and its threads. True if no task had
        to be cancelled and every thread ended."""
        with self._lock:
            self._closing.set()
            loop, thread, watchdog = self._loop, self._thread, self._watchdog
        if loop is None or thread is None or not thread.is_alive():
            return True

        # The jobs first (each one's task sees CancelledError), then the close
        # callbacks (the async pool), then whatever tasks are left.
        abandoned = [future for future in list(self._in_flight) if not future.done()]
        for future in abandoned:
            future.cancel()
        concurrent.futures.wait(abandoned, timeout=max(0.1, timeout / 2))

        async def shutdown() -> None:
            for callback in self.on_close:
                try:
                    await callback()
                except Exception as error:
                    log(logging.ERROR, "event_loop_close_failed", error=repr(error))
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.1, timeout / 2))

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout)
        with contextlib.suppress(RuntimeError):  # closed already by a concurrent close()
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if watchdog is not None:
            watchdog.join(timeout)
        ended = not any(t.is_alive() for t in (thread, watchdog) if t is not None)
        return ended and not abandoned

    # --- the watchdog -------------------------------------------------------------------

    def _watch(
        self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, threshold: float
    ) -> None:
        beat = threading.Event()
        try:
            while not self._closing.wait(threshold):
                beat.clear()
                asked = time.monotonic()
                try:
                    loop.call_soon_threadsafe(beat.set)
                except RuntimeError:  # the loop closed under us
                    return
                if beat.wait(threshold):
                    continue
                task: asyncio.Task[Any] | None = None
                with contextlib.suppress(Exception):  # read from another thread: best effort
                    task = asyncio.current_task(loop)
                frame = sys._current_frames().get(thread.ident or -1)
                stack = traceback.format_stack(frame, limit=_STACK_FRAMES) if frame else []
                log(
                    logging.WARNING,
                    "event_loop_blocked",
                    blocked_for=round(time.monotonic() - asked, 3),
                    task=task.get_name() if task is not None else None,
                    stack="".join(stack),
                )
                while not beat.wait(threshold):
                    if self._closing.is_set():
                        return
                log(
                    logging.WARNING,
                    "event_loop_unblocked",
                    blocked_for=round(time.monotonic() - asked, 3),
                    task=task.get_name() if task is not None else None,
                )
        except BaseException as error:  # never die silently
            log(logging.CRITICAL, "watchdog_crashed", exc_info=error)
            raise
