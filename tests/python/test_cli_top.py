"""`conveyor top` drawn in a real terminal (a detached tmux session of fixed
size, read with capture-pane) and checked against the database; its JSON
form; `conveyor stats --watch` as a process and on a terminal."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from db_support import enqueue, enqueue_many, scalar, wait_for
from jobs_support import fail_once, make_jobs_in_every_state

from conveyor.cli import cli

BLOCKING_JOBS = textwrap.dedent(
    """
    import time
    import conveyor

    class TopBlocker(conveyor.Job):
        queue = "gamma"

        def run(self):
            time.sleep(300)

    class TopQuick(conveyor.Job):
        queue = "delta"

        def run(self, n):
            pass
    """
)

#: The counts `conveyor top` shows, computed here from jobs_view alone.
QUEUE_COUNTS = """
SELECT queue, count(*) FILTER (WHERE state = 'ready'), count(*) FILTER (WHERE state = 'scheduled'),
       count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE state = 'retrying'),
       count(*) FILTER (WHERE error_count > 0)
  FROM conveyor.jobs_view WHERE state NOT IN ('finished', 'expired')
 GROUP BY queue ORDER BY queue
"""


class Terminal:
    """A detached tmux session on a private server socket, of a fixed size."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.socket = name
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self._tmux("new-session", "-d", "-s", "t", "-x", "150", "-y", "50",
                   f"env {exports} {shlex.join(command)}; sleep 600")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, check=True, timeout=30).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def screen_when(self, shows: Callable[[str], Any], timeout: float = 60) -> str:
        """The screen, once ``shows(screen)`` is true of it."""
        found: list[str] = []

        def check() -> bool:
            found[:] = [self.screen()]
            return bool(shows(found[0]))

        wait_for(check, timeout=timeout, what=f"the terminal to show what {shows} wants",
                 interval=0.2)
        return found[0]

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       check=False, timeout=30)


@pytest.fixture
def terminal(db_url: str) -> Iterator[Callable[..., Terminal]]:
    """Factory: ``terminal("top", ...)`` runs ``python -m conveyor ARGS`` in a
    150x50 tmux terminal against the test's database."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (scripts/setup installs it)")
    made: list[Terminal] = []

    def _open(*args: str) -> Terminal:
        env = {"CONVEYOR_DATABASE_URL": db_url, "TERM": "xterm-256color",
               "PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
        made.append(Terminal(f"conveyor-test-{os.getpid()}-{len(made)}",
                             [sys.executable, "-m", "conveyor", *args], env))
        return made[-1]

    yield _open
    for term in made:
        term.close()


def cells(screen: str, first: str) -> list[str] | None:
    """The cells of the table row whose first cell is ``first``."""
    for line in screen.splitlines():
        parts = [p.strip() for p in re.split(r"[│┃|]", line)]
        parts = [p for p in parts if p != ""]
        if parts and parts[0] == first:
            return parts
    return None


def seconds(text: str) -> float:
    """The seconds of top's age format (4.2s, 5m07s, 2h03m)."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", text)
    assert match, text
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s


def test_top_in_a_terminal_shows_what_the_database_holds(
    db_url: str, conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]],
    spawn_worker: Callable[..., Any], terminal: Callable[..., Terminal],
) -> None:
    make_jobs_in_every_state(conn, connect(), prefix="TopAlpha", queue="alpha")
    enqueue_many(conn, 3, job_class="TopAlphaMore", queue="alpha")
    enqueue_many(conn, 2, job_class="TopBeta", queue="beta")
    conn.execute("SELECT conveyor.enqueue('TopBeta', run_at => now() + interval '1 hour',"
                 " queue => 'beta')")
    blocker = enqueue(conn, "TopBlocker", queue="gamma")
    worker = spawn_worker(BLOCKING_JOBS, "-q", "gamma", "-w", "2")
    wait_for(lambda: scalar(conn, "SELECT state FROM conveyor.jobs_view WHERE id = %s",
                            [blocker]) == "running", timeout=60, what="the blocker to run")

    # The test session's row counters reach pg_stat now, not when it next idles.
    conn.execute("SELECT pg_stat_force_next_flush()")
    wait_for(lambda: scalar(conn, "SELECT n_tup_ins FROM pg_stat_user_tables"
                            " WHERE relid = 'conveyor.jobs'::regclass")
             == scalar(conn, "SELECT count(*) FROM conveyor.jobs"), what="counters flushed")
    term = terminal("top")
    screen = term.screen_when(lambda s: "workers alive: 1" in s and cells(s, "gamma"))
    expected = conn.execute(QUEUE_COUNTS).fetchall()
    assert [q for q, *_ in expected] == ["alpha", "beta", "gamma"]
    for queue, ready, scheduled, running, retrying, errored in expected:
        row = cells(screen, queue)
        assert row is not None, screen
        assert [int(v) for v in row[1:7]] == [ready, scheduled, running, retrying, 0, errored], screen
    # alpha: ready, scheduled, running, retrying, paused, errored (the retrying one)
    assert cells(screen, "alpha")[1:7] == ["4", "1", "1", "1", "0", "1"]  # type: ignore[index]
    total = cells(screen, "total")
    assert total is not None and int(total[1]) == sum(r[1] for r in expected)

    oldest = scalar(conn, "SELECT extract(epoch FROM now() - min(run_at))::float8"
                    " FROM conveyor.jobs_view WHERE queue = 'alpha' AND state = 'ready'")
    shown = seconds(cells(screen, "alpha")[7])  # type: ignore[index]
    assert abs(shown - oldest) < 15, (shown, oldest)

    host, pid, threads, held, buffer = cells(screen, socket.gethostname())[:5]  # type: ignore[index]
    assert (int(pid), threads, held) == (worker.popen.pid, "2", "1"), screen
    # The buffer as the worker reported it (report_locker): waiting / maximum.
    size, maximum = scalar(conn, "SELECT ARRAY[buffer_size, maximum_buffer_size]"
                           " FROM conveyor.lockers")
    assert buffer == f"{size}/{maximum}" and maximum >= 2, screen

    # Enqueued per second: 40 jobs show as a rate over the 5 s window, once
    # top has sampled for longer than the window (so the rate is 40 / 5..6 s).
    term.screen_when(lambda s: "enqueued 0.0/s" in s)
    time.sleep(7)
    with psycopg.connect(db_url, autocommit=True) as other:  # its counters flush at exit
        enqueue_many(other, 40, job_class="TopEpsilon", queue="epsilon")
    rates: list[float] = []

    def rate_seen() -> bool:
        match = re.search(r"enqueued ([\d.]+)/s", term.screen())
        rates.append(float(match.group(1)) if match else 0.0)
        return len(rates) > 1 and rates[-1] < rates[-2]  # past its peak
    wait_for(rate_seen, timeout=60, what="the enqueue rate to rise and fall", interval=0.3)
    assert 40 / 9 <= max(rates) <= 40 / 5 + 0.1, rates

    term.keys("C-c")
    wait_for(lambda: "workers alive" not in term.screen(), timeout=30, what="top to quit")


def test_top_json_reports_the_jobs_worked_per_second(
    db_url: str, conn: psycopg.Connection[Any], spawn_worker: Callable[..., Any],
) -> None:
    env = {**os.environ, "CONVEYOR_DATABASE_URL": db_url}
    top = subprocess.Popen([sys.executable, "-m", "conveyor", "top", "--json", "--interval",
                            "0.5"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = json.loads(top.stdout.readline())  # type: ignore[union-attr]
        assert first["queues"] == [] and first["workers"] == []
        enqueue_many(conn, 200, job_class="TopQuick", queue="delta")
        spawn_worker(BLOCKING_JOBS, "-q", "delta")
        worked: list[float] = []
        for _ in range(200):
            line = json.loads(top.stdout.readline())  # type: ignore[union-attr]
            if line["worked_per_second"]:
                worked.append(line["worked_per_second"])
            if worked and not line["queues"]:
                break
        assert worked and max(worked) > 0
        assert scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0
    finally:
        top.send_signal(signal.SIGINT)
        assert top.wait(30) == 0
        top.stdout.close()  # type: ignore[union-attr]


def test_top_once_prints_one_view_off_a_terminal(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    enqueue_many(conn, 3, job_class="TopOnce", queue="once")
    # A job that failed and is ready again is ready and errored; a paused
    # queue's jobs are paused.
    fail_once(conn, enqueue(conn, "TopOnce", queue="once"), "ValueError: once", delay=0)
    enqueue_many(conn, 2, job_class="TopOnce", queue="once-paused")
    conn.execute("SELECT conveyor.pause(queue => 'once-paused')")
    result = CliRunner().invoke(cli, ["top", "--once", "--interval", "0.1",
                                      "--database-url", db_url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # ready, scheduled, running, retrying, paused, errored
    assert cells(result.stdout, "once")[1:7] == ["4", "0", "0", "0", "0", "1"]  # type: ignore[index]
    assert cells(result.stdout, "once-paused") is not None, result.stdout
    assert cells(result.stdout, "once-paused")[1:7] == ["0", "0", "0", "0", "2", "0"]  # type: ignore[index]
    assert "workers alive: 0" in result.stdout


def test_stats_watch_prints_a_json_line_per_refresh_until_ctrl_c(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    enqueue(conn, "StatsWatch", queue="watched")
    env = {**os.environ, "CONVEYOR_DATABASE_URL": db_url}
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", "stats", "--queues", "--watch",
                             "--json", "--interval", "0.2"], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        first = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert [(q["queue"], q["ready"]) for q in first] == [("watched", 1)]
        enqueue(conn, "StatsWatch", queue="watched")
        for _ in range(100):
            line = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            if line[0]["ready"] == 2:
                break
        else:
            pytest.fail("--watch never showed the second job")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        proc.stdout.close()  # type: ignore[union-attr]


def test_stats_watch_redraws_in_place_on_a_terminal(
    conn: psycopg.Connection[Any], terminal: Callable[..., Terminal]
) -> None:
    enqueue(conn, "StatsWatchTerm")
    term = terminal("stats", "--watch", "--interval", "0.3")
    wait_for(lambda: "StatsWatchTerm" in term.screen(), timeout=30, what="stats to draw")
    enqueue(conn, "StatsWatchTermTwo")
    screen = term.screen_when(lambda s: "StatsWatchTermTwo" in s)
    assert screen.count("job_class") == 1, screen  # redrawn, not appended
