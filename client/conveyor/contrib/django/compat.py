"""The tasks framework this Django has: ``django.tasks`` from Django 6.0 on,
else the ``django-tasks`` backport (module ``django_tasks``) that Django's own
framework came from. Both have the same API; they differ in module names and
in the name of the invalid-task exception, which this module hides."""

from __future__ import annotations

import django

__all__ = [
    "DEFAULT_TASK_PRIORITY",
    "FRAMEWORK",
    "BaseTaskBackend",
    "InvalidTask",
    "InvalidTaskBackend",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]

if django.VERSION >= (6, 0):
    from django.tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import DEFAULT_TASK_PRIORITY, Task, TaskError
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    #: The module whose tasks this backend runs.
    FRAMEWORK = "django.tasks"
else:  # Django 5.2 LTS with the django-tasks backport
    try:
        from django_tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
    except ImportError as error:  # pragma: no cover - said to the user
        raise ImportError(
            f"conveyor.contrib.django needs Django 6 (django.tasks) or, on Django "
            f"{django.get_version()}, the django-tasks backport: pip install django-tasks "
            f"({error})"
        ) from error
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import DEFAULT_TASK_PRIORITY, Task, TaskError
    from django_tasks.exceptions import InvalidTaskBackendError as InvalidTaskBackend
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

    FRAMEWORK = "django_tasks"
