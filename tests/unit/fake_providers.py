"""In-memory providers for unit tests of planning and dispatch: the `Provider` protocol with
no sockets, each synthesis call following a script (audio, a failure, a hang)."""

from __future__ import annotations

import dataclasses
from typing import Any, AsyncIterator

import anyio

from voxrouter.providers.base import (
    Capabilities,
    ErrorKind,
    Health,
    ProviderDefaults,
    ProviderError,
    ProviderFeatures,
    SynthesisRequest,
    Voice,
)
from voxrouter.providers.spec import ProviderSpec
from voxrouter.router.config import Config


def config(**sections: Any) -> Config:
    """Three small providers: `alpha` (mp3 + pcm), `beta` (pcm only, unlisted ids refused),
    `gamma` (mp3 only, its default model dearer than any listed one); `sections` override."""
    raw: dict[str, Any] = {
        "providers": {
            "alpha": _provider(
                ["mp3", "pcm"],
                default=2_000,
                models={
                    "a-small": {"price_micros_per_1k_chars": 1_000, "max_input_chars": 100},
                    "a-big": {"price_micros_per_1k_chars": 5_000, "max_input_chars": 1_000},
                    "a-audio": {
                        "price_micros_per_1k_chars": 1_000,
                        "max_input_chars": 1_000,
                        "price_micros_per_audio_minute": 60_000,
                        "max_audio_ms_per_char": 100,
                    },
                },
            ),
            "beta": _provider(
                ["pcm"],
                default=3_000,
                models={"b1": {"price_micros_per_1k_chars": 3_000, "max_input_chars": 1_000}},
                allow_unlisted_models=False,
            ),
            "gamma": _provider(
                ["mp3"],
                default=9_000,
                models={
                    "g1": {"price_micros_per_1k_chars": 4_000, "max_input_chars": 1_000},
                    "g-audio": {
                        "price_micros_per_1k_chars": 0,
                        "max_input_chars": 1_000,
                        "price_micros_per_audio_minute": 60_000,
                    },
                },
            ),
        },
        "aliases": {
            "speak": {
                "targets": [
                    {"model": "alpha/a-small", "voices": {"narrator": "a-narrator"}},
                    {"model": "beta/b1", "voices": {"narrator": "b-narrator"}},
                ]
            },
            "solo": {"target": "gamma/g1"},
            "mixed": {"target": "alpha/a-small", "voices": {"calm": "a-calm", "quick": {"model": "beta/b1", "voice": "b-quick"}}},
        },
        "voice_map": {"narrator": {"gamma": "g-narrator"}, "alpha/alloy": {"beta": "b-alloy"}},
    }
    raw.update(sections)
    return Config.model_validate(raw)


def _provider(formats: list[str], *, default: int, models: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "adapter": "fake",
        "name": "Fake",
        "website": "https://example.test",
        "response_formats": formats,
        "default_model": {"price_micros_per_1k_chars": default, "max_input_chars": 1_000},
        "models": models,
        **extra,
    }


@dataclasses.dataclass(frozen=True)
class Step:
    """What one synthesis call does: yield `chunks`, then hang (before any further byte) or
    raise `error`, else end."""

    chunks: tuple[bytes, ...] = ()
    error: ProviderError | None = None
    hang: bool = False


@dataclasses.dataclass
class Call:
    request: SynthesisRequest
    closed: bool = False  # the stream was finished or closed (the upstream released)


class FakeProvider(ProviderDefaults):
    features = ProviderFeatures(voice_listing=True, health_probe=False)

    def __init__(
        self,
        provider_id: str,
        spec: ProviderSpec,
        *,
        unavailable: dict[str, str] | None = None,
        spoken_factor: int = 1,
        fixed_fields: frozenset[str] = frozenset(),
        voices: list[Voice] | None = None,
    ) -> None:
        self.id = provider_id
        self.name = spec.name
        self.website = spec.website
        self._spec = spec
        self._unavailable = unavailable or {}
        self._spoken_factor = spoken_factor
        self._fixed_fields = fixed_fields
        self._voices = voices or []
        self.script: list[Step] = []  # one step per call; when empty, calls succeed
        self.calls: list[Call] = []

    def error(self, kind: ErrorKind, *, retry_after: float | None = None, status: int | None = None) -> ProviderError:
        return ProviderError(kind, f"{self.id} failed: {kind.value}", provider=self.id, retry_after=retry_after, status=status)

    def then(self, *steps: Step) -> "FakeProvider":
        self.script.extend(steps)
        return self

    @property
    def configured(self) -> bool:
        return self._unavailable.get("*") != "missing_api_key"

    def unavailable_reason(self, model: str) -> str | None:
        return self._unavailable.get(model) or self._unavailable.get("*")

    def capabilities(self, model: str) -> Capabilities:
        spec = self._spec.model(model)
        assert spec is not None, f"plan asked {self.id} about a model it refuses: {model}"
        formats = tuple(spec.response_formats or self._spec.response_formats)
        return Capabilities(response_formats=formats, max_input_chars=spec.max_input_chars, fixed_fields=self._fixed_fields)

    def spoken_characters(self, model: str, text: str) -> int:
        return len(text) * self._spoken_factor

    async def synthesize(self, request: SynthesisRequest) -> AsyncIterator[bytes]:
        step = self.script.pop(0) if self.script else Step(chunks=(f"{self.id}-1".encode(), f"{self.id}-2".encode()))
        call = Call(request)
        self.calls.append(call)
        try:
            for chunk in step.chunks:
                yield chunk
            if step.hang:
                await anyio.sleep_forever()
            if step.error is not None:
                raise step.error
        finally:
            call.closed = True

    async def voices(self) -> list[Voice]:
        return list(self._voices)

    async def probe(self) -> Health:
        return Health(ok=True)

    async def aclose(self) -> None:
        return None


def providers(cfg: Config, **options: dict[str, Any]) -> dict[str, FakeProvider]:
    """A fake for every provider in `cfg`; `options[provider_id]` are its FakeProvider keywords."""
    return {pid: FakeProvider(pid, spec, **options.get(pid, {})) for pid, spec in cfg.providers.items()}
