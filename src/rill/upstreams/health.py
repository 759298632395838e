"""Whether a replica takes traffic: passive ejection with half-open recovery.

`eject_after` consecutive failures (connect errors, timeouts, 5xx: what UpstreamError calls
retryable, except 429, which is a busy replica, not a sick one) eject a replica for
`eject_seconds`. After that it is half-open: one request (or one active check) tries it; success
makes it healthy, failure ejects it again for twice as long (up to MAX_BACKOFF times the first).
Active checks (replica_set.py) report through the same success()/failure().
"""

from __future__ import annotations

import time
from typing import Callable, Literal

State = Literal["healthy", "ejected", "half_open"]
MAX_BACKOFF = 10  # an ejection lasts at most this many eject_seconds


class Health:
    def __init__(self, eject_after: int, eject_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.eject_after, self.eject_seconds, self._clock = eject_after, eject_seconds, clock
        self.failures = 0  # consecutive
        self.ejections = 0  # ever
        self.ejected_since: float | None = None  # wall-clock time, for people
        self._until = 0.0
        self._length = eject_seconds
        self._trial = False  # a half-open replica's one request is out

    @property
    def state(self) -> State:
        if self.ejected_since is None:
            return "healthy"
        return "half_open" if self._clock() >= self._until else "ejected"

    def available(self) -> bool:
        """Whether a request may go to it now (a half-open replica takes one at a time)."""
        state = self.state
        return state == "healthy" or (state == "half_open" and not self._trial)

    def take(self) -> None:
        """A request goes to it: a half-open replica's trial is out."""
        if self.state == "half_open":
            self._trial = True

    def eta(self) -> float:
        """Seconds until an ejected replica turns half-open (0 otherwise)."""
        return max(0.0, self._until - self._clock()) if self.ejected_since is not None else 0.0

    def success(self) -> None:
        """It answered: healthy again (a trial's answer, or one taken while every replica was out)."""
        self.failures = 0
        self._trial = False
        self.ejected_since = None
        self._length = self.eject_seconds

    def failure(self) -> bool:
        """Counts a failure; True when it ejects the replica."""
        self.failures += 1
        state = self.state
        if state == "half_open":
            self._length = min(self._length * 2, self.eject_seconds * MAX_BACKOFF)
            return self._eject()
        if state == "healthy" and self.failures >= self.eject_after:
            return self._eject()
        return False

    def release(self) -> None:
        """A request that neither succeeded nor failed (the client left, a 4xx): the trial is free."""
        self._trial = False

    def _eject(self) -> bool:
        self._trial = False
        self.ejections += 1
        if self.ejected_since is None:
            self.ejected_since = time.time()
        self._until = self._clock() + self._length
        return True
