"""Helpers for the tests that run `conveyor worker` subprocesses (poison jobs,
chaos, the CLI), and a PostgreSQL cluster of the test's own that it may
restart.

Workers run as real subprocesses (``python -m conveyor worker``) with the job
modules of tests/python/jobs_for_tests importable. Each gets its own
``application_name`` so that its sessions can be told apart in
pg_stat_activity (``<name>`` for all of them: the locker and the job pool).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import psycopg
from db_support import wait_for
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INSTALL_SQL = ROOT / "sql" / "conveyor.sql"


def with_app_name(url: str, name: str) -> str:
    """The connection string with an application_name (a libpq conninfo)."""
    return make_conninfo(url, application_name=name)


class WorkerProcess:
    """One ``conveyor worker`` subprocess; stdout (JSON log lines) and stderr
    go to files under ``log_dir``. With ``database_url`` None, no
    ``--database-url`` is passed: the worker reads ``env``."""

    def __init__(
        self,
        database_url: str | None,
        modules: Sequence[str],
        *,
        name: str,
        log_dir: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        connection_url: str | None = None,
    ) -> None:
        self.name = name
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        command = [
            sys.executable,
            "-m",
            "conveyor",
            "worker",
            *(["--database-url", with_app_name(database_url, name)] if database_url else []),
            *(["--connection-url", with_app_name(connection_url, name)] if connection_url else []),
            *args,
            *modules,
        ]
        full_env = dict(os.environ)
        full_env.pop("DATABASE_URL", None)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        full_env.update(env or {})
        self._stdout = open(self.stdout_path, "wb")  # noqa: SIM115 - closed in wait()
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(
            command, stdout=self._stdout, stderr=self._stderr, env=full_env, cwd=HERE
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        finally:
            if self.popen.returncode is not None:
                self._close_files()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; SIGKILL if it does not exit in time."""
        if self.alive():
            self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> int:
        self.signal(signal.SIGKILL)
        return self.wait(30)

    def _close_files(self) -> None:
        for f in (self._stdout, self._stderr):
            if not f.closed:
                f.close()

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines are kept as
        ``{"event": "non-json", "line": ...}``)."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.stdout_path.read_text(errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"event": "non-json", "line": line})
        return out

    def stderr(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.stderr_path.read_text(errors="replace")
        return ""

    def wait_connected(self, observer: psycopg.Connection[Any], timeout: float = 20.0) -> int:
        """Wait until this worker's locker is registered; returns its backend pid."""

        def registered() -> int | None:
            if not self.alive():
                raise AssertionError(
                    f"worker {self.name} exited with {self.popen.returncode}:\n{self.stderr()}"
                )
            row = observer.execute(
                "SELECT w.pid FROM conveyor.lockers AS w"
                " JOIN pg_stat_activity AS a ON a.pid = w.pid"
                " WHERE w.process_id = %s",
                [self.pid],
            ).fetchone()
            return row[0] if row else None

        return int(wait_for(registered, what=f"worker {self.name} to register", timeout=timeout))

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.name} pid={self.pid}>"


@contextlib.contextmanager
def workers_cleanup() -> Iterator[list[WorkerProcess]]:
    """A list to put WorkerProcess objects in; all are killed and reaped at the end."""
    made: list[WorkerProcess] = []
    try:
        yield made
    finally:
        reap(made)


def reap(workers: list[WorkerProcess]) -> None:
    """Kill the workers still alive (resuming any a test paused) and collect
    the exit status of the others."""
    for worker in workers:
        if worker.alive():
            with contextlib.suppress(Exception):
                worker.signal(signal.SIGCONT)
                worker.kill()
        else:
            with contextlib.suppress(Exception):
                worker.wait(5)


def critical_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log lines that say the worker itself broke (not a job)."""
    return [
        e
        for e in events
        if e.get("level") == "critical"
        or e.get("event") in ("worker_crashed", "locker_crashed", "locker_failed", "non-json")
    ]


# -- a PostgreSQL cluster of the test's own ------------------------------------------------


def _pg_bin() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("no initdb found (install PostgreSQL's server package)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """initdb into a temp folder, start on a free port, restart, stop.

    As root, initdb and postgres run as the ``postgres`` system user (they
    refuse to run as root); the folder is made theirs.
    """

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="conveyor-chaos-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.log = self.dir / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            pw = pwd.getpwnam(self._user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "max_connections": "200",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
            "shared_buffers": "128MB",
            "log_min_messages": "warning",
            **(settings or {}),
        }
        with open(self.data / "postgresql.conf", "a") as f:
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")
        self.start()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def restart(self, down: float = 0.0) -> None:
        """pg_ctl restart -m fast: every session is terminated, then the
        server starts again on the same port -- after ``down`` seconds, if
        given (stop, wait, start: an outage of that length)."""
        if down > 0:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            time.sleep(down)
            self.start()
            return
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "restart",
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        result = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(INSTALL_SQL), "--dbname", url],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"installing {INSTALL_SQL} failed:\n{result.stderr}")
        return url


class WorkerSubprocess:
    """A `python -m conveyor worker` process, its output in a log file."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path, handle: IO[bytes]) -> None:
        self.popen = popen
        self.log = log
        self.handle = handle

    def output(self) -> str:
        return self.log.read_text()
