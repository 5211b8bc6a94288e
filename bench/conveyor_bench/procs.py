"""Worker processes started by the benchmark: spawn, watch, measure, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["WorkerFailed", "WorkerProcesses"]


class WorkerFailed(RuntimeError):
    """A worker process exited while the benchmark needed it."""


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class WorkerProcesses:
    """``count`` copies of one worker command, output to log files in ``logdir``."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str], count: int, logdir: Path, name: str
    ) -> None:
        self.argv = list(argv)
        self.env = env
        self.count = count
        self.logdir = logdir
        self.name = name
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started_at = 0.0

    def __enter__(self) -> WorkerProcesses:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.started_at = time.time()
        for i in range(self.count):
            log = open(self.logdir / f"{self.name}-{i}.log", "wb")  # noqa: SIM115
            try:
                proc = subprocess.Popen(
                    self.argv,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own process group (for killpg), but the benchmark's
                    # session. A new session per worker would also give each
                    # worker its own scheduling group where the kernel groups
                    # by session (Linux autogroup): the CPU would then be
                    # split evenly between PostgreSQL and every worker
                    # process, and four workers left the server a fifth of it.
                    process_group=0,
                )
            finally:
                log.close()
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check(self) -> None:
        """Raise :class:`WorkerFailed` (with the end of its log) if a worker exited."""
        for i, proc in enumerate(self.procs):
            code = proc.poll()
            if code is not None:
                raise WorkerFailed(
                    f"{self.name} worker {i} exited with status {code}:\n{self.log_tail(i)}"
                )

    def log_tail(self, i: int, lines: int = 15) -> str:
        path = self.logdir / f"{self.name}-{i}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def rss_kib(self) -> list[int | None]:
        return [rss_kib(p.pid) for p in self.procs]

    def stop(self, timeout: float = 15.0) -> list[int | None]:
        """SIGTERM every worker, SIGKILL those still there after ``timeout``;
        returns their exit statuses (None for one that had to be killed)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: list[int | None] = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                codes.append(None)
        self.procs = []
        return codes
