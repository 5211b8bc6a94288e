"""The worker's cleanup of kept jobs: ``conveyor.cleanup`` on a schedule.

Modelled on GoodJob (cleanup_interval_seconds 600, preserved jobs kept 14
days, discarded ones cleaned up too): every ``interval`` seconds a thread of
the worker connects, and if it wins the cluster-wide cleanup lock (an
advisory lock: one cleaner at a time among all workers of the database) it
deletes kept jobs resolved more than ``preserve_for`` seconds ago, one batch
per statement in autocommit, so that no transaction -- and no row lock --
lasts longer than one batch. Then it disconnects: no idle session between
runs. A failure is logged and retried at the next interval; it never stops
the worker.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta
from typing import Any

import psycopg

from . import sql
from .errors import describe
from .logs import log

__all__: list[str] = []

#: The cleanup lock: a two-key advisory lock that job_lock_id decodes as no
#: job's (key1 = 'CONV' XOR 0x7F000000), key2 1 = "cleanup".
CLEANUP_LOCK = (1129270870 ^ 0x7F000000, 1)
TRY_LOCK = "SELECT pg_try_advisory_lock(%s, %s)"
UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"

DEFAULT_INTERVAL = 600.0
DEFAULT_PRESERVE_FOR = 14 * 86400.0
BATCH_SIZE = 1000


class Cleaner:
    """The cleanup thread of one worker."""

    def __init__(
        self,
        url: str,
        *,
        interval: float,
        preserve_for: float,
        cleanup_expired: bool = True,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._url = url
        self.interval = interval
        self.preserve_for = timedelta(seconds=preserve_for)
        self.cleanup_expired = cleanup_expired
        self.batch_size = batch_size
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="conveyor-cleanup", daemon=True)
        #: Runs that held the lock, and jobs deleted, since start (for tests).
        self.runs = 0
        self.deleted = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _loop(self) -> None:
        # A random first delay (up to one interval) spreads the workers of a
        # fleet that started together; later runs keep the interval.
        delay = random.uniform(0.0, min(self.interval, 60.0))
        while not self._stop.wait(delay):
            self.run_once()
            delay = self.interval

    def run_once(self) -> int | None:
        """One cleanup: the jobs deleted, or None when another worker holds
        the cleanup lock (or the database could not be reached)."""
        try:
            with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as conn:
                return self._clean(conn)
        except psycopg.Error as error:
            log(logging.WARNING, "cleanup_failed", error=describe(error))
            return None

    def _clean(self, conn: psycopg.Connection[Any]) -> int | None:
        row = conn.execute(TRY_LOCK, CLEANUP_LOCK).fetchone()
        if not row or not row[0]:
            return None
        try:
            expired_before = self.preserve_for if self.cleanup_expired else None
            deleted = 0
            while not self._stop.is_set():
                batch = conn.execute(
                    sql.CLEANUP_BATCH, (self.preserve_for, expired_before, self.batch_size)
                ).fetchone()
                count = int(batch[0]) if batch else 0
                deleted += count
                if count < self.batch_size:
                    break
            self.runs += 1
            self.deleted += deleted
            if deleted:
                log(logging.INFO, "cleanup_done", deleted=deleted)
            return deleted
        finally:
            conn.execute(UNLOCK, CLEANUP_LOCK)


def parse_duration(text: str) -> float:
    """Seconds from ``"600"``, ``"90s"``, ``"10m"``, ``"12h"`` or ``"14d"``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    scale = units.get(value[-1:])
    number = value[:-1] if scale is not None else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(
            f"not a duration: {text!r} (seconds, or a number with s, m, h or d)"
        ) from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be a finite number >= 0, not {text!r}")
    return seconds
