"""The connections :func:`conveyor.enqueue` accepts, down to the psycopg 3
connection the statement runs on.

A :class:`psycopg.Connection` is used as it is. A SQLAlchemy 2 ``Session``
or ``Connection`` on the psycopg dialect (``postgresql+psycopg://``) gives
its driver connection, inside the transaction SQLAlchemy has begun (begun
here if it has not, so the caller's ``commit()`` / ``rollback()`` decides
the job's fate). The async forms (``AsyncSession``, ``AsyncConnection``,
:class:`psycopg.AsyncConnection`) are :mod:`conveyor.aio`'s. SQLAlchemy is
imported only when such an object is passed: it stays optional.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__: list[str] = []

#: What enqueue accepts: a psycopg.Connection, a SQLAlchemy Session or Connection.
Connectable = Any
#: What conveyor.aio's enqueue accepts: their async forms.
AsyncConnectable = Any

_PSYCOPG_URL_HINT = "use SQLAlchemy's psycopg 3 dialect: a postgresql+psycopg:// URL"


def _is_sqlalchemy(conn: Any) -> bool:
    return type(conn).__module__.startswith("sqlalchemy.")


def _wrong_driver(raw: Any, via: str) -> TypeError:
    module = type(raw).__module__.partition(".")[0]
    if module == "psycopg2":
        return TypeError(
            f"conveyor enqueues through psycopg 3, and {via} is a psycopg2 connection: "
            f"{_PSYCOPG_URL_HINT} (or pass a psycopg.Connection)"
        )
    return TypeError(
        f"conveyor enqueues through psycopg 3, not {type(raw).__module__}.{type(raw).__name__} "
        f"({via}): {_PSYCOPG_URL_HINT}, or pass a psycopg connection"
    )


def psycopg_connection(conn: Connectable) -> psycopg.Connection[Any]:
    """The psycopg connection to enqueue on for ``conn`` (see the module docs)."""
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, psycopg.AsyncConnection):
        raise TypeError(
            "an AsyncConnection needs the async API: await conveyor.aio.enqueue(conn, ...)"
        )
    if _is_sqlalchemy(conn):
        from sqlalchemy.engine import Connection
        from sqlalchemy.orm import Session

        if type(conn).__module__.startswith("sqlalchemy.ext.asyncio"):
            raise TypeError(
                f"a SQLAlchemy {type(conn).__name__} needs the async API: "
                "await conveyor.aio.enqueue(session, ...)"
            )
        if isinstance(conn, Session):
            conn = conn.connection()  # begins the session's transaction if needed
        if isinstance(conn, Connection):
            if not conn.in_transaction():
                conn.begin()  # so the caller's commit() commits the job
            raw = conn.connection.driver_connection
            if isinstance(raw, psycopg.Connection):
                return raw
            raise _wrong_driver(raw, f"the SQLAlchemy {type(conn).__name__}'s driver connection")
    if type(conn).__module__.partition(".")[0] == "psycopg2":
        raise _wrong_driver(conn, "the connection given")
    raise TypeError(
        "enqueue needs a psycopg.Connection or a SQLAlchemy Session or Connection, "
        f"not {type(conn).__name__}"
    )


async def async_psycopg_connection(conn: AsyncConnectable) -> psycopg.AsyncConnection[Any]:
    """The async psycopg connection to enqueue on for ``conn``."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if isinstance(conn, psycopg.Connection):
        raise TypeError("a blocking psycopg.Connection: use conveyor.enqueue(conn, ...)")
    if _is_sqlalchemy(conn):
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

        if isinstance(conn, AsyncSession):
            conn = await conn.connection()  # begins the session's transaction if needed
        if isinstance(conn, AsyncConnection):
            if not conn.in_transaction():
                await conn.begin()
            raw = (await conn.get_raw_connection()).driver_connection
            if isinstance(raw, psycopg.AsyncConnection):
                return raw
            raise _wrong_driver(raw, f"the SQLAlchemy {type(conn).__name__}'s driver connection")
        raise TypeError(
            f"a SQLAlchemy {type(conn).__name__} is blocking: use conveyor.enqueue(conn, ...)"
        )
    if type(conn).__module__.partition(".")[0] == "psycopg2":
        raise _wrong_driver(conn, "the connection given")
    raise TypeError(
        "conveyor.aio.enqueue needs a psycopg.AsyncConnection or a SQLAlchemy AsyncSession "
        f"or AsyncConnection, not {type(conn).__name__}"
    )
