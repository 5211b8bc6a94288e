"""The actions (POST handlers). Each is refused in read-only mode and
without the CSRF token; the first POST shows a confirmation page that
repeats the request with ``confirmed=yes``, the second one acts and
redirects (303) back with a notice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from .. import schedules as _schedules
from . import queries
from .app import Dashboard, base_path, local_redirect
from .security import CSRF_FIELD, cross_site, csrf_ok

__all__ = ["job_actions", "pause_actions", "schedule_actions"]

_MAX_IDS = 1000


async def _checked_form(dash: Dashboard, request: Request) -> FormData | Response:
    """The posted form, or the page refusing it."""
    if dash.read_only:
        return dash.render(
            request, "error.html", 403, message="This dashboard is read-only: no actions."
        )
    form = await request.form()
    token = form.get(CSRF_FIELD)
    if cross_site(request) or not csrf_ok(request, token if isinstance(token, str) else None):
        return dash.render(
            request,
            "error.html",
            403,
            message="Refused: the form's CSRF token is missing or wrong "
            "(reload the page and try again).",
        )
    return form


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _confirm(
    dash: Dashboard,
    request: Request,
    form: FormData,
    *,
    title: str,
    details: list[str],
    button: str,
    danger: bool = False,
    ask_run_at: bool = False,
) -> Response:
    fields = [(k, v) for k, v in form.multi_items() if k != CSRF_FIELD and isinstance(v, str)]
    default_run_at = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    return dash.render(
        request,
        "confirm.html",
        title=title,
        details=details,
        button=button,
        danger=danger,
        fields=fields,
        action_url=request.url.path,
        back=_text(form, "back") or base_path(request) + "/",
        ask_run_at=ask_run_at,
        default_run_at=default_run_at,
    )


def _parse_run_at(text: str) -> datetime | None:
    """A datetime-local value (read as UTC) or an ISO 8601 timestamp."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def job_actions(dash: Dashboard, request: Request) -> Response:
    form = await _checked_form(dash, request)
    if isinstance(form, Response):
        return form
    action = _text(form, "action")
    if action not in queries.ACTIONS:
        return dash.render(request, "error.html", 400, message=f"Unknown action {action!r}.")
    scope = "filter" if "filter" in form.getlist("scope") else "selection"
    where = queries.JobFilter(
        state=_text(form, "state") or None,
        queue=_text(form, "queue") or None,
        job_class=_text(form, "job_class") or None,
        search=_text(form, "search") or None,
        label=_text(form, "label") or None,
        batch=_text(form, "batch") or None,
    )
    ids = sorted({int(v) for v in form.getlist("ids") if isinstance(v, str) and v.isdigit()})
    if scope != "filter" and not ids:
        return local_redirect(request, _text(form, "back"), "No job selected.")
    if len(ids) > _MAX_IDS:
        return dash.render(request, "error.html", 400, message="Too many jobs in one request.")
    label = queries.ACTIONS[action]
    if scope == "filter":
        target = (
            f"up to {queries.FILTER_ACTION_LIMIT:,} of the newest jobs matching {where.describe()}"
        )
    elif len(ids) == 1:
        target = f"job {ids[0]}"
    else:
        target = f"{len(ids)} selected jobs ({', '.join(map(str, ids[:20]))}"
        target += ", …)" if len(ids) > 20 else ")"
    run_at = _parse_run_at(_text(form, "run_at"))
    if _text(form, "confirmed") != "yes" or (action == "reschedule" and run_at is None):
        return _confirm(
            dash,
            request,
            form,
            title=f"{label}: {target}?",
            details=_explain(action),
            button=label,
            danger=action in ("discard", "destroy"),
            ask_run_at=action == "reschedule",
        )
    if scope == "filter":
        ids = await dash.db(queries.filter_ids, where, queries.FILTER_ACTION_LIMIT)
    outcome = await dash.db(queries.apply_action, action, ids, run_at=run_at)
    notice = f"{label}: {len(outcome.done)} job(s) done"
    if outcome.refused:
        shown = "; ".join(f"{i}: {why}" for i, why in outcome.refused[:5])
        more = f" and {len(outcome.refused) - 5} more" if len(outcome.refused) > 5 else ""
        notice += f", {len(outcome.refused)} refused ({shown}{more})"
    back = _text(form, "back")
    if action == "destroy" and len(ids) == 1 and outcome.done:
        back = base_path(request) + "/jobs"  # the job's page is gone
    return local_redirect(request, back, notice + ".")


def _explain(action: str) -> list[str]:
    return {
        "retry": [
            "Scheduled, retrying, ready and expired jobs become ready now; "
            "their error history is kept. Running and finished jobs are left alone."
        ],
        "discard": [
            "The jobs are expired now and never retried; the reason is added to their "
            "error history. Running jobs are refused."
        ],
        "reschedule": ["Unresolved jobs that are not running get the new run_at."],
        "destroy": [
            "The job rows are deleted, with their history. This cannot be undone.",
        ],
    }[action]


async def schedule_actions(dash: Dashboard, request: Request) -> Response:
    form = await _checked_form(dash, request)
    if isinstance(form, Response):
        return form
    action = _text(form, "action")
    name = _text(form, "name")
    labels = {"enable": "Enable", "disable": "Disable", "enqueue": "Enqueue now"}
    if action not in labels or not name:
        return dash.render(request, "error.html", 400, message="Unknown schedule action.")
    if _text(form, "confirmed") != "yes":
        details = {
            "enable": "It resumes at its next occurrence from now.",
            "disable": "It enqueues nothing until enabled again.",
            "enqueue": "One job of the schedule is enqueued now; its timetable is untouched.",
        }[action]
        return _confirm(
            dash,
            request,
            form,
            title=f"{labels[action]}: schedule {name!r}?",
            details=[details],
            button=labels[action],
        )

    def act(conn: psycopg.Connection[Any]) -> str:
        if action == "enqueue":
            job_id = _schedules.enqueue_schedule_now(conn, name)
            return f"no schedule named {name!r}" if job_id is None else f"enqueued job {job_id}"
        found = _schedules.set_schedule_enabled(conn, name, action == "enable")
        return f"{action}d" if found else f"no schedule named {name!r}"

    try:
        result = await dash.db(act)
    except psycopg.errors.InsufficientPrivilege as error:
        result = f"refused by the database: {error.diag.message_primary}"
    return local_redirect(request, _text(form, "back"), f"Schedule {name}: {result}.")


async def pause_actions(dash: Dashboard, request: Request) -> Response:
    form = await _checked_form(dash, request)
    if isinstance(form, Response):
        return form
    action = _text(form, "action")
    names = {
        "queue": _text(form, "queue") or None,
        "job_class": _text(form, "job_class") or None,
        "label": _text(form, "label") or None,
    }
    what = ", ".join(f"{k.replace('_', ' ')} {v!r}" for k, v in names.items() if v)
    if action not in ("pause", "resume") or not what:
        return dash.render(
            request, "error.html", 400, message="Pause or resume needs a queue, class or label."
        )
    label = action.capitalize()
    if _text(form, "confirmed") != "yes":
        details = (
            "Matching jobs stay queued but are not started; running jobs finish."
            if action == "pause"
            else "Workers are told at once and start the matching jobs again "
            "(unless another pause still matches them)."
        )
        return _confirm(
            dash, request, form, title=f"{label}: {what}?", details=[details], button=label
        )
    try:
        changed = await dash.db(queries.set_paused, action == "pause", **names)
        result = (
            f"{action}d" if changed else f"already {'paused' if action == 'pause' else 'running'}"
        )
    except (psycopg.errors.DataException, psycopg.errors.InsufficientPrivilege) as error:
        result = f"refused by the database: {error.diag.message_primary}"
    return local_redirect(request, _text(form, "back"), f"{label} {what}: {result}.")
