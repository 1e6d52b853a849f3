"""Counting failures per subject (an email, a client address) in a sliding window.

In memory, per replica: enough to make password guessing slow; the shared limiter of
the gateway's rate limits lives elsewhere.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Callable


class FailureThrottle:
    def __init__(self, max_failures: int, window_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_failures
        self._window = window_s
        self._clock = clock
        self._failures: dict[str, collections.deque[float]] = {}

    def retry_after(self, subject: str) -> int:
        """Seconds until `subject` may try again; 0 when it may now."""
        failures = self._recent(subject)
        if len(failures) < self._max:
            return 0
        return max(1, math.ceil(failures[0] + self._window - self._clock()))

    def fail(self, subject: str) -> None:
        self._recent(subject).append(self._clock())
        if len(self._failures) > 100_000:  # bounded memory under a spray of subjects
            self._failures = {s: q for s, q in self._failures.items() if q and q[-1] > self._clock() - self._window}

    def clear(self, subject: str) -> None:
        self._failures.pop(subject, None)

    def _recent(self, subject: str) -> collections.deque[float]:
        failures = self._failures.setdefault(subject, collections.deque())
        cutoff = self._clock() - self._window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        return failures
