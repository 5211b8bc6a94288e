"""The Django app ``conveyor.contrib.django`` (label ``conveyor``): its
migration installs conveyor's schema, ``post_migrate`` upgrades it, and its
management command ``conveyor_worker`` runs tasks."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _upgrade_schema(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    # Runs after every `manage.py migrate`: a newer conveyor package brings
    # schema changes that no new Django migration announces.
    from .schema import migrate_alias

    result = migrate_alias(using)
    verbosity = kwargs.get("verbosity", 1)
    if result is not None and result.applied and verbosity >= 1:
        print(f"  {result.describe()}")


class ConveyorConfig(AppConfig):
    name = "conveyor.contrib.django"
    label = "conveyor"
    verbose_name = "conveyor"

    def ready(self) -> None:
        post_migrate.connect(_upgrade_schema, sender=self)
