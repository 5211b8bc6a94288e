"""Example jobs for `conveyor worker examples/jobs.py`.

Enqueue them from a shell:

    conveyor enqueue Hello '["world"]'
    conveyor enqueue RecordGreeting '["world"]'

or from Python, in your own transaction:

    with psycopg.connect(url) as conn:
        Hello.enqueue("world", conn=conn)
"""

from __future__ import annotations

import logging

import conveyor

log = logging.getLogger("conveyor.examples")


class Hello(conveyor.Job):
    """Logs a greeting. Nothing to write, so the worker destroys the job for
    us once run() returns."""

    def run(self, name: str = "world") -> None:
        log.info("hello, %s! (job %s)", name, self.id)

    def log_level(self, elapsed: float) -> int | None:
        # job_worked is DEBUG by default; show this one at INFO.
        return logging.INFO


class RecordGreeting(conveyor.Job):
    """Writes a row and destroys itself in the same transaction: the greeting
    is recorded exactly once, even if the worker dies at any moment (see
    "Writing Reliable Jobs" in the tutorial)."""

    queue = "default"
    priority = 50
    retry_interval = 5  # seconds between retries after an error
    maximum_retry_count = 3

    def run(self, name: str) -> None:
        with self.connection() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS greetings ("
                " id bigserial PRIMARY KEY, name text NOT NULL,"
                " greeted_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute("INSERT INTO greetings (name) VALUES (%s)", (name,))
            self.destroy(conn=conn)
