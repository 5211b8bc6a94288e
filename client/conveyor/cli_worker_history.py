"""The history and upkeep options of ``conveyor worker``
(``--preserve-finished``, ``--cleanup-interval``, ``--preserve-for``,
``--keep-expired``, ``--reindex-interval``), kept out of cli.py: one
decorator adds them and hands the worker one ``history`` dict of
:class:`~conveyor.Worker` keyword arguments."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from . import index_upkeep
from .cleanup import DEFAULT_INTERVAL, DEFAULT_PRESERVE_FOR, parse_duration

__all__: list[str] = []


class Duration(click.ParamType[float]):
    """Seconds, or a number with s, m, h or d ("10m", "14d")."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


_OPTIONS = [
    click.option(
        "--preserve-finished",
        is_flag=True,
        envvar="CONVEYOR_PRESERVE_FINISHED",
        show_envvar=True,
        help="Keep every job that returns (finished, with run's value as its result) instead "
        "of destroying it, as Job.preserve = True does per class.",
    ),
    click.option(
        "--cleanup-interval",
        type=Duration(),
        default=str(int(DEFAULT_INTERVAL)),
        show_default=True,
        envvar="CONVEYOR_CLEANUP_INTERVAL",
        show_envvar=True,
        help="How often (seconds, or 10m, 1h...) one worker of the database deletes kept jobs "
        "older than --preserve-for; 0 never.",
    ),
    click.option(
        "--preserve-for",
        type=Duration(),
        default=f"{int(DEFAULT_PRESERVE_FOR // 86400)}d",
        show_default=True,
        envvar="CONVEYOR_PRESERVE_FOR",
        show_envvar=True,
        help="How long kept (finished or expired) jobs stay before the cleanup deletes them.",
    ),
    click.option(
        "--keep-expired",
        is_flag=True,
        envvar="CONVEYOR_KEEP_EXPIRED",
        show_envvar=True,
        help="Never delete expired jobs in the cleanup (only finished ones).",
    ),
    click.option(
        "--reindex-interval",
        type=Duration(),
        default=f"{int(index_upkeep.DEFAULT_INTERVAL // 60)}m",
        show_default=True,
        envvar="CONVEYOR_REINDEX_INTERVAL",
        show_envvar=True,
        help="How often one worker of the database rebuilds (REINDEX CONCURRENTLY) the "
        "indexes a drained burst left bloated, when its role owns them; 0 never.",
    ),
]


def history_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options; the command gets them as ``history``."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        preserve_finished: bool,
        cleanup_interval: float,
        preserve_for: float,
        keep_expired: bool,
        reindex_interval: float,
        **kwargs: Any,
    ) -> Any:
        history = {
            "preserve_finished": preserve_finished,
            "cleanup_interval": cleanup_interval or None,
            "preserve_for": preserve_for,
            "cleanup_expired": not keep_expired,
            "reindex_interval": reindex_interval or None,
        }
        return command(*args, history=history, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
