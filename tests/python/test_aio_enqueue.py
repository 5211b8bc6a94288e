"""conveyor.aio: enqueue and enqueue_many on a psycopg.AsyncConnection, in its
transaction; the synchronous mode awaits an async job on the caller's loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
import pytest
from db_support import scalar

import conveyor
import conveyor.aio

ran: list[Any] = []


class Mailer(conveyor.Job):
    queue = "mail"
    priority = 10

    def run(self, user_id: int) -> None:
        ran.append(user_id)


class AsyncMailer(conveyor.Job):
    async def run(self, user_id: int) -> None:
        await asyncio.sleep(0)
        async with self.aconnection() as conn:
            await conn.execute("INSERT INTO sent (user_id) VALUES (%s)", (user_id,))
        ran.append(user_id)


def run(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(factory())


def jobs(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT job_class, args, queue, priority FROM conveyor.jobs ORDER BY id"
    ).fetchall()


def test_enqueue_commits_with_the_transaction(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    async def main() -> int | None:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn:
            job_id = await conveyor.aio.enqueue(aconn, Mailer, 42)
            assert scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0, (
                "not yet committed"
            )
            await aconn.commit()
            return job_id

    job_id = run(main)
    assert isinstance(job_id, int)
    assert jobs(conn) == [("Mailer", [42], "mail", 10)]


def test_enqueue_in_a_rolled_back_transaction_leaves_nothing(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn:
            async with aconn.transaction(force_rollback=True):
                await conveyor.aio.enqueue(aconn, Mailer, 1)
                await conveyor.aio.enqueue_many(
                    aconn, [{"job_class": "Other", "args": [2]}]
                )
                assert await (
                    await aconn.execute("SELECT count(*) FROM conveyor.jobs")
                ).fetchone() == (2,)
            with pytest.raises(ZeroDivisionError):
                async with aconn.transaction():
                    await conveyor.aio.enqueue(aconn, Mailer, 3)
                    1 / 0  # noqa: B018

    run(main)
    assert jobs(conn) == []


def test_enqueue_many_and_options_are_the_blocking_ones(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    async def main() -> list[int]:
        async with await psycopg.AsyncConnection.connect(
            db_url, autocommit=True
        ) as aconn:
            return await conveyor.aio.enqueue_many(
                aconn,
                [
                    {"job_class": Mailer, "args": [1]},
                    {"job_class": "Report", "args": [2], "queue": "q", "priority": 5},
                ],
            )

    ids = run(main)
    assert len(ids) == 2 and ids[0] < ids[1]
    assert jobs(conn) == [("Mailer", [1], "mail", 10), ("Report", [2], "q", 5)]


def test_bad_input_gets_the_same_errors(db_url: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(
            db_url, autocommit=True
        ) as aconn:
            with pytest.raises(TypeError, match="args must be JSON-serializable"):
                await conveyor.aio.enqueue(aconn, Mailer, object())
            with pytest.raises(TypeError, match="unknown keys"):
                await conveyor.aio.enqueue_many(
                    aconn, [{"job_class": Mailer, "nope": 1}]
                )
            with pytest.raises(psycopg.DataError):
                await conveyor.aio.enqueue(aconn, Mailer, 1, priority=-5)

    run(main)


def test_the_wrong_kind_of_connection_is_a_clear_error(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    with pytest.raises(TypeError, match=r"conveyor\.enqueue\(conn"):
        run(lambda: conveyor.aio.enqueue(conn, Mailer, 1))

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn:
            with pytest.raises(TypeError, match=r"await conveyor\.aio\.enqueue"):
                conveyor.enqueue(aconn, Mailer, 1)  # type: ignore[arg-type]

    run(main)


def test_synchronous_mode_awaits_an_async_job_on_the_enqueuing_connection(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TABLE sent (user_id int)")
    ran.clear()

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn:
            await aconn.execute("INSERT INTO sent VALUES (0)")  # the caller's transaction
            with conveyor.run_synchronously():
                assert await conveyor.aio.enqueue(aconn, AsyncMailer, 7) is None
                assert (
                    await conveyor.aio.enqueue_many(
                        aconn, [{"job_class": Mailer, "args": [8]}]
                    )
                    == []
                )
            await aconn.rollback()  # the job's write was in the caller's transaction

    run(main)
    assert ran == [7, 8]
    assert scalar(conn, "SELECT count(*) FROM sent") == 0
    assert jobs(conn) == []


def test_blocking_synchronous_mode_runs_an_async_job_with_asyncio_run(
    conn: psycopg.Connection[Any],
) -> None:
    class AsyncCounts(conveyor.Job):
        async def run(self, n: int) -> None:
            await asyncio.sleep(0)
            ran.append(n)

    ran.clear()
    with conveyor.run_synchronously():
        assert conveyor.enqueue(conn, AsyncCounts, 5) is None
    assert ran == [5]
