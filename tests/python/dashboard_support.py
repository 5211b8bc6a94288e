"""Helpers of the dashboard tests: an in-process client (Starlette's
TestClient, as a local client), the CSRF dance of a real browser, a
``conveyor dashboard`` subprocess on a free port, and sample jobs."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from conveyor.dashboard import create_app
from starlette.testclient import TestClient

LOCAL = ("127.0.0.1", 40000)


@contextmanager
def dashboard_client(
    db_url: str, *, client: tuple[str, int] = LOCAL, root_path: str = "", **options: Any
) -> Iterator[TestClient]:
    """A TestClient of create_app(db_url, **options), as a browser on this
    machine (client) would be; the app's pool is closed on exit."""
    app = create_app(db_url, **options)
    with TestClient(
        app, client=client, root_path=root_path, follow_redirects=False
    ) as tc:
        yield tc


def csrf_of(page_html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', page_html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def post_action(
    tc: TestClient,
    path: str,
    fields: dict[str, Any] | Sequence[tuple[str, str]],
    page: str = "/jobs",
) -> Any:
    """POST a form as the page's own form would (the cookie set by GET page,
    its CSRF token), confirming: returns the response of the confirmed POST."""
    token = csrf_of(tc.get(page).text)
    items = list(fields.items()) if isinstance(fields, dict) else list(fields)
    form = as_form([*items, ("csrf_token", token)])
    first = tc.post(path, data=form)
    assert first.status_code == 200, first.text
    assert "confirmed" in first.text, "no confirmation page"
    return tc.post(path, data={**form, "confirmed": "yes"})


def as_form(items: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Form fields, a name given several times (ids) sent several times."""
    form: dict[str, list[str]] = {}
    for name, value in items:
        form.setdefault(name, []).append(value)
    return form


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def dashboard_server(
    db_url: str,
    *args: str,
    host: str = "127.0.0.1",
    log: Path,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """``python -m conveyor dashboard`` as a subprocess; yields its base URL
    once it answers (any HTTP status), and stops it (SIGTERM) on exit."""
    port = free_port()
    handle = log.open("wb")
    command = [sys.executable, "-m", "conveyor", "dashboard", "--database-url", db_url]
    proc = subprocess.Popen(
        [*command, "--host", host, "--port", str(port), *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the dashboard exited: {log.read_text()}")
            try:
                urllib.request.urlopen(
                    base + "/static/dashboard.css", timeout=5
                ).close()
                break
            except urllib.error.HTTPError as error:
                error.close()
                break  # it answers (401/403 when auth is on)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"the dashboard never answered: {log.read_text()}"
                    )
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        handle.close()


def job_row(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any] | None:
    """The job's jobs_view row (None: no such job)."""
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "SELECT * FROM conveyor.jobs_view WHERE id = %s", (job_id,)
        ).fetchone()


def enqueue(
    conn: psycopg.Connection[Any], job_class: str, *args: Any, **options: Any
) -> int:
    """conveyor.enqueue through SQL, returning the id."""
    from psycopg.types.json import Jsonb

    names = "".join(f", {k} => %({k})s" for k in options)
    row = conn.execute(
        f"SELECT (conveyor.enqueue(%(job_class)s, %(args)s{names})).id",
        {"job_class": job_class, "args": Jsonb(list(args)), **options},
    ).fetchone()
    assert row is not None
    return int(row[0])


def expire_with_error(conn: psycopg.Connection[Any], job_id: int, message: str) -> None:
    """Make the job fail for good as a worker would: lock it, retry_job
    with expire => true (which records the error), release."""
    conn.execute(
        "SELECT conveyor.retry_job(%s, %s, %s, expire => true)",
        (job_id, message, f"Traceback (most recent call last):\n  ...\n{message}"),
    )


# An hour of history for the overview's screenshot: kept finished jobs of a
# few classes in each minute, and errors recorded on some retrying jobs.
SEED_DEMO_HOUR = """
INSERT INTO conveyor.jobs (job_class, queue, args, run_at, finished_at, created_at)
SELECT (ARRAY['SendWelcomeEmail', 'ResizeImage', 'SyncInvoice'])[1 + i % 3],
       (ARRAY['mail', 'media', 'billing'])[1 + i % 3], jsonb_build_array(i),
       m + (i % 50) * interval '1 second', m + (i % 50) * interval '1 second', m
  FROM generate_series(0, 59) AS k,
       LATERAL (SELECT date_trunc('minute', now()) - k * interval '1 minute' AS m) AS t,
       LATERAL generate_series(1, 12 + (k * 7) % 11 + (CASE WHEN k BETWEEN 20 AND 26 THEN 15 ELSE 0 END)) AS i;
INSERT INTO conveyor.jobs (job_class, queue, args, run_at, error_count, last_error_message,
                           last_error_backtrace, errors)
SELECT 'SyncInvoice', 'billing', jsonb_build_array(1000 + k), now() + interval '4 minutes', 1,
       'TimeoutError: the invoicing API did not answer in 30 s', 'Traceback ...',
       jsonb_build_array(jsonb_build_object('attempt', 1, 'at', now() - k * interval '1 minute',
         'message', 'TimeoutError: the invoicing API did not answer in 30 s',
         'backtrace', 'Traceback ...', 'worker', 'app-1:4242'))
  FROM generate_series(0, 59) AS k WHERE k % 4 = 0 OR k BETWEEN 21 AND 24;
"""
