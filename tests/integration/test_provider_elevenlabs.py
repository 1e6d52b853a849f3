"""ElevenLabsProvider against the loopback emulator over real sockets (its error bodies and catalog
shapes on respx are tests/unit/test_provider_elevenlabs.py)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator

import pytest

from tests.emulators.audio import encoded
from tests.emulators.behaviour import Behaviour, EmulatorState
from tests.emulators.elevenlabs_emu import create_app
from tests.emulators.server import LoopbackServer
from voxrouter.providers.base import ErrorKind, ProviderError, SynthesisRequest
from voxrouter.providers.elevenlabs import ElevenLabsProvider
from voxrouter.providers.spec import ProviderSpec
from voxrouter.router.config import load_config

KEY = "test-key"
RACHEL = "21m00Tcm4TlvDq8ikWAM"
MODEL = "eleven_turbo_v2_5"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _spec(base_url: str, **changes: Any) -> ProviderSpec:
    spec = load_config().providers["elevenlabs"]
    # No env lookups: the test decides the URL and key.
    update = {"base_url": base_url, "base_url_env": None, "api_key": KEY, "api_key_env": None, **changes}
    return spec.model_copy(update=update)


def _request(fmt: str = "mp3", **changes: Any) -> SynthesisRequest:
    fields: dict[str, Any] = {"model": MODEL, "input": "Hello there.", "voice": RACHEL, "response_format": fmt}
    return SynthesisRequest(**{**fields, **changes})


async def _collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def _error_of(provider: ElevenLabsProvider, request: SynthesisRequest) -> ProviderError:
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
async def provider(server: LoopbackServer) -> AsyncIterator[ElevenLabsProvider]:
    p = ElevenLabsProvider("elevenlabs", _spec(server.url))
    yield p
    await p.aclose()


# --- synthesis ---------------------------------------------------------------


@pytest.mark.anyio
async def test_mp3_streams_audio_and_sends_the_vendor_request(provider: ElevenLabsProvider, state: EmulatorState) -> None:
    request = _request("mp3", speed=1.1, provider_options={"language_code": "en", "seed": 7})
    audio = await _collect(provider.synthesize(request))

    assert audio == encoded("mp3", state.behaviour.audio_duration_s)
    [sent] = state.requests
    assert (sent.method, sent.path) == ("POST", f"/v1/text-to-speech/{RACHEL}/stream")
    assert sent.headers["xi-api-key"] == KEY
    assert sent.query == {"output_format": "mp3_44100_128"}
    assert sent.body == {
        "text": "Hello there.",
        "model_id": MODEL,
        "voice_settings": {"speed": 1.1},
        "language_code": "en",
        "seed": 7,
    }


@pytest.mark.anyio
async def test_pcm_asks_for_24khz_pcm(provider: ElevenLabsProvider, state: EmulatorState) -> None:
    audio = await _collect(provider.synthesize(_request("pcm")))

    assert audio == encoded("pcm", state.behaviour.audio_duration_s)
    [sent] = state.requests
    assert sent.query == {"output_format": "pcm_24000"}
    assert sent.body == {"text": "Hello there.", "model_id": MODEL}


@pytest.mark.anyio
async def test_voice_settings_from_options_merge_with_speed(provider: ElevenLabsProvider, state: EmulatorState) -> None:
    request = _request(speed=0.9, provider_options={"voice_settings": {"stability": 0.3, "similarity_boost": 0.8}})
    await _collect(provider.synthesize(request))

    assert state.requests[0].body["voice_settings"] == {"speed": 0.9, "stability": 0.3, "similarity_boost": 0.8}


@pytest.mark.anyio
async def test_output_format_and_latency_options_come_from_config(server: LoopbackServer, state: EmulatorState) -> None:
    options = {"mp3_output_format": "mp3_22050_32", "optimize_streaming_latency": 3}
    provider = ElevenLabsProvider("elevenlabs", _spec(server.url, options=options))
    try:
        await _collect(provider.synthesize(_request("mp3")))
    finally:
        await provider.aclose()

    assert state.requests[0].query == {"output_format": "mp3_22050_32", "optimize_streaming_latency": "3"}


@pytest.mark.anyio
async def test_format_without_native_support_is_a_bad_request(provider: ElevenLabsProvider, state: EmulatorState) -> None:
    error = await _error_of(provider, _request("opus"))

    assert error.kind is ErrorKind.bad_request
    assert state.requests == []


# --- vendor error shapes ----------------------------------------------------


@pytest.mark.anyio
async def test_validation_error_is_bad_request_with_the_messages(provider: ElevenLabsProvider) -> None:
    error = await _error_of(provider, _request(provider_options={"text": None}))

    assert error.kind is ErrorKind.bad_request
    assert error.status == 422
    assert "Field required" in error.message


@pytest.mark.anyio
async def test_unknown_voice_is_bad_request(provider: ElevenLabsProvider) -> None:
    error = await _error_of(provider, _request(voice="NoSuchVoice000000000"))

    assert error.kind is ErrorKind.bad_request
    assert error.status == 404
    assert "was not found" in error.message


# --- voices and probe --------------------------------------------------------


@pytest.mark.anyio
async def test_voices_are_mapped_from_the_catalog(provider: ElevenLabsProvider, state: EmulatorState) -> None:
    voices = {v.id: v for v in await provider.voices()}

    assert set(voices) == {RACHEL, "EXAVITQu4vr4xnSDxMaL", "pNInz6obpgDQGcFmaJgB"}
    rachel = voices[RACHEL]
    assert (rachel.name, rachel.provider, rachel.language) == ("Rachel", "elevenlabs", "en-US")
    assert rachel.labels["gender"] == "female" and rachel.labels["accent"] == "american"
    assert rachel.model_compatibility == ("eleven_multilingual_v2", "eleven_turbo_v2_5")
    assert rachel.preview_url and RACHEL in rachel.preview_url
    adam = voices["pNInz6obpgDQGcFmaJgB"]  # no verified languages: defaults apply
    assert adam.language == "en"
    assert adam.model_compatibility == ("eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_multilingual_v2")
    [sent] = state.requests
    assert (sent.method, sent.path, sent.headers["xi-api-key"]) == ("GET", "/v1/voices", KEY)


@pytest.mark.anyio
async def test_voices_without_a_key_is_empty_and_calls_nothing(server: LoopbackServer, state: EmulatorState) -> None:
    provider = ElevenLabsProvider("elevenlabs", _spec(server.url, api_key=None))
    try:
        assert not provider.configured
        assert await provider.voices() == []
    finally:
        await provider.aclose()
    assert state.requests == []


@pytest.mark.anyio
async def test_voices_with_a_rejected_key_raise_auth(server: LoopbackServer) -> None:
    provider = ElevenLabsProvider("elevenlabs", _spec(server.url, api_key="wrong"))
    try:
        with pytest.raises(ProviderError) as info:
            await provider.voices()
    finally:
        await provider.aclose()
    assert info.value.kind is ErrorKind.auth
