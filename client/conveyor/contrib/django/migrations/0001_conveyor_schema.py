"""Install conveyor's schema (its own migrate code, the bundled sqitch plan)
on the databases a ConveyorBackend uses. Later conveyor versions upgrade it
after every ``manage.py migrate`` (see ``apps.py``)."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations


def install(apps: Any, schema_editor: Any) -> None:
    from conveyor.contrib.django.schema import migrate_alias

    result = migrate_alias(schema_editor.connection.alias)
    if result is not None and result.applied:
        print(f"\n  {result.describe()}", end="")


class Migration(migrations.Migration):
    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []
    # conveyor.migrate runs in its own transaction (on its own connection).
    atomic = False
    operations: ClassVar[list[Any]] = [
        migrations.RunPython(install, migrations.RunPython.noop, elidable=False),
    ]
