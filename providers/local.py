"""The `local` provider: our own engines (`local/kokoro`, `local/piper`, ...).

Each engine runs in this process on its worker pool, or, when its config names a `url`,
on a `voxrouter engine serve` node (a GPU box) reached over HTTP. Either way the
gateway sees 24 kHz s16le PCM and transcodes it to what the client asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import unicodedata
from typing import Any, AsyncIterator

import httpx
from pydantic import BaseModel, ConfigDict

from voxrouter.local_engines import text as text_mod
from voxrouter.local_engines.base import (
    EngineError,
    EngineNotInstalled,
    EngineTimeout,
    EngineVoice,
    InvalidOption,
    NothingToSpeak,
    UnknownVoice,
)
from voxrouter.local_engines.pool import EngineBusy
from voxrouter.local_engines.registry import build_engine
from voxrouter.local_engines.runner import EngineRunner, RunnerSettings
from voxrouter.providers._http import build_client, error_from_response, stream_audio
from voxrouter.providers.base import (
    Capabilities,
    EngineLoad,
    ErrorKind,
    Health,
    ProviderDefaults,
    ProviderError,
    ProviderFeatures,
    RtfObserver,
    SynthesisRequest,
    Voice,
)
from voxrouter.providers.spec import ProviderSpec

logger = logging.getLogger("voxrouter.engines")

_CLONING = frozenset({"chatterbox", "moss-tts-nano"})
NOT_INSTALLED = "model_not_installed"  # an engine's reason, and the code an engine node's 503 carries


class EngineSpec(BaseModel):
    """One engine under the local provider; keys other than these go to the engine itself
    (model_path, voices_path, voices_dir, weights_dir, threads, device, first_chunk_chars,
    max_chunk_chars, max_phonemes, ...). A key ending in `_env` names an environment
    variable that overrides the key without the suffix. The `*budget*` keys bound the
    compute time of one request and of one piece of it (see `voxrouter.local_engines.runner`)."""

    model_config = ConfigDict(extra="allow")
    engine: str  # kind: kokoro | piper | hibari | chatterbox | moss-tts-nano
    url: str | None = None  # a `voxrouter engine serve` base URL: run there, not here
    remote_model: str | None = None  # the engine's id on that node, when it differs from ours
    token_env: str | None = None  # env var holding the node's VOXROUTER_ENGINE_TOKEN
    workers: int = 1
    max_streams: int = 4
    max_queue: int = 16
    queue_timeout_s: float = 30.0
    max_streams_per_tenant: int | None = None  # one organization's share of max_streams (None: half of it)
    budget_base_s: float = RunnerSettings.budget_base_s
    budget_per_char_s: float = RunnerSettings.budget_per_char_s
    piece_budget_base_s: float = RunnerSettings.piece_budget_base_s
    piece_budget_per_char_s: float = RunnerSettings.piece_budget_per_char_s

    def token(self) -> str | None:
        return (self.token_env and os.environ.get(self.token_env)) or None

    def engine_settings(self) -> dict[str, Any]:
        extra = dict(self.model_extra or {})
        for key in [k for k in extra if k.endswith("_env")]:
            name = extra.pop(key)
            if name and os.environ.get(name):
                extra[key.removesuffix("_env")] = os.environ[name]
        return extra

    def runner_settings(self) -> RunnerSettings:
        return RunnerSettings(
            self.workers,
            self.max_streams,
            self.max_queue,
            self.queue_timeout_s,
            max_streams_per_tenant=self.max_streams_per_tenant,
            budget_base_s=self.budget_base_s,
            budget_per_char_s=self.budget_per_char_s,
            piece_budget_base_s=self.piece_budget_base_s,
            piece_budget_per_char_s=self.piece_budget_per_char_s,
        )


class LocalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engines: dict[str, EngineSpec] = {}
    preload: list[str] = []  # engines loaded at start-up rather than on first request


class LocalProvider(ProviderDefaults):
    def __init__(self, provider_id: str, spec: ProviderSpec, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.id = provider_id
        self.name = spec.name
        self.website = spec.website
        self._spec = spec
        self._options = LocalOptions.model_validate(spec.options)
        self.features = ProviderFeatures(
            voice_listing=True,
            health_probe=True,
            per_model_engines=True,
            preload=True,
            cloning=any(engine.engine in _CLONING for engine in self._options.engines.values()),
        )
        self._runners: dict[str, EngineRunner] = {}
        self._remotes: dict[str, _RemoteEngine] = {}
        threads = _default_threads(self._options)
        for engine_id, engine_spec in self._options.engines.items():
            if engine_spec.url:
                self._remotes[engine_id] = _RemoteEngine(provider_id, engine_id, engine_spec, spec, transport)
            else:
                settings = engine_spec.engine_settings()
                if settings.get("threads") is None:
                    settings["threads"] = threads
                engine = build_engine(engine_spec.engine, engine_id, settings)
                self._runners[engine_id] = EngineRunner(engine, engine_spec.runner_settings())
        self._preloading: asyncio.Task[None] | None = None

    @property
    def configured(self) -> bool:
        return True  # no key needed; each engine reports its own state

    def unavailable_reason(self, model: str) -> str | None:
        if model in self._runners:
            runner = self._runners[model]
            return NOT_INSTALLED if runner.missing() or runner.load_error else None
        if model in self._remotes:
            return self._remotes[model].unavailable_reason
        return None

    def engine_loads(self) -> dict[str, EngineLoad]:
        """The in-process engines' stream gates (active, waiting), for the metrics."""
        return {engine_id: EngineLoad(runner.gate.active, runner.gate.waiting) for engine_id, runner in self._runners.items()}

    def on_engine_rtf(self, observer: RtfObserver) -> None:
        for runner in self._runners.values():
            runner.on_rtf = observer

    def engine_states(self) -> list[tuple[str, str | None]]:
        """(engine id, reason it is unavailable or None) for every configured engine."""
        return [(engine_id, self.unavailable_reason(engine_id)) for engine_id in self._options.engines]

    def preload_states(self) -> list[tuple[str, str | None]]:
        """(engine id, None when loaded, else why not yet) for the engines set to preload
        whose weights are installed; absent weights are reported by /v1/status, not readiness."""
        states: list[tuple[str, str | None]] = []
        for name in self._options.preload:
            runner = self._runners.get(name)
            if runner is None or runner.missing():
                continue
            if runner.load_error is not None:
                states.append((name, f"failed to load: {type(runner.load_error).__name__}"))
            else:
                states.append((name, None if runner.loaded else "loading"))
        return states

    def capabilities(self, model: str) -> Capabilities:
        spec = self._spec.model(model) or self._spec.default_model
        kind = self._options.engines[model].engine if model in self._options.engines else model
        return Capabilities(response_formats=("pcm",), max_input_chars=spec.max_input_chars, cloning=kind in _CLONING)

    def spoken_characters(self, model: str, text: str) -> int:
        """The characters of `text` once normalised as the engine will speak it (numbers and
        abbreviations spelled out for English, NFKC expansions such as U+FDFA's 18 letters),
        never fewer than `len(text)`. The voice is not known here, so it is the longer of the
        English and the plain normalisation; for an engine id not configured here, NFKC."""
        if model in self._runners or model in self._remotes:
            return max(len(text), len(text_mod.normalize(text, "en")), len(text_mod.normalize(text, "und")))
        return max(len(text), len(unicodedata.normalize("NFKC", text)))

    async def start(self) -> None:
        """Load the preload engines in the background, so the first request finds them warm,
        and learn which remote engines are installed."""
        names = [name for name in self._options.preload if name in self._runners and not self._runners[name].missing()]
        if names or self._remotes:
            self._preloading = asyncio.create_task(self._preload(names))

    async def _preload(self, names: list[str]) -> None:
        await asyncio.gather(*(remote.refresh() for remote in self._remotes.values()))
        for name in names:
            runner = self._runners[name]
            try:
                await runner.ensure_loaded()
            except Exception as exc:
                logger.error("engine %s failed to load: %s", name, exc)

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        label = f"{self.id}/{request.model}"
        if request.model in self._remotes:
            async for chunk in self._remotes[request.model].synthesize(request):
                yield chunk
            return
        runner = self._runners.get(request.model)
        if runner is None:
            raise ProviderError(ErrorKind.bad_request, f"{label} is not a configured engine", provider=self.id)
        try:
            utterance = runner.utterance(request.voice, request.speed, request.provider_options)
            async for chunk in runner.stream(request.input, utterance, request.tenant):
                yield chunk
        except (UnknownVoice, InvalidOption, NothingToSpeak) as exc:
            raise ProviderError(ErrorKind.bad_request, str(exc), provider=self.id, status=400) from None
        except EngineTimeout as exc:
            raise ProviderError(ErrorKind.timeout, f"{label}: {exc}", provider=self.id, status=504) from None
        except EngineBusy as exc:
            raise ProviderError(
                ErrorKind.overloaded,
                f"{label}: {exc}",
                provider=self.id,
                status=429 if exc.queue_full else 503,
                retry_after=exc.retry_after_s,
            ) from None
        except EngineNotInstalled as exc:
            raise ProviderError(ErrorKind.not_installed, f"{label}: {exc} ({NOT_INSTALLED})", provider=self.id) from None
        except EngineError as exc:
            raise ProviderError(ErrorKind.bad_request, f"{label}: {exc}", provider=self.id) from None
        except (ProviderError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            logger.exception("engine %s failed", label)
            raise ProviderError(ErrorKind.unavailable, f"{label} failed: {type(exc).__name__}", provider=self.id) from None

    async def voices(self) -> list[Voice]:
        out: list[Voice] = []
        for engine_id, runner in self._runners.items():
            if not runner.missing():
                out.extend(engine_voice(voice, engine_id) for voice in await asyncio.to_thread(runner.voices))
        for remote in self._remotes.values():
            with contextlib.suppress(ProviderError):
                out.extend(await remote.voices())
        return out

    async def probe(self) -> Health:
        await asyncio.gather(*(remote.refresh() for remote in self._remotes.values()))
        return Health(ok=any(reason is None for _, reason in self.engine_states()))

    async def aclose(self) -> None:
        if self._preloading is not None:
            self._preloading.cancel()
            with contextlib.suppress(BaseException):
                await self._preloading
        for runner in self._runners.values():
            runner.close()
        for remote in self._remotes.values():
            await remote.aclose()


class _RemoteEngine:
    """An engine on a `voxrouter engine serve` node, spoken to over its OpenAI-shaped API."""

    def __init__(
        self, provider_id: str, engine_id: str, engine: EngineSpec, spec: ProviderSpec, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        assert engine.url
        self._provider = provider_id
        self._engine = engine.remote_model or engine_id  # its id on the node
        self._local_id = engine_id  # its id here, after "local/"
        self._spec = spec
        token = engine.token()
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = build_client(
            engine.url.rstrip("/"),
            connect_timeout_s=spec.connect_timeout_s,
            read_timeout_s=spec.read_timeout_s,
            max_connections=spec.max_connections,
            transport=transport,
        )
        self.unavailable_reason: str | None = None

    async def refresh(self) -> None:
        """Ask the node which engines it has installed (its free status route)."""
        try:
            response = await self._client.get("/v1/status", headers=self._headers)
            states = {s["id"]: s for s in response.json()} if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            logger.warning("engine node for %s did not answer its status: %s", self._engine, exc)
            return
        state = states.get(self._engine)
        if state is None:
            self.unavailable_reason = NOT_INSTALLED
        else:
            self.unavailable_reason = state.get("reason") if state.get("state") == "unavailable" else None

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        body: dict[str, Any] = {"model": self._engine, "input": request.input, "voice": request.voice, "response_format": "pcm"}
        if request.speed is not None:
            body["speed"] = request.speed
        if request.provider_options:
            body["provider_options"] = request.provider_options
        try:
            async for chunk in stream_audio(
                self._client,
                self._provider,
                "POST",
                "/v1/audio/speech",
                headers=self._headers,
                json=body,
                parse_error=_parse_error,
                classify_error=_engine_error_kind,
                first_byte_timeout_s=self._spec.first_byte_timeout_s,
            ):
                yield chunk
            self.unavailable_reason = None
        except ProviderError as exc:
            if exc.kind is ErrorKind.not_installed:
                self.unavailable_reason = NOT_INSTALLED
            raise

    async def voices(self) -> list[Voice]:
        try:
            response = await self._client.get("/v1/voices", headers=self._headers)
        except httpx.HTTPError as exc:
            raise ProviderError(ErrorKind.unavailable, f"engine {self._engine}: {type(exc).__name__}", provider=self._provider) from None
        if response.status_code >= 400:
            raise error_from_response(self._provider, response, response.content, _parse_error)
        voices = response.json().get("voices", [])
        return [
            Voice(
                id=v["id"],
                provider=self._provider,
                name=v.get("name", v["id"]),
                language=v.get("language", ""),
                labels=v.get("labels", {}),
                model_compatibility=(self._local_id,),
            )
            for v in voices
            if self._engine in v.get("model_compatibility", [self._engine])
        ]

    async def aclose(self) -> None:
        await self._client.aclose()


def _default_threads(options: LocalOptions) -> int:
    """Inference threads for an engine whose config leaves `threads` unset: a fair share of
    the cores among the in-process engines that run at once by default (the preloaded ones)
    and take this share (an engine with its own `threads`, like hibari's one, is not counted).
    Each engine taking every core would let one tenant's work on one engine halve another
    engine's speed for everyone else."""
    in_process = [name for name, engine in options.engines.items() if not engine.url and (engine.model_extra or {}).get("threads") is None]
    running = [name for name in options.preload if name in in_process] or in_process
    return max(1, (os.cpu_count() or 1) // max(1, len(running)))


def _parse_error(body: bytes) -> str:
    data = json.loads(body)
    return f"{data.get('error')}: {data.get('details')}"


def _engine_error_kind(status: int, body: bytes) -> ErrorKind | None:
    """An engine node's 429 and 503 mean busy, or not installed where its error body's `reason`
    says so: not a failing upstream."""
    if status not in (429, 503):
        return None
    if status == 503 and _error_reason(body) == NOT_INSTALLED:
        return ErrorKind.not_installed
    return ErrorKind.overloaded


def _error_reason(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("reason") if isinstance(data, dict) else None


def engine_voice(voice: EngineVoice, engine_id: str) -> Voice:
    """An engine's voice as the gateway lists it (the engine node lists it so too)."""
    labels = {"gender": voice.gender} if voice.gender else {}
    if voice.accent:
        labels["accent"] = voice.accent
    return Voice(
        id=voice.id,
        provider="local",
        name=voice.name,
        language=voice.language,
        labels={**labels, "engine": engine_id},
        model_compatibility=(engine_id,),
    )
