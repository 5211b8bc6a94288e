"""conveyor.enqueue with SQLAlchemy 2: a Session or Connection on the psycopg
dialect (and the async forms through conveyor.aio) enqueues in its
transaction; commit keeps the job, rollback drops it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from db_support import scalar
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import conveyor
import conveyor.aio


class Welcome(conveyor.Job):
    queue = "mail"

    def run(self, user_id: int) -> None:
        pass


def sqlalchemy_url(db_url: str, driver: str = "psycopg") -> str:
    return db_url.replace("postgresql://", f"postgresql+{driver}://", 1)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_engine(sqlalchemy_url(db_url))
    yield engine
    engine.dispose()


def count(conn: psycopg.Connection[Any], where: str = "true") -> int:
    return int(scalar(conn, f"SELECT count(*) FROM conveyor.jobs WHERE {where}"))


def test_a_session_commit_keeps_the_job_with_the_data(
    engine: Engine, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TABLE users (id int)")
    with Session(engine) as session:
        session.execute(text("INSERT INTO users VALUES (1)"))
        job_id = conveyor.enqueue(session, Welcome, 1)
        assert Welcome.enqueue(2, conn=session) == job_id + 1  # type: ignore[operator]
        assert count(conn) == 0, "not visible before the commit"
        session.commit()
    assert count(conn, "queue = 'mail'") == 2
    assert scalar(conn, "SELECT count(*) FROM users") == 1


def test_a_session_rollback_drops_the_job(
    engine: Engine, conn: psycopg.Connection[Any]
) -> None:
    with Session(engine) as session:
        conveyor.enqueue(
            session, Welcome, 1
        )  # the first statement: begins the transaction
        conveyor.enqueue_many(session, [{"job_class": Welcome, "args": [2]}])
        session.rollback()
    with Session(engine) as session, session.begin():
        conveyor.enqueue(session, Welcome, 3)
        session.rollback()
    assert count(conn) == 0


def test_a_connection_commits_or_rolls_back_the_job(
    engine: Engine, conn: psycopg.Connection[Any]
) -> None:
    with engine.connect() as sa_conn:
        conveyor.enqueue(sa_conn, Welcome, 1)  # no statement yet: enqueue begins
        sa_conn.commit()
        conveyor.enqueue(sa_conn, Welcome, 2)
        sa_conn.rollback()
    with engine.begin() as sa_conn:
        conveyor.enqueue(sa_conn, Welcome, 3)
    assert [
        r[0] for r in conn.execute("SELECT args FROM conveyor.jobs ORDER BY id")
    ] == [
        [1],
        [3],
    ]


def test_a_psycopg2_connection_is_a_clear_error(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    engine = create_engine(sqlalchemy_url(db_url, "psycopg2"))
    try:
        with Session(engine) as session:
            with pytest.raises(
                TypeError, match=r"psycopg2 connection: .*postgresql\+psycopg://"
            ):
                conveyor.enqueue(session, Welcome, 1)
            raw = engine.raw_connection()
            try:
                with pytest.raises(TypeError, match="psycopg2"):
                    conveyor.enqueue(raw.driver_connection, Welcome, 1)
            finally:
                raw.close()
    finally:
        engine.dispose()
    with pytest.raises(TypeError, match="not str"):
        conveyor.enqueue("postgresql://", Welcome, 1)  # type: ignore[arg-type]
    assert count(conn) == 0


def test_an_async_session_commits_or_rolls_back_the_job(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    async def main() -> None:
        engine: AsyncEngine = create_async_engine(sqlalchemy_url(db_url))
        try:
            async with AsyncSession(engine) as session:
                await conveyor.aio.enqueue(session, Welcome, 1)
                await session.rollback()
                await conveyor.aio.enqueue(session, Welcome, 2)
                await conveyor.aio.enqueue_many(
                    session, [{"job_class": Welcome, "args": [3]}]
                )
                assert count(conn) == 0
                await session.commit()
            async with engine.connect() as aconn:
                await conveyor.aio.enqueue(aconn, Welcome, 4)
                await aconn.rollback()
                await conveyor.aio.enqueue(aconn, Welcome, 5)
                await aconn.commit()
            async with AsyncSession(engine) as session:
                with pytest.raises(TypeError, match=r"await conveyor\.aio\.enqueue"):
                    conveyor.enqueue(session, Welcome, 6)
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert [
        r[0] for r in conn.execute("SELECT args FROM conveyor.jobs ORDER BY id")
    ] == [
        [2],
        [3],
        [5],
    ]
