"""What benchmark jobs record: the job's sequence number and its start time.

A job calls :func:`record` first thing. The line goes to a file of the
worker process's own in the folder named by ``CONVEYOR_BENCH_RESULTS``, with
a single unbuffered ``write`` (atomic for a short line with ``O_APPEND``), so
recording costs a system call, not a database round trip, and the figures
stay those of no-op jobs. The benchmark reads the files after the run, loads
them into the run's database and checks there that every job ran exactly
once; start times give latencies against the enqueue commit times it noted.

This module imports nothing but the standard library, so the peers' worker
apps can use it too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ENV", "expected_size", "read_records", "record", "records_size"]

#: Environment variable naming the folder the records go to.
ENV = "CONVEYOR_BENCH_RESULTS"

_fd: int | None = None
_lock = threading.Lock()


def _open() -> int | None:
    global _fd
    with _lock:
        if _fd is None:
            folder = os.environ.get(ENV)
            if not folder:
                return None
            path = os.path.join(folder, f"{os.getpid()}.rec")
            _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return _fd


def record(seq: int) -> None:
    """Note that job ``seq`` starts now (wall clock, as the enqueuer notes commits)."""
    now = time.time()
    fd = _fd if _fd is not None else _open()
    if fd is not None:
        os.write(fd, b"%d %.6f\n" % (seq, now))


def read_records(folder: Path) -> list[tuple[int, float]]:
    """Every (seq, start time) recorded in ``folder``, in no particular order."""
    records: list[tuple[int, float]] = []
    for path in sorted(folder.glob("*.rec")):
        for line in path.read_text().splitlines():
            seq, _, started = line.partition(" ")
            if started:
                records.append((int(seq), float(started)))
    return records


def expected_size(seqs: Iterable[int]) -> int:
    """Bytes the records of ``seqs`` take, each job recorded once."""
    return sum(len(str(seq)) + len(" 1234567890.123456\n") for seq in seqs)


def records_size(folder: Path) -> int:
    """Bytes recorded in ``folder`` so far (cheap: one stat per worker process)."""
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.endswith(".rec"):
                total += entry.stat().st_size
    return total
