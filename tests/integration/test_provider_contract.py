"""What every remote adapter promises the dispatcher, checked against each loopback emulator
over real sockets: streaming without buffering, and each failure mapped to its kind."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, AsyncIterator, Iterator

import anyio
import pytest

from tests.emulators import cartesia_emu, elevenlabs_emu, openai_emu
from tests.emulators.behaviour import Behaviour, EmulatorState
from tests.emulators.server import LoopbackServer
from voxrouter.providers import build_provider
from voxrouter.providers.base import ErrorKind, Provider, ProviderError, SynthesisRequest
from voxrouter.providers.spec import ProviderSpec
from voxrouter.router.config import load_config

KEY = "contract-test-key"


@dataclasses.dataclass(frozen=True)
class Case:
    provider_id: str
    emulator: Any
    base_path: str
    model: str
    voice: str
    probe_path: str


CASES = [
    Case("openai", openai_emu, "/v1", "tts-1", "alloy", "/v1/models"),
    Case("elevenlabs", elevenlabs_emu, "", "eleven_turbo_v2_5", "21m00Tcm4TlvDq8ikWAM", "/v1/models"),
    Case("cartesia", cartesia_emu, "", "sonic-2", "a0e99841-438c-4a64-b679-ae501e7d6091", "/voices"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=CASES, ids=[c.provider_id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


@pytest.fixture
def state() -> EmulatorState:
    return EmulatorState(api_key=KEY, behaviour=Behaviour(first_byte_delay_s=0.01, stream_time_s=0.05))


@pytest.fixture
def server(case: Case, state: EmulatorState) -> Iterator[LoopbackServer]:
    with LoopbackServer(case.emulator.create_app(state)) as srv:
        yield srv


def _spec(case: Case, server: LoopbackServer, **changes: Any) -> ProviderSpec:
    spec = load_config().providers[case.provider_id]
    update = {"base_url": server.url + case.base_path, "base_url_env": None, "api_key": KEY, "api_key_env": None, **changes}
    return spec.model_copy(update=update)


@pytest.fixture
async def make(case: Case, server: LoopbackServer) -> AsyncIterator[Any]:
    made: list[Provider] = []

    def factory(**changes: Any) -> Provider:
        provider = build_provider(case.provider_id, _spec(case, server, **changes))
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        await provider.aclose()


def _request(case: Case, fmt: str = "pcm") -> SynthesisRequest:
    return SynthesisRequest(model=case.model, input="Hello there.", voice=case.voice, response_format=fmt)


async def _error_of(provider: Provider, request: SynthesisRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        async for _ in provider.synthesize(request):
            pass
    return info.value


@pytest.mark.anyio
async def test_first_chunk_arrives_before_the_upstream_finishes(case, make, state):
    state.behaviour = Behaviour(first_byte_delay_s=0.01, stream_time_s=0.3, chunks=6)
    stream = make().synthesize(_request(case))
    started = time.monotonic()
    first = await anext(stream)
    first_at = time.monotonic() - started
    completed_at_first_chunk = state.completed
    rest = b"".join([chunk async for chunk in stream])
    assert first and rest
    assert completed_at_first_chunk == 0 and first_at < 0.2
    assert len(first + rest) == 48_000  # 1 s of 24 kHz s16le, nothing lost or added


@pytest.mark.anyio
async def test_server_error_is_unavailable(case, make, state):
    state.behaviour = Behaviour(first_byte_delay_s=0, fail_status=500)
    error = await _error_of(make(), _request(case))
    assert (error.kind, error.status, error.provider) == (ErrorKind.unavailable, 500, case.provider_id)


@pytest.mark.anyio
async def test_rejected_key_is_auth_and_does_not_leak_the_key(case, make):
    secret = f"sk-{case.provider_id}-wrong-secret-123"
    error = await _error_of(make(api_key=secret), _request(case))
    assert (error.kind, error.status) == (ErrorKind.auth, 401)
    assert case.provider_id in error.message
    assert secret not in error.message and secret not in repr(error)


@pytest.mark.anyio
async def test_rate_limit_carries_retry_after(case, make, state):
    state.behaviour = Behaviour(first_byte_delay_s=0, fail_status=429, retry_after_s=7)
    error = await _error_of(make(), _request(case))
    assert (error.kind, error.retry_after) == (ErrorKind.rate_limited, 7.0)


@pytest.mark.anyio
async def test_hang_times_out_before_the_first_byte(case, make, state):
    state.behaviour = Behaviour(hang=True)
    started = time.monotonic()
    error = await _error_of(make(first_byte_timeout_s=0.3), _request(case))
    assert error.kind is ErrorKind.timeout
    assert time.monotonic() - started < 1.0


@pytest.mark.anyio
async def test_reset_mid_stream_is_unavailable_after_some_audio(case, make, state):
    state.behaviour = Behaviour(first_byte_delay_s=0, stream_time_s=0.05, chunks=10, reset_after_chunks=3)
    received: list[bytes] = []
    with pytest.raises(ProviderError) as info:
        async for chunk in make().synthesize(_request(case)):
            received.append(chunk)
    assert received and info.value.kind is ErrorKind.unavailable


@pytest.mark.anyio
async def test_closing_the_stream_early_cancels_the_upstream(case, make, state):
    state.behaviour = Behaviour(first_byte_delay_s=0, stream_time_s=2.0, chunks=20)
    stream = make().synthesize(_request(case))
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 2
    while state.cancelled == 0 and time.monotonic() < deadline:
        await anyio.sleep(0.02)
    assert (state.cancelled, state.completed) == (1, 0)


@pytest.mark.anyio
async def test_probe(case, make, state):
    health = await make().probe()
    assert health.ok and health.latency_ms is not None
    assert [r.path for r in state.requests] == [case.probe_path]
    assert (await make(api_key="wrong").probe()).reason == "auth"
    state.requests.clear()
    assert (await make(api_key=None).probe()).reason == "missing_api_key"
    assert state.requests == []
