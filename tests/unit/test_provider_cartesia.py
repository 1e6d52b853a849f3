"""CartesiaProvider's reading of error bodies and catalog shapes, on respx (no sockets).
Its wire against the loopback emulator is tests/integration/test_provider_cartesia.py."""

from __future__ import annotations

from typing import Any, AsyncIterator

import httpx
import pytest
import respx

from voxrouter.providers.base import ErrorKind, ProviderError, SynthesisRequest
from voxrouter.providers.cartesia import MAX_VOICE_PAGES, CartesiaProvider
from voxrouter.providers.spec import ProviderSpec
from voxrouter.router.config import load_config

KEY = "test-key"
VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"
MODEL = "sonic-2"
REMOTE = "https://api.cartesia.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _spec(base_url: str) -> ProviderSpec:
    spec = load_config().providers["cartesia"]
    # No env lookups: the test decides the URL and key.
    return spec.model_copy(update={"base_url": base_url, "base_url_env": None, "api_key": KEY, "api_key_env": None})


def _request() -> SynthesisRequest:
    return SynthesisRequest(model=MODEL, input="Hello there.", voice=VOICE, response_format="mp3")


async def _error_of(provider: CartesiaProvider, request: SynthesisRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await _collect(provider.synthesize(request))
    return info.value


async def _collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def _remote_error(status: int, **response: Any) -> ProviderError:
    provider = CartesiaProvider("cartesia", _spec(REMOTE))
    try:
        with respx.mock(base_url=REMOTE) as router:
            router.post("/tts/bytes").respond(status, **response)
            return await _error_of(provider, _request())
    finally:
        await provider.aclose()


@pytest.mark.anyio
async def test_plain_text_error_body_is_the_message() -> None:
    error = await _remote_error(400, text="Cartesia-Version header is required\n")

    assert error.kind is ErrorKind.bad_request
    assert error.message == "cartesia answered HTTP 400: Cartesia-Version header is required"


@pytest.mark.anyio
async def test_long_plain_text_error_is_truncated() -> None:
    error = await _remote_error(503, text="<html>" + "x" * 1000 + "</html>")

    assert error.kind is ErrorKind.unavailable
    assert len(error.message.split(": ", 1)[1]) == 300


@pytest.mark.anyio
async def test_json_error_joins_error_and_message() -> None:
    error = await _remote_error(400, json={"error": "Bad Request", "message": "transcript is required"})

    assert error.message == "cartesia answered HTTP 400: Bad Request: transcript is required"


@pytest.mark.anyio
async def test_json_error_without_known_fields_falls_back_to_the_text() -> None:
    error = await _remote_error(400, json={"detail": "nope"})

    assert error.message == 'cartesia answered HTTP 400: {"detail":"nope"}'


@pytest.mark.anyio
async def test_bare_list_catalog_is_one_page() -> None:
    provider = CartesiaProvider("cartesia", _spec(REMOTE))
    try:
        with respx.mock(base_url=REMOTE) as router:
            route = router.get("/voices").respond(200, json=[{"id": "v1", "name": "One", "language": "fr"}, {"name": "no id"}])
            voices = await provider.voices()
    finally:
        await provider.aclose()

    assert [(v.id, v.language) for v in voices] == [("v1", "fr")]
    assert route.call_count == 1


@pytest.mark.anyio
async def test_endless_pagination_stops_at_the_page_cap() -> None:
    calls = 0

    def page(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json={"data": [{"id": f"v{calls}", "name": "V", "language": "en"}], "has_more": True})

    provider = CartesiaProvider("cartesia", _spec(REMOTE))
    try:
        with respx.mock(base_url=REMOTE) as router:
            router.get("/voices").mock(side_effect=page)
            voices = await provider.voices()
    finally:
        await provider.aclose()

    assert calls == MAX_VOICE_PAGES
    assert len(voices) == MAX_VOICE_PAGES
