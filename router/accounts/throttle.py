"""Counting events per subject (an email, a client address) in a sliding window, and the
login and registration throttles built on it.

In memory, per replica: enough to make password guessing and mass sign-ups slow; the
shared limiter of the gateway's rate limits lives elsewhere (router/state).

The login rule (`LoginThrottle`), chosen so that an attacker cannot lock a victim out:

- per client address: `login_failures_per_client` failures (any emails) in `login_window_s`,
  then 429 for that address;
- per (client address, email): `login_failures_per_client_email` failures, then 429 for
  that pair only;
- per email across all addresses: once `login_failures_per_email` failures happened in the
  window, a client that has itself failed for that email may try it at most once every
  `login_email_backoff_s` (429 with a Retry-After of at most that). Never a hard lock.
- a client with no failure of its own for that email in the window is never refused or
  delayed because of other clients' failures: the victim, from their own address, logs
  in at once however many wrong passwords others sent for their email.

An attempt is counted as a failure when it starts (before the slow password check) and
taken back when the password was right, so a burst of concurrent guesses cannot slip
past a limit while the first ones are still being checked.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Callable, Hashable

_SLACK = 64  # events kept per subject beyond its maximum (bounded memory for a subject under a flood)


class FailureThrottle:
    """At most `max_failures` events per subject in any `window_s`."""

    def __init__(self, max_failures: int, window_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_failures
        self._window = window_s
        self._clock = clock
        self._failures: dict[Hashable, collections.deque[float]] = {}

    def retry_after(self, subject: Hashable) -> int:
        """Seconds until `subject` may try again; 0 when it may now."""
        failures = self._recent(subject)
        if len(failures) < self._max:
            return 0
        return max(1, math.ceil(failures[0] + self._window - self._clock()))

    def count(self, subject: Hashable) -> int:
        """Events of `subject` in the window."""
        return len(self._recent(subject))

    def last(self, subject: Hashable) -> float | None:
        """When `subject`'s latest event in the window happened (this clock), or None."""
        failures = self._recent(subject)
        return failures[-1] if failures else None

    def fail(self, subject: Hashable) -> float:
        """Count one event now; its timestamp (to `forgive` it later)."""
        now = self._clock()
        failures = self._recent(subject)
        failures.append(now)
        if len(failures) > self._max + _SLACK:  # the newest `max` decide `retry_after`; the rest is a margin
            failures.popleft()
        if len(self._failures) > 100_000:  # bounded memory under a spray of subjects
            self._failures = {s: q for s, q in self._failures.items() if q and q[-1] > now - self._window}
        return now

    def take(self, subject: Hashable) -> int:
        """Check and count in one step (nothing awaits in between): 0 when the event was
        counted, else the seconds to wait (and nothing was counted)."""
        wait = self.retry_after(subject)
        if not wait:
            self.fail(subject)
        return wait

    def forgive(self, subject: Hashable, at: float) -> None:
        """Take back the event counted at `at` (an attempt that turned out fine)."""
        failures = self._failures.get(subject)
        if failures is not None:
            try:
                failures.remove(at)
            except ValueError:  # already out of the window
                pass
            if not failures:
                self._failures.pop(subject, None)

    def clear(self, subject: Hashable) -> None:
        self._failures.pop(subject, None)

    def _recent(self, subject: Hashable) -> collections.deque[float]:
        failures = self._failures.setdefault(subject, collections.deque())
        cutoff = self._clock() - self._window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        return failures


class LoginAttempt:
    """One password check in progress: counted as a failure until `succeeded()`."""

    def __init__(self, throttle: "LoginThrottle", client: str, email: str, stamps: tuple[float, float, float]) -> None:
        self._throttle = throttle
        self._client = client
        self._email = email
        self._stamps = stamps

    def succeeded(self) -> None:
        """The password was right: this attempt is no failure, and this client's earlier
        failures for this email are forgiven. Other clients' failures for the email stay
        counted (an attacker's backoff is not reset by the victim's login)."""
        at_client, _, at_email = self._stamps
        self._throttle.by_client.forgive(self._client, at_client)
        self._throttle.by_pair.clear((self._client, self._email))
        self._throttle.by_email.forgive(self._email, at_email)


class LoginThrottle:
    """Failed logins per client, per (client, email) and per email: see the module docstring."""

    def __init__(
        self,
        *,
        per_client: int,
        per_client_email: int,
        per_email: int,
        window_s: float,
        email_backoff_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._per_email = per_email
        self._backoff = email_backoff_s
        self.by_client = FailureThrottle(per_client, window_s, clock=clock)
        self.by_pair = FailureThrottle(per_client_email, window_s, clock=clock)
        self.by_email = FailureThrottle(per_email, window_s, clock=clock)

    def retry_after(self, client: str, email: str) -> int:
        """Seconds before `client` may try a password for `email`; 0 when it may now."""
        pair = (client, email)
        wait = max(self.by_client.retry_after(client), self.by_pair.retry_after(pair))
        if wait or self.by_pair.count(pair) == 0:
            return wait  # a client that has not failed for this email is not held by others' failures
        if self.by_email.count(email) < self._per_email:
            return 0
        last = self.by_email.last(email)
        if last is None:
            return 0
        remaining = last + self._backoff - self._clock()
        return max(1, math.ceil(remaining)) if remaining > 0 else 0

    def attempt(self, client: str, email: str) -> LoginAttempt | int:
        """Start a password check: a `LoginAttempt` (counted as a failure until it
        succeeds), or the seconds to wait when this one is refused. Nothing awaits in
        between, so concurrent attempts cannot all pass the same check."""
        wait = self.retry_after(client, email)
        if wait:
            return wait
        stamps = (self.by_client.fail(client), self.by_pair.fail((client, email)), self.by_email.fail(email))
        return LoginAttempt(self, client, email, stamps)
