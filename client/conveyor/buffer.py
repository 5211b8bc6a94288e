"""The buffer of locked jobs between the locker and the worker threads.

Jobs are kept most urgent first, by (priority, run_at, id). A worker whose
priority ceiling is ``p`` takes the most urgent job with priority <= p (no
ceiling: any job). A worker that finds nothing it may take waits on its own
condition; the locker hands a new job straight to the most restrictive idle
worker allowed to take it, so one job wakes one thread.

At most ``maximum_size`` jobs wait in the buffer (jobs handed to workers do
not count). When more arrive, the least urgent are evicted and returned to
the locker, which unlocks them.

All state is guarded by one lock, shared by every worker's condition.
"""

from __future__ import annotations

import sys
import threading
import time
from bisect import insort
from collections.abc import Callable, Iterable, Sequence

from .protocol import AnnouncedJob, LockedJob, Resolution

__all__: list[str] = []

_NO_CEILING = sys.maxsize


def _key(ceiling: int | None) -> int:
    return _NO_CEILING if ceiling is None else ceiling


class Waiter:
    """One worker thread's place in the buffer."""

    __slots__ = ("ceiling", "cond", "key", "row", "taken_at")

    def __init__(self, ceiling: int | None, lock: threading.Lock) -> None:
        self.ceiling = ceiling
        self.key = _key(ceiling)
        self.cond = threading.Condition(lock)
        self.row: LockedJob | None = None  # a job handed over by push()
        self.taken_at = 0.0  # when this thread got its current job (monotonic)

    def __lt__(self, other: Waiter) -> bool:
        return self.key < other.key


class JobBuffer:
    """Locked jobs waiting for a worker, the idle workers, and the results
    workers report back to the locker."""

    def __init__(
        self,
        *,
        minimum_size: int,
        maximum_size: int,
        ceilings: Sequence[int | None],
        wake: Callable[[], None],
    ) -> None:
        if maximum_size < 0 or minimum_size < 0:
            raise ValueError("buffer sizes must not be negative")
        if minimum_size > maximum_size:
            raise ValueError("minimum buffer size must not exceed the maximum")
        self.minimum_size = minimum_size
        self.maximum_size = maximum_size
        self._lock = threading.Lock()
        self._jobs: list[LockedJob] = []
        self._idle: list[Waiter] = []
        self._results: list[Resolution] = []
        self._running = 0
        self._stopped = False
        self._wake_pending = False
        self._wake = wake
        numbers = [c for c in ceilings if c is not None]
        self._top: int | None = None if len(numbers) < len(ceilings) else max(numbers)
        #: The largest number of jobs ever waiting at once (for tests and logs).
        self.high_water = 0
        # Jobs finished through finish() since the last sample(), and the
        # seconds they took from take to finish (for the adaptive size).
        self._done = 0
        self._busy = 0.0

    def waiter(self, ceiling: int | None) -> Waiter:
        return Waiter(ceiling, self._lock)

    # --- the worker side ------------------------------------------------------

    def take(self, waiter: Waiter) -> LockedJob | None:
        """The next job for this worker; blocks until there is one. None once
        the buffer is stopped."""
        with self._lock:
            return self._take(waiter)

    def finish(self, waiter: Waiter, result: Resolution) -> LockedJob | None:
        """Report a worked job's resolution, then take the next job."""
        with self._lock:
            self._done += 1
            self._busy += time.monotonic() - waiter.taken_at
            self._report(result)
            return self._take(waiter)

    def report(self, result: Resolution) -> None:
        """Report a worked job's resolution without taking another: an async
        job's, from the event loop (its worker thread went on long ago)."""
        with self._lock:
            self._report(result)

    def _report(self, result: Resolution) -> None:
        self._running -= 1
        self._results.append(result)
        if not self._wake_pending:
            self._wake_pending = True
            self._wake()

    def _take(self, waiter: Waiter) -> LockedJob | None:
        jobs = self._jobs
        if jobs and jobs[0].priority <= waiter.key:
            row = jobs.pop(0)
            self._running += 1
            waiter.taken_at = time.monotonic()
            if len(jobs) < self.minimum_size and not self._wake_pending:
                self._wake_pending = True
                self._wake()
            return row
        if self._stopped:
            return None
        waiter.row = None
        insort(self._idle, waiter)
        if not self._wake_pending:
            self._wake_pending = True
            self._wake()
        while True:
            waiter.cond.wait()
            handed = waiter.row
            if handed is not None:
                waiter.row = None
                waiter.taken_at = time.monotonic()
                return handed  # push() counted it as running
            if self._stopped:
                if waiter in self._idle:
                    self._idle.remove(waiter)
                return None

    # --- the locker side --------------------------------------------------------

    def push(self, rows: Iterable[LockedJob]) -> list[LockedJob]:
        """Add locked jobs (most urgent first); returns the jobs that do not
        fit, which the caller must unlock."""
        with self._lock:
            if self._stopped:
                return list(rows)
            jobs = self._jobs
            idle = self._idle
            added = False
            for row in rows:
                if idle:
                    priority = row.priority
                    for index, waiter in enumerate(idle):
                        if waiter.key >= priority:
                            del idle[index]
                            waiter.row = row
                            self._running += 1
                            waiter.cond.notify()
                            break
                    else:
                        jobs.append(row)
                        added = True
                else:
                    jobs.append(row)
                    added = True
            if not added:
                return []
            jobs.sort()
            evicted: list[LockedJob] = []
            if len(jobs) > self.maximum_size:
                evicted = jobs[self.maximum_size :]
                del jobs[self.maximum_size :]
            self.high_water = max(self.high_water, len(jobs))
            return evicted

    def accept(self, announced: Sequence[AnnouncedJob]) -> tuple[list[int], int]:
        """Of announced jobs, the ids worth locking: as many as there is room
        for, plus those more urgent than a buffered job they would displace.
        Returns (ids, number declined)."""
        with self._lock:
            if self._stopped:
                return [], len(announced)
            top = _key(self._top)
            candidates = sorted(a for a in announced if a.priority <= top)
            room = max(0, self.maximum_size - len(self._jobs)) + len(self._idle)
            chosen = candidates[:room]
            if self._jobs and len(candidates) > room:
                worst = self._jobs[-1].priority
                chosen += [c for c in candidates[room:] if c.priority < worst][: len(self._jobs)]
            return [c.id for c in chosen], len(announced) - len(chosen)

    def demand(self) -> dict[int | None, int]:
        """How many jobs to lock, by priority ceiling: idle workers at each
        ceiling, plus the free buffer space at the highest ceiling."""
        with self._lock:
            counts: dict[int | None, int] = {}
            for waiter in self._idle:
                counts[waiter.ceiling] = counts.get(waiter.ceiling, 0) + 1
            space = self.maximum_size - len(self._jobs)
            if space > 0:
                counts[self._top] = counts.get(self._top, 0) + space
            return counts

    def sample(self) -> tuple[int, float]:
        """Jobs finished since the last call, and the seconds they took from
        take to finish, in all."""
        with self._lock:
            done, busy = self._done, self._busy
            self._done, self._busy = 0, 0.0
            return done, busy

    def resize(self, minimum_size: int, maximum_size: int) -> list[LockedJob]:
        """Set new bounds; returns the least urgent waiting jobs that no
        longer fit, which the caller must unlock."""
        if not 0 <= minimum_size <= maximum_size:
            raise ValueError("buffer sizes must satisfy 0 <= minimum <= maximum")
        with self._lock:
            self.minimum_size = minimum_size
            self.maximum_size = maximum_size
            jobs = self._jobs
            if len(jobs) <= maximum_size:
                return []
            evicted = jobs[maximum_size:]
            del jobs[maximum_size:]
            return evicted

    def collect(self) -> list[Resolution]:
        """Take the results reported since the last call."""
        with self._lock:
            self._wake_pending = False
            results = self._results
            self._results = []
            return results

    def clear(self) -> list[LockedJob]:
        """Drop every waiting job (their locks are gone with the connection)."""
        with self._lock:
            rows = self._jobs
            self._jobs = []
            return rows

    def stop(self) -> list[LockedJob]:
        """Stop handing out jobs: returns the waiting ones (to unlock) and
        releases idle workers, which then exit."""
        with self._lock:
            self._stopped = True
            rows = self._jobs
            self._jobs = []
            for waiter in self._idle:
                waiter.cond.notify()
            self._idle.clear()
            return rows

    # --- state, for the locker and for logs --------------------------------------

    @property
    def size(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._jobs)

    @property
    def running(self) -> int:
        """Jobs handed to workers and not yet reported back."""
        return self._running

    @property
    def idle(self) -> int:
        """Workers waiting for a job."""
        return len(self._idle)

    @property
    def low(self) -> bool:
        """Whether fewer jobs wait than the minimum (the locker should poll)."""
        return len(self._jobs) < self.minimum_size or (bool(self._idle) and not self._jobs)
