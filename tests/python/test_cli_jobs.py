"""`conveyor jobs`: list, show, retry, discard, reschedule -- in-process
(CliRunner) and as a process, the JSON output checked against jobs_view, the
bulk confirmation on a real terminal (a pty) and without one."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo
from db_support import enqueue, scalar
from jobs_support import (
    JobsInEveryState,
    conveyor_process,
    fail_once,
    make_jobs_in_every_state,
    states,
)

from conveyor.cli import cli
from conveyor.cli_jobs import parse_duration

PREFIX = "JobsCli"


def run(db_url: str, *args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(
        cli, ["jobs", *args, "--database-url", db_url], input=stdin, catch_exceptions=False
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("conveyor: error: ") and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def made(
    conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]]
) -> JobsInEveryState:
    return make_jobs_in_every_state(conn, connect(), prefix=PREFIX)


def test_the_list_is_jobs_view_newest_first_in_json_and_as_a_table(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState
) -> None:
    result = run(db_url, "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    expected = conn.execute(
        "SELECT id, state, job_class, queue, args, data, error_count"
        " FROM conveyor.jobs_view ORDER BY id DESC"
    ).fetchall()
    assert [
        (j["id"], j["state"], j["job_class"], j["queue"], j["args"], j["data"], j["error_count"])
        for j in listed
    ] == [tuple(r) for r in expected]
    assert {j["state"] for j in listed} == {
        "ready",
        "scheduled",
        "retrying",
        "expired",
        "finished",
        "running",
    }
    assert all("errors" not in j and "last_error_backtrace" not in j for j in listed)

    table = run(db_url).stdout.splitlines()
    assert table[0].split()[:3] == ["id", "state", "queue"]
    rows = {int(line.split()[0]): line.split()[1] for line in table[2:]}
    assert rows == states(conn)


@pytest.mark.parametrize(
    ("options", "where"),
    [
        (["--state", "expired"], "state = 'expired'"),
        (["--state", "running"], "state = 'running'"),
        (["--class", f"{PREFIX}Retrying"], f"job_class = '{PREFIX}Retrying'"),
        (["--queue", "default", "--state", "ready"], "queue = 'default' AND state = 'ready'"),
        (["--search", "second failure"], "last_error_message ILIKE '%second failure%'"),
    ],
)
def test_filters_list_what_jobs_view_holds(
    db_url: str,
    conn: psycopg.Connection[Any],
    made: JobsInEveryState,
    options: list[str],
    where: str,
) -> None:
    result = run(db_url, *options, "--json")
    assert result.exit_code == 0, result.output
    ids = [j["id"] for j in json.loads(result.stdout)]
    expected = [
        r[0]
        for r in conn.execute(
            f"SELECT id FROM conveyor.jobs_view WHERE {where} ORDER BY id DESC"
        ).fetchall()
    ]
    assert ids == expected and ids


def test_keyset_pages_cover_every_job_once_and_say_how_to_go_on(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    made = [enqueue(conn, f"{PREFIX}Paged", [i]) for i in range(7)]
    seen: list[int] = []
    before: list[str] = []
    while True:
        result = run(db_url, "--limit", "3", "--json", *before)
        assert result.exit_code == 0, result.output
        page = [j["id"] for j in json.loads(result.stdout)]
        seen += page
        if len(page) < 3:
            assert "next page" not in result.stderr
            break
        assert f"--limit 3 --before {page[-1]}" in result.stderr
        before = ["--before", str(page[-1])]
    assert seen == sorted(made, reverse=True)


def test_show_prints_args_data_and_every_error_with_its_backtrace(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState
) -> None:
    result = run(db_url, "show", str(made.expired))
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "state" in text and "expired" in text
    assert '"expired"' in text  # args ["expired", 1]
    assert '"made_for": "Expired"' in text
    assert "ValueError: first failure" in text and "ValueError: second failure" in text
    assert text.count('File "jobs.py", line 7, in run') == scalar(
        conn, "SELECT jsonb_array_length(errors) FROM conveyor.jobs WHERE id = %s", [made.expired]
    )

    as_json = json.loads(run(db_url, "show", str(made.expired), "--json").stdout)
    row = conn.execute("SELECT * FROM conveyor.jobs_view WHERE id = %s", [made.expired]).fetchone()
    assert as_json["state"] == "expired"
    assert as_json["errors"] == json.loads(
        json.dumps(scalar(conn, "SELECT errors FROM conveyor.jobs WHERE id = %s", [made.expired]))
    )
    assert as_json["error_count"] == 2 and row is not None


def test_show_of_a_missing_job_exits_3_in_one_line(db_url: str) -> None:
    result = run(db_url, "show", "999999")
    assert result.exit_code == 3
    assert "job 999999" in one_line(result.stderr)


def test_retry_by_ids_makes_jobs_ready_and_reports_each_refusal(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState
) -> None:
    result = run(db_url, "retry", str(made.expired), str(made.retrying), str(made.scheduled))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"job {made.expired}: ready",
        f"job {made.retrying}: ready",
        f"job {made.scheduled}: ready",
    ]
    now = states(conn)
    assert now[made.expired] == now[made.retrying] == now[made.scheduled] == "ready"
    # the error history stays
    assert scalar(conn, "SELECT error_count FROM conveyor.jobs WHERE id = %s", [made.expired]) == 2

    missing = run(db_url, "retry", "999999", str(made.ready))
    assert missing.exit_code == 3
    assert "job 999999" in one_line(missing.stderr) and "P0002" in missing.stderr
    assert f"job {made.ready}: ready" in missing.stdout  # the others still acted on

    finished = run(db_url, "retry", str(made.finished))
    assert finished.exit_code == 5 and "55000" in one_line(finished.stderr)
    assert states(conn)[made.finished] == "finished"


def test_a_job_a_worker_holds_is_refused_with_exit_4(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState
) -> None:
    for action in (["discard"], ["reschedule", "--in", "1h"]):
        result = run(db_url, *action, str(made.running))
        assert result.exit_code == 4, result.output
        assert "55006" in one_line(result.stderr)
    assert states(conn)[made.running] == "running"


def test_discard_expires_with_the_reason_and_retry_brings_it_back(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState
) -> None:
    result = run(db_url, "discard", str(made.ready), "--reason", "bad input, ticket 12")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"job {made.ready}: expired"
    row = conn.execute(
        "SELECT expired_at IS NOT NULL, last_error_message FROM conveyor.jobs WHERE id = %s",
        [made.ready],
    ).fetchone()
    assert row == (True, "bad input, ticket 12")
    again = run(db_url, "discard", str(made.ready))
    assert again.exit_code == 5 and "55000" in one_line(again.stderr)
    assert run(db_url, "retry", str(made.ready)).exit_code == 0
    assert states(conn)[made.ready] == "ready"


def test_reschedule_at_and_in_by_the_servers_clock(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState
) -> None:
    result = run(db_url, "reschedule", str(made.ready), "--in", "1h30m")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"job {made.ready}: scheduled"
    off = scalar(
        conn,
        "SELECT extract(epoch FROM run_at - now() - interval '90 minutes')"
        " FROM conveyor.jobs WHERE id = %s",
        [made.ready],
    )
    assert abs(float(off)) < 120
    result = run(db_url, "reschedule", str(made.ready), "--at", "2030-01-02T03:04:05+00:00")
    assert result.exit_code == 0, result.output
    assert scalar(
        conn,
        "SELECT run_at = '2030-01-02T03:04:05+00' FROM conveyor.jobs WHERE id = %s",
        [made.ready],
    )
    assert run(db_url, "reschedule", str(made.ready)).exit_code == 2
    assert run(db_url, "reschedule", str(made.ready), "--at", "x", "--in", "1h").exit_code == 2
    bad = run(db_url, "reschedule", str(made.ready), "--in", "soon")
    assert bad.exit_code == 1 and "not a duration" in one_line(bad.stderr)
    missing = run(db_url, "reschedule", "999999", "--in", "1m")
    assert missing.exit_code == 3


def test_parse_duration() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    assert parse_duration("1.5h") == 5400
    for bad in ("", "h", "1x", "1h 30m", "-5m"):
        with pytest.raises(Exception, match="not a duration"):
            parse_duration(bad)


def _expired_mailers(conn: psycopg.Connection[Any], count: int) -> list[int]:
    ids = []
    for i in range(count):
        job_id = enqueue(conn, f"{PREFIX}Mailer", [i])
        fail_once(conn, job_id, "SMTPError: 421 try later", delay=0, expire=True)
        ids.append(job_id)
    return ids


def test_a_bulk_retry_off_a_terminal_needs_yes_and_a_dry_run_changes_nothing(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState
) -> None:
    mailers = _expired_mailers(conn, 3)
    before = states(conn)
    filters = ["--state", "expired", "--class", f"{PREFIX}Mailer"]

    refused = run(db_url, "retry", *filters)
    assert refused.exit_code == 1
    assert "pass --yes" in one_line(refused.stderr) and "3 job(s)" in refused.stderr
    dry = run(db_url, "retry", *filters, "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.startswith("3 job(s) would be retried")
    assert states(conn) == before

    done = run(db_url, "retry", *filters, "--yes")
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "3 job(s) retried"
    after = states(conn)
    assert [after[i] for i in mailers] == ["ready"] * 3
    assert after[made.expired] == "expired"  # another class: untouched
    assert run(db_url, "retry", *filters, "--yes").stdout.strip().startswith("no job to retry")


def test_bulk_usage_errors(db_url: str) -> None:
    assert run(db_url, "retry").exit_code == 2  # neither ids nor filters
    assert run(db_url, "retry", "1", "--state", "expired").exit_code == 2
    assert run(db_url, "discard", "1", "--dry-run").exit_code == 2
    assert run(db_url, "--state", "expired", "show", "1").exit_code == 2


def test_a_bulk_discard_by_error_pattern_and_age(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState
) -> None:
    smtp = enqueue(conn, f"{PREFIX}Mailer", [1])
    fail_once(conn, smtp, "SMTPError: 421 try later", delay=3600)
    result = run(
        db_url,
        "discard",
        "--error-like",
        "smtp%",
        "--since",
        "1h",
        "--yes",
        "--reason",
        "mail relay down",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "1 job(s) discarded"
    assert states(conn)[smtp] == "expired"
    assert states(conn)[made.retrying] == "retrying"  # its error is a ValueError
    future = run(db_url, "discard", "--since", "2999-01-01T00:00:00+00:00", "--yes")
    assert future.stdout.strip().startswith("no job to discard")


def _on_a_terminal(db_url: str, args: list[str], answer: str) -> tuple[int, str]:
    """Run `conveyor ARGS` with a pty as its terminal; type ``answer`` once it
    asks. Its exit status and everything it wrote."""
    master, slave = pty.openpty()
    env = {**os.environ, "CONVEYOR_DATABASE_URL": db_url, "TERM": "dumb"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 60
    answered = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the process exited and closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not answered and b"[y/N]" in output:
                os.write(master, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        status = proc.wait(30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, output.decode(errors="replace")


def test_a_bulk_action_asks_on_a_terminal(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState
) -> None:
    mailers = _expired_mailers(conn, 2)
    args = ["jobs", "retry", "--state", "expired", "--class", f"{PREFIX}Mailer"]
    status, output = _on_a_terminal(db_url, args, "n")
    assert status == 0, output
    assert f"Retry 2 job(s) (state expired, class {PREFIX}Mailer)? [y/N]" in output
    assert "nothing changed" in output
    assert {states(conn)[i] for i in mailers} == {"expired"}

    status, output = _on_a_terminal(db_url, args, "y")
    assert status == 0, output
    assert "2 job(s) retried" in output
    assert {states(conn)[i] for i in mailers} == {"ready"}

    status, output = _on_a_terminal(
        db_url, [*args[:2], "--yes", "--state", "ready", "--class", f"{PREFIX}Mailer"], "n"
    )
    assert "[y/N]" not in output and "2 job(s) retried" in output, output


def test_as_a_process_json_parses_and_refusals_keep_their_exit_status(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState
) -> None:
    listed = conveyor_process("jobs", "--json", "--state", "retrying", database_url=db_url)
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)] == [made.retrying]
    shown = conveyor_process("jobs", "show", str(made.retrying), "--json", database_url=db_url)
    assert json.loads(shown.stdout)["last_error_message"] == "ValueError: first failure"
    running = conveyor_process("jobs", "discard", str(made.running), database_url=db_url)
    assert running.returncode == 4 and "55006" in one_line(running.stderr)
    bulk = conveyor_process("jobs", "discard", "--state", "ready", database_url=db_url)
    assert bulk.returncode == 1 and "pass --yes" in one_line(bulk.stderr)
    assert states(conn)[made.ready] == "ready"
    bulk = conveyor_process("jobs", "discard", "--state", "ready", "--yes", database_url=db_url)
    assert bulk.returncode == 0 and bulk.stdout.strip() == "1 job(s) discarded"
    assert states(conn)[made.ready] == "expired"


def test_a_role_without_conveyor_admin_is_refused_with_exit_6(
    db_url: str, conn: psycopg.Connection[Any], made: JobsInEveryState,
    login_role: Callable[..., Any],
) -> None:
    name, _ = login_role("conveyor_worker")
    as_worker = make_conninfo(db_url, user=name)
    result = run(as_worker, "retry", str(made.expired))
    assert result.exit_code == 6, result.output
    assert "permission denied" in one_line(result.stderr) and "42501" in result.stderr
    bulk = run(as_worker, "discard", "--state", "ready", "--yes")
    assert bulk.exit_code == 6 and "42501" in one_line(bulk.stderr)
    assert states(conn)[made.expired] == "expired" and states(conn)[made.ready] == "ready"
    admin_name, _ = login_role("conveyor_admin")
    assert run(make_conninfo(db_url, user=admin_name), "retry", str(made.expired)).exit_code == 0
