"""``python manage.py conveyor_worker [--backend ALIAS] [OPTIONS] [MODULE]...``:
``conveyor worker`` inside this Django project.

Every ``conveyor worker`` option is accepted as it is (the arguments go to
conveyor's own command; ``--help`` lists them). Django is set up once, by
``manage.py``, before the worker starts; the database is the one of the
backend's ``database`` alias unless ``--database-url`` is given.
``--backend`` (default ``default``) names the ``TASKS`` entry.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError


def _split_backend(argv: list[str]) -> tuple[str, list[str]]:
    alias, rest = "default", []
    args = iter(argv)
    for arg in args:
        if arg == "--backend":
            alias = next(args, "")
        elif arg.startswith("--backend="):
            alias = arg.partition("=")[2]
        else:
            rest.append(arg)
    if not alias:
        raise CommandError("--backend needs a TASKS alias")
    return alias, rest


def run_worker(argv: list[str], prog_name: str) -> None:
    """Run conveyor's worker command with ``argv`` (exits the process)."""
    from conveyor.cli import worker

    from ...backend import ConveyorBackend
    from ...compat import task_backends
    from ...schema import database_url

    alias, rest = _split_backend(argv)
    try:
        backend = task_backends[alias]
    except Exception as error:
        raise CommandError(f"--backend {alias}: {error}") from error
    if not isinstance(backend, ConveyorBackend):
        raise CommandError(
            f"TASKS[{alias!r}] is {type(backend).__name__}, not conveyor's ConveyorBackend"
        )
    # The alias's database first: a --database-url given after it wins.
    args = ["--database-url", database_url(backend.database), *rest]
    args.append("conveyor.contrib.django.job")
    worker.main(args=args, prog_name=prog_name)


class Command(BaseCommand):
    help = (
        "Run a conveyor worker for this project's tasks. Takes every `conveyor worker` "
        "option (see --help), and --backend ALIAS (the TASKS entry; default: default)."
    )

    def run_from_argv(self, argv: list[str]) -> None:
        # Django's argparse would reject conveyor's options: hand them over
        # untouched (manage.py has already set Django up).
        run_worker(argv[2:], prog_name=f"{argv[0]} {argv[1]}")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("args", nargs="*", help="conveyor worker options")

    def handle(self, *args: str, **options: Any) -> None:
        # call_command("conveyor_worker", "--queue-name", "mail")
        run_worker(list(args), prog_name="conveyor_worker")
