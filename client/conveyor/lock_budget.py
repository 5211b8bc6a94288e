"""The locker's share of the server's lock table, and what it does when the
table is full anyway.

Every job a worker holds -- waiting in its buffer or running -- is a
session-level advisory lock, and advisory locks live in the server's one
shared lock table with every other lock: it holds about
``max_locks_per_transaction x (max_connections + max_prepared_transactions)``
entries (6,400 with the defaults). A lock that does not fit fails with
"out of shared memory" (SQLSTATE 53200).

**Sizing.** The locker reads the table's size and the number of registered
lockers when it connects and every ``REFRESH_SECONDS`` after, and allows its
adaptive buffer ``SHARE`` of the table divided by the lockers, less its
threads (their running jobs are locks too). Half the table is left to
everything else: relation locks of every session, and workers that are not
registered yet. Explicit buffer sizes are the user's choice and are not
capped.

**When the table is full anyway** (other sessions hold many locks, a
fixed buffer too large for the server): ``lock_jobs`` and
``lock_jobs_by_id`` release the locks they took before raising 53200 (see
docs/reference/protocol.md, "When a call fails"), but the locker's cycle is
one transaction and an earlier statement in it may have locked or released
jobs. The locker then reads which jobs its session holds, takes back the
jobs whose release was rolled back, gives back the jobs locked by a
statement whose rows it never read, halves its budget and logs
``lock_table_full``; the session, and the locks of running jobs, stay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import errors

from . import sql
from .buffer import JobBuffer
from .buffer_sizing import AdaptiveSize, minimum_for
from .logs import log

__all__: list[str] = []

#: The part of the lock table the registered lockers share.
SHARE = 0.5
#: Seconds between two reads of the lock table's size and the lockers.
REFRESH_SECONDS = 10.0

_LOCK_TABLE = """
SELECT current_setting('max_locks_per_transaction')::bigint
       * (current_setting('max_connections')::bigint
          + current_setting('max_prepared_transactions')::bigint),
       (SELECT count(*) FROM conveyor.lockers)
"""

# The jobs this session holds, read without a lock-table entry of its own:
# pg_lock_status() is a function (pg_locks, a view, and pg_database, a shared
# catalog, each need one when the table is full), and a session's advisory
# locks are all in its own database.
_HELD = """
SELECT coalesce(array_agg(conveyor.job_lock_id(l.classid, l.objid)), '{}')
  FROM pg_catalog.pg_lock_status() AS l
 WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
   AND l.pid = pg_catalog.pg_backend_pid()
   AND conveyor.job_lock_id(l.classid, l.objid) IS NOT NULL
"""

# Takes back a job's session lock (the release that dropped it was rolled
# back). Try only: a job another session locked in between is its now.
_TAKE_BACK = """
SELECT i FROM unnest(%s::bigint[]) AS i
 WHERE pg_catalog.pg_try_advisory_lock(conveyor.job_lock_key1(i), conveyor.job_lock_key2(i))
"""

# Gives back jobs nobody worked: a plain unlock, as unlock_jobs would without
# the transaction-level lock a resolution needs (which a full table refuses).
_GIVE_BACK = """
SELECT count(*) FROM unnest(%s::bigint[]) AS i
 WHERE pg_catalog.pg_advisory_unlock(conveyor.job_lock_key1(i), conveyor.job_lock_key2(i))
"""


def lock_table_share(conn: psycopg.Connection[Any], threads: int) -> tuple[int, int, int]:
    """This locker's share of the lock table, in jobs it may buffer; with the
    table's size and the number of registered lockers (for the log)."""
    row = conn.execute(_LOCK_TABLE, prepare=False).fetchone()
    assert row is not None
    slots, lockers = int(row[0]), max(1, int(row[1]))
    return share_of(slots, lockers, threads), slots, lockers


def share_of(slots: int, lockers: int, threads: int) -> int:
    """The buffer budget of one of ``lockers`` with ``threads`` threads."""
    return max(1, int(slots * SHARE / max(1, lockers)) - threads)


def is_lock_table_full(error: BaseException) -> bool:
    """Whether ``error`` is the server's "out of shared memory" (53200)."""
    return isinstance(error, errors.OutOfMemory)


def recover_held(
    conn: psycopg.Connection[Any],
    believed: Iterable[int],
    resolving: Iterable[int],
    give_back: Iterable[int],
) -> tuple[set[int], int, list[int]]:
    """After a cycle failed on a full lock table: give back the jobs of
    ``give_back`` (evicted from the buffer) and the jobs the session holds
    without knowing them (a failed lock call that could not release them);
    take back the jobs being resolved whose release was rolled back.
    Returns the jobs held now, how many were given back, and the jobs being
    resolved whose locks are lost (another session took them).

    ``believed``: the jobs the locker counted as held before the cycle;
    ``resolving``: those of them whose resolutions the cycle carried (they
    are sent again)."""
    row = conn.execute(_HELD, prepare=False).fetchone()
    held = set(row[0] or []) if row is not None else set()
    believed = set(believed)
    giving = (held - believed) | (held & set(give_back))
    if giving:
        conn.execute(_GIVE_BACK, (sql.ids(giving),), prepare=False)
        held -= giving
    resolving = set(resolving)
    dropped = (believed - held) & resolving
    if dropped:
        taken = conn.execute(_TAKE_BACK, (sql.ids(dropped),), prepare=False).fetchall()
        held.update(r[0] for r in taken)
    return held, len(giving), sorted(resolving - held)


class BufferBounds:
    """The locker's control of its buffer's bounds: the adaptive rule (when
    the buffer is adaptive) within the lock-table budget, and the recovery
    from a full lock table (whether adaptive or not)."""

    def __init__(
        self, buffer: JobBuffer, adaptive: AdaptiveSize | None, *, log_internals: bool
    ) -> None:
        self._buffer = buffer
        self._adaptive = adaptive  # None: bounds fixed by the user
        self._internals = log_internals
        self._budget_due = 0.0

    def adapt(self, conn: psycopg.Connection[Any] | None, *, backlog: bool) -> list[int]:
        """Resize an adaptive buffer by the rule of :mod:`conveyor.buffer_sizing`;
        the ids of the jobs that no longer fit (to unlock)."""
        adaptive, buffer = self._adaptive, self._buffer
        if adaptive is None:
            return []
        now = time.monotonic()
        if now >= self._budget_due and conn is not None:
            self._budget_due = now + REFRESH_SECONDS
            adaptive.budget, slots, lockers = lock_table_share(conn, adaptive.threads)
            if self._internals:
                log(
                    logging.INFO,
                    "lock_budget",
                    budget=adaptive.budget,
                    lock_table=slots,
                    lockers=lockers,
                )
        adaptive.observe(*buffer.sample())
        current = buffer.maximum_size
        maximum = adaptive.next_maximum(current, backlog=backlog, starving=buffer.low)
        if maximum == current:
            return []
        return [row.id for row in buffer.resize(minimum_for(maximum), maximum)]

    def after_full_lock_table(
        self,
        conn: psycopg.Connection[Any],
        error: BaseException,
        believed: set[int],
        resolving: list[int],
    ) -> set[int]:
        """Recover from a cycle that failed on a full lock table: halve the
        buffer's maximum (and the adaptive budget, until the next refresh),
        give back what no longer fits, log it; the jobs held now. Raises
        psycopg.Error if the session cannot recover (the buffer stays halved:
        the next session asks for less)."""
        buffer = self._buffer
        maximum = max(1, buffer.maximum_size // 2)
        if self._adaptive is not None:
            self._adaptive.budget = maximum
            self._budget_due = time.monotonic() + REFRESH_SECONDS
        evicted = buffer.resize(min(buffer.minimum_size, minimum_for(maximum)), maximum)
        log(
            logging.WARNING,
            "lock_table_full",
            error=" ".join(str(error).split()),
            maximum_buffer_size=maximum,
            hint="raise max_locks_per_transaction, or run fewer workers or smaller buffers",
        )
        held, given_back, lost = recover_held(
            conn, believed, resolving, [row.id for row in evicted]
        )
        if given_back or lost:
            log(logging.INFO, "lock_table_recovered", unlocked=given_back, lost_jobs=len(lost))
        return held
