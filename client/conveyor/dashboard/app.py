"""The dashboard's ASGI application: configuration, the connection pool,
rendering, and the routes (the handlers live in pages.py and actions.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import psycopg
from jinja2 import Environment, FileSystemLoader, select_autoescape
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .security import Authorize, BasicAuth, Guard, TokenAuth, csrf_token_of

__all__ = ["Dashboard", "create_app", "local_redirect"]

T = TypeVar("T")
HERE = Path(__file__).resolve().parent


class Dashboard:
    """What every handler needs: the settings, the database pool (opened on
    first use, so the app works when mounted in a host whose lifespan events
    never reach it) and the templates."""

    def __init__(
        self,
        database_url: str,
        *,
        read_only: bool,
        refresh_seconds: float,
        page_size: int,
    ) -> None:
        self.database_url = database_url
        self.read_only = read_only
        self.refresh_seconds = refresh_seconds
        self.page_size = page_size
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pool_lock = threading.Lock()
        env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["age"] = format_age
        env.filters["when"] = format_when
        env.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, default=str)
        self.templates = Jinja2Templates(env=env)

    def pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.database_url,
                    min_size=1,
                    max_size=4,
                    kwargs={"autocommit": True, "application_name": "conveyor-dashboard"},
                    name="conveyor-dashboard",
                    open=True,
                )
            return self._pool

    def close(self) -> None:
        """Close the pool (the app's lifespan does it when the server stops)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    async def db(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func(conn, *args, **kwargs)`` on a pooled connection, in a thread."""

        def call() -> T:
            with self.pool().connection() as conn:
                return func(conn, *args, **kwargs)

        return await run_in_threadpool(call)

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        context.update(
            base=base_path(request),
            csrf_token=csrf_token_of(request),
            read_only=self.read_only,
            refresh_seconds=self.refresh_seconds,
            notice=request.query_params.get("notice"),
            path_with=lambda **changes: path_with(request, **changes),
            page=template.removesuffix(".html"),
        )
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)


def base_path(request: Request) -> str:
    """The path the app is mounted at ('' standalone)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def path_with(request: Request, **changes: Any) -> str:
    """This page's path with some query parameters changed (None removes one)."""
    params = dict(request.query_params)
    params.pop("notice", None)
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    query = urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


def local_redirect(request: Request, target: str | None, notice: str) -> RedirectResponse:
    """303 to ``target`` if it is a path inside this app, else to the overview,
    with the notice to show there."""
    base = base_path(request)
    if (
        not target
        or not target.startswith(base + "/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 32 for c in target)
    ):
        target = base + "/"
    sep = "&" if "?" in target else "?"
    return RedirectResponse(target + sep + urlencode({"notice": notice}), status_code=303)


def format_age(value: timedelta | None) -> str:
    if value is None:
        return "\u2013"  # an en dash
    seconds = int(value.total_seconds())
    if seconds < 0:
        return "in " + format_age(-value)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def format_when(value: datetime | None) -> str:
    if value is None:
        return "\u2013"  # an en dash
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def create_app(
    database_url: str,
    *,
    auth: TokenAuth | BasicAuth | None = None,
    authorize: Authorize | None = None,
    read_only: bool = False,
    refresh_seconds: float = 5.0,
    page_size: int = 50,
) -> Starlette:
    """The dashboard as an ASGI application.

    ``auth``: a :class:`TokenAuth` or :class:`BasicAuth` every request must
    carry. ``authorize``: instead, a check by the host framework when the app
    is mounted in one (a function of the request, returning a bool or an
    awaitable of one). With neither, only clients on this machine (loopback)
    are served. ``read_only``: pages only; every action is refused.
    ``database_url`` is a libpq URL or conninfo; connect as a role with the
    grants of docs/how-to/dashboard.md.
    """
    from . import actions, pages

    if auth is not None and authorize is not None:
        raise ValueError("give auth or authorize, not both")
    dashboard = Dashboard(
        database_url, read_only=read_only, refresh_seconds=refresh_seconds, page_size=page_size
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(dashboard.close)

    def route(path: str, handler: Any, methods: list[str] | None = None, name: str = "") -> Route:
        async def endpoint(request: Request) -> Response:
            return await handler(dashboard, request)  # type: ignore[no-any-return]

        return Route(path, endpoint, methods=methods or ["GET"], name=name or handler.__name__)

    routes = [
        route("/", pages.overview),
        route("/jobs", pages.jobs),
        route("/jobs/{job_id:int}", pages.job),
        route("/schedules", pages.schedules),
        route("/processes", pages.processes),
        route("/batches", pages.batches),
        route("/batches/{batch_id:int}", pages.batch),
        route("/queues", pages.queues),
        route("/queues/actions", actions.pause_actions, ["POST"]),
        route("/jobs/actions", actions.job_actions, ["POST"]),
        route("/schedules/actions", actions.schedule_actions, ["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, auth=auth, authorize=authorize)],
        lifespan=lifespan,
        exception_handlers={404: _not_found(dashboard)},
    )
    app.state.dashboard = dashboard
    return app


def _not_found(dashboard: Dashboard) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> Response:
        return dashboard.render(request, "error.html", 404, message="Not found.")

    return handler
