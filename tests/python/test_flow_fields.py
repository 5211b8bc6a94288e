"""The flow fields of a job from Python: concurrency_key, labels and batch_id
given to enqueue / enqueue_many (sync and async), and the class defaults
(a concurrency key computed from the arguments, like GoodJob's ``key:``)."""

from __future__ import annotations

import asyncio
from typing import Any

import conveyor
import conveyor.aio
import psycopg
import pytest
from psycopg import errors


class FlowFieldsReport(conveyor.Job):
    labels = ("reports", "nightly")

    @staticmethod
    def concurrency_key(account_id: int, *, fmt: str = "pdf") -> str:
        return f"report-{account_id}-{fmt}"

    def run(self, account_id: int, *, fmt: str = "pdf") -> None:
        pass


class FlowFieldsPlain(conveyor.Job):
    def run(self) -> None:
        pass


@pytest.fixture(autouse=True)
def open_batches(conn: psycopg.Connection[Any]) -> None:
    """The batches these tests name: a batch_id must name an open batch
    (the batches change checks it on insert; tests/python/test_batches.py)."""
    conn.execute(
        "INSERT INTO conveyor.batches (id) OVERRIDING SYSTEM VALUE"
        " SELECT generate_series(1, 10)"
    )


def fields(conn: psycopg.Connection[Any], job_id: int | None) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT concurrency_key, labels, batch_id FROM conveyor.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_enqueue_stores_the_given_fields(conn: psycopg.Connection[Any]) -> None:
    job_id = FlowFieldsPlain.enqueue(
        conn=conn, concurrency_key="k1", labels=["a", "b"], batch_id=7
    )
    assert fields(conn, job_id) == ("k1", ["a", "b"], 7)


def test_a_job_without_fields_has_none(conn: psycopg.Connection[Any]) -> None:
    assert fields(conn, FlowFieldsPlain.enqueue(conn=conn)) == (None, [], None)


def test_class_defaults_key_from_the_arguments_and_labels(
    conn: psycopg.Connection[Any],
) -> None:
    job_id = FlowFieldsReport.enqueue(42, conn=conn, kwargs={"fmt": "csv"})
    assert fields(conn, job_id) == ("report-42-csv", ["reports", "nightly"], None)
    # given values win over the class's
    job_id = FlowFieldsReport.enqueue(
        42, conn=conn, concurrency_key="mine", labels=["x"]
    )
    assert fields(conn, job_id) == ("mine", ["x"], None)


def test_a_single_string_is_one_label(conn: psycopg.Connection[Any]) -> None:
    job_id = conveyor.enqueue(conn, "FlowFieldsPlain", labels="solo")
    assert fields(conn, job_id) == (None, ["solo"], None)


def test_enqueue_many_takes_the_fields_and_the_class_defaults(
    conn: psycopg.Connection[Any],
) -> None:
    ids = conveyor.enqueue_many(
        conn,
        [
            {"job_class": FlowFieldsReport, "args": [1]},
            {
                "job_class": "FlowFieldsPlain",
                "concurrency_key": "k",
                "labels": ["l"],
                "batch_id": 3,
            },
            {"job_class": FlowFieldsPlain},
        ],
    )
    assert [fields(conn, i) for i in ids] == [
        ("report-1-pdf", ["reports", "nightly"], None),
        ("k", ["l"], 3),
        (None, [], None),
    ]
    ids = FlowFieldsReport.enqueue_many([[5], [6]], conn=conn, batch_id=9)
    assert [fields(conn, i) for i in ids] == [
        ("report-5-pdf", ["reports", "nightly"], 9),
        ("report-6-pdf", ["reports", "nightly"], 9),
    ]


def test_async_enqueue_takes_the_fields(db_url: str) -> None:
    async def main() -> tuple[int | None, int | None]:
        async with await psycopg.AsyncConnection.connect(
            db_url, autocommit=True
        ) as aconn:
            first = await conveyor.aio.enqueue(aconn, FlowFieldsReport, 8)
            second = await conveyor.aio.enqueue(
                aconn,
                "FlowFieldsPlain",
                concurrency_key="ak",
                labels=["al"],
                batch_id=1,
            )
            return first, second

    first, second = asyncio.run(main())
    with psycopg.connect(db_url) as conn:
        assert fields(conn, first) == ("report-8-pdf", ["reports", "nightly"], None)
        assert fields(conn, second) == ("ak", ["al"], 1)


def test_bad_fields_are_sql_errors(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(
        errors.InvalidParameterValue, match="concurrency_key must not be empty"
    ):
        FlowFieldsPlain.enqueue(conn=conn, concurrency_key="")
    with pytest.raises(
        errors.NullValueNotAllowed, match="labels must not contain NULL"
    ):
        FlowFieldsPlain.enqueue(conn=conn, labels=["a", None])  # type: ignore[list-item]
    with pytest.raises(
        errors.InvalidParameterValue, match=r"jobs\[0\]: a label must not be empty"
    ):
        conveyor.enqueue_many(conn, [{"job_class": "FlowFieldsPlain", "labels": [""]}])
    row = conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone()
    assert row == (0,)


def test_a_key_function_must_return_a_string(conn: psycopg.Connection[Any]) -> None:
    class FlowFieldsBadKey(conveyor.Job):
        @staticmethod
        def concurrency_key() -> Any:
            return 5

        def run(self) -> None:
            pass

    with pytest.raises(
        TypeError, match="concurrency_key must return a str or None, not int"
    ):
        FlowFieldsBadKey.enqueue(conn=conn)
