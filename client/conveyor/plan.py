"""Read a sqitch plan: its entries, each one's deploy script, its releases.

Standard library only, and no imports from the rest of the package, so that
``scripts/gen-sql`` loads this file by its path (with any Python 3.11, no
virtualenv) and generates ``sql/conveyor.sql`` from the same reading of
``sqitch.plan`` that ``conveyor migrate`` uses.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Change", "Plan", "PlanError", "install_order", "parse_plan", "strip_transaction"]


class PlanError(ValueError):
    """sqitch.plan, or a script it names, is not what this module can read."""


class _Path(Protocol):  # pathlib.Path and importlib.resources' Traversable
    def joinpath(self, *parts: str) -> _Path: ...
    def is_file(self) -> bool: ...
    def read_text(self, encoding: str | None = None) -> str: ...


_STAMP = re.compile(r"\s(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\s")
_REQUIRES = re.compile(r"^\S+\s+\[([^\]]*)\]")
_TRANSACTION_LINE = re.compile(r"^(?:BEGIN|COMMIT);[ \t]*\n?", re.MULTILINE)


@dataclass(frozen=True)
class Change:
    """One entry of sqitch.plan."""

    name: str
    planned_at: dt.datetime
    note: str
    requires: tuple[str, ...]
    tags: tuple[str, ...]  # the tags right after this entry ('@v0.1.0')
    script: str  # its deploy script, relative to the plan's folder

    @property
    def key(self) -> tuple[str, dt.datetime]:
        """What tells plan entries apart: a reworked change keeps its name,
        but each of its entries has its own planned-at time."""
        return (self.name, self.planned_at)


@dataclass(frozen=True)
class Plan:
    project: str
    changes: tuple[Change, ...]
    tags: tuple[str, ...] = field(default=())  # every tag, in plan order

    def version_of(self, keys: set[tuple[str, dt.datetime]]) -> str:
        """A name for the state in which exactly ``keys`` are installed:
        ``0.1.0`` at a release, ``0.1.0+2`` two entries after it (``0+N``
        before the first release), ``none`` when nothing is."""
        if not keys:
            return "none"
        count = sum(1 for c in self.changes if c.key in keys)
        release, at = "0", 0
        for i, change in enumerate(self.changes[:count]):
            if change.tags:
                release, at = change.tags[-1].removeprefix("@").removeprefix("v"), i + 1
        return release if count == at else f"{release}+{count - at}"

    @property
    def version(self) -> str:
        """The version the whole plan installs."""
        return self.version_of({c.key for c in self.changes})


def parse_plan(text: str, root: _Path) -> Plan:
    """The entries of a sqitch plan, each with its deploy script found in
    ``root`` the way sqitch finds a reworked change's: an entry reworked later
    runs ``deploy/NAME@TAG.sql`` for the newest tag between it and its rework
    that has a file, the last entry of a name runs ``deploy/NAME.sql``."""
    project = None
    rows: list[tuple[str, dt.datetime, str, tuple[str, ...], list[str]]] = []
    all_tags: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("%"):
            key, _, value = line[1:].partition("=")
            if key.strip() == "project":
                project = value.strip()
            continue
        name = line.split()[0]
        if name.startswith("@"):  # a tag names the entry before it
            if not rows:
                raise PlanError(f"sqitch.plan:{lineno}: tag {name} before any change")
            rows[-1][4].append(name)
            all_tags.append(name)
            continue
        if name.startswith("-"):
            raise PlanError(f"sqitch.plan:{lineno}: revert entries ({name}) are not supported")
        stamp = _STAMP.search(line)
        if stamp is None:
            raise PlanError(f"sqitch.plan:{lineno}: no planned-at time in {line!r}")
        planned_at = dt.datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC
        )
        required = _REQUIRES.match(line)
        note = line.partition(" # ")[2].strip()
        rows.append(
            (
                name.lstrip("+"),
                planned_at,
                note,
                tuple(required.group(1).split()) if required else (),
                [],
            )
        )
    if project is None:
        raise PlanError("sqitch.plan: no %project pragma")
    changes = []
    for i, (name, planned_at, note, requires, tags) in enumerate(rows):
        later = [j for j in range(i + 1, len(rows)) if rows[j][0] == name]
        if not later:
            script = f"deploy/{name}.sql"
        else:
            between = [t for j in range(later[0] - 1, i - 1, -1) for t in rows[j][4]]
            if not between:
                raise PlanError(f"sqitch.plan: {name} reworked without a tag in between")
            candidates = [f"deploy/{name}{tag}.sql" for tag in between]
            script = next(
                (c for c in candidates if root.joinpath(*c.split("/")).is_file()), candidates[0]
            )
        changes.append(Change(name, planned_at, note, requires, tuple(tags), script))
    return Plan(project, tuple(changes), tuple(all_tags))


def install_order(plan: Plan) -> list[Change]:
    """The scripts an install from nothing runs, in order.

    That is the plan, except for a reworked change whose newest version can
    run where the change first appears (everything it requires comes before
    that place): then the newest version runs there and the older ones do not.
    The newest version is what the database ends up with anyway (a reworked
    deploy script installs the whole change, see the README), and an older one
    may need more than it does: the released ``roles`` comments on the roles
    even when they exist, which needs CREATEROLE. A rework that requires a
    change planned after the first place (``enqueue``'s needs the
    ``unique_key`` column) keeps the plan's order: each version where it is.
    """
    names = [c.name for c in plan.changes]
    newest = {c.name: c for c in plan.changes}
    early: set[str] = set()  # reworked changes installed at their first place
    for i, change in enumerate(plan.changes):
        final = newest[change.name]
        if final is change or names.index(change.name) != i:
            continue
        # What the newest version requires is the version of each required
        # change planned last before it: all of them must come before i.
        last = plan.changes.index(final)
        bases = {r.split("@")[0].split(":")[-1] for r in final.requires} - {change.name}
        places = [max((j for j in range(last) if names[j] == b), default=last) for b in bases]
        if all(j < i for j in places):
            early.add(change.name)
    order: list[Change] = []
    for i, change in enumerate(plan.changes):
        if change.name not in early:
            order.append(change)
        elif names.index(change.name) == i:
            order.append(newest[change.name])
    return order


def strip_transaction(text: str, script: str) -> str:
    """A deploy script without its own ``BEGIN;`` and ``COMMIT;`` lines, to
    run inside one transaction with the others."""
    stripped, count = _TRANSACTION_LINE.subn("", text)
    if count != 2:
        raise PlanError(f"{script} must hold exactly one BEGIN; and one COMMIT; line")
    return stripped
