"""The registry of job classes: which :class:`~conveyor.Job` subclass a
``job_class`` value names. A subclass registers itself when it is defined."""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

from .errors import ConveyorError, UnknownJobClassError, describe

if TYPE_CHECKING:
    from .job import Job

__all__ = ["job_classes", "register", "resolve_job_class"]

_registry: dict[str, type[Job]] = {}
_registry_lock = threading.Lock()


def resolve_job_class(name: str) -> type[Job]:
    """The :class:`Job` subclass a ``job_class`` value names.

    A name registered by a subclass definition (its class name, or the
    ``job_class`` it sets) wins; otherwise a dotted path
    ``package.module.ClassName`` is imported on demand. Raises
    :class:`UnknownJobClassError` when neither works.
    """
    cls = _registry.get(name)
    if cls is not None:
        return cls
    module_name, _, attribute = name.rpartition(".")
    if not module_name:
        raise UnknownJobClassError(
            f"unknown job class {name!r}: no Job subclass of that name is loaded "
            "(pass its module to `conveyor worker`, or enqueue it by dotted path)"
        )
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, attribute)
    except Exception as error:  # ImportError, AttributeError, or the module's own
        raise UnknownJobClassError(
            f"unknown job class {name!r}: cannot import it ({describe(error)})"
        ) from error
    # Every Job subclass registers itself when it is defined: a class that is
    # not registered under its own job_class is not a conveyor.Job.
    own = _registry.get(getattr(found, "job_class", None) or "")
    if own is None or own is not found:
        raise UnknownJobClassError(f"unknown job class {name!r}: it is not a conveyor.Job")
    with _registry_lock:
        _registry[name] = own
    return own


def register(cls: type[Job]) -> None:
    """Register ``cls`` under its ``job_class``. Another class under the same
    name is an error: a worker would run whichever module was imported last.
    The same class defined again (same module and qualified name: a module
    reloaded, or a class defined in a function called twice) replaces it."""
    name = cls.job_class
    with _registry_lock:
        known = _registry.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ConveyorError(
                f"job_class {name!r} is already registered by "
                f"{known.__module__}.{known.__qualname__}; "
                f"{cls.__module__}.{cls.__qualname__} cannot take it too "
                "(set a distinct job_class on one of them)"
            )
        _registry[name] = cls


def job_classes() -> list[type[Job]]:
    """The registered job classes, by ``job_class``."""
    with _registry_lock:
        return [_registry[name] for name in sorted(_registry)]
