"""conveyor: a PostgreSQL job queue modelled on Que 1.0.

The whole contract is SQL (the ``conveyor`` schema); this package is its
Python client: :class:`Job` classes, :func:`enqueue` in your own transaction,
and :class:`Worker`, the process behind ``conveyor worker``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import aio, batches
from ._hooks import hooks
from .batches import Batch, batch
from .client import enqueue, enqueue_many, run_synchronously
from .errors import ConveyorError, SchemaError, UnknownJobClassError
from .job import Job
from .migrations import MigrationResult, migrate
from .schedules import Schedule, schedule
from .worker import Worker

__all__ = [
    "Batch",
    "ConveyorError",
    "Job",
    "MigrationResult",
    "Schedule",
    "SchemaError",
    "UnknownJobClassError",
    "Worker",
    "__version__",
    "aio",
    "batch",
    "batches",
    "enqueue",
    "enqueue_many",
    "hooks",
    "migrate",
    "run_synchronously",
    "schedule",
]
