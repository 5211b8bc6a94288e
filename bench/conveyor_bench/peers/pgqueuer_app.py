"""PgQueuer's side of the benchmark: the consumer factory its worker runs.

Set up as PgQueuer's documentation recommends: an asyncpg connection, a
``PgQueuer`` with an async entrypoint, the schema installed with
``pgq install``, and the consumer run by ``pgqueuer.run(...)``, "what ``pgq
run`` does, without the CLI" (``python -m conveyor_bench.peers.pgqueuer_app``).
Two departures from the README's quick start, both forced by pgqueuer 1.6.0:
``pgq run`` itself fails at start-up with typer 0.29 (``AttributeError: 'str'
object has no attribute 'name'`` in ``setup_fancy_logger``), and the factory
must be an async context manager (a plain ``async def main() -> PgQueuer``, as
the README shows, is refused). The worker reads the database from
``CONVEYOR_BENCH_DSN``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-untyped, import-not-found, unused-ignore]
from pgqueuer import PgQueuer  # type: ignore[import-not-found, unused-ignore]
from pgqueuer.db import AsyncpgDriver  # type: ignore[import-not-found, unused-ignore]
from pgqueuer.models import Job  # type: ignore[import-not-found, unused-ignore]

from ..recorder import record

__all__ = ["main"]


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    """The consumer factory (pgqueuer 1.6 wants an async context manager)."""
    connection = await asyncpg.connect(os.environ["CONVEYOR_BENCH_DSN"])
    try:
        pgq = PgQueuer(AsyncpgDriver(connection))

        @pgq.entrypoint("bench_noop")
        async def bench_noop(job: Job) -> None:
            record(int(job.payload or b"0"))

        yield pgq
    finally:
        await connection.close()


_FACTORY = "conveyor_bench.peers.pgqueuer_app:main"


def _run() -> None:
    from pgqueuer import run  # type: ignore[import-not-found, unused-ignore]

    try:
        import uvloop  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:  # pgq run uses uvloop where it is installed; so do we
        asyncio.run(run(_FACTORY))
    else:
        uvloop.run(run(_FACTORY))


if __name__ == "__main__":
    _run()
