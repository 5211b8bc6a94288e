"""cli.md's table of log events lists every event the package logs, at the
level it logs it, and nothing it does not.
The events are collected from the code itself: every `log(level, "event", ...)`
call in client/conveyor, read by AST."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "client" / "conveyor"
CLI_MD = ROOT / "docs" / "reference" / "cli.md"

#: Documented events that are no `log()` call: another logger's record.
NOT_FROM_LOG_CALLS = {"log"}

LEVEL_NAMES = {
    "DEBUG": "debug",
    "INFO": "info",
    "WARNING": "warning",
    "ERROR": "error",
    "CRITICAL": "critical",
}


def logged_events() -> dict[str, set[str | None]]:
    """event name -> the levels it is logged at (None: computed at run time)."""
    events: dict[str, set[str | None]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "log"
            ):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert len(node.args) >= 2, f"{where}: log(level, event, ...) expected"
            event = node.args[1]
            assert isinstance(event, ast.Constant) and isinstance(event.value, str), (
                f"{where}: the event name must be a string literal, so it can be documented"
            )
            level = node.args[0]
            name = None
            if isinstance(level, ast.Attribute) and level.attr in LEVEL_NAMES:
                name = LEVEL_NAMES[level.attr]
            events.setdefault(event.value, set()).add(name)
    return events


def documented_events() -> dict[str, str]:
    """event name -> the level cell of its row in cli.md's table of events."""
    text = CLI_MD.read_text()
    table = text[text.index("| event | level | when |") :].split("\n\n", 1)[0]
    rows: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([a-z_]+)`", cells[0]):
            assert name not in rows, f"{name} is documented twice"
            rows[name] = cells[1]
    return rows


def test_the_collector_finds_events_and_levels() -> None:
    events = logged_events()
    # A collector that finds nothing would make the next test pass vacuously.
    assert events["job_errored"] == {"error"}
    assert events["worker_crashed"] == {"critical"}
    assert events["job_worked"] == {None}
    assert len(events) >= 20


def test_cli_md_lists_every_logged_event_at_its_level() -> None:
    events = logged_events()
    documented = documented_events()
    missing = sorted(set(events) - set(documented))
    assert not missing, f"events logged but not in cli.md's table: {missing}"
    stale = sorted(set(documented) - set(events) - NOT_FROM_LOG_CALLS)
    assert not stale, f"events in cli.md's table that nothing logs: {stale}"
    for name, levels in events.items():
        for level in levels:
            assert level is None or level in documented[name], (
                f"{name} is logged at {level}; cli.md says {documented[name]!r}"
            )
