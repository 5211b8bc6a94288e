"""A worker's periodic upkeep: a thread that, every ``interval`` seconds,
connects, takes a cluster-wide advisory lock (one runner at a time among all
workers of the database), does its work in autocommit and disconnects -- no
idle session between runs. A failure is logged and retried at the next
interval; it never stops the worker. The cleanup of kept jobs
(:mod:`conveyor.cleanup`) and the index upkeep (:mod:`conveyor.index_upkeep`)
are the two.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg

from .errors import describe

__all__: list[str] = []

#: The first key of conveyor's own two-key advisory locks: 'CONV' XOR
#: 0x7F000000, which job_lock_id decodes as no job's. The second key says
#: whose: 1 the cleanup, 2 the index upkeep (docs/security.md "Advisory-lock
#: keys").
UPKEEP_LOCK_KEY1 = 1129270870 ^ 0x7F000000
TRY_LOCK = "SELECT pg_try_advisory_lock(%s, %s)"
UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"


class Periodic:
    """The upkeep thread of one worker: subclasses set ``lock`` and
    ``thread_name`` and implement :meth:`_work` and :meth:`_failed`."""

    lock: tuple[int, int]
    thread_name: str

    def __init__(self, url: str, *, interval: float) -> None:
        self._url = url
        self.interval = interval
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        #: Runs that held the lock since start (for tests and logs).
        self.runs = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _loop(self) -> None:
        # A random first delay (up to one interval, at most a minute) spreads
        # the workers of a fleet that started together; later runs keep the
        # interval.
        delay = random.uniform(0.0, min(self.interval, 60.0))
        while not self._stop.wait(delay):
            self.run_once()
            delay = self.interval

    def run_once(self) -> Any:
        """One run: what :meth:`_work` returns, or None when another worker
        holds the lock (or the database could not be reached)."""
        try:
            with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as conn:
                row = conn.execute(TRY_LOCK, self.lock).fetchone()
                if not row or not row[0]:
                    return None
                try:
                    result = self._work(conn)
                    self.runs += 1
                    return result
                finally:
                    if not conn.closed:
                        conn.execute(UNLOCK, self.lock)
        except psycopg.Error as error:
            self._failed(describe(error))
            return None

    def _work(self, conn: psycopg.Connection[Any]) -> Any:
        raise NotImplementedError

    def _failed(self, error: str) -> None:
        """Log a run that failed (each subclass its own event, by name, so
        that docs/reference/cli.md can list it)."""
        raise NotImplementedError
