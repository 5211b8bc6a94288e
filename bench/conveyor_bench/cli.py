"""``conveyor bench``: the benchmark command (click)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click
import psycopg

from .runner import Options, run_bench
from .scenarios import SCENARIOS

__all__ = ["bench"]

LONG_SCENARIOS = ("many_workers", "soak", "soak_short")
#: ``--scenario peers``: the scenarios the peers take part in.
GROUPS = {
    # The long scenarios (the soak: 10 minutes; many workers: 20 processes)
    # run only when named.
    "all": [name for name in SCENARIOS if name not in LONG_SCENARIOS],
    "peers": ["enqueue_single", "enqueue_bulk", "drain", "latency_idle"],
}
PEER_NAMES = ("procrastinate", "pgqueuer")


def _scenarios(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for item in value or ("all",):
        for name in filter(None, (part.strip() for part in item.split(","))):
            if name in GROUPS:
                names.extend(GROUPS[name])
            elif name in SCENARIOS:
                names.append(name)
            else:
                choices = ", ".join([*SCENARIOS, *GROUPS])
                raise click.BadParameter(f"unknown scenario {name!r} (choose from {choices})")
    return list(dict.fromkeys(names))


def _compare(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None  # every peer that is installed
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    if names in ([], ["none"]):
        return []
    for name in names:
        if name not in PEER_NAMES:
            raise click.BadParameter(
                f"unknown peer {name!r} (choose from {', '.join(PEER_NAMES)}, none)"
            )
    return list(dict.fromkeys(names))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar=["CONVEYOR_DATABASE_URL", "DATABASE_URL"],
    show_envvar=True,
    metavar="URL",
    help="A server where the role may CREATE DATABASE: every run gets a fresh "
    "database there, dropped afterwards.",
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    callback=_scenarios,
    metavar="NAME",
    help="Scenario to run (repeatable or comma-separated): "
    + ", ".join(SCENARIOS)
    + "; 'peers' for the four the peers join; "
    "'all' (the default: all but many_workers, soak and soak_short).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    metavar="N",
    help="Jobs per run for the throughput scenarios (default per scenario: "
    + ", ".join(f"{s.name} {s.default_jobs:,}" for s in SCENARIOS.values() if s.default_jobs)
    + ").",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    metavar="K",
    help="Runs per figure; systems are interleaved (A B C A B C).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write every figure, run and setting as JSON.",
)
@click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Write PNG charts (needs matplotlib).",
)
@click.option(
    "--compare",
    callback=_compare,
    metavar="PEERS",
    help="Peers to run side by side: procrastinate,pgqueuer or none [default: the installed ones].",
)
def bench(
    database_url: str | None,
    scenarios: list[str],
    jobs: int | None,
    repeat: int,
    json_path: Path | None,
    plot_dir: Path | None,
    compare: list[str] | None,
) -> None:
    """Measure conveyor's throughput, latency and scaling next to the raw-SQL
    ceiling and the Python peers (procrastinate, PgQueuer), on one server.

    Progress goes to stderr; the report (machine, figures, goals) to stdout.
    """
    if not database_url:
        raise click.UsageError("no database: pass --database-url or set DATABASE_URL")
    if plot_dir is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.UsageError("--plot needs matplotlib: pip install ./bench") from None
    if compare is None:
        from .peers import PEERS

        compare = [name for name, cls in PEERS.items() if cls().unavailable() is None]
    options = Options(
        database_url=database_url,
        scenarios=scenarios,
        jobs=jobs,
        repeat=repeat,
        compare=compare,
        json_path=json_path,
        plot_dir=plot_dir,
    )
    # SIGTERM (and SIGINT, even where a shell started us with it ignored)
    # ends the run like Ctrl-C: workers stopped, databases dropped.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    for signum in previous:
        signal.signal(signum, _interrupt)
    try:
        _, text = run_bench(options)
    except psycopg.OperationalError as error:
        first = (str(error).strip() or type(error).__name__).splitlines()[0]
        click.echo(f"conveyor bench: error: cannot use the database: {first}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(
            "conveyor bench: interrupted; its databases and workers were cleaned up", err=True
        )
        sys.exit(130)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    click.echo(text, nl=False)
