"""Which transcribers serve a request's `model`: an alias (`whisper-1`) or `provider/model_id`
from `transcription.models` in config, with its per-minute price and its fallback chain
(`chain`), and the price of a duration."""

from __future__ import annotations

import dataclasses
from typing import Mapping

from voxrouter.providers.spec import audio_cost_micros
from voxrouter.providers.transcription import Transcriber, TranscriberFeatures, TranscriptionError, TranscriptionRequest
from voxrouter.router.config import TranscriptionSpec
from voxrouter.router.http.errors import ApiError


@dataclasses.dataclass(frozen=True)
class SttTarget:
    transcriber: Transcriber
    model_id: str  # the provider-native id
    price_micros_per_minute: int

    @property
    def provider_id(self) -> str:
        return self.transcriber.id

    @property
    def label(self) -> str:
        return f"{self.transcriber.id}/{self.model_id}"

    @property
    def features(self) -> TranscriberFeatures:
        return self.transcriber.features(self.model_id)

    def cost_micros(self, audio_ms: int) -> int:
        """The price of `audio_ms` of audio: integer micro-dollars, rounded up."""
        return audio_cost_micros(audio_ms, self.price_micros_per_minute)


def resolve(spec: TranscriptionSpec, transcribers: Mapping[str, Transcriber], model: str) -> SttTarget:
    """The target of `model`, or 400 `invalid_model` (503 `provider_unavailable` when it is known
    but cannot be served here, e.g. its weights are not installed)."""
    name = spec.aliases.get(model, model)
    provider_id, _, model_id = name.partition("/")
    if not provider_id or not model_id:
        raise ApiError(400, "invalid_model", f"model must be 'provider/model_id' or a known alias, got {model!r}")
    transcriber = transcribers.get(provider_id)
    if transcriber is None:
        raise ApiError(400, "invalid_model", f"unknown_provider: {provider_id} (no speech-to-text adapter)")
    listed = spec.models.get(name)
    if listed is None or model_id not in transcriber.models():
        _refused(transcriber, name, model_id)
        raise ApiError(400, "invalid_model", f"unknown_model: {name}")
    reason = transcriber.unavailable_reason(model_id)
    if reason is not None:
        raise ApiError(503, "provider_unavailable", f"{name} is unavailable ({reason})", headers={"Retry-After": "60"})
    return SttTarget(transcriber, model_id, listed.price_micros_per_minute)


def _refused(transcriber: Transcriber, name: str, model_id: str) -> None:
    """A model the adapter knows but refuses (ElevenLabs' retired scribe_v1) says why: 400."""
    if model_id not in transcriber.models():
        return
    try:
        transcriber.check(TranscriptionRequest(audio=b"", filename="", model=model_id))
    except TranscriptionError as exc:
        raise ApiError(400, "invalid_model", f"{name}: {exc.message}") from None


def chain(spec: TranscriptionSpec, transcribers: Mapping[str, Transcriber], model: str) -> list[SttTarget]:
    """`model`'s target then its configured fallbacks, each once, leaving out those that cannot be
    served here (no adapter, weights absent, no key). 400 for a model not listed; when nothing in
    the chain can be served, the primary's own 503."""
    name = spec.aliases.get(model, model)
    primary_error: ApiError | None = None
    try:
        targets = [resolve(spec, transcribers, name)]
    except ApiError as exc:
        if exc.status != 503:
            raise
        primary_error, targets = exc, []
    for fallback in spec.models[name].fallbacks:
        try:
            target = resolve(spec, transcribers, fallback)
        except ApiError:
            continue
        if target.label not in {t.label for t in targets}:
            targets.append(target)
    if not targets:
        assert primary_error is not None
        raise primary_error
    return targets
