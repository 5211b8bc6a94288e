"""docs/tutorial.md runs as written: every code block, in order, against a fresh
database, so an edit that breaks the tutorial fails here.

How a block runs is said by the HTML comment just before it (invisible on the
rendered page):

- ``<!-- file: NAME -->``: the block is saved as NAME (the tutorial says "save
  this as NAME"); ``<!-- append: NAME -->`` adds it to NAME ("add this to").
- ``<!-- illustration -->``: not run (output samples, code that needs a
  service the tutorial cannot provide). Keep these few.
- no comment: ``sh`` blocks run line by line in a shell, ``conveyor worker``
  until it has worked every job then stopped by SIGTERM (it must exit 0);
  ``sql`` blocks run through psql. Any other block must carry a comment.

Two ``sh`` lines set up what the test already has: ``pip install ./client``
(the test runs in the venv scripts/setup made, with the package installed) and
``export DATABASE_URL=...`` (the test points it at its own database).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from db_support import scalar, wait_for

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
MAX_ILLUSTRATIONS = 3  # "every code block runs": raise this only for a good reason

# A ready job no worker has tried yet: what a worker started by the tutorial
# must have worked before it is stopped.
UNWORKED = (
    "SELECT count(*) FROM conveyor.jobs WHERE run_at <= now() AND error_count = 0"
    " AND finished_at IS NULL AND expired_at IS NULL"
)


# The worker of that process registered (`exec` keeps the pid; the worker
# records its os.getpid() as process_id).
REGISTERED = "SELECT count(*) > 0 FROM conveyor.lockers WHERE process_id = %s"


@dataclass
class Block:
    line: int  # 1-based line of the opening fence, for messages
    lang: str
    marker: str | None  # the HTML comment just before the block, without <!-- -->
    code: str


def tutorial_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)\s*", lines[i])
        if not fence:
            i += 1
            continue
        before = [line for line in lines[:i] if line.strip()]
        comment = re.fullmatch(r"<!--\s*(.*?)\s*-->", before[-1]) if before else None
        end = lines.index("```", i + 1)
        blocks.append(
            Block(
                i + 1,
                fence.group(1),
                comment.group(1) if comment else None,
                "\n".join(lines[i + 1 : end]) + "\n",
            )
        )
        i = end + 1
    return blocks


class Tutorial:
    """Runs the blocks in a working directory against one database."""

    def __init__(self, workdir: Path, db_url: str, conn: psycopg.Connection[Any]) -> None:
        self.workdir = workdir
        self.db_url = db_url
        self.conn = conn
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        self.env["DATABASE_URL"] = db_url
        # `conveyor`, `python` and `pytest` are the venv's, as after `pip install`.
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env['PATH']}"
        self.worker_logs: list[dict[str, Any]] = []

    def run(self, block: Block) -> None:
        marker = block.marker or ""
        if marker == "illustration":
            return
        if marker.startswith(("file:", "append:")):
            mode, name = (part.strip() for part in marker.split(":", 1))
            with (self.workdir / name).open("w" if mode == "file" else "a") as f:
                f.write(("\n\n" if mode == "append" else "") + block.code)
        elif block.lang == "sh":
            for line in block.code.splitlines():
                self.shell(line.strip())
        elif block.lang == "sql":
            self.check(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", self.db_url], block.code)
        else:
            pytest.fail(
                f"tutorial.md:{block.line}: a ```{block.lang} block needs a comment before it "
                "saying how it runs (<!-- file: NAME -->, <!-- append: NAME -->, "
                "<!-- illustration -->)",
                pytrace=False,
            )

    def shell(self, line: str) -> None:
        if not line or line.startswith("#"):
            return
        if line.startswith("pip install ./client"):
            return  # already installed in this venv
        if line.startswith("export DATABASE_URL="):
            return  # the test's own database, already in the environment
        if line.startswith("conveyor worker"):
            self.worker(line)
        else:
            self.check(["bash", "-c", line])

    def check(self, args: list[str], stdin: str | None = None) -> None:
        result = subprocess.run(
            args,
            input=stdin,
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, (
            f"{args[-1] if stdin is None else stdin} failed (exit {result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )

    def worker(self, line: str) -> None:
        """Run a worker until it has worked every ready job, then SIGTERM it."""
        process = subprocess.Popen(
            ["bash", "-c", f"exec {line}"],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(
                lambda: process.poll() is not None or scalar(self.conn, REGISTERED, (process.pid,)),
                30,
                f"`{line}` to register",
            )
            assert process.poll() is None, f"`{line}` exited early"
            wait_for(lambda: scalar(self.conn, UNWORKED) == 0, 30, f"`{line}` to work the jobs")
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, f"`{line}` exited {process.returncode}:\n{err}"
        self.worker_logs += [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def test_tutorial_blocks_parse_and_illustrations_are_few() -> None:
    blocks = tutorial_blocks(TUTORIAL.read_text())
    assert len(blocks) > 10
    assert sum(b.marker == "illustration" for b in blocks) <= MAX_ILLUSTRATIONS


def test_every_tutorial_block_runs_in_order_on_a_fresh_database(
    db_url: str, connect: Any, tmp_path: Path
) -> None:
    conn = connect()
    # A database as a new user has it: without the conveyor schema, so that
    # the tutorial's `conveyor migrate` installs it.
    conn.execute("DROP SCHEMA conveyor CASCADE")
    tutorial = Tutorial(tmp_path, db_url, conn)

    for block in tutorial_blocks(TUTORIAL.read_text()):
        tutorial.run(block)

    # What the tutorial says happened, happened.
    assert scalar(conn, "SELECT email FROM users WHERE id = 42") == "ada@example.com"
    assert float(scalar(conn, "SELECT price FROM widgets WHERE id = 7")) == 10.5
    assert scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0, "every job worked"
    welcome = [
        e
        for e in tutorial.worker_logs
        if e.get("event") == "job_worked" and e.get("job_class") == "SendWelcomeEmail"
    ]
    assert len(welcome) == 3, "three SendWelcomeEmail jobs: Python, conveyor enqueue, psql"
