"""The adaptive buffer: how many locked jobs a worker keeps waiting, when it
is not told (no ``--minimum-buffer-size`` / ``--maximum-buffer-size``).

Que's fixed 2..8 buffer keeps several processes fair, but costs a round
trip per few jobs: a worker of no-op jobs spends its time waiting for the
locker. A 2,000-job buffer is five times faster and hoards: a second
process finds nothing ready while the first holds the backlog. The rule
here gets the speed when jobs are short and the fairness always, by bounding
the buffer in *time*, not in jobs:

- **Bounded in time.** The buffer never holds more than ``WINDOW`` seconds
  of work for this process's threads: ``threads x WINDOW / mean job time``
  jobs (the mean measured from the jobs the threads ran, take to finish).
  A process with idle threads therefore never waits longer than about
  ``WINDOW`` for jobs another process holds ready in its buffer. Short
  jobs (no-op: tens of microseconds) allow a large buffer, slow ones
  (tens of milliseconds and more) keep it at Que's 2..8.
- **Grows under a backlog.** While the last poll got every job it asked for
  (more are ready) and the buffer ran low or a thread waited, the maximum
  doubles, up to the bound above. Doubling from 8 reaches 2,000 in eight
  cycles, a few milliseconds.
- **Shrinks when the queue drains or jobs slow down.** A poll that comes back
  short puts it back to 2..8 at once; a bound that fell below the maximum
  (jobs got slower) cuts the maximum to it, and the excess is unlocked.
- **Within the lock table.** Each buffered or running job is an advisory
  lock in the server's shared lock table; ``budget`` (see
  :mod:`conveyor.lock_budget`) caps the maximum at this locker's share.

The minimum (poll again when fewer wait) is half the maximum, as in the
tuned 2,000/1,000 setting, and Que's 2 at the floor.
"""

from __future__ import annotations

__all__: list[str] = []

#: Seconds of work the buffer may hold for this process's threads. It is
#: also about the longest a process with idle threads waits for ready jobs
#: another process holds in its buffer.
WINDOW = 0.010
#: Que's default bounds: the buffer starts and falls back here.
FLOOR_MINIMUM = 2
FLOOR_MAXIMUM = 8
#: The largest maximum the rule ever sets: the tuned setting of the
#: benchmark; past it a larger lock_jobs call buys nothing measurable.
CEILING = 2000
#: Weight of the newest sample in the mean job time.
_SMOOTHING = 0.3


def minimum_for(maximum: int) -> int:
    """The refill threshold that goes with a maximum."""
    return min(FLOOR_MINIMUM, maximum) if maximum <= FLOOR_MAXIMUM else maximum // 2


class AdaptiveSize:
    """The adaptive rule for one worker process (used by its locker)."""

    def __init__(self, threads: int, *, window: float = WINDOW, ceiling: int = CEILING) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.threads = threads
        self.window = window
        self.ceiling = ceiling
        #: The lock-table share of this locker (jobs), set by the locker.
        self.budget = ceiling
        #: The mean seconds a job took, take to finish (None: none measured yet).
        self.mean_job_seconds: float | None = None

    def observe(self, done: int, busy_seconds: float) -> None:
        """Fold in ``done`` jobs that took ``busy_seconds`` in all."""
        if done <= 0:
            return
        sample = busy_seconds / done
        mean = self.mean_job_seconds
        self.mean_job_seconds = sample if mean is None else mean + _SMOOTHING * (sample - mean)

    def bound(self) -> int:
        """The largest maximum allowed now: the time window and the budget."""
        mean = self.mean_job_seconds
        if mean is None:
            # No job finished yet: they may be slow, and a large buffer taken
            # now would hoard a backlog another process could start on.
            by_time = FLOOR_MAXIMUM
        else:
            by_time = int(self.threads * self.window / max(mean, 1e-7))
        # The floor gives way to the lock-table budget only: a budget that
        # small comes from a lock table that was found full.
        return min(max(FLOOR_MAXIMUM, min(by_time, self.ceiling)), max(1, self.budget))

    def next_maximum(self, current: int, *, backlog: bool, starving: bool) -> int:
        """The buffer's next maximum, from the current one.

        ``backlog``: the last poll at the widest priority got all it asked
        for (more jobs are ready). ``starving``: the buffer is below its
        minimum or a worker thread waits for a job."""
        bound = self.bound()
        if not backlog:
            return min(FLOOR_MAXIMUM, bound)
        if current > bound:
            return bound
        if starving:
            return min(bound, max(FLOOR_MAXIMUM, current * 2))
        return current
