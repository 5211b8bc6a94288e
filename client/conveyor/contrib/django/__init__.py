"""conveyor as a backend of Django's tasks framework (``pip install
'conveyor[django]'``): ``django.tasks`` on Django 6, the ``django-tasks``
backport on Django 5.2.

Settings::

    INSTALLED_APPS = [..., "conveyor.contrib.django"]
    TASKS = {"default": {"BACKEND": "conveyor.contrib.django.ConveyorBackend"}}

``python manage.py migrate`` installs and upgrades conveyor's schema;
``python manage.py conveyor_worker`` runs the tasks. See docs/how-to/django.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConveyorBackend"]


def __getattr__(name: str) -> Any:
    # Lazy: Django imports this package while it loads its apps, before the
    # tasks framework may be imported.
    if name == "ConveyorBackend":
        from .backend import ConveyorBackend

        return ConveyorBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
