"""The dashboard over HTTP, in process (Starlette's TestClient against a
real database) and as a ``conveyor dashboard`` subprocess: pages, actions
with confirmation, CSRF, authentication, read-only mode, escaping, and
mounting under a path. The browser tests are test_dashboard_browser.py."""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from conveyor.cli import cli
from conveyor.dashboard import BasicAuth, TokenAuth, create_app
from dashboard_support import (
    csrf_of,
    dashboard_client,
    dashboard_server,
    enqueue,
    expire_with_error,
    job_row,
    post_action,
)
from db_support import scalar
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient

XSS = "<script>window.__xss = 1</script>"
TOKEN = "s3cret-token-of-the-tests"


def test_every_page_renders_with_jobs_of_every_kind(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    ready = enqueue(conn, "DashPageMail", 42, queue="mail")
    enqueue(conn, "DashPageReport", "full", queue="reports", run_at=_in_hours(2))
    failed = enqueue(conn, "DashPageCharge", 17, queue="billing")
    expire_with_error(conn, failed, "ConnectionError: gateway timeout")
    conn.execute(
        "SELECT conveyor.set_schedule('dash-nightly', '0 3 * * *', 'DashPageReport')"
    )
    with dashboard_client(db_url) as tc:
        overview = tc.get("/")
        assert overview.status_code == 200
        assert "<svg" in overview.text and "Last hour, per minute" in overview.text
        for queue in ("mail", "reports", "billing"):
            assert f">{queue}</a>" in overview.text
        jobs = tc.get("/jobs")
        assert jobs.status_code == 200
        for job_class in ("DashPageMail", "DashPageReport", "DashPageCharge"):
            assert job_class in jobs.text
        detail = tc.get(f"/jobs/{failed}")
        assert detail.status_code == 200
        assert "ConnectionError: gateway timeout" in detail.text
        assert "Traceback (most recent call last)" in detail.text
        assert tc.get(f"/jobs/{ready}").status_code == 200
        assert tc.get("/jobs/999999").status_code == 404
        schedules = tc.get("/schedules")
        assert "dash-nightly" in schedules.text and "0 3 * * *" in schedules.text
        assert tc.get("/processes").status_code == 200
        css = tc.get("/static/dashboard.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]


SEED_LAST_HOUR = """
INSERT INTO conveyor.jobs (job_class, queue, args, run_at, finished_at)
SELECT 'DashChartDone', 'chart', '[]', t, t
  FROM (SELECT date_trunc('minute', now()) - interval '5 minutes' + interval '10 seconds' AS t,
               generate_series(1, 3)) AS s;
INSERT INTO conveyor.jobs (job_class, queue, args, run_at, finished_at)
VALUES ('DashChartOld', 'chart', '[]', now() - interval '3 hours', now() - interval '3 hours');
"""


def test_the_chart_counts_finished_jobs_and_errors_per_minute(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(SEED_LAST_HOUR)
    failed = enqueue(conn, "DashChartFail", 1, queue="chart", maximum_retry_count=5)
    conn.execute("SELECT conveyor.retry_job(%s, 'first', 'tb')", (failed,))
    conn.execute("SELECT conveyor.retry_job(%s, 'second', 'tb')", (failed,))
    minute, error_minute = conn.execute(
        "SELECT to_char(date_trunc('minute', now()) - interval '5 minutes', 'HH24:MI'),"
        " to_char(now(), 'HH24:MI')"
    ).fetchone()  # type: ignore[misc]
    with dashboard_client(db_url) as tc:
        page = tc.get("/").text
    assert f"<title>{minute}: 3 finished</title>" in page
    assert "finished: 3" in page  # the one finished 3 hours ago is not counted
    assert "errors: 2" in page  # both of the retried job's error history
    assert page.count('<rect class="worked"') == 1
    assert f"{error_minute}: " in page


def test_filters_and_keyset_pages(db_url: str, conn: psycopg.Connection[Any]) -> None:
    ids = [enqueue(conn, "DashFilterA", i, queue="qa") for i in range(7)]
    enqueue(conn, "DashFilterB", "needle-in-args", queue="qb")
    with dashboard_client(db_url, page_size=3) as tc:
        first = tc.get("/jobs", params={"queue": "qa"})
        shown = _job_ids(first.text)
        assert shown == sorted(ids, reverse=True)[:3]
        assert "DashFilterB" not in first.text
        # The "older" link carries the keyset (the last id shown) and the filter.
        link = html.unescape(_link_after(first.text, 'rel="next"'))
        assert f"before={shown[-1]}" in link and "queue=qa" in link
        second = tc.get(link)
        assert _job_ids(second.text) == sorted(ids, reverse=True)[3:6]
        by_text = tc.get("/jobs", params={"search": "needle-in"})
        assert "DashFilterB" in by_text.text and "DashFilterA" not in by_text.text
        by_class = tc.get("/jobs", params={"job_class": "DashFilterB"})
        assert _job_ids(by_class.text) == [max(ids) + 1]
        by_state = tc.get("/jobs", params={"state": "scheduled"})
        assert _job_ids(by_state.text) == []


def test_args_and_errors_are_escaped(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = enqueue(conn, "DashXss<b>", XSS, {"k": XSS}, queue="x<i>ss")
    expire_with_error(conn, job_id, f"boom {XSS}")
    conn.execute(
        "SELECT conveyor.set_schedule(%s, '@daily', %s, %s)",
        (f"dash-{XSS}", f"DashXss{XSS}", json.dumps([XSS])),
    )
    with dashboard_client(db_url) as tc:
        for path in (
            "/",
            "/jobs",
            f"/jobs/{job_id}",
            "/schedules",
            "/jobs?search=%3Cscript",
        ):
            body = tc.get(path).text
            assert "<script>window" not in body, path
            assert "<b>" not in body and "<i>" not in body, path
        detail = tc.get(f"/jobs/{job_id}").text
        assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in detail
        # A batch's description, callback class and properties, and a label.
        batch_id = scalar(
            conn,
            "SELECT conveyor.create_batch(%s, on_finish => %s, properties => %s)",
            (
                f"batch {XSS}",
                json.dumps({"job_class": f"DashXss{XSS}"}),
                json.dumps({"k": XSS}),
            ),
        )
        enqueue(conn, "DashXssLabel", 1, batch_id=batch_id, labels=[f"l{XSS}"])
        for path in (
            "/batches",
            f"/batches/{batch_id}",
            f"/jobs?batch={batch_id}",
            "/jobs?label=" + urllib.parse.quote(f"l{XSS}"),
        ):
            body = tc.get(path).text
            assert "<script>window" not in body, path
            assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in body, path
        # Even a notice in the URL (the redirect target of actions) is text.
        assert "<script>window" not in tc.get("/", params={"notice": XSS}).text


def _make_batch(
    conn: psycopg.Connection[Any], description: str, jobs: int
) -> tuple[int, list[int]]:
    """A batch with callbacks and ``jobs`` jobs (queue dash-batch), closed."""
    batch_id = scalar(
        conn,
        "SELECT conveyor.create_batch(%s, on_finish => %s, on_discard => %s,"
        " properties => %s)",
        (
            description,
            json.dumps({"job_class": "DashBatchDone"}),
            json.dumps({"job_class": "DashBatchAlert"}),
            json.dumps({"note": XSS}),
        ),
    )
    ids = [
        enqueue(conn, "DashBatchPage", i, queue="dash-batch", batch_id=batch_id)
        for i in range(jobs)
    ]
    conn.execute("SELECT conveyor.close_batch(%s)", (batch_id,))
    return int(batch_id), ids


def test_batches_page_shows_progress_callbacks_and_the_jobs(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    batch_id, ids = _make_batch(conn, "dash weekly report", 4)
    other = enqueue(conn, "DashBatchOutsider", 0, queue="dash-batch")
    conn.execute("SELECT conveyor.destroy_job(%s)", (ids[0],))  # worked, cleaned up
    expire_with_error(conn, ids[1], "DashBatch failure")  # fires on_discard
    conn.execute(
        "UPDATE conveyor.jobs SET run_at = now() + interval '1 hour' WHERE id = %s",
        (ids[2],),
    )
    with dashboard_client(db_url) as tc:
        overview = tc.get("/").text
        assert 'href="/batches"' in overview  # in the nav
        listing = tc.get("/batches")
        assert listing.status_code == 200
        row = _batch_row(listing.text, batch_id)
        assert "dash weekly report" in row
        assert "2 / 4 (50%)" in row  # destroyed + expired of 4
        assert 'class="bar-destroyed"' in row and 'class="bar-expired"' in row
        assert 'class="bar-scheduled"' in row and 'class="bar-ready"' in row
        assert "closed" in row and "discarded" in row
        discard_job = scalar(
            conn,
            "SELECT on_discard_job_id FROM conveyor.batches WHERE id = %s",
            (batch_id,),
        )
        assert 'on_discard: <span class="class">DashBatchAlert</span> fired' in row
        assert f'href="/jobs/{discard_job}"' in row
        assert "on_finish" in row and "not fired" in row
        detail = tc.get(f"/batches/{batch_id}")
        assert detail.status_code == 200
        counts = dict(re.findall(r'<dd data-count="(\w+)">(\d+)</dd>', detail.text))
        assert counts == {
            "ready": "1",
            "scheduled": "1",
            "retrying": "0",
            "running": "0",
            "finished": "0",
            "expired": "1",
            "destroyed": "1",
            "total": "4",
        }
        # The rows left: the expired, scheduled and ready jobs, not the outsider.
        assert _job_ids(detail.text) == sorted(ids[1:], reverse=True)
        assert other not in _job_ids(detail.text)
        # The jobs page filtered by the batch, as the detail links to it.
        assert f'href="/jobs?batch={batch_id}"' in detail.text
        by_batch = tc.get("/jobs", params={"batch": str(batch_id)})
        assert _job_ids(by_batch.text) == sorted(ids[1:], reverse=True)
        assert _job_ids(tc.get("/jobs", params={"batch": "nope"}).text) == []
        job_page = tc.get(f"/jobs/{ids[2]}").text
        assert f'href="/batches/{batch_id}"' in job_page
        assert tc.get("/batches/999999999").status_code == 404


def test_batches_keyset_pages(db_url: str, conn: psycopg.Connection[Any]) -> None:
    made = [_make_batch(conn, f"dash page {i}", 1)[0] for i in range(5)]
    with dashboard_client(db_url, page_size=2) as tc:
        first = tc.get("/batches").text
        assert _batch_ids(first) == sorted(made, reverse=True)[:2]
        link = html.unescape(_link_after(first, 'rel="next"'))
        assert f"before={sorted(made, reverse=True)[1]}" in link
        assert _batch_ids(tc.get(link).text) == sorted(made, reverse=True)[2:4]


def test_label_filter_keeps_keyset_pages_and_labels_are_shown(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    both = [
        enqueue(conn, "DashLabelA", i, queue="ql", labels=["tenant:7", "urgent"])
        for i in range(5)
    ]
    one = enqueue(conn, "DashLabelB", 0, queue="ql", labels=["urgent"])
    enqueue(conn, "DashLabelC", 0, queue="ql")
    with dashboard_client(db_url, page_size=2) as tc:
        urgent = tc.get("/jobs", params={"label": "urgent"}).text
        assert _job_ids(urgent) == [one, max(both)]
        # Several labels: jobs carrying every one; the keyset keeps the filter.
        first = tc.get("/jobs", params={"label": "urgent, tenant:7"}).text
        assert _job_ids(first) == sorted(both, reverse=True)[:2]
        link = html.unescape(_link_after(first, 'rel="next"'))
        assert "label=urgent" in link and "before=" in link
        assert _job_ids(tc.get(link).text) == sorted(both, reverse=True)[2:4]
        assert _job_ids(tc.get("/jobs", params={"label": "absent"}).text) == []
        # Labels show in the rows and on the job, each a link to the filter.
        assert 'href="/jobs?label=tenant%3A7">tenant:7</a>' in first
        detail = tc.get(f"/jobs/{both[0]}").text
        assert ">tenant:7</a>" in detail and ">urgent</a>" in detail
        # Search combined with the label filter, with LIKE wildcards as text.
        assert _job_ids(
            tc.get("/jobs", params={"label": "urgent", "search": "LabelB"}).text
        ) == [one]
        assert (
            _job_ids(
                tc.get("/jobs", params={"label": "urgent", "search": "Label_"}).text
            )
            == []
        )


def test_bulk_action_on_a_label_filter(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    tagged = [
        enqueue(conn, "DashLabelBulk", i, queue="qlb", labels=["drop-me"])
        for i in range(3)
    ]
    kept = enqueue(conn, "DashLabelBulk", 9, queue="qlb")
    with dashboard_client(db_url) as tc:
        done = post_action(
            tc,
            "/jobs/actions",
            [("action", "discard"), ("scope", "filter"), ("label", "drop-me")],
        )
        assert done.status_code == 303
    for job_id in tagged:
        assert job_row(conn, job_id)["state"] == "expired"  # type: ignore[index]
    assert job_row(conn, kept)["state"] == "ready"  # type: ignore[index]


def test_actions_need_the_csrf_token_of_the_cookie(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = enqueue(conn, "DashCsrf", 1)
    fields = {"action": "destroy", "ids": str(job_id), "confirmed": "yes"}
    with dashboard_client(db_url) as tc:
        assert (
            tc.post("/jobs/actions", data=fields).status_code == 403
        )  # no token, no cookie
        token = csrf_of(tc.get("/jobs").text)
        wrong = tc.post("/jobs/actions", data={**fields, "csrf_token": token[::-1]})
        assert wrong.status_code == 403 and "CSRF" in wrong.text
        # The right token from another site (its Origin) is refused too.
        cross = tc.post(
            "/jobs/actions",
            data={**fields, "csrf_token": token},
            headers={"Origin": "http://evil.example"},
        )
        assert cross.status_code == 403
        tc.cookies.clear()  # a token without the cookie it must match
        assert (
            tc.post("/jobs/actions", data={**fields, "csrf_token": token}).status_code
            == 403
        )
    assert job_row(conn, job_id) is not None, "a refused action changed the job"
    assert scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 1


def test_cookie_and_security_headers(db_url: str) -> None:
    with dashboard_client(db_url) as tc:
        page = tc.get("/jobs")
        cookie = page.headers["set-cookie"]
        assert (
            "conveyor_csrf=" in cookie
            and "HttpOnly" in cookie
            and "SameSite=Strict" in cookie
        )
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"


def test_retry_discard_reschedule_destroy_with_confirmation(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    expired = enqueue(conn, "DashActRetry", 1)
    expire_with_error(conn, expired, "RuntimeError: first try")
    to_discard = enqueue(conn, "DashActDiscard", 2)
    to_move = enqueue(conn, "DashActMove", 3)
    to_destroy = enqueue(conn, "DashActDestroy", 4)
    with dashboard_client(db_url) as tc:
        # The first POST only asks: nothing changes until it is confirmed.
        token = csrf_of(tc.get("/jobs").text)
        ask = tc.post(
            "/jobs/actions",
            data={"action": "destroy", "ids": str(to_destroy), "csrf_token": token},
        )
        assert ask.status_code == 200 and "Destroy: job" in ask.text
        assert job_row(conn, to_destroy) is not None

        done = post_action(
            tc,
            "/jobs/actions",
            {"action": "retry", "ids": str(expired), "back": f"/jobs/{expired}"},
        )
        assert done.status_code == 303 and done.headers["location"].startswith(
            f"/jobs/{expired}?"
        )
        row = job_row(conn, expired)
        assert row is not None and row["state"] == "ready" and row["expired_at"] is None

        post_action(tc, "/jobs/actions", {"action": "discard", "ids": str(to_discard)})
        row = job_row(conn, to_discard)
        assert row is not None and row["state"] == "expired"

        post_action(
            tc,
            "/jobs/actions",
            {"action": "reschedule", "ids": str(to_move), "run_at": "2099-01-02T03:04"},
        )
        row = job_row(conn, to_move)
        assert row is not None and row["state"] == "scheduled"
        assert row["run_at"].isoformat().startswith("2099-01-02T03:04:00")

        gone = post_action(
            tc,
            "/jobs/actions",
            {
                "action": "destroy",
                "ids": str(to_destroy),
                "back": f"/jobs/{to_destroy}",
            },
        )
        assert job_row(conn, to_destroy) is None
        assert gone.headers["location"].startswith("/jobs?notice=")


def test_bulk_selection_and_filter(db_url: str, conn: psycopg.Connection[Any]) -> None:
    picked = [enqueue(conn, "DashBulk", i, queue="bulk") for i in range(3)]
    others = [enqueue(conn, "DashBulkOther", i, queue="bulk") for i in range(4)]
    untouched = enqueue(conn, "DashBulk", 99, queue="elsewhere")
    with dashboard_client(db_url) as tc:
        done = post_action(
            tc,
            "/jobs/actions",
            [("action", "discard"), *[("ids", str(i)) for i in picked]],
        )
        assert "3 job(s) done" in done.headers["location"].replace("+", " ").replace(
            "%28", "("
        ).replace("%29", ")")
        assert all(job_row(conn, i)["state"] == "expired" for i in picked)  # type: ignore[index]
        # Every job matching a filter (queue bulk, class DashBulkOther).
        post_action(
            tc,
            "/jobs/actions",
            {
                "action": "reschedule",
                "scope": "filter",
                "queue": "bulk",
                "job_class": "DashBulkOther",
                "run_at": "2099-01-01T00:00",
            },
        )
        assert all(job_row(conn, i)["state"] == "scheduled" for i in others)  # type: ignore[index]
        assert job_row(conn, untouched)["state"] == "ready"  # type: ignore[index]


def test_a_refused_job_is_reported_and_the_others_done(
    db_url: str,
    conn: psycopg.Connection[Any],
    connect: Callable[..., psycopg.Connection[Any]],
) -> None:
    free = enqueue(conn, "DashRefusedFree", 1)
    held = enqueue(conn, "DashRefusedHeld", 2)
    worker = connect()
    assert worker.execute(
        "SELECT count(*) FROM conveyor.lock_jobs_by_id(%s)", ([held],)
    ).fetchone()
    with dashboard_client(db_url) as tc:
        done = post_action(
            tc,
            "/jobs/actions",
            [("action", "discard"), ("ids", str(free)), ("ids", str(held))],
        )
        notice = urllib.parse.unquote_plus(done.headers["location"])
    assert "1 job(s) done, 1 refused" in notice and f"{held}:" in notice
    assert job_row(conn, free)["state"] == "expired"  # type: ignore[index]
    assert job_row(conn, held)["state"] == "running"  # type: ignore[index]


def test_schedule_enable_disable_and_enqueue_now(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "SELECT conveyor.set_schedule('dash-hourly', '@hourly', 'DashCronJob', '[7]', queue => 'cron')"
    )
    with dashboard_client(db_url) as tc:
        post_action(
            tc,
            "/schedules/actions",
            {"action": "disable", "name": "dash-hourly"},
            "/schedules",
        )
        assert scalar(conn, "SELECT enabled FROM conveyor.schedules") is False
        post_action(
            tc,
            "/schedules/actions",
            {"action": "enable", "name": "dash-hourly"},
            "/schedules",
        )
        assert scalar(conn, "SELECT enabled FROM conveyor.schedules") is True
        done = post_action(
            tc,
            "/schedules/actions",
            {"action": "enqueue", "name": "dash-hourly", "back": "/schedules"},
            "/schedules",
        )
        assert done.headers["location"].startswith("/schedules?notice=")
    row = conn.execute(
        "SELECT job_class, args, queue, data FROM conveyor.jobs"
    ).fetchone()
    assert row == (
        "DashCronJob",
        [7],
        "cron",
        {"schedule": {"name": "dash-hourly", "at": None}},
    )


def test_pause_and_resume_a_queue_and_a_class(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    enqueue(conn, "DashPaused", 1, queue="pausable")
    with dashboard_client(db_url) as tc:
        assert 'data-queue="pausable"' in tc.get("/queues").text
        done = post_action(
            tc,
            "/queues/actions",
            {"action": "pause", "queue": "pausable", "back": "/queues"},
            "/queues",
        )
        assert done.headers["location"].startswith("/queues?notice=")
        assert (
            scalar(
                conn, "SELECT count(*) FROM conveyor.pauses WHERE queue = 'pausable'"
            )
            == 1
        )
        assert "Resume" in tc.get("/queues").text
        post_action(
            tc,
            "/queues/actions",
            {"action": "pause", "job_class": "DashPaused"},
            "/queues",
        )
        assert (
            scalar(conn, "SELECT job_class FROM conveyor.pauses WHERE queue IS NULL")
            == "DashPaused"
        )
        post_action(
            tc, "/queues/actions", {"action": "resume", "queue": "pausable"}, "/queues"
        )
        post_action(
            tc,
            "/queues/actions",
            {"action": "resume", "job_class": "DashPaused"},
            "/queues",
        )
        assert scalar(conn, "SELECT count(*) FROM conveyor.pauses") == 0
        token = csrf_of(tc.get("/queues").text)
        empty = tc.post(
            "/queues/actions", data={"action": "pause", "csrf_token": token}
        )
        assert empty.status_code == 400


def test_read_only_mode_shows_no_action_and_refuses_posts(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = enqueue(conn, "DashReadOnly", 1)
    with dashboard_client(db_url, read_only=True) as tc:
        page = tc.get(f"/jobs/{job_id}").text
        assert "read-only" in page and 'value="destroy"' not in page
        token = (
            csrf_of(tc.get("/jobs").text)
            if "csrf_token" in tc.get("/jobs").text
            else "x" * 43
        )
        refused = tc.post(
            "/jobs/actions",
            data={
                "action": "destroy",
                "ids": str(job_id),
                "confirmed": "yes",
                "csrf_token": token,
            },
        )
        assert refused.status_code == 403 and "read-only" in refused.text
    assert job_row(conn, job_id) is not None


def test_without_auth_only_local_clients_are_served(db_url: str) -> None:
    with dashboard_client(db_url, client=("203.0.113.9", 5000)) as tc:
        page = tc.get("/")
        assert page.status_code == 403 and "no authentication configured" in page.text
        assert tc.get("/static/dashboard.css").status_code == 403
    with dashboard_client(db_url, client=("::1", 5000)) as tc:
        assert tc.get("/").status_code == 200


def test_token_and_basic_auth(db_url: str) -> None:
    remote = ("203.0.113.9", 5000)
    with dashboard_client(db_url, client=remote, auth=TokenAuth(TOKEN)) as tc:
        refused = tc.get("/")
        assert (
            refused.status_code == 401
            and "Basic" in refused.headers["www-authenticate"]
        )
        assert (
            tc.get(
                "/", headers={"Authorization": "Bearer wrong-token-wrong"}
            ).status_code
            == 401
        )
        assert (
            tc.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        )
        assert tc.get("/", headers=_basic("anyone", TOKEN)).status_code == 200
    with dashboard_client(db_url, client=remote, auth=BasicAuth("ops", "pa:ss")) as tc:
        assert tc.get("/", headers=_basic("ops", "pa:ss")).status_code == 200
        assert tc.get("/", headers=_basic("ops", "wrong")).status_code == 401
        assert tc.get("/", headers=_basic("other", "pa:ss")).status_code == 401
    with pytest.raises(ValueError, match="16 characters"):
        TokenAuth("short")


def test_mounted_under_a_path_with_the_hosts_authorization(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    job_id = enqueue(conn, "DashMounted", 1)

    def staff_only(request: Request) -> bool:
        return request.headers.get("x-user") == "staff"

    host = Starlette(
        routes=[Mount("/ops/conveyor", create_app(db_url, authorize=staff_only))]
    )
    with TestClient(host, client=("198.51.100.7", 1), follow_redirects=False) as tc:
        assert tc.get("/ops/conveyor/").status_code == 403
        tc.headers["x-user"] = "staff"
        page = tc.get("/ops/conveyor/jobs")
        assert page.status_code == 200
        assert f'href="/ops/conveyor/jobs/{job_id}"' in page.text
        assert 'href="/ops/conveyor/static/dashboard.css"' in page.text
        assert tc.get("/ops/conveyor/static/dashboard.js").status_code == 200
        assert "Path=/ops/conveyor" in page.headers["set-cookie"]
        done = post_action(
            tc,
            "/ops/conveyor/jobs/actions",
            {"action": "discard", "ids": str(job_id), "back": "/ops/conveyor/jobs"},
            "/ops/conveyor/jobs",
        )
        assert done.headers["location"].startswith("/ops/conveyor/jobs?notice=")
        # A redirect target outside the app is not followed.
        away = post_action(
            tc,
            "/ops/conveyor/jobs/actions",
            {"action": "retry", "ids": str(job_id), "back": "//evil.example/x"},
            "/ops/conveyor/jobs",
        )
        assert away.headers["location"].startswith("/ops/conveyor/?notice=")


# The grants of docs/how-to/dashboard.md, "The database role" (keep in step).
ADMIN_GRANTS = """
GRANT conveyor_admin, conveyor_enqueuer TO {role};
GRANT SELECT, UPDATE ON conveyor.schedules TO {role};
GRANT SELECT ON conveyor.batches TO {role};
GRANT EXECUTE ON FUNCTION conveyor.set_schedule_enabled(text, boolean),
  conveyor.cron_next(text, timestamptz, text) TO {role};
"""
READ_ONLY_GRANTS = """
GRANT USAGE ON SCHEMA conveyor TO {role};
GRANT SELECT ON conveyor.jobs, conveyor.jobs_view, conveyor.schedules, conveyor.pauses,
  conveyor.lockers, conveyor.batches TO {role};
GRANT EXECUTE ON FUNCTION conveyor.batch_stats(bigint), conveyor.job_lock_id(oid, oid),
  conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz),
  conveyor.job_state(timestamptz, timestamptz, boolean, timestamptz, integer, timestamptz, boolean),
  conveyor.job_paused(conveyor.pauses[], text, text, text[])
  TO {role};
"""


def test_the_documented_grants_are_enough(
    db_url: str, conn: psycopg.Connection[Any], login_role: Any
) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    job_id = enqueue(conn, "DashGrants", 1, queue="grants", labels=["grants"])
    conn.execute("SELECT conveyor.set_schedule('dash-grants', '@daily', 'DashGrants')")
    batch_id, _ = _make_batch(conn, "dash grants", 1)
    password_free = conninfo_to_dict(db_url)
    admin_role, _ = login_role()
    reader_role, _ = login_role()
    try:
        conn.execute(ADMIN_GRANTS.format(role=admin_role))
        conn.execute(READ_ONLY_GRANTS.format(role=reader_role))
        pages = (
            "/",
            "/jobs",
            f"/jobs/{job_id}",
            "/jobs?search=Grants",
            "/schedules",
            "/queues",
            "/processes",
            "/batches",
            f"/batches/{batch_id}",
            "/jobs?label=grants",
        )
        reader_url = make_conninfo(**{**password_free, "user": reader_role})
        with dashboard_client(reader_url, read_only=True) as tc:
            for path in pages:
                assert tc.get(path).status_code == 200, path
        admin_url = make_conninfo(**{**password_free, "user": admin_role})
        with dashboard_client(admin_url) as tc:
            for path in pages:
                assert tc.get(path).status_code == 200, path
            post_action(
                tc, "/schedules/actions", {"action": "enqueue", "name": "dash-grants"}
            )
            post_action(
                tc, "/schedules/actions", {"action": "disable", "name": "dash-grants"}
            )
            post_action(tc, "/queues/actions", {"action": "pause", "queue": "grants"})
            post_action(
                tc,
                "/jobs/actions",
                {
                    "action": "reschedule",
                    "ids": str(job_id),
                    "run_at": "2099-01-01T00:00",
                },
            )
            post_action(tc, "/jobs/actions", {"action": "retry", "ids": str(job_id)})
            post_action(tc, "/jobs/actions", {"action": "discard", "ids": str(job_id)})
        assert job_row(conn, job_id)["state"] == "expired"  # type: ignore[index]
        assert scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 3
        assert scalar(conn, "SELECT enabled FROM conveyor.schedules") is False
        assert scalar(conn, "SELECT queue FROM conveyor.pauses") == "grants"
    finally:
        # What the grants made depend on the roles: drop it so they can go.
        for role in (admin_role, reader_role):
            conn.execute(f'DROP OWNED BY "{role}"')


def test_mounted_by_a_path_dispatcher_as_in_the_django_example(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """The asgi.py of docs/how-to/dashboard.md's Django section, with a
    stand-in for Django's own ASGI app and its session check."""
    job_id = enqueue(conn, "DashDispatched", 1)
    prefix = "/conveyor"

    async def is_staff(request: Request) -> bool:
        return request.cookies.get("sessionid") == "staff-session"

    dashboard = create_app(db_url, authorize=is_staff)

    async def host_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"the host application"})

    async def application(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (
            path == prefix or path.startswith(prefix + "/")
        ):
            scope = dict(scope, root_path=scope.get("root_path", "") + prefix)
            await dashboard(scope, receive, send)
        else:
            await host_app(scope, receive, send)

    # No `with`: the dispatcher, like Django's, has no lifespan to run.
    tc = TestClient(application, client=("198.51.100.7", 1), follow_redirects=False)
    try:
        assert tc.get("/admin/").text == "the host application"
        assert tc.get("/conveyor/jobs").status_code == 403
        tc.cookies.set("sessionid", "staff-session")
        page = tc.get("/conveyor/jobs")
        assert (
            page.status_code == 200 and f'href="/conveyor/jobs/{job_id}"' in page.text
        )
        assert tc.get(f"/conveyor/jobs/{job_id}").status_code == 200
        assert tc.get("/conveyor/static/dashboard.css").status_code == 200
    finally:
        tc.close()
        dashboard.state.dashboard.close()


def test_cli_refuses_a_public_address_without_auth(db_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["dashboard", "--host", "0.0.0.0", "--database-url", db_url]
    )
    assert result.exit_code == 1
    assert "refusing to listen on 0.0.0.0 without authentication" in result.output
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "dashboard",
            "--host",
            "::",
            "--database-url",
            db_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1 and "refusing to listen on ::" in proc.stderr
    short = CliRunner().invoke(
        cli, ["dashboard", "--token", "short", "--database-url", db_url]
    )
    assert short.exit_code == 1 and "16 characters" in short.output


def test_cli_serves_with_a_token(
    db_url: str, tmp_path: Path, conn: psycopg.Connection[Any]
) -> None:
    enqueue(conn, "DashServed", 1)
    env = {**__import__("os").environ, "CONVEYOR_DASHBOARD_TOKEN": TOKEN}
    with dashboard_server(db_url, log=tmp_path / "dash.log", env=env) as base:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/jobs", timeout=10)
        assert refused.value.code == 401
        refused.value.close()
        request = urllib.request.Request(
            base + "/jobs", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and "DashServed" in response.read().decode()


def _in_hours(hours: int) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(hours=hours)


def _job_ids(page: str) -> list[int]:
    import re

    return [int(i) for i in re.findall(r'<tr data-job-id="(\d+)"', page)]


def _batch_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-batch-id="(\d+)"', page)]


def _batch_row(page: str, batch_id: int) -> str:
    start = page.index(f'data-batch-id="{batch_id}"')
    return page[start : page.index("</tr>", start)]


def _link_after(page: str, marker: str) -> str:
    import re

    match = re.search(r'<a href="([^"]+)" ' + re.escape(marker), page)
    assert match, f"no link with {marker}"
    return match.group(1)


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
