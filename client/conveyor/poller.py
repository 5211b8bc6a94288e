"""When the locker polls with ``lock_jobs``, and for how many jobs.

Jobs that are ready when they are inserted arrive by NOTIFY; polling is for
the others (scheduled and retried jobs, jobs released by a dead worker or
evicted from a buffer) and for keeping the buffer full under a backlog. As in
Que, the locker polls:

- every ``poll_interval`` seconds, for every priority level that has demand
  (idle reserved workers are served by their own ``max_priority`` query), and
- when a throttle's window opens (``lock_jobs`` notifies the locker's own
  channel with ``wake_in`` when it held jobs back for a throttle), and
- as soon as the buffer falls below its minimum, as long as the previous poll
  was *satisfied* (it got every job it asked for, so more are likely to be
  ready), and, on the same condition, whenever the locker makes a round trip
  anyway to send resolutions (the buffer is topped up for free).

A poll at the widest priority ceiling that comes back short means the queue
is drained: the locker then waits for the next interval, a notification, or a
hint. (A reserved worker's narrower poll coming back short only means that no
urgent job is ready.)

The queues of one worker are polled together: ``lock_jobs`` takes an array of
queues and returns the most urgent jobs across them.
"""

from __future__ import annotations

import math
import sys

__all__: list[str] = []

#: A lock request: (max_jobs, max_priority); max_priority None is "any".
Request = tuple[int, int | None]


def _order(ceiling: int | None) -> int:
    return sys.maxsize if ceiling is None else ceiling


class Poller:
    """Poll scheduling for one locker."""

    def __init__(self, *, poll_interval: float, widest: int | None = None) -> None:
        """``widest``: the least restrictive priority ceiling of the worker's
        threads (None when one takes any priority)."""
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.poll_interval = poll_interval
        self._widest = widest
        self._next_full = 0.0
        self._satisfied = True
        # When a throttle's window opens (lock_jobs' wake_in): poll then,
        # before the interval is up.
        self._wake = math.inf

    def plan(
        self, demand: dict[int | None, int], low: bool, now: float, *, topping_up: bool = False
    ) -> tuple[list[Request], bool]:
        """The lock requests to send now, most restrictive first, and whether
        this is a full (interval) poll. ``topping_up``: a round trip is made
        anyway (to send resolutions), so fill the buffer even if it is not low
        yet -- under a backlog this keeps the workers fed at no extra round
        trip."""
        due = now >= self._next_full or now >= self._wake
        if now >= self._wake:
            # Cleared here, not when the poll's result comes back: the poll
            # itself may ask for a new wake (a notification read before it).
            self._wake = math.inf
            # Without demand now (a full buffer) the jobs wait, ready: poll
            # for them as soon as the buffer runs low, as after a hint.
            self._satisfied = True
        if not demand:
            if now >= self._next_full:
                self._next_full = now + self.poll_interval
            return [], False
        levels = sorted(demand, key=_order)
        if due:
            return [(demand[c], c) for c in levels if demand[c] > 0], True
        if (low or topping_up) and self._satisfied:
            top = levels[-1]
            return [(demand[top], top)], False
        return [], False

    def polled(self, requests: list[Request], counts: list[int], full: bool, now: float) -> None:
        """Record what a poll got back (``counts[i]`` rows for ``requests[i]``)."""
        # Only a request at the widest ceiling tells whether the queue is
        # drained: a reserved worker's poll coming back empty means there is
        # no urgent job, not that the backlog is gone.
        for (wanted, ceiling), got in zip(requests, counts, strict=True):
            if ceiling == self._widest:
                self._satisfied = got >= wanted
        if full:
            self._next_full = now + self.poll_interval

    @property
    def backlog(self) -> bool:
        """Whether the last poll at the widest ceiling got every job it asked
        for (or a hint said more are ready): the adaptive buffer grows only then."""
        return self._satisfied

    def hint(self) -> None:
        """More jobs are ready than were announced: poll when the buffer is low."""
        self._satisfied = True

    def wake_at(self, when: float) -> None:
        """A throttle held jobs back until ``when`` (monotonic): poll fully
        then, if the interval has not come first."""
        self._wake = min(self._wake, when)

    def reset(self) -> None:
        """Poll fully at the next chance (after a reconnect)."""
        self._next_full = 0.0
        self._satisfied = True
        self._wake = math.inf

    def timeout(self, now: float) -> float:
        """Seconds until the next full poll is due."""
        return max(0.0, min(self._next_full, self._wake) - now)
