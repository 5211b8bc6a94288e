"""How the locker sends a cycle's statements: one transaction, pipelined
(one round trip) unless SQL middleware must see each statement."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg

from . import sql
from ._hooks import run_chain
from .protocol import LockedJob, Statement, StatementKind, locked_job_row

__all__: list[str] = []


def execute_cycle(
    conn: psycopg.Connection[Any],
    middleware: Sequence[sql.SQLMiddleware],
    statements: list[Statement],
) -> list[Any]:
    """Send the statements in one transaction; the rows of the lock and
    schedule statements (None for the others)."""
    if middleware or len(statements) == 1:
        # One transaction, as in a pipeline: a release's transaction-level
        # lock and conveyor's memory of the jobs locked (for `held`) last
        # until it commits.
        outputs: list[Any] = []
        with conn.transaction() if len(statements) > 1 else contextlib.nullcontext():
            for query, params, kind in statements:
                if kind is StatementKind.RESOLVE:
                    run_one(conn, middleware, query, params)
                    outputs.append(None)
                elif kind is StatementKind.SCHEDULES:
                    outputs.append(run_one(conn, middleware, query, params))
                else:
                    outputs.append(run_locking(conn, middleware, query, params))
        return outputs
    with conn.pipeline():
        cursors = [
            conn.execute(query, params)
            if kind is not StatementKind.POLL and kind is not StatementKind.LOCK_BY_ID
            else conn.cursor(row_factory=locked_job_row).execute(query, params)
            for query, params, kind in statements
        ]
    return [
        None if kind is StatementKind.RESOLVE else cursor.fetchall()
        for cursor, (_, _, kind) in zip(cursors, statements, strict=True)
    ]


def run_one(
    conn: psycopg.Connection[Any],
    middleware: Sequence[sql.SQLMiddleware],
    query: str,
    params: Sequence[Any],
) -> list[Any]:
    def proceed() -> list[Any]:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []

    return run_chain(middleware, (query, params), proceed)


def run_locking(
    conn: psycopg.Connection[Any],
    middleware: Sequence[sql.SQLMiddleware],
    query: str,
    params: Sequence[Any],
) -> list[LockedJob]:
    def proceed() -> list[LockedJob]:
        return conn.cursor(row_factory=locked_job_row).execute(query, params).fetchall()

    return run_chain(middleware, (query, params), proceed)
