"""The conveyor dashboard: a web UI over the SQL API, as an ASGI application
(Starlette and Jinja2; ``pip install 'conveyor[dashboard]'``).

Standalone: ``conveyor dashboard --database-url URL``. Mounted in a
Starlette or FastAPI app::

    from conveyor.dashboard import create_app, TokenAuth
    app.mount("/conveyor", create_app(DATABASE_URL, auth=TokenAuth(SECRET)))

Pages, actions, security and the grants of the role it connects as:
docs/how-to/dashboard.md.
"""

from __future__ import annotations

from .app import create_app
from .security import Authorize, BasicAuth, TokenAuth

__all__ = ["Authorize", "BasicAuth", "TokenAuth", "create_app"]
