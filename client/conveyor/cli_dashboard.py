"""``conveyor dashboard``: serve the web dashboard (conveyor.dashboard) with
uvicorn. Loaded on demand, registered in the ``conveyor.commands``
entry-point group (client/pyproject.toml)."""

from __future__ import annotations

import click

from .cli_support import database_url_option, fail, require_url

__all__ = ["dashboard"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@database_url_option
@click.option(
    "--token",
    envvar="CONVEYOR_DASHBOARD_TOKEN",
    show_envvar=True,
    metavar="SECRET",
    help="Require this token (Bearer header, or the password of basic auth with any "
    "user name); at least 16 characters. Prefer the environment variable.",
)
@click.option(
    "--basic-auth",
    envvar="CONVEYOR_DASHBOARD_BASIC_AUTH",
    show_envvar=True,
    metavar="USER:PASSWORD",
    help="Require HTTP basic auth with this user name and password.",
)
@click.option(
    "--read-only",
    is_flag=True,
    envvar="CONVEYOR_DASHBOARD_READ_ONLY",
    show_envvar=True,
    help="Pages only: every action (retry, discard, pause...) is refused.",
)
@click.option(
    "--refresh",
    default=5.0,
    show_default=True,
    type=click.FloatRange(1, 3600),
    help="Seconds between the live refreshes of a page.",
)
def dashboard(
    host: str,
    port: int,
    database_url: str | None,
    token: str | None,
    basic_auth: str | None,
    read_only: bool,
    refresh: float,
) -> None:
    """Serve the web dashboard (docs/how-to/dashboard.md).

    Without --token or --basic-auth it listens only on localhost (a loopback
    --host) and serves only local clients."""
    try:
        import uvicorn

        from .dashboard import BasicAuth, TokenAuth, create_app
        from .dashboard.security import is_loopback_host
    except ImportError as error:
        fail(
            f"the dashboard needs its extra packages ({error.name} is missing): "
            "pip install 'conveyor[dashboard]'"
        )
        return
    url = require_url(database_url)
    if token and basic_auth:
        fail("give --token or --basic-auth, not both")
    auth: TokenAuth | BasicAuth | None = None
    try:
        if token:
            auth = TokenAuth(token)
        elif basic_auth:
            user, sep, password = basic_auth.partition(":")
            if not sep:
                fail("--basic-auth must be USER:PASSWORD")
            auth = BasicAuth(user, password)
    except ValueError as error:
        fail(str(error))
    if auth is None and not is_loopback_host(host):
        fail(
            f"refusing to listen on {host} without authentication: "
            "set --token (CONVEYOR_DASHBOARD_TOKEN) or --basic-auth, or listen on 127.0.0.1"
        )
    app = create_app(url, auth=auth, read_only=read_only, refresh_seconds=refresh)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"conveyor dashboard on http://{shown}:{port}/ (Ctrl-C stops it)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
