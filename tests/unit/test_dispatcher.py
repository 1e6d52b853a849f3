"""The `Dispatcher` (router/resilience/dispatch.py) over in-memory providers: fallback order,
retries, breakers, the first-byte deadline, failures before and after the first audio, and
cancellation."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from tests.unit.fake_providers import FakeProvider, Step, config, providers
from voxrouter.providers.base import ErrorKind, ProviderError, SynthesisRequest, Voice
from voxrouter.router.catalog.routes import Catalog
from voxrouter.router.config import Config
from voxrouter.router.http.errors import ApiError
from voxrouter.router.resilience import dispatch
from voxrouter.router.resilience.breaker import Circuit, CircuitOpen
from voxrouter.router.resilience.dispatch import Attempt, Dispatcher, Started, plan
from voxrouter.router.resilience.health import HealthBoard
from voxrouter.router.schemas import SpeechRequest

pytestmark = pytest.mark.anyio
ORG = "org-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config(*, retry: dict[str, Any] | None = None, breaker: dict[str, Any] | None = None, first_byte_s: float = 5.0) -> Config:
    base = config()
    resilience = {
        "retry": {"attempts": 1, "backoff_s": 0.0, **(retry or {})},
        "breaker": {"fail_max": 5, "tenants_to_open": 1, "reset_timeout_s": 30.0, **(breaker or {})},
    }
    specs = {pid: spec.model_dump() | {"first_byte_timeout_s": first_byte_s} for pid, spec in base.providers.items()}
    return config(providers=specs, resilience=resilience)


class World:
    """A dispatcher, its health board and fake providers, for one config."""

    def __init__(self, cfg: Config, **options: dict[str, Any]) -> None:
        self.config = cfg
        self.providers = providers(cfg, **options)
        self.health = HealthBoard(cfg, self.providers)  # type: ignore[arg-type]
        catalog = Catalog(cfg, self.providers, self.health)  # type: ignore[arg-type]
        self.dispatcher = Dispatcher(cfg, self.health, catalog)
        self.attempts: list[Attempt] = []

    def __getitem__(self, provider_id: str) -> FakeProvider:
        return self.providers[provider_id]

    def circuit(self, provider_id: str) -> Circuit:
        return self.health.circuit(self.providers[provider_id], "")

    async def start(self, model: str = "alpha/a-small", org: str | None = ORG, **fields: Any) -> Started:
        # "narrator" has a voice on gamma (voice_map) and alpha keeps it: fallbacks there need no voice match.
        body = SpeechRequest(**{"model": model, "input": "Hello there.", "voice": "narrator", **fields})
        request = SynthesisRequest(model="", input=body.input, voice="", response_format=body.response_format, tenant=org or "")
        return await self.dispatcher.start(plan(self.config, self.providers, body), request, self.attempts, org)  # type: ignore[arg-type]

    async def refusal(self, model: str = "alpha/a-small", **fields: Any) -> ApiError:
        with pytest.raises(ApiError) as info:
            await self.start(model, **fields)
        return info.value

    def outcomes(self) -> list[tuple[str, str, str | None]]:
        return [(f"{a.provider}/{a.model}", a.outcome, a.reason) for a in self.attempts]


def _fails(provider: FakeProvider, kind: ErrorKind, times: int = 1, **error: Any) -> None:
    provider.then(*[Step(error=provider.error(kind, **error)) for _ in range(times)])


async def _audio(started: Started) -> bytes:
    return b"".join([chunk async for chunk in started.chunks])


# --- fallback order ------------------------------------------------------------------------


async def test_the_primary_serves_when_it_works() -> None:
    world = World(_config())

    started = await world.start(models=["gamma/g1"])

    assert started.target.label == "alpha/a-small"
    assert await _audio(started) == b"alpha-1alpha-2"
    assert world.outcomes() == [("alpha/a-small", "served", None)]
    assert world["gamma"].calls == []
    [call] = world["alpha"].calls
    assert (call.request.model, call.request.voice, call.request.response_format) == ("a-small", "narrator", "mp3")


async def test_a_failed_primary_falls_back_in_order() -> None:
    world = World(_config())
    _fails(world["alpha"], ErrorKind.unavailable)
    _fails(world["gamma"], ErrorKind.timeout)

    started = await world.start(models=["gamma/g1", "alpha/a-big"])

    assert started.target.label == "alpha/a-big"
    assert world.outcomes() == [
        ("alpha/a-small", "failed", "unavailable"),
        ("gamma/g1", "failed", "timeout"),
        ("alpha/a-big", "served", None),
    ]
    assert world["gamma"].calls[0].request.voice == "g-narrator"  # the fallback's own voice
    assert await _audio(started) == b"alpha-1alpha-2"


async def test_when_every_target_fails_the_last_error_is_the_answer() -> None:
    world = World(_config())
    _fails(world["alpha"], ErrorKind.unavailable)
    _fails(world["gamma"], ErrorKind.rate_limited, retry_after=2.4)

    error = await world.refusal(models=["gamma/g1"])

    assert (error.status, error.code) == (502, "upstream_error")
    assert error.headers == {"Retry-After": "2"}


async def test_the_clients_bad_request_on_the_primary_tries_nothing_else() -> None:
    world = World(_config())
    _fails(world["alpha"], ErrorKind.bad_request)

    error = await world.refusal(models=["gamma/g1"])

    assert (error.status, error.code) == (400, "invalid_body")
    assert world["gamma"].calls == []
    assert world.outcomes() == [("alpha/a-small", "failed", "bad_request")]


async def test_a_fallbacks_bad_request_moves_on() -> None:
    world = World(_config())
    _fails(world["alpha"], ErrorKind.unavailable)
    _fails(world["gamma"], ErrorKind.bad_request)

    started = await world.start(models=["gamma/g1", "alpha/a-big"])

    assert started.target.label == "alpha/a-big"


async def test_a_fallback_voice_is_matched_by_language_then_gender() -> None:
    options = {
        "gamma": {"voices": [Voice("g-us-f", "gamma", "F", "en-US", {"gender": "female"})]},
        "alpha": {
            "voices": [
                Voice("a-gb-f", "alpha", "GB", "en_GB", {"gender": "female"}),
                Voice("a-us-m", "alpha", "M", "en-US", {"gender": "male"}),
                Voice("a-us-f", "alpha", "F", "en-US", {"gender": "female"}),
                Voice("a-fr-f", "alpha", "FR", "fr-FR", {"gender": "female"}),
            ]
        },
    }
    world = World(_config(), **options)
    _fails(world["gamma"], ErrorKind.unavailable)

    started = await world.start("gamma/g1", models=["alpha/a-small"], voice="g-us-f")

    assert started.target.voice == "a-us-f"  # same language and gender beats same language only


async def test_a_fallback_with_no_voice_to_match_is_skipped() -> None:
    options = {
        "gamma": {"voices": [Voice("g-de", "gamma", "DE", "de-DE", {"gender": "male"})]},
        "alpha": {"voices": [Voice("a-en", "alpha", "EN", "en-US", {"gender": "male"})]},
    }
    world = World(_config(), **options)
    _fails(world["gamma"], ErrorKind.unavailable)

    error = await world.refusal("gamma/g1", models=["alpha/a-small"], voice="g-de")

    assert world.outcomes() == [("gamma/g1", "failed", "unavailable"), ("alpha/a-small", "skipped", "no_matching_voice")]
    assert (error.status, error.code) == (502, "upstream_error")  # the real failure, not the skip
    assert world["alpha"].calls == []


# --- retries -----------------------------------------------------------------------------


async def test_retryable_failures_are_retried_on_the_same_target(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = _recorded_sleeps(monkeypatch)
    world = World(_config(retry={"attempts": 3, "backoff_s": 0.5, "backoff_max_s": 0.6}))
    _fails(world["alpha"], ErrorKind.unavailable)
    _fails(world["alpha"], ErrorKind.timeout)

    started = await world.start(models=["gamma/g1"])

    assert started.target.label == "alpha/a-small"
    assert world.outcomes() == [
        ("alpha/a-small", "failed", "unavailable"),
        ("alpha/a-small", "failed", "timeout"),
        ("alpha/a-small", "served", None),
    ]
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 0.6  # full jitter under 0.5 * 2**n, capped at 0.6


async def test_retries_stop_at_attempts_then_the_next_target(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = _recorded_sleeps(monkeypatch)
    world = World(_config(retry={"attempts": 2}))
    _fails(world["alpha"], ErrorKind.rate_limited, times=5)

    started = await world.start(models=["gamma/g1"])

    assert started.target.label == "gamma/g1"
    assert len(world["alpha"].calls) == 2
    assert len(sleeps) == 1  # none after the last attempt


@pytest.mark.parametrize("kind", [ErrorKind.auth, ErrorKind.overloaded, ErrorKind.not_installed])
async def test_failures_that_a_retry_cannot_fix_move_on_at_once(kind: ErrorKind, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = _recorded_sleeps(monkeypatch)
    world = World(_config(retry={"attempts": 3}, breaker={"enabled": False}))
    _fails(world["alpha"], kind)

    started = await world.start(models=["gamma/g1"])

    assert started.target.label == "gamma/g1"
    assert len(world["alpha"].calls) == 1
    assert sleeps == []


async def test_an_upstream_retry_after_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = _recorded_sleeps(monkeypatch)
    world = World(_config(retry={"attempts": 2, "backoff_s": 0.0, "max_retry_after_s": 5.0}))
    _fails(world["alpha"], ErrorKind.rate_limited, retry_after=1.5)

    started = await world.start()

    assert started.target.label == "alpha/a-small"
    assert sleeps == [1.5]


async def test_a_retry_after_beyond_the_cap_moves_on_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = _recorded_sleeps(monkeypatch)
    world = World(_config(retry={"attempts": 3, "max_retry_after_s": 5.0}))
    _fails(world["alpha"], ErrorKind.rate_limited, retry_after=6.0)

    started = await world.start(models=["gamma/g1"])

    assert started.target.label == "gamma/g1"
    assert len(world["alpha"].calls) == 1
    assert sleeps == []


async def test_no_retry_waits_past_the_requests_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = _recorded_sleeps(monkeypatch)
    world = World(_config(retry={"attempts": 3, "deadline_s": 5.0, "max_retry_after_s": 10.0}))
    _fails(world["alpha"], ErrorKind.rate_limited, retry_after=6.0)

    started = await world.start(models=["gamma/g1"])

    assert sleeps == []  # 6 s would end after the 5 s deadline: the next target instead
    assert started.target.label == "gamma/g1"


def _recorded_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The dispatcher's backoff sleeps, recorded instead of waited."""
    sleeps: list[float] = []
    real_sleep = anyio.sleep

    async def record(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(dispatch.anyio, "sleep", record)
    return sleeps


# --- breakers -------------------------------------------------------------------------------


async def test_a_counted_failure_is_reported_to_the_targets_breaker() -> None:
    world = World(_config(breaker={"fail_max": 3}))
    _fails(world["alpha"], ErrorKind.unavailable)

    await world.start(models=["gamma/g1"])

    assert world.circuit("alpha").failures == 1
    assert world.circuit("gamma").failures == 0


async def test_an_open_breaker_skips_its_target_without_calling_it() -> None:
    world = World(_config(breaker={"fail_max": 1}))
    _fails(world["alpha"], ErrorKind.unavailable)
    await world.start(models=["gamma/g1"])  # fail_max 1: alpha's breaker opens
    assert world.circuit("alpha").state == "open"
    world.attempts.clear()

    started = await world.start(models=["gamma/g1"])

    assert started.target.label == "gamma/g1"
    assert world.outcomes() == [("alpha/a-small", "skipped", "circuit_open"), ("gamma/g1", "served", None)]
    assert len(world["alpha"].calls) == 1  # only the first request's


async def test_every_breaker_open_is_503_with_retry_after() -> None:
    world = World(_config(breaker={"fail_max": 1}))
    _fails(world["alpha"], ErrorKind.unavailable)
    await world.refusal()

    error = await world.refusal()

    assert (error.status, error.code) == (503, "provider_unavailable")
    assert error.details == "alpha is failing; its circuit breaker is open"
    assert 29 <= int(error.headers["Retry-After"]) <= 30


async def test_one_organizations_refusal_does_not_skip_the_target_for_another() -> None:
    world = World(_config(breaker={"fail_max": 1, "tenants_to_open": 2}))
    _fails(world["alpha"], ErrorKind.unavailable)
    await world.start(org="org-a", models=["gamma/g1"])  # org-a alone would open it: org-a alone is refused
    world.attempts.clear()

    refused = await world.start(org="org-a", models=["gamma/g1"])
    assert refused.target.label == "gamma/g1"
    assert world.outcomes()[0] == ("alpha/a-small", "skipped", "circuit_open")
    world.attempts.clear()
    served = await world.start(org="org-b", models=["gamma/g1"])
    assert served.target.label == "alpha/a-small"


async def test_a_half_open_breaker_lets_one_trial_through_at_a_time() -> None:
    world = World(_config(breaker={"fail_max": 1, "reset_timeout_s": 0.05}))
    _fails(world["alpha"], ErrorKind.unavailable)
    await world.start(models=["gamma/g1"])
    await anyio.sleep(0.08)

    trial = await world.start(models=["gamma/g1"])  # the trial's ticket is held until its stream ends
    assert trial.target.label == "alpha/a-small"
    world.attempts.clear()
    other = await world.start(models=["gamma/g1"])

    assert other.target.label == "gamma/g1"
    assert world.outcomes()[0] == ("alpha/a-small", "skipped", "circuit_half_open")
    trial.ticket.succeeded()
    assert world.circuit("alpha").state == "closed"


async def test_the_served_calls_ticket_is_settled_by_the_caller_not_at_the_start() -> None:
    world = World(_config(breaker={"fail_max": 1}))

    started = await world.start()

    circuit = world.circuit("alpha")
    assert circuit.last_success_at == 0.0  # not yet: the stream has not ended
    started.ticket.failed(world["alpha"].error(ErrorKind.unavailable))  # a failure mid-stream, reported by the caller
    assert circuit.state == "open"


async def test_a_neutral_failure_does_not_touch_the_breaker() -> None:
    world = World(_config(breaker={"fail_max": 1}))
    _fails(world["alpha"], ErrorKind.overloaded, status=429)

    error = await world.refusal()

    assert (error.status, error.code) == (429, "concurrency_limited")
    assert world.circuit("alpha").state == "closed"
    assert world.circuit("alpha").failures == 0


async def test_a_circuit_opened_elsewhere_is_skipped_before_any_call() -> None:
    world = World(_config(breaker={"fail_max": 1}))
    world.circuit("alpha").admit(ORG).failed(world["alpha"].error(ErrorKind.auth))
    with pytest.raises(CircuitOpen):
        world.circuit("alpha").admit(ORG)

    error = await world.refusal()

    assert world.outcomes() == [("alpha/a-small", "skipped", "circuit_open")]
    assert error.code == "provider_unavailable"
    assert world["alpha"].calls == []


# --- the first-byte deadline ----------------------------------------------------------------


async def test_no_first_byte_in_time_is_a_timeout_and_the_upstream_is_released() -> None:
    world = World(_config(first_byte_s=0.05))
    world["alpha"].then(Step(hang=True))

    began = time.monotonic()
    started = await world.start(models=["gamma/g1"])

    assert time.monotonic() - began < 2.0
    assert started.target.label == "gamma/g1"
    assert world.outcomes()[0] == ("alpha/a-small", "failed", "timeout")
    assert world["alpha"].calls[0].closed


async def test_a_first_byte_timeout_alone_is_504() -> None:
    world = World(_config(first_byte_s=0.05))
    world["alpha"].then(Step(hang=True))

    error = await world.refusal()

    assert (error.status, error.code) == (504, "upstream_error")
    assert error.details == "alpha/a-small sent no audio within 0.05s"


async def test_the_requests_deadline_bounds_the_wait_and_ends_the_walk() -> None:
    world = World(_config(first_byte_s=30.0, retry={"deadline_s": 0.1}))
    world["alpha"].then(Step(hang=True))

    began = time.monotonic()
    error = await world.refusal(models=["gamma/g1"])

    assert time.monotonic() - began < 2.0
    assert error.status == 504
    assert world["gamma"].calls == []  # the deadline is the whole request's, not each target's


async def test_a_stream_that_ends_without_audio_is_unavailable() -> None:
    world = World(_config())
    world["alpha"].then(Step())

    started = await world.start(models=["gamma/g1"])

    assert world.outcomes()[0] == ("alpha/a-small", "failed", "unavailable")
    assert started.target.label == "gamma/g1"


# --- failures before and after the first audio --------------------------------------------


async def test_audio_arrives_whole_when_the_stream_is_slow_after_its_first_byte() -> None:
    world = World(_config(first_byte_s=0.05))
    world["alpha"].then(Step(chunks=(b"one", b"two", b"three")))

    started = await world.start()

    assert await _audio(started) == b"onetwothree"
    assert world["alpha"].calls[0].closed


async def test_a_failure_after_the_first_audio_ends_that_stream_and_never_falls_back() -> None:
    world = World(_config())
    alpha = world["alpha"]
    alpha.then(Step(chunks=(b"first", b"second"), error=alpha.error(ErrorKind.unavailable)))

    started = await world.start(models=["gamma/g1"])
    received: list[bytes] = []
    with pytest.raises(ProviderError) as info:
        async for chunk in started.chunks:
            received.append(chunk)

    assert received == [b"first", b"second"]
    assert info.value.kind is ErrorKind.unavailable
    assert world["gamma"].calls == []
    assert world.outcomes() == [("alpha/a-small", "served", None)]


async def test_closing_the_stream_early_releases_the_upstream() -> None:
    world = World(_config())
    world["alpha"].then(Step(chunks=(b"a", b"b", b"c"), hang=True))

    started = await world.start()
    first = await anext(started.chunks)
    await started.chunks.aclose()  # type: ignore[attr-defined]

    assert first == b"a"
    assert world["alpha"].calls[0].closed


# --- cancellation ---------------------------------------------------------------------------


async def test_a_cancelled_start_counts_nothing_and_releases_the_upstream() -> None:
    world = World(_config(breaker={"fail_max": 1, "reset_timeout_s": 0.05}))
    _fails(world["alpha"], ErrorKind.unavailable)
    await world.start(models=["gamma/g1"])
    await anyio.sleep(0.08)  # half-open: the next call is the trial
    world["alpha"].then(Step(hang=True))
    world.attempts.clear()

    with anyio.move_on_after(0.05) as scope:  # the client went away while the trial waited
        await world.start()

    assert scope.cancelled_caught
    assert world.outcomes() == []  # neither served nor failed
    circuit = world.circuit("alpha")
    assert circuit.state == "half-open"  # neither closed nor reopened
    assert world["alpha"].calls[-1].closed
    world.attempts.clear()
    again = await world.start()  # the trial slot is free again
    assert again.target.label == "alpha/a-small"
