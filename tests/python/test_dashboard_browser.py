"""The dashboard in a real browser: Debian's Chromium (/usr/bin/chromium)
driven by Playwright's Python package, against ``conveyor dashboard``
subprocesses, a real database and a real worker. No browser is downloaded.

Screenshots of every page go to a folder printed at the end of the run
(CONVEYOR_SCREENSHOTS names it; docs/img/dashboard-*.png are copies)."""

from __future__ import annotations

import os
import re
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dashboard_support import SEED_DEMO_HOUR, dashboard_server, enqueue, job_row
from db_support import scalar, wait_for
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-test-token-0123456789"
XSS = "<script>window.__xss = 1</script>"

FLAKY_JOBS = textwrap.dedent(
    """
    from pathlib import Path

    from conveyor import Job


    class DashBrowserFlaky(Job):
        queue = "dash"
        preserve = True  # kept when finished, so the page can show it

        def run(self, marker):
            if not Path(marker).exists():
                raise RuntimeError(f"DashBrowserFlaky: {marker} is missing")
            return {"marker": marker, "ok": True}
    """
)


# Module scope, not session: Playwright's sync API keeps an asyncio loop
# running on this thread while it is started, and a later test calling
# asyncio.run() would find it.
@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    # As root, Chromium runs only without its sandbox.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    chromium = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=args)
    yield chromium
    chromium.close()


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest) -> Path:
    """The folder of this run's screenshots, printed when the run ends."""
    folder = Path(
        os.environ.get("CONVEYOR_SCREENSHOTS")
        or tempfile.mkdtemp(prefix="conveyor-dashboard-")
    )
    folder.mkdir(parents=True, exist_ok=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def say_where() -> None:
        shots = sorted(p.name for p in folder.glob("*.png"))
        line = f"dashboard screenshots ({len(shots)}) in {folder}: {', '.join(shots)}"
        if reporter is not None:
            reporter.write_sep("-", line)
        else:
            print(line)

    # After the run's summary, where no progress line can hide it.
    request.config.add_cleanup(say_where)
    return folder


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    dialogs: list[str] = []
    tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield tab
    context.close()
    assert not dialogs, f"the page opened dialogs: {dialogs}"


@pytest.fixture
def dashboard(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A ``conveyor dashboard`` on loopback without auth, refreshing every second."""
    with dashboard_server(
        db_url, "--refresh", "1", log=tmp_path / "dashboard.log"
    ) as base:
        yield base


def shoot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"dashboard-{name}.png"), full_page=True)


def test_filter_open_a_failed_job_retry_it_and_watch_it_run(
    page: Page,
    dashboard: str,
    conn: psycopg.Connection[Any],
    spawn_worker: Callable[..., Any],
    tmp_path: Path,
    screenshots: Path,
) -> None:
    marker = tmp_path / "marker"
    # Company for the failed job: other classes, queues and states.
    for i in range(3):
        enqueue(conn, "DashBrowserMail", f"user-{i}@example.com", queue="mail")
    enqueue(conn, "DashBrowserReport", "nightly", queue="reports", run_at=_later(3))
    failing = enqueue(
        conn, "DashBrowserFlaky", str(marker), queue="dash", maximum_retry_count=0
    )
    worker = spawn_worker(FLAKY_JOBS, "-q", "dash", "-w", "1", "-i", "0.2")
    wait_for(
        lambda: (job_row(conn, failing) or {}).get("state") == "expired",
        60,
        f"job {failing} to fail and expire ({worker.output() if hasattr(worker, 'output') else ''})",
    )

    # Filter the jobs list down to the failed one.
    page.goto(dashboard + "/jobs")
    page.get_by_label("Job class").fill("DashBrowserFlaky")
    page.get_by_label("State").select_option("expired")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/jobs?*job_class=DashBrowserFlaky*")
    rows = page.locator("tr[data-job-id]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("expired")
    shoot(page, screenshots, "jobs")

    # Open it: its error and backtrace.
    rows.first.get_by_role("link", name=str(failing)).click()
    page.wait_for_url(f"**/jobs/{failing}")
    backtrace = page.locator("pre.backtrace").first
    expect(backtrace).to_contain_text("Traceback (most recent call last)")
    expect(backtrace).to_contain_text("RuntimeError: DashBrowserFlaky:")
    shoot(page, screenshots, "job-failed")

    # Retry it, confirming, and watch the worker run it to the end.
    marker.write_text("present")
    page.get_by_role("button", name="Retry now").click()
    expect(page.locator("h1")).to_contain_text(f"Retry now: job {failing}?")
    shoot(page, screenshots, "confirm")
    page.locator(".confirm").get_by_role("button", name="Retry now").click()
    page.wait_for_url(f"**/jobs/{failing}?notice=*")
    expect(page.locator(".notice")).to_contain_text("1 job(s) done")
    # No reload from here: the live refresh brings the new state (the job
    # class preserves its finished jobs, with what run returned).
    try:
        expect(page.locator("h1 .state")).to_have_text("finished", timeout=60_000)
    except AssertionError as error:
        # Seen once in a full run (the job stayed ready for 60 s): keep what
        # the worker and the database said, to find out why if it recurs.
        raise AssertionError(
            f"{error}\njob row: {job_row(conn, failing)}\nworker output:\n{worker.output()}"
        ) from None
    expect(page.locator("#job-result")).to_contain_text('"ok": true')
    row = job_row(conn, failing)
    assert row is not None and row["state"] == "finished"
    assert row["result"] == {"marker": str(marker), "ok": True}
    assert [e["attempt"] for e in row["errors"]] == [
        1
    ]  # the failure stays in the history

    # The other pages, for the record (with an hour of history to chart).
    conn.execute(SEED_DEMO_HOUR)
    page.goto(dashboard + "/")
    expect(page.locator("svg.chart rect.worked").first).to_be_visible()
    expect(page.locator("h1")).to_have_text("Overview")
    shoot(page, screenshots, "overview")
    page.goto(dashboard + "/processes")
    expect(page.locator("main table tbody tr")).to_have_count(1)
    expect(page.locator("main table")).to_contain_text("dash")
    # The buffer the worker reported (report_locker): waiting / maximum.
    expect(page.locator("main table td.buffer")).to_have_text(re.compile(r"^\d+ / \d+$"))
    shoot(page, screenshots, "processes")


def test_enqueue_a_cron_job_now(
    page: Page, dashboard: str, conn: psycopg.Connection[Any], screenshots: Path
) -> None:
    conn.execute(
        "SELECT conveyor.set_schedule('nightly-report', '0 3 * * *', 'DashBrowserReport', "
        "'[\"full\"]', queue => 'reports')"
    )
    conn.execute(
        "SELECT conveyor.set_schedule('hourly-cleanup', '@hourly', 'DashBrowserCleanup', "
        "enabled => false)"
    )
    page.goto(dashboard + "/schedules")
    shoot(page, screenshots, "schedules")
    row = page.locator("tr[data-schedule=nightly-report]")
    row.get_by_role("button", name="Enqueue now").click()
    page.locator(".confirm").get_by_role("button", name="Enqueue now").click()
    expect(page.locator(".notice")).to_contain_text(
        "Schedule nightly-report: enqueued job"
    )
    job = conn.execute("SELECT job_class, args, data FROM conveyor.jobs").fetchone()
    assert job == (
        "DashBrowserReport",
        ["full"],
        {"schedule": {"name": "nightly-report", "at": None}},
    )
    # Disable it from the page too.
    page.locator("tr[data-schedule=nightly-report]").get_by_role(
        "button", name="Disable"
    ).click()
    page.locator(".confirm").get_by_role("button", name="Disable").click()
    expect(page.locator("tr[data-schedule=nightly-report]")).to_contain_text("disabled")
    assert (
        scalar(
            conn, "SELECT enabled FROM conveyor.schedules WHERE name = 'nightly-report'"
        )
        is False
    )


def test_pause_a_queue(
    page: Page,
    dashboard: str,
    conn: psycopg.Connection[Any],
    spawn_worker: Callable[..., Any],
    tmp_path: Path,
    screenshots: Path,
) -> None:
    marker = tmp_path / "marker"
    marker.write_text("present")
    enqueue(conn, "DashBrowserMail", "a@example.com", queue="mail")
    spawn_worker(FLAKY_JOBS, "-q", "dash", "-w", "1", "-i", "0.2")
    page.goto(dashboard + "/queues")
    page.locator("tr[data-queue=mail]").get_by_role("button", name="Pause").click()
    page.locator(".confirm").get_by_role("button", name="Pause").click()
    expect(page.locator(".notice")).to_contain_text("Pause queue 'mail': paused.")
    expect(page.locator("tr[data-queue=mail]")).to_contain_text("paused")
    assert scalar(conn, "SELECT queue FROM conveyor.pauses") == "mail"
    # The worker skips the paused queue's jobs and works the others.
    # Paused before the enqueue: the other way round, the worker (LISTENing
    # on 'dash') may lock the job between the two statements.
    conn.execute("SELECT conveyor.pause(queue => 'dash')")
    paused = enqueue(conn, "DashBrowserFlaky", str(marker), queue="dash")
    page.reload()
    shoot(page, screenshots, "queues")
    page.wait_for_timeout(2000)
    row = job_row(conn, paused)
    assert row is not None and row["state"] not in ("running", "finished"), row
    page.locator("tr[data-queue=dash]").get_by_role("button", name="Resume").click()
    page.locator(".confirm").get_by_role("button", name="Resume").click()
    expect(page.locator(".notice")).to_contain_text("resumed")
    wait_for(
        lambda: (job_row(conn, paused) or {}).get("state") == "finished",
        60,
        "resumed job",
    )


def test_a_script_in_args_renders_as_text(
    page: Page, dashboard: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = enqueue(
        conn, "DashBrowserXss", XSS, {"html": "<img src=x onerror=alert(1)>"}
    )
    for path in ("/jobs", f"/jobs/{job_id}", "/jobs?search=script"):
        page.goto(dashboard + path)
        assert page.evaluate("() => window.__xss") is None, path
    expect(page.locator("#job-args")).to_have_count(0)  # the last page is the list
    page.goto(dashboard + f"/jobs/{job_id}")
    expect(page.locator("#job-args")).to_contain_text(XSS)
    expect(page.locator("#job-args")).to_contain_text("<img src=x onerror=alert(1)>")
    assert page.locator("main script, main img").count() == 0


def _batch(
    conn: psycopg.Connection[Any], description: str, jobs: int, **callbacks: Any
) -> tuple[int, list[int]]:
    import json

    batch_id = scalar(
        conn,
        "SELECT conveyor.create_batch(%s, on_finish => %s, on_discard => %s)",
        (
            description,
            json.dumps(callbacks.get("on_finish"))
            if callbacks.get("on_finish")
            else None,
            json.dumps(callbacks.get("on_discard"))
            if callbacks.get("on_discard")
            else None,
        ),
    )
    ids = [
        enqueue(
            conn,
            "DashBrowserRender",
            i,
            queue="render",
            batch_id=batch_id,
            labels=["tenant:acme", "report"],
        )
        for i in range(jobs)
    ]
    conn.execute("SELECT conveyor.close_batch(%s)", (batch_id,))
    return int(batch_id), ids


def test_batches_page_shows_progress_live_and_a_script_as_text(
    page: Page, dashboard: str, conn: psycopg.Connection[Any], screenshots: Path
) -> None:
    done, done_ids = _batch(
        conn,
        "Invoices for November",
        3,
        on_finish={"job_class": "DashBrowserInvoicesSent"},
    )
    for job_id in done_ids:
        conn.execute("SELECT conveyor.destroy_job(%s)", (job_id,))
    batch_id, ids = _batch(
        conn,
        f"Monthly report {XSS}",
        8,
        on_finish={"job_class": "DashBrowserReportReady"},
        on_discard={"job_class": "DashBrowserAlertOps"},
    )
    for job_id in ids[:3]:
        conn.execute("SELECT conveyor.destroy_job(%s)", (job_id,))
    conn.execute(
        "SELECT conveyor.retry_job(%s, 'TimeoutError: renderer busy', 'Traceback ...', 600)",
        (ids[3],),
    )
    page.goto(dashboard + "/")
    page.get_by_role("link", name="Batches").click()
    expect(page).to_have_url(dashboard + "/batches")
    row = page.locator(f"tr[data-batch-id='{batch_id}']")
    expect(row.locator("[data-progress]")).to_have_text("3 / 8 (37%)")
    expect(row.locator(".description")).to_have_text(f"Monthly report {XSS}")
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("main script").count() == 0
    expect(page.locator(f"tr[data-batch-id='{done}']")).to_contain_text("finished")
    expect(page.locator(f"tr[data-batch-id='{done}'] .callbacks")).to_contain_text(
        "fired"
    )
    shoot(page, screenshots, "batches")
    # The page refreshes live: two more jobs resolve, and the bar follows.
    for job_id in ids[4:6]:
        conn.execute("SELECT conveyor.destroy_job(%s)", (job_id,))
    expect(row.locator("[data-progress]")).to_have_text("5 / 8 (62%)", timeout=30_000)
    # The batch's detail: its counts and its jobs; then the jobs page on it.
    row.get_by_role("link", name=str(batch_id)).click()
    expect(page.locator("dd[data-count=retrying]")).to_have_text("1")
    expect(page.locator("dd[data-count=destroyed]")).to_have_text("5")
    expect(page.locator("tbody tr[data-job-id]")).to_have_count(3)
    assert page.evaluate("() => window.__xss") is None
    page.get_by_role("link", name="(on the jobs page, to act on them)").click()
    expect(page.locator("tbody tr[data-job-id]")).to_have_count(3)
    # The label filter, typed in the form like a person would.
    enqueue(conn, "DashBrowserUnlabelled", 1, queue="render")
    page.goto(dashboard + "/jobs")
    # The batch's 3 rows left, the first batch's on_finish job, the unlabelled one.
    expect(page.locator("tbody tr[data-job-id]")).to_have_count(5)
    page.get_by_label("Label").fill("tenant:acme, report")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr[data-job-id]")).to_have_count(3)
    expect(page.locator("tbody")).not_to_contain_text("DashBrowserUnlabelled")
    expect(page.locator("tbody tr[data-job-id]").first).to_contain_text("tenant:acme")


def test_a_form_from_another_site_is_refused(
    page: Page, dashboard: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = enqueue(conn, "DashBrowserCsrf", 1)
    page.goto(dashboard + "/jobs")  # the browser now has the dashboard's cookie
    evil = f"""<form method="post" action="{dashboard}/jobs/actions">
      <input name="action" value="destroy"><input name="ids" value="{job_id}">
      <input name="confirmed" value="yes"><input name="csrf_token" value="{"x" * 43}">
      <button id="go">go</button></form>"""
    page.route(
        "http://evil.test/",
        lambda route: route.fulfill(body=evil, content_type="text/html"),
    )
    page.goto("http://evil.test/")
    with page.expect_navigation():
        page.click("#go")
    expect(page.locator("body")).to_contain_text("Refused")
    assert job_row(conn, job_id) is not None


def test_live_refresh_and_its_pause(
    page: Page, dashboard: str, conn: psycopg.Connection[Any]
) -> None:
    page.goto(dashboard + "/jobs")
    first = enqueue(conn, "DashBrowserLive", 1)
    expect(page.locator(f"tr[data-job-id='{first}']")).to_have_count(1, timeout=20_000)
    page.locator("#live-toggle").click()
    expect(page.locator("#live-toggle")).to_contain_text("Paused")
    second = enqueue(conn, "DashBrowserLive", 2)
    page.wait_for_timeout(3000)  # three refresh periods
    expect(page.locator(f"tr[data-job-id='{second}']")).to_have_count(0)
    page.locator("#live-toggle").click()
    expect(page.locator(f"tr[data-job-id='{second}']")).to_have_count(1, timeout=20_000)


def test_a_token_protects_every_page(
    browser: Browser, db_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "CONVEYOR_DASHBOARD_TOKEN": TOKEN}
    with dashboard_server(db_url, log=tmp_path / "dash.log", env=env) as base:
        anonymous = browser.new_context()
        # Headless Chromium has nobody to ask for a password: it gives up.
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            anonymous.new_page().goto(base + "/")
        assert anonymous.request.get(base + "/").status == 401
        assert anonymous.request.get(base + "/static/dashboard.js").status == 401
        anonymous.close()
        logged_in = browser.new_context(
            http_credentials={"username": "ops", "password": TOKEN}
        )
        response = logged_in.new_page().goto(base + "/jobs")
        assert response is not None and response.status == 200
        logged_in.close()


def _later(hours: int) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(hours=hours)
