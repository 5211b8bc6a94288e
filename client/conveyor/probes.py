"""Health probes (GoodJob's semantics) and ``/metrics`` over HTTP, served by
``conveyor worker --probe-port 8081`` on a thread of its own
(``conveyor-probes``), and the small HTTP server ``conveyor exporter`` shares.

- ``/status`` (and ``/``): 200 while the process runs (the server answers).
- ``/status/started``: 200 once the worker has started -- its locker has
  connected and its threads run -- and until it stops; 503 before.
- ``/status/connected``: 200 while the locker's session is up and
  LISTENing, 503 while it reconnects (the worker locks nothing then).
- ``/metrics``: Prometheus text (:mod:`conveyor.metrics`), when metrics are
  on; 404 otherwise.

The server reads a few attributes of the worker; it takes no lock the
worker's threads take, and a probe never touches the database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .errors import ConveyorError
from .logs import log
from .metrics import WorkerCollector, require_prometheus_client

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["ProbeServer"]

#: A route's answer: status, content type, body.
Answer = tuple[int, str, bytes]
Route = Callable[[], Answer]

_TEXT = "text/plain; charset=utf-8"


def _status(ok: bool, what: str) -> Answer:
    if ok:
        return HTTPStatus.OK, _TEXT, f"{what}\n".encode()
    return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, f"not {what}\n".encode()


class HTTPRoutes:
    """A read-only HTTP server of a few GET routes, on a daemon thread."""

    def __init__(self, routes: dict[str, Route], *, host: str, port: int, name: str) -> None:
        self._routes = routes
        handler = _handler_class(routes)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            raise ConveyorError(f"cannot listen on {host}:{port}: {error.strerror}") from error
        self._server.daemon_threads = True
        self.host = host
        #: The port listened on (the one the OS chose for port 0).
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name=name, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler_class(routes: dict[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "conveyor"

        def _answer(self, body_too: bool) -> None:
            route = routes.get(self.path.split("?", 1)[0].rstrip("/") or "/")
            status: int
            if route is None:
                status, content_type, body = HTTPStatus.NOT_FOUND, _TEXT, b"not found\n"
            else:
                try:
                    status, content_type, body = route()
                except Exception as error:  # a scrape that failed: say so, keep serving
                    log(logging.ERROR, "probe_failed", path=self.path, error=str(error))
                    status, content_type = HTTPStatus.INTERNAL_SERVER_ERROR, _TEXT
                    body = f"{type(error).__name__}: {error}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body_too:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(body_too=True)

        def do_HEAD(self) -> None:
            self._answer(body_too=False)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes come every few seconds: not worth a log line each

    return Handler


def metrics_route(registry: Any) -> Route:
    """``/metrics``: the registry's collectors in Prometheus text format."""
    client = require_prometheus_client()

    def route() -> Answer:
        return HTTPStatus.OK, client.CONTENT_TYPE_LATEST, client.generate_latest(registry)

    return route


class ProbeServer:
    """The probe and metrics server of one :class:`~conveyor.Worker`::

        worker = conveyor.Worker(url, metrics=True)
        probes = ProbeServer(worker, port=8081)  # listens now; port=0: any free port
        probes.start()
        worker.start()
        ...
        worker.stop(); probes.stop()

    ``metrics``: serve ``/metrics`` (defaults to whether the worker records
    metrics; needs ``prometheus_client``, else :class:`ConveyorError`).
    Listening failures (the port is taken) raise :class:`ConveyorError`."""

    def __init__(
        self, worker: Worker, *, port: int, host: str = "0.0.0.0", metrics: bool | None = None
    ) -> None:
        routes: dict[str, Route] = {
            "/": lambda: _status(True, "running"),  # GoodJob answers / as /status
            "/status": lambda: _status(True, "running"),
            "/status/started": lambda: _status(worker.started, "started"),
            "/status/connected": lambda: _status(worker.connected, "connected"),
        }
        if metrics is None:
            metrics = worker.metrics is not None
        if metrics:
            client = require_prometheus_client()
            registry = client.CollectorRegistry(auto_describe=False)
            registry.register(WorkerCollector(worker))
            # The process's CPU, memory and open files (Linux), as any exporter has.
            client.ProcessCollector(registry=registry)
            routes["/metrics"] = metrics_route(registry)
        self._http = HTTPRoutes(routes, host=host, port=port, name="conveyor-probes")
        self.host = host
        self.port = self._http.port

    def start(self) -> None:
        self._http.start()
        log(logging.INFO, "probes_listening", host=self.host, port=self.port)

    def stop(self) -> None:
        self._http.stop()
