"""What a conveyor worker needs to run a Django project's tasks, shared by
``manage.py conveyor_worker`` and ``conveyor worker --django-settings``:
the ``TASKS`` entry (a :class:`ConveyorBackend`), the database URL of its
``database`` alias, and the module of the job class that runs the tasks.
Django's connections are checked around each task by that job class
(``close_old_connections``), whichever command started the worker."""

from __future__ import annotations

import os

from ...errors import ConveyorError

__all__ = ["JOB_MODULE", "setup_django", "worker_target"]

#: The module the worker imports: it defines the job class of every task.
JOB_MODULE = "conveyor.contrib.django.job"


def worker_target(alias: str) -> str:
    """The database URL of the ``TASKS[alias]`` backend's ``database`` alias;
    ConveyorError when the entry is missing or not a ConveyorBackend.
    Django must be set up."""
    from .backend import ConveyorBackend
    from .compat import task_backends
    from .schema import database_url

    if not alias:
        raise ConveyorError("the Django backend needs a TASKS alias")
    try:
        backend = task_backends[alias]
    except Exception as error:  # InvalidTaskBackend(Error): no such alias, bad OPTIONS
        raise ConveyorError(f"TASKS[{alias!r}]: {error}") from error
    if not isinstance(backend, ConveyorBackend):
        raise ConveyorError(
            f"TASKS[{alias!r}] is {type(backend).__name__}, not conveyor's ConveyorBackend"
        )
    return database_url(backend.database)


def setup_django(settings_module: str) -> None:
    """Set Django up in this process with ``settings_module``, once: what
    ``manage.py`` does before it runs a command. A settings module that
    cannot be imported is a ConveyorError."""
    import django
    from django.apps import apps

    if apps.ready:
        # Already set up (an embedding program did it): setting up again with
        # other settings would not take.
        configured = os.environ.get("DJANGO_SETTINGS_MODULE")
        if configured != settings_module:
            raise ConveyorError(
                f"Django is already set up with {configured!r}, not {settings_module!r}"
            )
        return
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    try:
        django.setup()
    except ImportError as error:
        raise ConveyorError(
            f"cannot import the Django settings {settings_module}: {error}"
        ) from None
