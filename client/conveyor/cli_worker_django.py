"""``conveyor worker --django-settings MODULE [--django-backend ALIAS]``: the
worker of a Django project's tasks without ``manage.py`` (the same as
``python manage.py conveyor_worker``), kept out of cli.py: one decorator adds
the options. With ``--django-settings`` the command sets Django up once in
this process, works the tasks of the ``TASKS[ALIAS]`` ConveyorBackend on its
``database`` alias (``--database-url`` given on the command line wins) and
imports the job class that runs them, which checks Django's connections with
``close_old_connections`` around every task."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from .cli_support import cwd_on_path

__all__: list[str] = []

_OPTIONS = [
    click.option(
        "--django-settings",
        metavar="MODULE",
        envvar="CONVEYOR_DJANGO_SETTINGS",
        show_envvar=True,
        help="Work a Django project's tasks: set Django up once with this settings module "
        "(imported from the current directory or PYTHONPATH) and run the tasks of "
        "--django-backend on its database, as `manage.py conveyor_worker` does "
        "(needs conveyor[django]).",
    ),
    click.option(
        "--django-backend",
        metavar="ALIAS",
        default="default",
        show_default=True,
        envvar="CONVEYOR_DJANGO_BACKEND",
        show_envvar=True,
        help="With --django-settings: the TASKS entry (a ConveyorBackend) whose tasks to run.",
    ),
]


def django_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options; with ``--django-settings`` the command gets the
    backend's database URL and the tasks' job module."""

    @functools.wraps(command)
    def wrapper(*args: Any, django_settings: str | None, django_backend: str, **kwargs: Any) -> Any:
        context = click.get_current_context()
        if not django_settings:
            if context.get_parameter_source("django_backend") is not ParameterSource.DEFAULT:
                raise click.BadParameter("needs --django-settings", param_hint="--django-backend")
            return command(*args, **kwargs)
        cwd_on_path()  # as `python manage.py` has it: the project importable
        from .contrib.django.worker import JOB_MODULE, setup_django, worker_target

        setup_django(django_settings)
        url = worker_target(django_backend)
        if context.get_parameter_source("database_url") is not ParameterSource.COMMANDLINE:
            kwargs["database_url"] = url
        kwargs["modules"] = (*kwargs["modules"], JOB_MODULE)
        return command(*args, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
