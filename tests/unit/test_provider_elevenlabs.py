"""ElevenLabsProvider's reading of error bodies and catalog shapes, on respx (no sockets).
Its wire against the loopback emulator is tests/integration/test_provider_elevenlabs.py."""

from __future__ import annotations

from typing import Any, AsyncIterator

import httpx
import pytest
import respx

from voxrouter.providers.base import ErrorKind, ProviderError, SynthesisRequest
from voxrouter.providers.elevenlabs import ElevenLabsProvider
from voxrouter.providers.spec import ProviderSpec
from voxrouter.router.config import load_config

KEY = "test-key"
RACHEL = "21m00Tcm4TlvDq8ikWAM"
MODEL = "eleven_turbo_v2_5"
REMOTE = "https://api.elevenlabs.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _spec(base_url: str) -> ProviderSpec:
    spec = load_config().providers["elevenlabs"]
    # No env lookups: the test decides the URL and key.
    return spec.model_copy(update={"base_url": base_url, "base_url_env": None, "api_key": KEY, "api_key_env": None})


def _request() -> SynthesisRequest:
    return SynthesisRequest(model=MODEL, input="Hello there.", voice=RACHEL, response_format="mp3")


async def _error_of(provider: ElevenLabsProvider, request: SynthesisRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await _collect(provider.synthesize(request))
    return info.value


async def _collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def _remote_error(status: int, **response: Any) -> ProviderError:
    provider = ElevenLabsProvider("elevenlabs", _spec(REMOTE))
    try:
        with respx.mock(base_url=REMOTE) as router:
            router.post(f"/v1/text-to-speech/{RACHEL}/stream").respond(status, **response)
            return await _error_of(provider, _request())
    finally:
        await provider.aclose()


@pytest.mark.anyio
async def test_non_json_error_body_keeps_the_status() -> None:
    error = await _remote_error(502, text="<html><body>Bad Gateway</body></html>")

    assert error.kind is ErrorKind.unavailable
    assert error.message == "elevenlabs answered HTTP 502"


@pytest.mark.anyio
async def test_validation_messages_are_joined() -> None:
    detail = [
        {"loc": ["body", "text"], "msg": "Field required", "type": "missing"},
        {"loc": ["query", "output_format"], "msg": "Input should be a valid output format", "type": "enum"},
    ]
    error = await _remote_error(422, json={"detail": detail})

    assert error.kind is ErrorKind.bad_request
    assert error.message.endswith("Field required; Input should be a valid output format")


@pytest.mark.anyio
async def test_quota_error_uses_the_detail_message() -> None:
    body = {"detail": {"status": "quota_exceeded", "message": "This request exceeds your quota."}}
    error = await _remote_error(400, json=body)

    assert error.kind is ErrorKind.bad_request
    assert error.message == "elevenlabs answered HTTP 400: This request exceeds your quota."


@pytest.mark.anyio
async def test_odd_catalog_entries_are_tolerated() -> None:
    listing = {
        "voices": [
            {"voice_id": "v1", "name": "Lucía", "labels": {"language": "es", "gender": "female", "score": 3, "tags": ["x"]}},
            {
                "voice_id": "v2",
                "name": "Kenji",
                "labels": None,
                "verified_languages": [{"language": "ja", "model_id": "eleven_multilingual_v2"}],
            },
            {"name": "no id"},
        ]
    }
    provider = ElevenLabsProvider("elevenlabs", _spec(REMOTE))
    try:
        with respx.mock(base_url=REMOTE) as router:
            router.get("/v1/voices").respond(200, json=listing)
            voices = await provider.voices()
    finally:
        await provider.aclose()

    assert [v.id for v in voices] == ["v1", "v2"]
    assert voices[0].language == "es"
    assert voices[0].labels == {"language": "es", "gender": "female"}
    assert voices[1].language == "ja" and voices[1].labels == {}
    assert voices[1].model_compatibility == ("eleven_multilingual_v2",)


@pytest.mark.anyio
async def test_unreadable_catalog_is_unavailable() -> None:
    provider = ElevenLabsProvider("elevenlabs", _spec(REMOTE))
    try:
        with respx.mock(base_url=REMOTE) as router:
            router.get("/v1/voices").respond(200, text="not json")
            with pytest.raises(ProviderError) as info:
                await provider.voices()
            router.get("/v1/voices").mock(side_effect=httpx.ConnectError("refused"))
            with pytest.raises(ProviderError) as refused:
                await provider.voices()
    finally:
        await provider.aclose()

    assert info.value.kind is ErrorKind.unavailable
    assert refused.value.kind is ErrorKind.unavailable
