"""Who may see the dashboard and how actions are protected.

- Access: with no authentication configured, only loopback clients are
  served (everyone else gets 403), so an app started without auth cannot be
  reached from another machine even behind a careless bind address. With a
  token or basic auth, every request (pages, static files, actions) must carry
  it; ``authorize`` hands the decision to the host framework when mounted.
- CSRF: actions are POSTs carrying a token that must equal the value of the
  ``conveyor_csrf`` cookie (double submit). The cookie is HttpOnly and
  SameSite=Strict, so another site can neither read it nor make the browser
  send it; a cross-site Origin header is refused as well.
- Every response carries a Content-Security-Policy that allows no inline
  script and nothing from another origin: the second line behind Jinja2's
  autoescaping.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "Authorize",
    "BasicAuth",
    "TokenAuth",
    "is_loopback_host",
]

CSRF_COOKIE = "conveyor_csrf"
CSRF_FIELD = "csrf_token"

#: The host framework's check when the dashboard is mounted: takes the
#: request (its scope carries what the host's middleware put there, such as
#: ``request.user``) and says whether it may see the dashboard.
Authorize = Callable[[Request], bool | Awaitable[bool]]

_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


@dataclass(frozen=True)
class TokenAuth:
    """A shared secret, given as ``Authorization: Bearer TOKEN`` or as the
    password of HTTP basic auth (any user name), so a browser can log in."""

    token: str

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ValueError("the dashboard token must be at least 16 characters long")


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic auth with one user name and password."""

    username: str
    password: str

    def __post_init__(self) -> None:
        if not self.username or not self.password:
            raise ValueError("basic auth needs a user name and a password")


def is_loopback_host(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def credentials_ok(auth: TokenAuth | BasicAuth, header: str) -> bool:
    """Whether an Authorization header satisfies ``auth`` (constant-time compares)."""
    if isinstance(auth, TokenAuth):
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return _same(value.strip(), auth.token)
        basic = _basic_credentials(header)
        return basic is not None and _same(basic[1], auth.token)
    basic = _basic_credentials(header)
    return (
        basic is not None
        and _same(basic[0], auth.username)  # both compared: no early exit on the name
        & _same(basic[1], auth.password)
    )


def cross_site(request: Request) -> bool:
    """True when the browser says the request comes from another origin."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc != request.headers.get("host", "")


def csrf_token_of(request: Request) -> str:
    """The browser's CSRF token (a fresh one when it has none yet: the
    response then sets the cookie, see :class:`Guard`)."""
    token = request.cookies.get(CSRF_COOKIE)
    if token and len(token) >= 32:
        return token
    fresh: str = request.scope.setdefault("conveyor.new_csrf", secrets.token_urlsafe(32))
    return fresh


def csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    return bool(cookie and submitted) and _same(str(submitted), str(cookie))


class Guard:
    """ASGI middleware in front of every route: access control, the CSRF
    cookie and the security headers."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: TokenAuth | BasicAuth | None,
        authorize: Authorize | None,
    ) -> None:
        self.app = app
        self.auth = auth
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = await self._refusal(request)
        if refusal is not None:
            await _with_headers(refusal, scope)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(_SECURITY_HEADERS)
                new_token = scope.get("conveyor.new_csrf")
                if new_token is not None:
                    path = scope.get("root_path") or "/"
                    cookie = f"{CSRF_COOKIE}={new_token}; Path={path}; HttpOnly; SameSite=Strict"
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refusal(self, request: Request) -> Response | None:
        if self.authorize is not None:
            allowed = self.authorize(request)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                return PlainTextResponse("Forbidden: the application did not authorize you.", 403)
            return None
        if self.auth is not None:
            if credentials_ok(self.auth, request.headers.get("authorization", "")):
                return None
            return PlainTextResponse(
                "Authentication required.",
                401,
                headers={"WWW-Authenticate": 'Basic realm="conveyor dashboard", charset="UTF-8"'},
            )
        client = request.client
        if client is not None and is_loopback_host(client.host):
            return None
        return PlainTextResponse(
            "Forbidden: this dashboard has no authentication configured, so it serves "
            "only clients on this machine (configure a token or basic auth).",
            403,
        )


def _with_headers(response: Response, scope: Scope) -> Response:
    for name, value in _SECURITY_HEADERS:
        response.headers[name.decode()] = value.decode()
    return response
