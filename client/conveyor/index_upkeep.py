"""The worker's index upkeep: shrink the job table's indexes after a burst.

A B-tree reuses the pages a drained burst leaves empty but never returns
them, so without help conveyor's indexes stay at the largest backlog they
ever held (docs/performance.md "Soak": 3 MB before a burst of 200,000 jobs,
25 MB for good after it). Every ``interval`` seconds one worker of the
database (:class:`conveyor.periodic.Periodic`: a cluster-wide advisory lock)
asks ``conveyor.index_bloat()`` which indexes are far larger than their live
entries need, drops what an interrupted rebuild left behind, and runs
``REINDEX INDEX CONCURRENTLY`` on the rest: a new copy is built beside the
old one while jobs are enqueued and locked as usual, then swapped in.

REINDEX needs the index's owner. A worker whose role is not the owner (the
least-privilege setup, docs/security.md) logs ``index_upkeep_not_permitted``
once and goes on working; the owner can run the same upkeep from cron
(docs/operations.md "Index bloat").
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from . import sql
from .errors import describe
from .logs import log
from .periodic import UPKEEP_LOCK_KEY1, Periodic

__all__: list[str] = []

#: The upkeep lock: conveyor's upkeep key, second key 2 = "index upkeep".
INDEX_UPKEEP_LOCK = (UPKEEP_LOCK_KEY1, 2)

DEFAULT_INTERVAL = 300.0
#: index_bloat's defaults: an index is rebuilt when it is over 4 MB and over
#: 4 times what its live entries need.
MINIMUM_SIZE = 4 * 1024 * 1024
FACTOR = 4.0
#: How long a rebuild waits for a lock (the table's SHARE UPDATE EXCLUSIVE,
#: and the transactions older than the new index) before it gives up until the
#: next run; an interrupted one leaves an invalid copy the next run drops.
LOCK_TIMEOUT = "30s"


class IndexUpkeep(Periodic):
    """The index upkeep thread of one worker."""

    lock = INDEX_UPKEEP_LOCK
    thread_name = "conveyor-index-upkeep"

    def __init__(
        self,
        url: str,
        *,
        interval: float,
        minimum_size: int = MINIMUM_SIZE,
        factor: float = FACTOR,
    ) -> None:
        super().__init__(url, interval=interval)
        self.minimum_size = minimum_size
        self.factor = factor
        #: Indexes rebuilt and leftovers dropped since start (for tests).
        self.rebuilt: list[str] = []
        self.dropped: list[str] = []
        self._refused_logged = False

    def _work(self, conn: psycopg.Connection[Any]) -> int:
        """Rebuild or drop what index_bloat lists; the number done."""
        try:
            rows = conn.execute(sql.INDEX_BLOAT, (self.minimum_size, self.factor)).fetchall()
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction) as error:
            # A role without EXECUTE, or a schema older than index_bloat.
            self._refused(error, None)
            return 0
        if not rows:
            return 0
        conn.execute(sql.SET_LOCK_TIMEOUT, (LOCK_TIMEOUT,))
        done = 0
        for index_name, size_bytes, invalid in rows:
            if self.stopping:
                break
            try:
                if invalid:
                    conn.execute(sql.drop_index_concurrently(index_name))
                    self.dropped.append(index_name)
                    log(logging.INFO, "index_leftover_dropped", index=index_name, bytes=size_bytes)
                else:
                    conn.execute(sql.reindex_concurrently(index_name))
                    row = conn.execute(sql.INDEX_SIZE, (index_name,)).fetchone()
                    self.rebuilt.append(index_name)
                    log(
                        logging.INFO,
                        "index_reindexed",
                        index=index_name,
                        bytes_before=size_bytes,
                        bytes_after=row[0] if row else None,
                    )
                done += 1
            except psycopg.errors.InsufficientPrivilege as error:
                self._refused(error, index_name)
                break
            except psycopg.errors.LockNotAvailable as error:
                # Busy now; the next run tries again (and drops the copy an
                # interrupted REINDEX CONCURRENTLY leaves).
                log(logging.INFO, "index_upkeep_postponed", index=index_name, error=describe(error))
                break
        return done

    def _failed(self, error: str) -> None:
        log(logging.WARNING, "index_upkeep_failed", error=error)

    def _refused(self, error: psycopg.Error, index_name: str | None) -> None:
        # Once per process: the role will not change while the worker runs,
        # and a warning every few minutes would drown the log.
        if not self._refused_logged:
            self._refused_logged = True
            log(
                logging.WARNING,
                "index_upkeep_not_permitted",
                index=index_name,
                error=describe(error),
            )
