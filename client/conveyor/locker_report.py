"""The locker's report of its buffer to ``conveyor.lockers`` (the size and
maximum the dashboard's processes page and ``conveyor top`` show).

Never per job: at most once every :data:`REPORT_EVERY` seconds, and only
when the figures changed since the last report, as one more statement in a
cycle's pipelined round trip (or a round trip of its own when the buffer
changed and nothing else is due: the locker wakes every ``wait_period``).
An idle worker sends nothing.
"""

from __future__ import annotations

from . import sql
from .buffer import JobBuffer
from .protocol import Statement, StatementKind

__all__: list[str] = []

#: Seconds between two reports at most.
REPORT_EVERY = 2.0


class BufferReport:
    """When the locker reports its buffer, and what."""

    def __init__(self, buffer: JobBuffer, every: float = REPORT_EVERY) -> None:
        self._buffer = buffer
        self.every = every
        #: False on a schema without report_locker (set at each connection).
        self.enabled = False
        self._sent: tuple[int, int] | None = None
        self._due = 0.0

    def reset(self, *, enabled: bool) -> None:
        """A new session: its row has no report yet, so the next cycle reports."""
        self.enabled = enabled
        self._sent = None
        self._due = 0.0

    def statements(self, now: float) -> list[Statement]:
        """The report to send in this cycle, if one is due (``now``: monotonic)."""
        if not self.enabled or now < self._due:
            return []
        buffer = self._buffer
        figures = (buffer.size, buffer.maximum_size)
        if figures == self._sent:
            return []
        # Counted as sent now: if the cycle fails, the session is lost and
        # the next one reports afresh (reset).
        self._sent = figures
        self._due = now + self.every
        return [Statement(sql.REPORT_LOCKER, figures, StatementKind.RESOLVE)]
