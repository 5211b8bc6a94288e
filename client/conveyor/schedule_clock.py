"""When the locker turns due schedules into jobs.

The locker calls ``conveyor.enqueue_due_schedules()`` in the round trip of
a cycle, after its lock statements (so the jobs it enqueues are announced at
commit like any others), and then reads ``conveyor.next_schedule_at()``. It
calls again at whichever comes first:

- the next occurrence's due time, so that it is enqueued within a
  ``wait_period`` of falling due, and
- ``poll_interval`` seconds later, so that a schedule created or changed
  since (by any session) is noticed within an interval.

With no schedule at all this is two cheap statements per poll interval,
sent with the locker's poll when it makes one. Every worker's locker does
this; the SQL makes each occurrence exactly one job however many call it.
"""

from __future__ import annotations

import math

__all__: list[str] = []

#: The shortest wait before calling again. An occurrence whose row another
#: session has locked (it is enqueueing it right now) still reads as due;
#: this keeps the locker from spinning until that session commits.
MINIMUM_WAIT = 0.1


class ScheduleClock:
    """The schedule timing of one locker."""

    def __init__(self, *, poll_interval: float) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.poll_interval = poll_interval
        #: False when this session may not enqueue schedules: never call.
        self.enabled = True
        self._next_call = 0.0

    def due(self, now: float) -> bool:
        """Whether the locker should call enqueue_due_schedules now."""
        return self.enabled and now >= self._next_call

    def called(self, now: float, seconds_to_next: float | None) -> None:
        """Record a call made at ``now`` (monotonic) and the seconds until
        the next occurrence falls due (None: there is no enabled schedule)."""
        wait = self.poll_interval
        if seconds_to_next is not None:
            wait = min(wait, max(seconds_to_next, MINIMUM_WAIT))
        self._next_call = now + wait

    def timeout(self, now: float) -> float:
        """Seconds until the next call is due (infinite when disabled)."""
        if not self.enabled:
            return math.inf
        return max(0.0, self._next_call - now)

    def reset(self) -> None:
        """Call at the next chance (after a reconnect)."""
        self._next_call = 0.0
