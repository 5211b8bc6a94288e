"""``python manage.py conveyor_worker [--backend ALIAS] [OPTIONS] [MODULE]...``:
``conveyor worker`` inside this Django project.

Every ``conveyor worker`` option is accepted as it is (the arguments go to
conveyor's own command; ``--help`` lists them). Django is set up once, by
``manage.py``, before the worker starts; the database is the one of the
backend's ``database`` alias unless ``--database-url`` is given.
``--backend`` (default ``default``) names the ``TASKS`` entry.
``conveyor worker --django-settings MODULE`` does the same without
``manage.py`` (see :mod:`conveyor.cli_worker_django`).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from conveyor.errors import ConveyorError

from ...worker import JOB_MODULE, worker_target


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

    alias, rest = _split_backend(argv)
    try:
        url = worker_target(alias)
    except ConveyorError as error:
        raise CommandError(f"--backend {alias}: {error}") from error
    # The alias's database first: a --database-url given after it wins.
    args = ["--database-url", url, *rest, JOB_MODULE]
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
