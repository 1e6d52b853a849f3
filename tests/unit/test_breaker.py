"""The circuit breaker's ticket logic (router/resilience/breaker.py), with no upstream at all."""

from __future__ import annotations

import time

import pytest

from voxrouter.providers.base import ErrorKind, ProviderError
from voxrouter.providers.spec import BreakerSpec
from voxrouter.router.resilience.breaker import COUNTED, HALF_OPEN_RETRY_S, NEUTRAL, Circuit, CircuitOpen

SHORT_S = 0.05  # an open period a test waits out


def _circuit(**spec: object) -> Circuit:
    values: dict[str, object] = {"fail_max": 3, "reset_timeout_s": 30.0, "tenants_to_open": 2, **spec}
    return Circuit("up", BreakerSpec.model_validate(values))


def _error(kind: ErrorKind = ErrorKind.unavailable, message: str = "upstream said no") -> ProviderError:
    return ProviderError(kind, message, provider="up")


def _fail(circuit: Circuit, org: str | None, kind: ErrorKind = ErrorKind.unavailable, times: int = 1) -> None:
    for _ in range(times):
        circuit.admit(org).failed(_error(kind))


def _refusal(circuit: Circuit, org: str | None) -> CircuitOpen:
    with pytest.raises(CircuitOpen) as info:
        circuit.admit(org)
    return info.value


def _open(circuit: Circuit) -> None:
    """Open it the way the documented rule allows: a streak shared by two organizations."""
    _fail(circuit, "org-a", times=2)  # fail_max is 3 (_circuit)
    _fail(circuit, "org-b")
    assert circuit.state == "open"


# --- which failures count ------------------------------------------------------------


def test_the_counted_and_neutral_kinds_are_the_documented_ones() -> None:
    assert COUNTED == {ErrorKind.unavailable, ErrorKind.timeout, ErrorKind.rate_limited, ErrorKind.auth}
    assert NEUTRAL == {ErrorKind.overloaded, ErrorKind.not_installed}
    assert ErrorKind.bad_request not in COUNTED | NEUTRAL


@pytest.mark.parametrize("kind", [ErrorKind.unavailable, ErrorKind.timeout, ErrorKind.rate_limited, ErrorKind.auth])
def test_a_counted_failure_adds_to_the_streak_and_is_remembered(kind: ErrorKind) -> None:
    circuit = _circuit()

    circuit.admit("org-a").failed(_error(kind, "it broke"))

    assert circuit.failures == 1
    assert circuit.last_error == "it broke"
    assert circuit.last_success_at == 0.0


@pytest.mark.parametrize("kind", [ErrorKind.overloaded, ErrorKind.not_installed])
def test_a_neutral_failure_counts_neither_way(kind: ErrorKind) -> None:
    circuit = _circuit()
    _fail(circuit, "org-a", times=2)

    _fail(circuit, "org-a", kind, times=5)

    assert circuit.failures == 2  # not reset, not increased
    assert circuit.last_success_at == 0.0
    assert circuit.state == "closed"
    _fail(circuit, "org-b")  # the streak survived the neutral failures: it now opens
    assert circuit.state == "open"


def test_a_clients_bad_request_is_a_success() -> None:
    circuit = _circuit()
    _fail(circuit, "org-a", times=2)

    before = time.monotonic()
    circuit.admit("org-a").failed(_error(ErrorKind.bad_request))

    assert circuit.failures == 0
    assert circuit.last_success_at >= before


def test_a_success_resets_the_count_and_is_timed() -> None:
    circuit = _circuit()
    _fail(circuit, "org-a", times=2)

    before = time.monotonic()
    circuit.admit("org-b").succeeded()

    assert circuit.failures == 0
    assert circuit.last_success_at >= before
    _fail(circuit, "org-b", times=2)
    assert circuit.state == "closed"  # two after the success, not four in a row


# --- who may open it --------------------------------------------------------------------


def test_fail_max_failures_from_two_organizations_open_it_for_everyone() -> None:
    circuit = _circuit()
    _fail(circuit, "org-a", times=2)
    assert circuit.state == "closed"

    _fail(circuit, "org-b")

    assert circuit.state == "open"
    for org in ("org-a", "org-b", "org-c", None):
        refusal = _refusal(circuit, org)
        assert refusal.reason == "circuit_open"
        assert 29.0 < refusal.retry_after_s <= 30.0
    blocked = circuit.blocked("org-c")
    assert blocked is not None and blocked.reason == "circuit_open"
    assert 29.0 < circuit.retry_after_s() <= 30.0


def test_one_organization_alone_is_refused_alone_and_does_not_open_it() -> None:
    circuit = _circuit()

    _fail(circuit, "org-a", times=3)

    assert circuit.state == "closed"
    assert circuit.failures == 2  # the failure that would have opened it was not fed to pybreaker
    refusal = _refusal(circuit, "org-a")
    assert refusal.reason == "circuit_open"
    assert 29.0 < refusal.retry_after_s <= 30.0
    assert circuit.blocked("org-a") is not None
    assert circuit.blocked("org-b") is None
    circuit.admit("org-b").succeeded()  # everyone else is served


def test_calls_on_behalf_of_no_organization_are_one_tenant_and_can_be_refused() -> None:
    circuit = _circuit()

    _fail(circuit, None, times=3)

    assert circuit.state == "closed"
    assert _refusal(circuit, None).reason == "circuit_open"
    assert circuit.blocked(None) is not None
    assert circuit.blocked("org-b") is None


def test_a_refused_organization_may_call_again_after_the_reset_timeout() -> None:
    circuit = _circuit(reset_timeout_s=SHORT_S)
    _fail(circuit, "org-a", times=3)
    assert circuit.blocked("org-a") is not None

    time.sleep(SHORT_S * 1.5)

    assert circuit.blocked("org-a") is None
    circuit.admit("org-a").succeeded()
    assert circuit.state == "closed"


def test_a_success_clears_the_streak_of_organizations() -> None:
    circuit = _circuit()
    _fail(circuit, "org-b")
    circuit.admit("org-c").succeeded()  # org-b's failure is no longer part of the streak

    _fail(circuit, "org-a", times=3)

    assert circuit.state == "closed"
    assert circuit.blocked("org-a") is not None
    assert circuit.blocked("org-b") is None


def test_with_tenants_to_open_one_a_single_organization_opens_it() -> None:
    circuit = _circuit(tenants_to_open=1)

    _fail(circuit, "org-a", times=3)

    assert circuit.state == "open"
    assert _refusal(circuit, "org-b").reason == "circuit_open"


def test_three_tenants_to_open_need_three_organizations() -> None:
    circuit = _circuit(fail_max=2, tenants_to_open=3)
    _fail(circuit, "org-a")
    _fail(circuit, "org-b")  # would open: only two organizations, so org-b alone is refused
    assert circuit.state == "closed"
    assert circuit.blocked("org-b") is not None

    _fail(circuit, "org-c")

    assert circuit.state == "open"


def test_a_disabled_breaker_never_refuses() -> None:
    circuit = _circuit(enabled=False, tenants_to_open=1, fail_max=1)

    _fail(circuit, "org-a", times=10)

    assert circuit.state == "closed"
    assert circuit.failures == 0
    assert circuit.blocked("org-a") is None
    circuit.admit("org-a").succeeded()
    assert circuit.last_success_at > 0  # still timed, for the status page


# --- half-open: one trial at a time ----------------------------------------------------------


def test_after_the_open_period_one_trial_goes_through_and_its_success_closes_it() -> None:
    circuit = _circuit(reset_timeout_s=SHORT_S)
    _open(circuit)
    assert circuit.blocked("org-c") is not None
    time.sleep(SHORT_S * 1.5)
    assert circuit.blocked("org-c") is None  # it would let a trial through now

    trial = circuit.admit("org-c")

    assert circuit.state == "half-open"
    refusal = _refusal(circuit, "org-d")
    assert refusal.reason == "circuit_half_open"
    assert refusal.retry_after_s == HALF_OPEN_RETRY_S
    trial.succeeded()
    assert circuit.state == "closed"
    circuit.admit("org-d").succeeded()


def test_a_failed_trial_opens_it_for_another_full_period() -> None:
    circuit = _circuit(reset_timeout_s=SHORT_S)
    _open(circuit)
    time.sleep(SHORT_S * 1.5)

    circuit.admit("org-c").failed(_error(ErrorKind.timeout, "still down"))

    assert circuit.state == "open"
    assert circuit.last_error == "still down"
    assert _refusal(circuit, "org-d").reason == "circuit_open"


def test_an_abandoned_trial_frees_the_trial_slot_and_counts_nothing() -> None:
    circuit = _circuit(reset_timeout_s=SHORT_S)
    _open(circuit)
    time.sleep(SHORT_S * 1.5)
    circuit.admit("org-c").abandoned()

    assert circuit.state == "half-open"
    circuit.admit("org-d").succeeded()  # a new trial, not circuit_half_open
    assert circuit.state == "closed"


def test_a_neutral_trial_outcome_frees_the_slot_and_leaves_it_half_open() -> None:
    circuit = _circuit(reset_timeout_s=SHORT_S)
    _open(circuit)
    time.sleep(SHORT_S * 1.5)

    circuit.admit("org-c").failed(_error(ErrorKind.overloaded))

    assert circuit.state == "half-open"
    assert circuit.admit("org-d") is not None


def test_success_threshold_needs_that_many_trials_in_turn() -> None:
    circuit = _circuit(reset_timeout_s=SHORT_S, success_threshold=2)
    _open(circuit)
    time.sleep(SHORT_S * 1.5)

    circuit.admit("org-c").succeeded()
    assert circuit.state == "half-open"
    circuit.admit("org-c").succeeded()

    assert circuit.state == "closed"


def test_a_passing_probe_half_opens_only_once_the_period_is_over() -> None:
    circuit = _circuit(reset_timeout_s=SHORT_S)
    _open(circuit)
    circuit.half_open()
    assert circuit.state == "open"  # still within its period

    time.sleep(SHORT_S * 1.5)
    circuit.half_open()

    assert circuit.state == "half-open"


def test_a_failing_probe_reopens_it_for_another_period() -> None:
    circuit = _circuit(reset_timeout_s=SHORT_S)
    _open(circuit)
    time.sleep(SHORT_S * 1.5)
    assert circuit.retry_after_s() == 0.0

    circuit.reopen("probe failed: ConnectError")

    assert circuit.state == "open"
    assert circuit.last_error == "probe failed: ConnectError"
    assert 0.0 < circuit.retry_after_s() <= SHORT_S
    assert _refusal(circuit, "org-a").reason == "circuit_open"


# --- tickets -------------------------------------------------------------------------------


def test_only_a_tickets_first_outcome_counts() -> None:
    circuit = _circuit()
    ticket = circuit.admit("org-a")

    ticket.failed(_error())
    ticket.failed(_error())
    ticket.succeeded()

    assert circuit.failures == 1
    assert circuit.last_success_at == 0.0


def test_an_abandoned_ticket_counts_nothing_even_if_settled_later() -> None:
    circuit = _circuit()
    ticket = circuit.admit("org-a")

    ticket.abandoned()
    ticket.failed(_error())

    assert circuit.failures == 0
    assert circuit.last_error is None
