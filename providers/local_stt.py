"""The local Whisper engine (local_engines/whisper.py) as a `Transcriber`: `local/whisper-tiny.en`
(and `local/whisper-base` where its wheels are installed). Inference runs on the engine's own
worker threads behind its gate (`WhisperEngine.transcribe_async`), never on the event loop; the
model loads at the first request, on a worker thread too."""

from __future__ import annotations

from voxrouter.local_engines.base import EngineNotInstalled, InvalidOption
from voxrouter.local_engines.pool import EngineBusy
from voxrouter.local_engines.whisper import TranscriptionCancelled, UndecodableAudio, WhisperEngine
from voxrouter.providers.spec import LocalWhisperSpec
from voxrouter.providers.transcription import Transcript, TranscriberFeatures, TranscriptionError, TranscriptionRequest

_PREFIX = "whisper-"
_FEATURES = TranscriberFeatures(word_timestamps=True, segment_timestamps=True, prompt=True)
# Only a multilingual model translates (Whisper's `translate` task); tiny.en hears English only.
_TRANSLATING = TranscriberFeatures(word_timestamps=True, segment_timestamps=True, prompt=True, translation=True)


class LocalTranscriber:
    def __init__(self, provider_id: str, spec: LocalWhisperSpec) -> None:
        self.id = provider_id
        self.engine = WhisperEngine(
            f"{provider_id}-whisper",
            threads=spec.threads,
            workers=spec.workers,
            max_queue=spec.max_queue,
            queue_timeout_s=spec.queue_timeout_s,
            max_audio_s=spec.max_audio_s,
            beam_size=spec.beam_size,
        )

    def models(self) -> tuple[str, ...]:
        return tuple(_PREFIX + model for model in ("tiny.en", "base"))

    def features(self, model: str) -> TranscriberFeatures:
        return _FEATURES if model.endswith(".en") else _TRANSLATING

    def unavailable_reason(self, model: str) -> str | None:
        if model not in self.models():
            return "unknown_model"
        return None if model.removeprefix(_PREFIX) in self.engine.models() else "model_not_installed"

    def check(self, request: TranscriptionRequest) -> None:
        try:
            self.engine.check_options(
                model=request.model.removeprefix(_PREFIX),
                language=request.language,
                prompt=request.prompt,
                temperature=request.temperature,
            )
        except InvalidOption as exc:
            raise TranscriptionError("invalid_option", str(exc)) from None

    async def transcribe(self, request: TranscriptionRequest) -> Transcript:
        try:
            return await self.engine.transcribe_async(
                request.audio,
                model=request.model.removeprefix(_PREFIX),
                language=request.language,
                word_timestamps=request.word_timestamps,
                prompt=request.prompt,
                temperature=request.temperature,
                tenant=request.tenant,
                task=request.task,
            )
        except UndecodableAudio as exc:
            raise TranscriptionError("invalid_audio", str(exc)) from None
        except InvalidOption as exc:
            raise TranscriptionError("invalid_option", str(exc)) from None
        except EngineBusy as exc:
            raise TranscriptionError("busy", str(exc) or "every whisper worker is busy") from None
        except EngineNotInstalled as exc:
            raise TranscriptionError("unavailable", str(exc)) from None
        except TranscriptionCancelled as exc:
            raise TranscriptionError("upstream", str(exc)) from None

    def close(self) -> None:
        self.engine.close()

    async def aclose(self) -> None:
        self.close()
