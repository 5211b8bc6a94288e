"""Jobs that misbehave in every way issue 3 lists, and a well-behaved one.

Every job writes what it did to ``poison_effects`` (created by the test), on
a connection from the worker's pool, so the test can see which jobs ran.
Error-raising jobs retry fast (``retry_interval``) so that the retry policy
is seen at work within a test; the test enqueues them with a small
``maximum_retry_count`` to see the expiry too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from typing import Any

import psycopg

import conveyor

# Connections a job borrowed and never gave back (kept alive on purpose).
_STASH: list[Any] = []


def record(job: conveyor.Job, tag: str, conn: psycopg.Connection[Any] | None = None) -> None:
    """Write the job's effect ``tag``: on ``conn`` (the job's borrowed
    connection, in its transaction), else on a connection of its own."""
    if conn is None:
        with job.connection() as own:
            record(job, tag, own)
        return
    conn.execute(
        "INSERT INTO poison_effects (job_id, tag, worker_pid) VALUES (%s, %s, %s)",
        (job.id, tag, os.getpid()),
    )


def shut_socket(conn: psycopg.Connection[Any]) -> None:
    """Break the connection under psycopg's feet."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class Good(conveyor.Job):
    """The other jobs: they must keep finishing."""

    def run(self, tag: str = "good") -> None:
        record(self, tag)


# -- errors --------------------------------------------------------------------------------


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ of this exception raises")


class ReprRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ raises")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ raises")


class MyBase(BaseException):
    pass


def _recurse(n: int) -> int:
    return _recurse(n + 1) + 1


def make_error(kind: str) -> BaseException:
    errors: dict[str, Any] = {
        "ValueError": lambda: ValueError("plain error"),
        "SystemExit": lambda: SystemExit(3),
        "KeyboardInterrupt": lambda: KeyboardInterrupt("interrupted by the job"),
        "GeneratorExit": lambda: GeneratorExit("generator exit from the job"),
        "BaseException": lambda: MyBase("a BaseException subclass"),
        "MemoryError": lambda: MemoryError("pretend out of memory"),
        "StrRaises": StrRaises,
        "ReprRaises": ReprRaises,
        "NulMessage": lambda: ValueError("nul \x00 in the message"),
        "SurrogateMessage": lambda: ValueError("lone \ud800 surrogate"),
        "HugeMessage": lambda: ValueError("x" * 2_000_000),
        "ExceptionGroup": lambda: ExceptionGroup("group", [ValueError("a"), KeyError("b")]),
        "NoneMessage": lambda: ValueError(None),
    }
    return errors[kind]()  # type: ignore[no-any-return]


class Raises(conveyor.Job):
    retry_interval = 0.3

    def run(self, kind: str) -> None:
        record(self, f"raises {kind} attempt {self.error_count + 1}")
        if kind == "RecursionError":
            _recurse(0)
        if kind == "sys.exit":
            sys.exit("exit message")
        raise make_error(kind)


class RaisingHandler(conveyor.Job):
    """handle_error itself raises: the worker falls back to retrying."""

    retry_interval = 0.3

    def run(self) -> None:
        raise ValueError("run failed")

    def handle_error(self, error: BaseException) -> bool:
        raise RuntimeError("handle_error failed too")


class RaisingLogLevel(conveyor.Job):
    def run(self) -> None:
        record(self, "log_level raises")

    def log_level(self, elapsed: float) -> int | None:
        raise RuntimeError("log_level failed")


# -- arguments and classes ---------------------------------------------------------------


class TwoArgs(conveyor.Job):
    retry_interval = 0.3

    def run(self, a: Any, b: Any) -> None:
        record(self, "two args ran")


class NoRun(conveyor.Job):
    retry_interval = 0.3


def not_a_job_class() -> None:
    """A dotted path to this names something that is not a Job."""


# -- return values -------------------------------------------------------------------------


class ReturnsUnserialisable(conveyor.Job):
    def run(self, kind: str) -> Any:
        record(self, f"returns {kind}")
        values: dict[str, Any] = {
            "object": object(),
            "generator": (i for i in range(3)),
            "lambda": lambda: None,
            "self": self,
            "socket": socket.socket(),
            "nan": float("nan"),
        }
        value = values[kind]
        if kind == "socket":
            value.close()
        return value


# -- shutdown --------------------------------------------------------------------------------


class Sleeper(conveyor.Job):
    """Sleeps ``seconds`` on its first run only, then returns quickly."""

    def run(self, seconds: float) -> None:
        with self.connection() as conn:
            conn.execute(
                "INSERT INTO poison_effects (job_id, tag, worker_pid) VALUES (%s, 'started', %s)",
                (self.id, os.getpid()),
            )
            first = conn.execute(
                "SELECT count(*) = 1 FROM poison_effects WHERE job_id = %s AND tag = 'started'",
                (self.id,),
            ).fetchone()[0]  # type: ignore[index]
        if first:
            time.sleep(seconds)
        record(self, "finished")


# -- transactions and connections ----------------------------------------------------------


class ConnectionAbuse(conveyor.Job):
    retry_interval = 0.3

    def run(self, kind: str) -> None:
        tag = f"{kind} attempt {self.error_count + 1}"
        if kind == "open in block":
            # Writes and returns without committing: the block commits (documented).
            with self.connection() as conn:
                record(self, tag, conn)
        elif kind == "aborted in block":
            with self.connection() as conn:
                record(self, tag, conn)
                with contextlib.suppress(Exception):  # swallowed: the transaction stays aborted
                    conn.execute("SELECT 1 / 0")
        elif kind in ("open escaped", "aborted escaped"):
            # Enters the pool's context manager and never leaves it, keeping
            # the connection (and its transaction) after the job returns.
            manager = self.connection()
            conn = manager.__enter__()
            _STASH.append((manager, conn))
            record(self, tag, conn)
            if kind == "aborted escaped":
                with contextlib.suppress(Exception):
                    conn.execute("SELECT 1 / 0")
        elif kind == "closes":
            # Writes, then closes the connection: the write is lost.
            with self.connection() as conn:
                record(self, tag, conn)
                conn.close()
        elif kind == "terminates its backend":
            with self.connection() as conn:
                record(self, tag, conn)
                conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        elif kind == "shuts its socket":
            # Writes, then breaks the connection under psycopg's feet.
            with self.connection() as conn:
                record(self, tag, conn)
                shut_socket(conn)
        elif kind == "breaks it for the next job":
            # Breaks the connection outside any transaction: nothing of this
            # job is lost, but the next borrower must not get it broken.
            record(self, tag)
            with self.connection() as conn:
                shut_socket(conn)
        elif kind == "autocommit":
            record(self, tag)
            with self.connection() as conn:
                conn.autocommit = True
        elif kind == "session settings":
            record(self, tag)
            with self.connection() as conn:
                conn.execute("SET default_transaction_read_only = on")
                conn.execute("SET statement_timeout = '1ms'")
                conn.execute("SET search_path = nowhere")
                conn.execute("SELECT pg_advisory_lock(4242)")
                conn.execute("LISTEN poison_channel")
        else:
            raise AssertionError(f"unknown kind {kind}")


class Probe(conveyor.Job):
    """Records the state of the pooled connection it gets."""

    def run(self) -> None:
        with self.connection() as conn:
            state = conn.execute(
                """
                SELECT current_setting('default_transaction_read_only'),
                       current_setting('statement_timeout'),
                       current_setting('search_path'),
                       (SELECT count(*) FROM pg_locks
                         WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
                       (SELECT count(*) FROM pg_listening_channels())
                """
            ).fetchone()
            tag = (
                "probe "
                + " | ".join(str(v) for v in state or ())
                + f" | autocommit={conn.autocommit}"
            )
        # Recorded on a fresh transaction so that a read-only or timed-out
        # connection is seen in the tag, not as an error.
        with self.connection() as conn:
            conn.execute("SET LOCAL default_transaction_read_only = off")
            conn.execute("SET LOCAL transaction_read_only = off")
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute(
                "INSERT INTO public.poison_effects (job_id, tag) VALUES (%s, %s)", (self.id, tag)
            )
