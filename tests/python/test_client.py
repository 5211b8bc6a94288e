"""The Python client: Job classes, enqueue/enqueue_many in the caller's
transaction, the job-class registry, and the synchronous mode."""

from __future__ import annotations

import importlib
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

import conveyor
from conveyor.job import resolve_job_class


class Plain(conveyor.Job):
    def run(self, *args: Any) -> None:
        pass


class Configured(conveyor.Job):
    queue = "mail"
    priority = 7
    maximum_retry_count = 2

    def run(self, *args: Any) -> None:
        pass


class Renamed(conveyor.Job):
    job_class = "billing.Charge"

    def run(self) -> None:
        pass


def row_of(conn: psycopg.Connection[Any], job_id: int | None) -> dict[str, Any]:
    cursor = conn.execute("SELECT * FROM conveyor.jobs WHERE id = %s", (job_id,))
    row = cursor.fetchone()
    assert row is not None, f"job {job_id} does not exist"
    names = [column.name for column in cursor.description or []]
    return dict(zip(names, row, strict=True))


def count_jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone()
    assert row is not None
    return int(row[0])


# --- enqueue ------------------------------------------------------------------


def test_enqueue_uses_the_sql_defaults(conn: psycopg.Connection[Any]) -> None:
    job_id = Plain.enqueue(1, "two", {"three": 3}, conn=conn)
    row = row_of(conn, job_id)
    assert row["job_class"] == "Plain"
    assert row["args"] == [1, "two", {"three": 3}]
    assert (row["queue"], row["priority"], row["maximum_retry_count"]) == ("default", 100, 15)
    assert row["data"] == {}
    assert row["run_at"] <= datetime.now(UTC)


def test_class_attributes_are_the_defaults_and_options_override_them(
    conn: psycopg.Connection[Any],
) -> None:
    row = row_of(conn, Configured.enqueue(conn=conn))
    assert (row["queue"], row["priority"], row["maximum_retry_count"]) == ("mail", 7, 2)
    later = datetime.now(UTC) + timedelta(hours=1)
    row = row_of(
        conn,
        Configured.enqueue(
            conn=conn,
            queue="other",
            priority=1,
            maximum_retry_count=9,
            run_at=later,
            data={"tags": ["vip"]},
        ),
    )
    assert (row["queue"], row["priority"], row["maximum_retry_count"]) == ("other", 1, 9)
    assert row["run_at"] == later
    assert row["data"] == {"tags": ["vip"]}


def test_job_class_is_the_class_name_unless_set(conn: psycopg.Connection[Any]) -> None:
    assert Plain.job_class == "Plain"
    assert row_of(conn, Renamed.enqueue(conn=conn))["job_class"] == "billing.Charge"
    assert resolve_job_class("billing.Charge") is Renamed


def test_enqueue_by_name_and_kwargs(conn: psycopg.Connection[Any]) -> None:
    job_id = conveyor.enqueue(conn, "Anything.Else", 1, kwargs={"b": 2}, data={"x": 1})
    row = row_of(conn, job_id)
    assert row["job_class"] == "Anything.Else"
    assert row["data"] == {"x": 1, "kwargs": {"b": 2}}


def test_a_rolled_back_enqueue_leaves_no_job(connect: Any) -> None:
    conn = connect(autocommit=False)
    Plain.enqueue(conn=conn)
    conn.rollback()
    with conn.transaction():
        job_id = Plain.enqueue(conn=conn)
    conn.commit()
    other = connect()
    assert count_jobs(other) == 1
    assert row_of(other, job_id)["job_class"] == "Plain"


def test_enqueue_rejects_what_the_sql_rejects(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.NumericValueOutOfRange):
        Plain.enqueue(conn=conn, priority=-1)
    with pytest.raises(errors.InvalidParameterValue):
        Plain.enqueue(conn=conn, queue="")
    with pytest.raises(TypeError, match="JSON"):
        Plain.enqueue(object(), conn=conn)
    with pytest.raises(TypeError, match="job_class"):
        conveyor.enqueue(conn, 42)  # type: ignore[arg-type]
    assert count_jobs(conn) == 0


def test_enqueue_many_inserts_in_one_statement_and_keeps_order(
    conn: psycopg.Connection[Any],
) -> None:
    ids = conveyor.enqueue_many(
        conn,
        [
            {"job_class": Configured, "args": [1]},
            {"job_class": "Other", "args": [2], "queue": "q2", "priority": 3},
            {"job_class": Plain, "run_at": datetime.now(UTC) + timedelta(days=1)},
        ],
    )
    assert len(ids) == 3 and ids == sorted(ids)
    first, second, third = (row_of(conn, i) for i in ids)
    assert (first["job_class"], first["queue"], first["priority"]) == ("Configured", "mail", 7)
    assert (second["job_class"], second["args"], second["queue"]) == ("Other", [2], "q2")
    assert third["run_at"] > datetime.now(UTC) + timedelta(hours=23)
    assert Plain.enqueue_many([[1], [2], [3]], conn=conn, priority=5) == list(
        range(ids[-1] + 1, ids[-1] + 4)
    )


def test_enqueue_many_rejects_bad_input(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(TypeError, match="unknown keys"):
        conveyor.enqueue_many(conn, [{"job_class": "A", "colour": "red"}])
    with pytest.raises(TypeError, match="no job_class"):
        conveyor.enqueue_many(conn, [{"args": []}])
    with pytest.raises(errors.InvalidParameterValue):
        conveyor.enqueue_many(conn, [{"job_class": "A"}, {"job_class": ""}])
    assert conveyor.enqueue_many(conn, []) == []
    assert count_jobs(conn) == 0


# --- the registry -------------------------------------------------------------


def test_a_dotted_path_is_imported_on_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("conveyor_test_dotted")
    exec(
        "import conveyor\nclass Deep(conveyor.Job):\n    job_class = 'not.the.path'\n",
        module.__dict__,
    )
    monkeypatch.setitem(sys.modules, "conveyor_test_dotted", module)
    assert resolve_job_class("conveyor_test_dotted.Deep") is module.Deep


def test_two_classes_cannot_share_a_job_class_but_a_reload_may_redefine_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    source = "import conveyor\nclass Shared(conveyor.Job):\n    job_class = 'SharedName'\n"
    (tmp_path / "conveyor_test_first.py").write_text(source)
    (tmp_path / "conveyor_test_second.py").write_text(source)
    for name in ("conveyor_test_first", "conveyor_test_second"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # gone again after the test
    first = importlib.import_module("conveyor_test_first")
    assert resolve_job_class("SharedName") is first.Shared
    # Reloading the module defines the same class again: it replaces the old one.
    reloaded = importlib.reload(first)
    assert resolve_job_class("SharedName") is reloaded.Shared
    # Another module taking the name is an error at class creation, naming both.
    with pytest.raises(conveyor.ConveyorError) as raised:
        importlib.import_module("conveyor_test_second")
    assert "conveyor_test_first.Shared" in str(raised.value)
    assert "conveyor_test_second.Shared" in str(raised.value)
    assert resolve_job_class("SharedName") is reloaded.Shared


def test_unknown_job_classes_raise_a_clear_error() -> None:
    with pytest.raises(conveyor.UnknownJobClassError, match="NoSuchJob"):
        resolve_job_class("NoSuchJob")
    with pytest.raises(conveyor.UnknownJobClassError, match="cannot import"):
        resolve_job_class("no_such_module_anywhere.Job")
    with pytest.raises(conveyor.UnknownJobClassError, match=r"not a conveyor\.Job"):
        resolve_job_class("os.path")


# --- synchronous mode ---------------------------------------------------------

ran: list[Any] = []


class Recorder(conveyor.Job):
    def run(self, *args: Any, **kwargs: Any) -> None:
        ran.append((args, kwargs, self.id))


class WritesRow(conveyor.Job):
    def run(self, value: int) -> None:
        with self.connection() as conn:
            conn.execute("INSERT INTO sync_results VALUES (%s)", (value,))
            self.destroy(conn=conn)


class Fails(conveyor.Job):
    def run(self) -> None:
        raise RuntimeError("boom")


class AlwaysSync(conveyor.Job):
    run_synchronously = True

    def run(self) -> None:
        ran.append("always")


def test_run_synchronously_runs_jobs_at_once_without_a_row(
    conn: psycopg.Connection[Any],
) -> None:
    ran.clear()
    with conveyor.run_synchronously():
        assert Recorder.enqueue(1, [2], conn=conn, kwargs={"k": "v"}) is None
        conveyor.enqueue(conn, "Recorder", 3)
        assert conveyor.enqueue_many(conn, [{"job_class": Recorder, "args": [4]}]) == []
        scheduled = Recorder.enqueue(5, conn=conn, run_at=datetime.now(UTC) + timedelta(hours=1))
    assert ran == [((1, [2]), {"k": "v"}, None), ((3,), {}, None), ((4,), {}, None)]
    assert scheduled is not None and row_of(conn, scheduled)["args"] == [5]
    assert count_jobs(conn) == 1
    Recorder.enqueue(6, conn=conn)  # outside the block: inserted
    assert count_jobs(conn) == 2 and len(ran) == 3


def test_synchronous_jobs_use_the_enqueuing_connection_and_raise(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TABLE sync_results (value int)")
    with conveyor.run_synchronously():
        WritesRow.enqueue(7, conn=conn)
        with pytest.raises(RuntimeError, match="boom"):
            Fails.enqueue(conn=conn)
        with pytest.raises(TypeError, match="JSON"):
            Recorder.enqueue({1, 2}, conn=conn)
    assert conn.execute("SELECT value FROM sync_results").fetchall() == [(7,)]
    assert count_jobs(conn) == 0


def test_a_class_can_always_run_synchronously(conn: psycopg.Connection[Any]) -> None:
    ran.clear()
    AlwaysSync.enqueue(conn=conn)
    assert ran == ["always"] and count_jobs(conn) == 0


def test_a_job_outside_a_worker_has_no_connection() -> None:
    with pytest.raises(conveyor.ConveyorError, match="not running in a worker"):
        Plain().connection()
