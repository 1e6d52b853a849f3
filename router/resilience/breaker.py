"""A circuit breaker for async streaming calls, on pybreaker's state machine.

pybreaker guards synchronous calls; a synthesis is an async stream whose outcome is
known only when it ends. So a call first takes a `Ticket` (refused while the circuit
is open, or while a half-open trial is already running), and reports its outcome
through the ticket when the stream is over. The outcome is fed to pybreaker with its
`calling()` context, so counting, tripping and closing stay pybreaker's.

Who may open it: only failures that say the upstream is unwell count (COUNTED; a client's
own bad request is a success, a busy engine neutral). And a streak of failures opens the
circuit for everyone only when at least `tenants_to_open` organizations took part in it:
the failure that would open it on the word of fewer is not fed to pybreaker, and instead
that organization alone is refused for `reset_timeout_s`. So one tenant sending input that
breaks an engine loses its own access for a while, never everyone else's; an upstream
that is really down fails for every tenant and opens the circuit as soon as two of them
have seen it (a single-tenant gateway is refused in the same way, through its one tenant).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Literal

import pybreaker

from voxrouter.providers.base import ErrorKind, ProviderError
from voxrouter.providers.spec import BreakerSpec

logger = logging.getLogger("voxrouter.breaker")

CircuitState = Literal["closed", "open", "half-open"]
# Failures that say the upstream is unwell. A client's bad request proves the upstream
# answered (a success); a local engine's full queue or absent weights say nothing either way.
COUNTED = frozenset({ErrorKind.unavailable, ErrorKind.timeout, ErrorKind.rate_limited, ErrorKind.auth})
NEUTRAL = frozenset({ErrorKind.overloaded, ErrorKind.not_installed})
HALF_OPEN_RETRY_S = 1.0


class CircuitOpen(Exception):
    def __init__(self, name: str, reason: Literal["circuit_open", "circuit_half_open"], retry_after_s: float) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
        self.retry_after_s = retry_after_s


class _Log(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: object, new_state: object) -> None:
        old = getattr(old_state, "name", None)
        new = getattr(new_state, "name", None)
        if old != new:
            log = logger.warning if new == "open" else logger.info
            log("circuit %s: %s -> %s", cb.name, old, new)


class Circuit:
    def __init__(self, name: str, spec: BreakerSpec) -> None:
        self.name = name
        self.enabled = spec.enabled
        self.last_error: str | None = None
        self.last_success_at = 0.0  # time.monotonic() of the last call that worked
        self._trial_running = False
        self._tenants_to_open = spec.tenants_to_open
        self._streak: set[str] = set()  # organizations whose failures make up the current streak
        self._tenant_open_until: dict[str, float] = {}  # organization -> time.monotonic() it may call again
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=spec.fail_max,
            reset_timeout=spec.reset_timeout_s,
            success_threshold=spec.success_threshold,
            name=name,
            listeners=[_Log()],
        )

    @property
    def state(self) -> CircuitState:
        return self._breaker.current_state  # type: ignore[return-value]

    @property
    def failures(self) -> int:
        return self._breaker.fail_counter

    def retry_after_s(self) -> float:
        """Seconds until an open circuit lets a trial through (0 when it would now)."""
        opened_at = self._breaker._state_storage.opened_at
        if self.state != "open" or opened_at is None:
            return 0.0
        due = opened_at + dt.timedelta(seconds=self._breaker.reset_timeout)
        return max(0.0, (due - dt.datetime.now(dt.timezone.utc)).total_seconds())

    def blocked(self, org: str | None = None) -> CircuitOpen | None:
        """Why a call would be refused now, without taking a ticket (None: it would not be)."""
        if not self.enabled:
            return None
        if self.state == "open" and (wait := self.retry_after_s()) > 0:
            return CircuitOpen(self.name, "circuit_open", wait)
        return self._tenant_blocked(org)

    def _tenant_blocked(self, org: str | None) -> CircuitOpen | None:
        tenant = org or ""  # as _record keys it: calls on behalf of no organization are one tenant
        until = self._tenant_open_until.get(tenant)
        if until is None:
            return None
        wait = until - time.monotonic()
        if wait <= 0:
            del self._tenant_open_until[tenant]
            return None
        return CircuitOpen(self.name, "circuit_open", wait)

    def admit(self, org: str | None = None) -> "Ticket":
        """A ticket for one call on behalf of `org`, or `CircuitOpen` with the time to wait."""
        if not self.enabled:
            return Ticket(self, trial=False, org=org)
        if (refused := self._tenant_blocked(org)) is not None:
            raise refused
        if self.state == "open":
            wait = self.retry_after_s()
            if wait > 0:
                raise CircuitOpen(self.name, "circuit_open", wait)
            self._breaker.half_open()
        if self.state == "half-open":
            if self._trial_running:
                raise CircuitOpen(self.name, "circuit_half_open", HALF_OPEN_RETRY_S)
            self._trial_running = True
            return Ticket(self, trial=True, org=org)
        return Ticket(self, trial=False, org=org)

    def half_open(self) -> None:
        """A free probe passed after the open period: let the next call be the trial."""
        if self.state == "open" and self.retry_after_s() == 0:
            self._breaker.half_open()

    def reopen(self, error: str) -> None:
        """A free probe failed: stay open for another full period."""
        self.last_error = error
        self._breaker.open()

    def _record(self, error: ProviderError | None, org: str | None = None) -> None:
        if error is not None and error.kind in NEUTRAL:
            return
        if error is None or error.kind not in COUNTED:
            self.last_success_at = time.monotonic()
            self._streak.clear()
        if not self.enabled:
            return
        if error is not None and error.kind in COUNTED:
            self.last_error = error.message
            self._streak.add(org or "")
            would_open = self.state == "closed" and self._breaker.fail_counter + 1 >= self._breaker.fail_max
            if would_open and len(self._streak) < self._tenants_to_open:
                logger.warning("circuit %s: organization %s alone is refused for %gs", self.name, org, self._breaker.reset_timeout)
                self._tenant_open_until[org or ""] = time.monotonic() + self._breaker.reset_timeout
                if len(self._tenant_open_until) > 10_000:  # bounded under a spray of organizations
                    now = time.monotonic()
                    self._tenant_open_until = {o: t for o, t in self._tenant_open_until.items() if t > now}
                return
            try:
                with self._breaker.calling():
                    raise error
            except (pybreaker.CircuitBreakerError, ProviderError):
                pass
            return
        try:
            with self._breaker.calling():
                pass
        except pybreaker.CircuitBreakerError:  # opened meanwhile by another call
            pass


class Ticket:
    """One admitted call; exactly one of its outcomes counts, later ones are ignored."""

    def __init__(self, circuit: Circuit, *, trial: bool, org: str | None = None) -> None:
        self._circuit = circuit
        self._trial = trial
        self._org = org
        self._done = False

    def succeeded(self) -> None:
        self._finish(None, record=True)

    def failed(self, error: ProviderError) -> None:
        self._finish(error, record=True)

    def abandoned(self) -> None:
        """The caller gave up (client gone) before an outcome: count nothing."""
        self._finish(None, record=False)

    def _finish(self, error: ProviderError | None, *, record: bool) -> None:
        if self._done:
            return
        self._done = True
        if self._trial:
            self._circuit._trial_running = False
        if record:
            self._circuit._record(error, self._org)
