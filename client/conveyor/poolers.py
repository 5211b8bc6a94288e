"""Connections behind a pooler (PgBouncer and the like).

The locker needs a server session of its own (LISTEN, session advisory
locks); job connections may go through a transaction-mode pool, but then must
not rely on server-side prepared statements. Both checks tell a direct
connection by the backend pid the server announced at start-up (a pooler
announces a key of its own).
"""

from __future__ import annotations

from typing import Any

import psycopg

from .errors import ConveyorError

__all__ = ["configure_pooled_connection", "require_own_session"]


def require_own_session(conn: psycopg.Connection[Any], url: str) -> None:
    """Refuse a locker connection that does not keep one server session.

    LISTEN and session-level advisory locks live in the server session that
    ran them; a transaction-mode pooler (PgBouncer ``pool_mode =
    transaction`` ...) runs each transaction of a client on whichever server
    connection is free, so notifications and locks would be lost or shared.

    A direct connection is recognised at no cost beyond one statement: the
    backend pid the server announced at start-up (BackendKeyData, used for
    cancel requests) is the pid running our statements; a pooler announces a
    key of its own. Behind a pooler, a probe connection holds a transaction
    open while ``conn`` runs a second statement: in a session of its own, the
    probe never gets ``conn``'s server session and ``conn`` stays on it; in
    transaction pooling, the probe gets the server connection ``conn`` just
    released (PgBouncer reuses the most recent first), or ``conn`` moves to
    another one. Either sign raises :class:`ConveyorError`.
    """
    pid_query = "SELECT pg_backend_pid()"
    first = conn.execute(pid_query, prepare=False).fetchone()
    if first is None or first[0] == conn.info.backend_pid:
        return
    with psycopg.connect(url, autocommit=False) as probe:
        probed = probe.execute(pid_query, prepare=False).fetchone()
        again = conn.execute(pid_query, prepare=False).fetchone()
        probe.rollback()
    if probed == first or again != first:
        raise ConveyorError(
            "the locker's connection goes through a transaction-mode pooler: LISTEN and "
            "advisory locks need a session of their own; point --connection-url at the "
            "database directly or at a session-mode pool"
        )


def configure_pooled_connection(conn: psycopg.Connection[Any]) -> None:
    """Behind a pooler, no automatic server-side prepared statements: psycopg
    prepares a statement on its 6th execution, and a transaction-mode pooler
    that does not track them (PgBouncer before 1.21, or without
    ``max_prepared_statements``) runs the next execution on a server
    connection that lacks it or where another client prepared the same name.
    A direct connection is told by the backend pid the server announced at
    start-up (a pooler announces a key of its own); it keeps preparing."""
    row = conn.execute("SELECT pg_backend_pid()", prepare=False).fetchone()
    conn.commit()
    if row is None or row[0] != conn.info.backend_pid:
        conn.prepare_threshold = None
