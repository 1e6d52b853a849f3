"""Providers and engines declare what they can do; the gateway reads the declaration, never probes.

Every adapter states its `ProviderFeatures` and answers the whole `Provider` protocol (the
optional part with honest defaults); every engine answers the whole `Engine` protocol; an
engine node's "not installed" is a structured field, not words in its error text; the audio
formats have one source.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
from typing import Any, get_args

import httpx
import numpy as np
import pytest

from voxrouter import client
from voxrouter.local_engines.base import Engine, EngineBase, EngineVoice, Utterance
from voxrouter.local_engines.registry import ENGINE_KINDS
from voxrouter.providers import build_provider
from voxrouter.providers.base import (
    AUDIO_FORMATS,
    AudioFormat,
    ErrorKind,
    Provider,
    ProviderError,
    ProviderFeatures,
    SynthesisRequest,
)
from voxrouter.providers.local import LocalProvider
from voxrouter.providers.spec import ModelSpec, ProviderSpec
from voxrouter.router import schemas
from voxrouter.router.config import load_config
from voxrouter.router.limits.state.memory import MemoryLimitState
from voxrouter.router.limits.state.redis import RedisLimitState


def _members(protocol: type) -> set[str]:
    names = {name for name in vars(protocol) if not name.startswith("_")}
    return names | set(protocol.__annotations__)


def _default_providers() -> dict[str, Provider]:
    return {pid: build_provider(pid, spec) for pid, spec in load_config().providers.items()}


def _close(providers: dict[str, Provider]) -> None:
    async def close_all() -> None:
        for provider in providers.values():
            await provider.aclose()

    asyncio.run(close_all())


@pytest.fixture()
def providers() -> Any:
    built = _default_providers()
    yield built
    _close(built)


# --- providers ------------------------------------------------------------------------------------


def test_every_adapter_declares_frozen_features(providers: dict[str, Provider]) -> None:
    assert set(providers) == {"openai", "elevenlabs", "cartesia", "local"}
    for provider in providers.values():
        assert isinstance(provider.features, ProviderFeatures), provider.id
        with pytest.raises(dataclasses.FrozenInstanceError):
            provider.features.cloning = True  # type: ignore[misc]
        assert not provider.features.transcription and not provider.features.word_timestamps, provider.id
        assert provider.features.health_probe, provider.id


def test_features_say_what_each_adapter_does(providers: dict[str, Provider]) -> None:
    local = providers["local"].features
    assert local.per_model_engines and local.preload and local.voice_listing
    assert local.cloning  # the default config lists chatterbox and moss-tts-nano
    assert not providers["openai"].features.voice_listing  # its catalog is the config's list
    for pid in ("openai", "elevenlabs", "cartesia"):
        features = providers[pid].features
        assert not features.per_model_engines and not features.preload and not features.cloning, pid
    for pid in ("elevenlabs", "cartesia"):
        assert providers[pid].features.voice_listing, pid


def test_local_cloning_follows_its_engines() -> None:
    spec = load_config().providers["local"]
    options = {"engines": {"piper": spec.options["engines"]["piper"]}, "preload": []}
    provider = LocalProvider("local", spec.model_copy(update={"options": options}))
    try:
        assert not provider.features.cloning
    finally:
        asyncio.run(provider.aclose())


def test_every_adapter_answers_the_whole_protocol(providers: dict[str, Provider]) -> None:
    wanted = _members(Provider)
    assert {"features", "start", "engine_states", "engine_loads", "preload_states", "on_engine_rtf"} <= wanted
    for provider in providers.values():
        missing = sorted(name for name in wanted if not hasattr(provider, name))
        assert not missing, (provider.id, missing)


def test_remote_providers_answer_the_optional_part_honestly(providers: dict[str, Provider]) -> None:
    for pid in ("openai", "elevenlabs", "cartesia"):
        provider = providers[pid]
        asyncio.run(provider.start())
        provider.on_engine_rtf(lambda engine_id, rtf: None)
        assert provider.engine_states() == [] and provider.engine_loads() == {} and provider.preload_states() == [], pid


def test_local_provider_reports_its_engines_without_probing(providers: dict[str, Provider]) -> None:
    local = providers["local"]
    assert [engine_id for engine_id, _ in local.engine_states()] == ["kokoro", "piper", "hibari", "chatterbox", "moss-tts-nano"]
    loads = local.engine_loads()
    assert set(loads) == {"kokoro", "piper", "hibari", "chatterbox", "moss-tts-nano"}
    assert all((load.active, load.waiting) == (0, 0) for load in loads.values())
    assert local.preload_states() == [("kokoro", "loading"), ("piper", "loading"), ("hibari", "loading")]  # start() not called


# --- an engine node's errors ----------------------------------------------------------------------


def _remote_local(handler: Any) -> LocalProvider:
    spec = ProviderSpec(
        adapter="local",
        name="Local",
        website="https://example.invalid",
        response_formats=["pcm"],
        default_model=ModelSpec(price_micros_per_1k_chars=0, max_input_chars=1000),
        options={"engines": {"kokoro": {"engine": "kokoro", "url": "http://gpu-node:9000"}}},
    )
    return LocalProvider("local", spec, transport=httpx.MockTransport(handler))


def _speak(provider: LocalProvider) -> ProviderError:
    async def run() -> None:
        request = SynthesisRequest(model="kokoro", input="Hello.", voice="af_heart", response_format="pcm")
        try:
            async for _ in provider.synthesize(request):
                pass
        finally:
            await provider.aclose()

    with pytest.raises(ProviderError) as info:
        asyncio.run(run())
    return info.value


def _answer(status: int, body: dict[str, str]) -> Any:
    return lambda request: httpx.Response(status, content=json.dumps(body).encode(), headers={"Retry-After": "60"})


def test_an_engine_nodes_not_installed_is_read_from_its_reason_field() -> None:
    body = {"error": "provider_unavailable", "details": "kokoro: weights absent (model_not_installed)", "reason": "model_not_installed"}
    provider = _remote_local(_answer(503, body))
    error = _speak(provider)
    assert error.kind is ErrorKind.not_installed and error.status == 503
    assert provider.unavailable_reason("kokoro") == "model_not_installed"


def test_words_in_an_engine_nodes_error_text_decide_nothing() -> None:
    body = {"error": "provider_unavailable", "details": "no slot freed in time; not model_not_installed"}
    provider = _remote_local(_answer(503, body))
    error = _speak(provider)
    assert error.kind is ErrorKind.overloaded and error.status == 503
    assert provider.unavailable_reason("kokoro") is None


@pytest.mark.parametrize(
    ("status", "content", "kind"),
    [(429, b'{"error": "concurrency_limited", "details": "busy"}', ErrorKind.overloaded), (503, b"<html>gateway</html>", ErrorKind.overloaded), (500, b"{}", ErrorKind.unavailable)],
)
def test_an_engine_nodes_other_errors_keep_their_kinds(status: int, content: bytes, kind: ErrorKind) -> None:
    error = _speak(_remote_local(lambda request: httpx.Response(status, content=content)))
    assert error.kind is kind and error.status == status


# --- engines --------------------------------------------------------------------------------------


def test_every_engine_kind_answers_the_whole_engine_protocol() -> None:
    methods = {name for name, value in vars(Engine).items() if callable(value) and not name.startswith("_")}
    assert {"plan", "render", "text_language"} <= methods
    for kind, where in ENGINE_KINDS.items():
        module_name, _, class_name = where.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        assert issubclass(cls, EngineBase), kind
        assert not sorted(name for name in methods if not hasattr(cls, name)), kind


class _Tone(EngineBase):
    def synthesize(self, text: str, utterance: Utterance) -> np.ndarray:
        return np.full(len(text), 0.5, dtype=np.float32)


def test_an_engine_that_does_not_plan_is_one_run_per_piece_in_its_voices_language() -> None:
    engine = _Tone()
    utterance = Utterance(voice=EngineVoice(id="v", name="V", language="de-DE"))
    assert engine.plan("Guten Tag.", utterance) == ["Guten Tag."]
    assert np.array_equal(engine.render("Guten Tag.", utterance), engine.synthesize("Guten Tag.", utterance))
    assert engine.text_language("Guten Tag.", utterance) == "de-DE"


# --- one list of audio formats, and limit states that say what readiness checks -------------------


def test_the_audio_formats_have_one_source() -> None:
    assert AUDIO_FORMATS == ("mp3", "opus", "aac", "flac", "wav", "pcm")
    assert schemas.AudioFormat is AudioFormat
    # The client imports nothing of the server: its copy must say the same.
    assert get_args(client.AudioFormat) == AUDIO_FORMATS and tuple(client.AUDIO_FORMATS) == AUDIO_FORMATS
    with pytest.raises(ValueError, match="unknown response format"):
        ModelSpec(price_micros_per_1k_chars=0, max_input_chars=10, response_formats=["ogg"])


def test_limit_states_say_which_service_readiness_pings() -> None:
    memory = MemoryLimitState()
    assert memory.service is None
    asyncio.run(memory.ping())  # always answers: it is this process
    assert RedisLimitState.service == "redis"
