"""The pages (GET handlers). Each reads through queries.py in a worker
thread and renders a template; nothing here changes the database."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import schedules as _schedules
from . import queries
from .app import Dashboard
from .chart import per_minute_chart

__all__ = ["batch", "batches", "job", "jobs", "overview", "processes", "queues", "schedules"]


async def overview(dash: Dashboard, request: Request) -> Response:
    counts = await dash.db(queries.overview)
    points = await dash.db(queries.throughput)
    return dash.render(request, "overview.html", counts=counts, chart=per_minute_chart(points))


def job_filter(request: Request) -> queries.JobFilter:
    params = request.query_params

    def value(name: str) -> str | None:
        text = params.get(name, "").strip()
        return text or None

    return queries.JobFilter(
        state=value("state"),
        queue=value("queue"),
        job_class=value("job_class"),
        search=value("search"),
        label=value("label"),
        batch=value("batch"),
    )


def before_of(request: Request) -> int | None:
    """The keyset of a page: the last id of the previous one."""
    before = request.query_params.get("before", "")
    return int(before) if before.isdigit() else None


async def jobs(dash: Dashboard, request: Request) -> Response:
    where = job_filter(request)
    before_id = before_of(request)
    # One row more than a page: whether there is a next page, without a count.
    rows = await dash.db(queries.list_jobs, where, before_id, dash.page_size + 1)
    next_before = rows[dash.page_size - 1]["id"] if len(rows) > dash.page_size else None
    return dash.render(
        request,
        "jobs.html",
        rows=rows[: dash.page_size],
        where=where,
        states=queries.STATES,
        before_id=before_id,
        next_before=next_before,
        actions=queries.ACTIONS,
        filter_limit=queries.FILTER_ACTION_LIMIT,
    )


async def job(dash: Dashboard, request: Request) -> Response:
    job_id = int(request.path_params["job_id"])
    row = await dash.db(queries.get_job, job_id)
    if row is None:
        return dash.render(request, "error.html", 404, message=f"No job {job_id}.")
    errors = row.get("errors")
    history = list(reversed(errors)) if isinstance(errors, list) else []
    return dash.render(
        request, "job.html", job=row, history=history, actions=queries.actions_for(row["state"])
    )


async def schedules(dash: Dashboard, request: Request) -> Response:
    rows = await dash.db(_schedules.list_schedules)
    return dash.render(request, "schedules.html", schedules=rows)


async def processes(dash: Dashboard, request: Request) -> Response:
    rows = await dash.db(queries.list_processes)
    return dash.render(request, "processes.html", processes=rows)


async def queues(dash: Dashboard, request: Request) -> Response:
    counts = await dash.db(queries.overview)
    pauses = await dash.db(queries.list_pauses)
    paused_queues = {p["queue"] for p in pauses if p["job_class"] is None and p["label"] is None}
    return dash.render(
        request, "queues.html", counts=counts, pauses=pauses, paused_queues=paused_queues
    )


async def batches(dash: Dashboard, request: Request) -> Response:
    before_id = before_of(request)
    rows = await dash.db(queries.list_batches, before_id, dash.page_size + 1)
    next_before = rows[dash.page_size - 1]["batch_id"] if len(rows) > dash.page_size else None
    return dash.render(
        request,
        "batches.html",
        batches=rows[: dash.page_size],
        before_id=before_id,
        next_before=next_before,
    )


async def batch(dash: Dashboard, request: Request) -> Response:
    batch_id = int(request.path_params["batch_id"])
    row = await dash.db(queries.get_batch, batch_id)
    if row is None:
        return dash.render(request, "error.html", 404, message=f"No batch {batch_id}.")
    where = queries.JobFilter(batch=str(batch_id))
    before_id = before_of(request)
    jobs = await dash.db(queries.list_jobs, where, before_id, dash.page_size + 1)
    next_before = jobs[dash.page_size - 1]["id"] if len(jobs) > dash.page_size else None
    return dash.render(
        request,
        "batch.html",
        batch=row,
        rows=jobs[: dash.page_size],
        before_id=before_id,
        next_before=next_before,
    )
