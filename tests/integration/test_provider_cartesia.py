"""CartesiaProvider against the loopback emulator over real sockets (its error bodies and catalog
shapes on respx are tests/unit/test_provider_cartesia.py)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

import pytest

from tests.emulators.audio import encoded
from tests.emulators.behaviour import Behaviour, EmulatorState
from tests.emulators.cartesia_emu import VOICES, create_app
from tests.emulators.server import LoopbackServer
from voxrouter.providers.base import ErrorKind, ProviderError, SynthesisRequest
from voxrouter.providers.cartesia import CartesiaProvider
from voxrouter.providers.spec import ProviderSpec
from voxrouter.router.config import load_config

KEY = "test-key"
VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"
MODEL = "sonic-2"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _spec(base_url: str, **changes: Any) -> ProviderSpec:
    spec = load_config().providers["cartesia"]
    # No env lookups: the test decides the URL and key.
    update = {"base_url": base_url, "base_url_env": None, "api_key": KEY, "api_key_env": None, **changes}
    return spec.model_copy(update=update)


def _request(fmt: str = "mp3", **changes: Any) -> SynthesisRequest:
    fields: dict[str, Any] = {"model": MODEL, "input": "Hello there.", "voice": VOICE, "response_format": fmt}
    return SynthesisRequest(**{**fields, **changes})


async def _collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def _error_of(provider: CartesiaProvider, request: SynthesisRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await _collect(provider.synthesize(request))
    return info.value


@pytest.fixture
def state() -> EmulatorState:
    return EmulatorState(api_key=KEY, behaviour=Behaviour(first_byte_delay_s=0.01, stream_time_s=0.05))


@pytest.fixture
def server(state: EmulatorState) -> Iterator[LoopbackServer]:
    with LoopbackServer(create_app(state)) as srv:
        yield srv


@pytest.fixture
async def provider(server: LoopbackServer) -> AsyncIterator[CartesiaProvider]:
    p = CartesiaProvider("cartesia", _spec(server.url))
    yield p
    await p.aclose()


# --- synthesis ---------------------------------------------------------------


@pytest.mark.anyio
async def test_mp3_streams_audio_and_sends_the_vendor_request(provider: CartesiaProvider, state: EmulatorState) -> None:
    request = _request("mp3", speed=1.2, provider_options={"language": "en"})
    audio = await _collect(provider.synthesize(request))

    assert audio == encoded("mp3", state.behaviour.audio_duration_s)
    [sent] = state.requests
    assert (sent.method, sent.path, sent.query) == ("POST", "/tts/bytes", {})
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["cartesia-version"] == "2024-11-13"
    assert sent.body == {
        "model_id": MODEL,
        "transcript": "Hello there.",
        "voice": {"mode": "id", "id": VOICE},
        "output_format": {"container": "mp3", "bit_rate": 128000, "sample_rate": 44100},
        "generation_config": {"speed": 1.2},
        "language": "en",
    }


@pytest.mark.anyio
async def test_pcm_asks_for_raw_24khz_s16le(provider: CartesiaProvider, state: EmulatorState) -> None:
    audio = await _collect(provider.synthesize(_request("pcm")))

    assert audio == encoded("pcm", state.behaviour.audio_duration_s)
    [sent] = state.requests
    assert sent.body["output_format"] == {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
    assert "generation_config" not in sent.body


@pytest.mark.anyio
async def test_generation_config_from_options_merges_with_speed(provider: CartesiaProvider, state: EmulatorState) -> None:
    request = _request(speed=0.8, provider_options={"generation_config": {"emotion": "calm"}})
    await _collect(provider.synthesize(request))

    assert state.requests[0].body["generation_config"] == {"speed": 0.8, "emotion": "calm"}


@pytest.mark.anyio
async def test_version_and_bit_rate_come_from_config(server: LoopbackServer, state: EmulatorState) -> None:
    provider = CartesiaProvider("cartesia", _spec(server.url, options={"api_version": "2025-04-16", "mp3_bit_rate": 64000}))
    try:
        await _collect(provider.synthesize(_request("mp3")))
    finally:
        await provider.aclose()

    [sent] = state.requests
    assert sent.headers["cartesia-version"] == "2025-04-16"
    assert sent.body["output_format"]["bit_rate"] == 64000


@pytest.mark.anyio
async def test_format_without_native_support_is_a_bad_request(provider: CartesiaProvider, state: EmulatorState) -> None:
    error = await _error_of(provider, _request("flac"))

    assert error.kind is ErrorKind.bad_request
    assert state.requests == []


# --- vendor error shapes ----------------------------------------------------


@pytest.mark.anyio
async def test_unknown_model_is_bad_request_with_the_message(provider: CartesiaProvider) -> None:
    error = await _error_of(provider, _request(model="sonic-nonexistent"))

    assert error.kind is ErrorKind.bad_request
    assert error.status == 400
    assert "invalid model_id" in error.message


@pytest.mark.anyio
async def test_unknown_voice_is_bad_request(provider: CartesiaProvider) -> None:
    error = await _error_of(provider, _request(voice="00000000-0000-0000-0000-000000000000"))

    assert error.kind is ErrorKind.bad_request
    assert error.status == 404


# --- voices and probe --------------------------------------------------------


@pytest.mark.anyio
async def test_voices_follow_pagination_and_are_mapped(provider: CartesiaProvider, state: EmulatorState) -> None:
    voices = await provider.voices()

    assert [v.id for v in voices] == [v["id"] for v in VOICES]
    first = voices[0]
    assert (first.name, first.provider, first.language) == ("Barbershop Man", "cartesia", "en")
    assert first.labels == {"gender": "male"}  # Cartesia's "masculine", in the catalog's words
    assert first.model_compatibility == ("sonic-2", "sonic-3", "sonic-latest")
    spanish = voices[-1]
    assert (spanish.language, spanish.labels) == ("es", {})
    # The emulator serves two voices a page: two requests, the second after the first page's last id.
    assert [r.query for r in state.requests] == [
        {"limit": "100"},
        {"limit": "100", "starting_after": VOICES[1]["id"]},
    ]
    assert all(r.headers["x-api-key"] == KEY and r.headers["cartesia-version"] for r in state.requests)


@pytest.mark.anyio
async def test_voices_one_per_page(state: EmulatorState) -> None:
    with LoopbackServer(create_app(state, max_page_size=1)) as srv:
        provider = CartesiaProvider("cartesia", _spec(srv.url))
        try:
            voices = await provider.voices()
        finally:
            await provider.aclose()

    assert len(voices) == len(VOICES)
    assert len(state.requests) == len(VOICES)


@pytest.mark.anyio
async def test_voices_without_a_key_is_empty_and_calls_nothing(server: LoopbackServer, state: EmulatorState) -> None:
    provider = CartesiaProvider("cartesia", _spec(server.url, api_key=None))
    try:
        assert not provider.configured
        assert await provider.voices() == []
    finally:
        await provider.aclose()
    assert state.requests == []


@pytest.mark.anyio
async def test_voices_with_a_rejected_key_raise_auth(server: LoopbackServer) -> None:
    provider = CartesiaProvider("cartesia", _spec(server.url, api_key="wrong"))
    try:
        with pytest.raises(ProviderError) as info:
            await provider.voices()
    finally:
        await provider.aclose()
    assert info.value.kind is ErrorKind.auth
