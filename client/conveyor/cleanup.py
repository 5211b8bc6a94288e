"""The worker's cleanup of kept jobs: ``conveyor.cleanup`` on a schedule.

Modelled on GoodJob (cleanup_interval_seconds 600, preserved jobs kept 14
days, discarded ones cleaned up too): every ``interval`` seconds one worker
of the database (:class:`conveyor.periodic.Periodic`: a cluster-wide
advisory lock) deletes kept jobs resolved more than ``preserve_for`` seconds
ago, one batch per statement in autocommit, so that no transaction -- and no
row lock -- lasts longer than one batch.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import psycopg

from . import sql
from .logs import log
from .periodic import UPKEEP_LOCK_KEY1, Periodic

__all__: list[str] = []

#: The cleanup lock: conveyor's upkeep key, second key 1 = "cleanup".
CLEANUP_LOCK = (UPKEEP_LOCK_KEY1, 1)

DEFAULT_INTERVAL = 600.0
DEFAULT_PRESERVE_FOR = 14 * 86400.0
BATCH_SIZE = 1000


class Cleaner(Periodic):
    """The cleanup thread of one worker."""

    lock = CLEANUP_LOCK
    thread_name = "conveyor-cleanup"

    def __init__(
        self,
        url: str,
        *,
        interval: float,
        preserve_for: float,
        cleanup_expired: bool = True,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        super().__init__(url, interval=interval)
        self.preserve_for = timedelta(seconds=preserve_for)
        self.cleanup_expired = cleanup_expired
        self.batch_size = batch_size
        #: Jobs deleted since start (for tests).
        self.deleted = 0

    def run_once(self) -> int | None:
        """One cleanup: the jobs deleted, or None when another worker holds
        the cleanup lock (or the database could not be reached)."""
        result: int | None = super().run_once()
        return result

    def _work(self, conn: psycopg.Connection[Any]) -> int:
        expired_before = self.preserve_for if self.cleanup_expired else None
        deleted = 0
        while not self.stopping:
            batch = conn.execute(
                sql.CLEANUP_BATCH, (self.preserve_for, expired_before, self.batch_size)
            ).fetchone()
            count = int(batch[0]) if batch else 0
            deleted += count
            if count < self.batch_size:
                break
        self.deleted += deleted
        if deleted:
            log(logging.INFO, "cleanup_done", deleted=deleted)
        return deleted

    def _failed(self, error: str) -> None:
        log(logging.WARNING, "cleanup_failed", error=error)


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
