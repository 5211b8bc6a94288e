"""The exceptions conveyor raises. All derive from :class:`ConveyorError`."""

from __future__ import annotations

__all__ = [
    "ConveyorError",
    "SchemaError",
    "UnknownJobClassError",
]


class ConveyorError(Exception):
    """Root of every exception conveyor raises itself."""


class UnknownJobClassError(ConveyorError):
    """A job's ``job_class`` names no known :class:`~conveyor.Job` subclass.

    Raised inside a worker (and recorded as that job's error) when the class is
    neither registered by an imported module nor importable as a dotted path.
    """


class SchemaError(ConveyorError):
    """The database has no conveyor schema, or one of another version."""
