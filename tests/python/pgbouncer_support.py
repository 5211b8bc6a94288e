"""A real PgBouncer (the Debian package, installed by scripts/setup) in front
of the test server, for tests/python/test_pgbouncer.py.

One PgBouncer process per test, pointed at that test's cloned database, with
two aliases of it that differ only in the pool mode -- the two-pool setup
docs/operations.md recommends:

- ``tx``: ``pool_mode = transaction`` (what applications usually go through);
- ``session``: ``pool_mode = session`` (a server session per client).

It listens on a free 127.0.0.1 port (no unix socket), trusts every user in
its userlist (the test server trusts them too), and reaches the server the
way DATABASE_URL does: 127.0.0.1:5432, or the unix-socket directory of
scripts/with-db's throwaway cluster (``?host=/tmp/dir&port=N``).

PgBouncer refuses to run as root. As root it runs as the same system user as
scripts/with-db's throwaway cluster (``postgres``, else ``conveyor``), which
can also reach that cluster's private socket directory. It is started with
Popen's ``user``/``group`` rather than through runuser, so that the stop
signal reaches PgBouncer itself, not a wrapper.

A missing PgBouncer fails the test loudly: scripts/setup installs it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

#: The two [databases] aliases, by pool mode.
TRANSACTION_ALIAS = "tx"
SESSION_ALIAS = "session"


def pgbouncer_binary() -> str:
    """Path of the pgbouncer executable; fails the test if there is none."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(
            "pgbouncer is not installed: run scripts/setup (it installs the Debian "
            "package `pgbouncer`)",
            pytrace=False,
        )
    return found


def _run_as() -> pwd.struct_passwd | None:
    """The system user to run PgBouncer as when we are root (None otherwise):
    the one scripts/with-db runs the throwaway cluster as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "conveyor"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "conveyor",
        ],
        check=True,
    )
    return pwd.getpwnam("conveyor")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServerAddress:
    """Where the PostgreSQL server of a URL is, as PgBouncer needs it."""

    host: str  # a name, an address, or a unix-socket directory
    port: int
    user: str
    dbname: str

    @classmethod
    def from_url(cls, url: str) -> ServerAddress:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        host = query.get("host", [parts.hostname or ""])[0] or "/var/run/postgresql"
        port = int(query.get("port", [parts.port or 5432])[0])
        user = urllib.parse.unquote(parts.username or query.get("user", ["postgres"])[0])
        dbname = urllib.parse.unquote(parts.path.lstrip("/"))
        return cls(host=host, port=port, user=user, dbname=dbname)


class PgBouncer:
    """One running PgBouncer; see the module docstring."""

    def __init__(self, server_url: str, *, default_pool_size: int = 10) -> None:
        self.server = ServerAddress.from_url(server_url)
        self.default_pool_size = default_pool_size
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="conveyor-pgbouncer.", dir="/tmp"))
        self._process: subprocess.Popen[bytes] | None = None

    # --- URLs for clients ---------------------------------------------------------

    def url(self, alias: str) -> str:
        user = urllib.parse.quote(self.server.user)
        return f"postgresql://{user}@127.0.0.1:{self.port}/{alias}"

    @property
    def transaction_url(self) -> str:
        """The ``pool_mode = transaction`` alias of the test's database."""
        return self.url(TRANSACTION_ALIAS)

    @property
    def session_url(self) -> str:
        """The ``pool_mode = session`` alias of the test's database."""
        return self.url(SESSION_ALIAS)

    @property
    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- lifecycle ------------------------------------------------------------------

    def _write_config(self) -> Path:
        server = self.server
        target = f"host={server.host} port={server.port} dbname={server.dbname}"
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{TRANSACTION_ALIAS} = {target} pool_mode=transaction\n"
            f"{SESSION_ALIAS} = {target} pool_mode=session\n"
            "\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
            f"default_pool_size = {self.default_pool_size}\n"
            "max_client_conn = 200\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        # trust: no password is checked, but the user must be listed.
        (self.dir / "userlist.txt").write_text(f'"{server.user}" ""\n')
        return ini

    def start(self, timeout: float = 15.0) -> None:
        binary = pgbouncer_binary()
        owner = _run_as()
        for attempt in range(3):  # the free port may be taken before PgBouncer binds it
            self.port = _free_port()
            ini = self._write_config()
            if owner is not None:
                os.chown(self.dir, owner.pw_uid, owner.pw_gid)
                for path in self.dir.iterdir():
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            self._process = subprocess.Popen(
                [binary, str(ini)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                user=None if owner is None else owner.pw_uid,
                group=None if owner is None else owner.pw_gid,
                extra_groups=None if owner is None else [],
            )
            if self._wait_ready(timeout):
                return
            self.stop()
            if attempt == 2:
                break
        pytest.fail(f"PgBouncer did not start; its log:\n{self.log}", pytrace=False)

    def _wait_ready(self, timeout: float) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with psycopg.connect(self.transaction_url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # PgBouncer: immediate shutdown
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
