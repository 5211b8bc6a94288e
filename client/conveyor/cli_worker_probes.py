"""The probe and metrics options of ``conveyor worker`` (``--probe-port``,
``--probe-host``, ``--metrics``), kept out of cli.py: one decorator adds them;
the command gets them as ``probe_port``, ``probe_host`` and ``metrics``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

__all__: list[str] = []

_OPTIONS = [
    click.option(
        "--probe-port",
        type=click.IntRange(min=0, max=65535),
        envvar="CONVEYOR_PROBE_PORT",
        show_envvar=True,
        help="Serve health probes (/status, /status/started, /status/connected) on this "
        "HTTP port, and /metrics with --metrics.",
    ),
    click.option(
        "--probe-host",
        default="0.0.0.0",
        show_default=True,
        envvar="CONVEYOR_PROBE_HOST",
        show_envvar=True,
        help="The address the probe port listens on.",
    ),
    click.option(
        "--metrics",
        is_flag=True,
        envvar="CONVEYOR_METRICS",
        show_envvar=True,
        help="Record job and locker metrics and serve them as /metrics on --probe-port "
        "(Prometheus text; needs conveyor[metrics]).",
    ),
]


def probe_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options (in the order ``--help`` lists them)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command
