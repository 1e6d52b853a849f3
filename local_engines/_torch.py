"""Shared plumbing for the PyTorch engines (Chatterbox, MOSS-TTS-Nano).

Nothing here imports torch at module level: `missing()` must stay cheap and work where
torch is not installed (CI, the gateway's own machine). Functions that need torch import
it when called, which only happens once an engine is loading or speaking.

What lives here:
- runtime and weight checks (`modules_missing`, `files_missing`)
- the device choice (`check_device`, `pick_device`)
- reference clips: the voices directory scan (`scan_voices`) and one-off clips sent as
  base64 (`decode_reference_audio`, `clip_file`, which always deletes its temp file)
- `provider_options` validation (`reject_unknown`, `float_option`, `int_option`, ...)
- turning a model's output into float32 mono in [-1, 1] (`to_mono_float32`, `resample`)
- `TorchEngine`, the skeleton both engines share: configuration, `missing()`, load-once,
  voices, request validation, one generation at a time, `close()`; each engine supplies
  its weights check, its options table and the `_load_model` / `_generate` hooks
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from voxrouter.local_engines.base import EngineBase, EngineNotInstalled, EngineVoice, InvalidOption, UnknownVoice, Utterance

logger = logging.getLogger("voxrouter.engines")

DEFAULT_VOICE = "default"
CLIP_SUFFIXES = (".wav", ".flac", ".mp3")
MAX_REFERENCE_BYTES = 10 * 1024 * 1024
MAX_SEED = 2**32 - 1  # numpy's limit; torch takes more, but one range for all RNGs
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_GENDERS = ("female", "male", "neutral")


# --- what is installed ------------------------------------------------------------------------


def modules_missing(modules: Iterable[tuple[str, str]]) -> list[str]:
    """For each (import name, pip name) whose top-level module cannot be found: "<pip name> is not installed".

    Uses `importlib.util.find_spec` on the top-level name only, which imports nothing.
    """
    reasons = []
    for module, package in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a half-installed package, or a module without a spec
            found = False
        if not found:
            reasons.append(f"{package} is not installed")
    return reasons


def files_missing(directory: Path, required: Sequence[str], *, any_of: Sequence[Sequence[str]] = ()) -> list[str]:
    """Names of `required` files absent (or empty) in `directory`, plus one entry per unmatched `any_of` glob group."""
    absent = []
    for name in required:
        path = directory / name
        if not path.is_file():
            absent.append(name)
        elif path.stat().st_size == 0:
            absent.append(f"{name} (empty)")
    for patterns in any_of:
        if not any(path.is_file() for pattern in patterns for path in directory.glob(pattern)):
            absent.append(" or ".join(patterns))
    return absent


def weights_dir_problem(weights_dir: Path | None) -> str | None:
    """Why `weights_dir` cannot hold weights: not configured, or not an existing directory."""
    if weights_dir is None:
        return "weights_dir is not configured"
    if not weights_dir.exists():
        return f"weights_dir {weights_dir} does not exist"
    if not weights_dir.is_dir():
        return f"weights_dir {weights_dir} is not a directory"
    return None


# --- device ------------------------------------------------------------------------------------


def check_device(device: str) -> str:
    """Validate a configured device name ("auto", "cpu", "cuda", "cuda:1", "mps"); raises ValueError."""
    normalized = str(device).strip().lower()
    if not _DEVICE.match(normalized):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:<n> or mps, not {device!r}")
    return normalized


def pick_device(device: str) -> str:
    """Map "auto" to "cuda" when torch sees a GPU, else "cpu"; other names pass through. Imports torch."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int) -> None:
    """Seed every RNG a sampling step may draw from (Python, numpy, torch CPU and CUDA). Imports torch."""
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# --- voices: reference clips in voices_dir -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VoiceClip:
    """A reference clip in `voices_dir` that an engine clones: `<stem>.wav|.flac|.mp3` (+ optional `<stem>.json`)."""

    voice: EngineVoice
    path: Path
    transcript: str | None = None  # what is said in the clip, when the sidecar gives it (MOSS uses it)


def scan_voices(voices_dir: Path | None, *, default_language: str = "en-US") -> dict[str, VoiceClip]:
    """Voice id (file stem) -> clip, for every reference clip in `voices_dir`, sorted by id.

    A sidecar `<stem>.json` may give {"name", "language", "gender", "transcript"}; a missing or
    unreadable one leaves the defaults (name from the stem, `default_language`, no gender).
    A clip named after the built-in voice ("default") is skipped, as is a second clip with
    the same stem in another format.
    """
    clips: dict[str, VoiceClip] = {}
    if voices_dir is None or not voices_dir.is_dir():
        return clips
    try:
        entries = sorted(voices_dir.iterdir())
    except OSError as exc:
        logger.warning("cannot list voices_dir %s: %s", voices_dir, exc)
        return clips
    for path in entries:
        if path.suffix.lower() not in CLIP_SUFFIXES or not path.is_file() or path.name.startswith("."):
            continue
        stem = path.stem
        if stem == DEFAULT_VOICE:
            logger.warning("voices_dir clip %s is skipped: %r names the built-in voice", path, stem)
            continue
        if stem in clips:
            logger.warning("voices_dir clip %s is skipped: %s already provides voice %r", path, clips[stem].path.name, stem)
            continue
        label = _sidecar(path.with_suffix(".json"))
        name = label.get("name") if isinstance(label.get("name"), str) and label["name"].strip() else None
        language = label.get("language") if isinstance(label.get("language"), str) and label["language"].strip() else None
        gender = label.get("gender") if isinstance(label.get("gender"), str) else None
        transcript = label.get("transcript") if isinstance(label.get("transcript"), str) else None
        voice = EngineVoice(
            id=stem,
            name=(name or stem.replace("_", " ").replace("-", " ").title()).strip(),
            language=(language or default_language).strip(),
            gender=gender.strip().lower() if gender and gender.strip().lower() in _GENDERS else None,
        )
        clips[stem] = VoiceClip(
            voice=voice, path=path, transcript=transcript.strip() if transcript and transcript.strip() else None
        )
    return clips


def _sidecar(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        label = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("ignoring voice label %s: %s", path, exc)
        return {}
    if not isinstance(label, dict):
        logger.warning("ignoring voice label %s: not a JSON object", path)
        return {}
    return label


# --- one-off reference clips (provider_options.reference_audio) ------------------------------------


@dataclasses.dataclass(frozen=True)
class ReferenceClip:
    """A decoded `reference_audio` clip. Held in memory only; `clip_file` writes it out for the model."""

    data: bytes = dataclasses.field(repr=False)
    suffix: str  # ".wav", ".flac" or ".mp3", sniffed from the bytes
    digest: str  # sha256 of the bytes: a cache key for conditioning computed from the clip

    def __repr__(self) -> str:
        return f"ReferenceClip({self.suffix}, {len(self.data)} bytes, sha256={self.digest[:12]})"


def decode_reference_audio(value: Any, *, option: str = "reference_audio", max_bytes: int = MAX_REFERENCE_BYTES) -> ReferenceClip:
    """Decode a base64 wav/flac/mp3 clip (a `data:audio/...;base64,` prefix is allowed); raises InvalidOption."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidOption(f"provider_options.{option} must be a non-empty base64 string (a wav, flac or mp3 clip)")
    text = value.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidOption(f"provider_options.{option}: a data URL must be base64 (data:audio/wav;base64,...)")
    text = "".join(text.split())
    # Refuse oversize input before decoding it: 4 base64 characters carry 3 bytes.
    if len(text) > 4 * math.ceil(max_bytes / 3):
        raise InvalidOption(f"provider_options.{option} is larger than {max_bytes // (1024 * 1024)} MB decoded")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidOption(f"provider_options.{option} is not valid base64") from None
    if len(data) > max_bytes:
        raise InvalidOption(f"provider_options.{option} is larger than {max_bytes // (1024 * 1024)} MB decoded")
    suffix = _sniff_audio(data)
    if suffix is None:
        raise InvalidOption(f"provider_options.{option} must be a wav, flac or mp3 clip (the decoded bytes are none of these)")
    return ReferenceClip(data=data, suffix=suffix, digest=hashlib.sha256(data).hexdigest())


def _sniff_audio(data: bytes) -> str | None:
    if len(data) >= 12 and data[:4] in (b"RIFF", b"RIFX") and data[8:12] == b"WAVE":
        return ".wav"
    if data[:4] == b"fLaC":
        return ".flac"
    if data[:3] == b"ID3" or (len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return ".mp3"
    return None


@contextlib.contextmanager
def clip_file(clip: ReferenceClip) -> Iterator[Path]:
    """The clip written to a private temp file for the model to read; the file is deleted on exit, always."""
    fd, name = tempfile.mkstemp(prefix="voxrouter-ref-", suffix=clip.suffix)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(clip.data)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --- provider_options -----------------------------------------------------------------------------


def reject_unknown(engine: str, options: dict[str, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    for key in options:
        if key not in allowed:
            raise InvalidOption(f"{engine} does not take provider_options.{key} (it takes: {', '.join(allowed)})")


def float_option(options: dict[str, Any], name: str, low: float, high: float, default: float | None = None) -> float | None:
    """A number in [low, high] (bools, strings, NaN and infinities refused), or `default` when absent/None."""
    value = options.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise InvalidOption(f"provider_options.{name} must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)


def int_option(options: dict[str, Any], name: str, low: int, high: int) -> int | None:
    """A whole number in [low, high] (a float with no fraction is accepted), or None when absent/None."""
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidOption(f"provider_options.{name} must be a whole number from {low} to {high}, not {value!r}")
    return value


def str_option(options: dict[str, Any], name: str, max_chars: int) -> str | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars:
        raise InvalidOption(f"provider_options.{name} must be a non-empty string of at most {max_chars} characters")
    return value.strip()


def require_unit_speed(engine: str, speed: float | None) -> None:
    if speed is not None and speed != 1.0:
        raise InvalidOption(f"{engine} has no speed control: leave speed out or set it to 1.0 (got {speed:g})")


@dataclasses.dataclass(frozen=True)
class NumberOption:
    """A numeric provider option in [low, high]: a whole number when `whole`; when absent, `default` (None stays None)."""

    low: float
    high: float
    default: float | None = None
    whole: bool = False

    def resolve(self, options: dict[str, Any], name: str) -> float | int | None:
        if self.whole:
            return int_option(options, name, int(self.low), int(self.high))
        return float_option(options, name, self.low, self.high, self.default)


_SEED = NumberOption(0, MAX_SEED, whole=True)


# --- audio out -------------------------------------------------------------------------------------


def to_mono_float32(wave: Any) -> np.ndarray:
    """A torch tensor or array of shape (N,), (1, N), (C, N) or (N, C) -> float32 mono in [-1, 1]."""
    if hasattr(wave, "detach"):  # a torch tensor, without importing torch here
        wave = wave.detach().float().cpu().numpy()
    audio = np.asarray(wave, dtype=np.float32)
    if audio.ndim == 0:
        audio = audio.reshape(1)
    elif audio.ndim == 2:
        # Channels are the short axis (at most 8 of them); average them.
        axis = 0 if audio.shape[0] <= audio.shape[1] else 1
        audio = audio.mean(axis=axis) if audio.shape[axis] <= 8 else audio.reshape(-1)
    elif audio.ndim > 2:
        squeezed = np.squeeze(audio)
        return to_mono_float32(squeezed) if squeezed.ndim <= 2 else squeezed.reshape(-1).astype(np.float32)
    audio = np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Linear-interpolation resampling; only a fallback for a model that reports an unexpected rate."""
    if from_rate == to_rate or len(audio) == 0:
        return audio
    count = max(1, int(round(len(audio) * to_rate / from_rate)))
    positions = np.arange(count, dtype=np.float64) * (from_rate / to_rate)
    return np.interp(positions, np.arange(len(audio), dtype=np.float64), audio).astype(np.float32)


# --- the engine skeleton ----------------------------------------------------------------------------


class TorchEngine(EngineBase):
    """What Chatterbox and MOSS-TTS-Nano share; they implement voxrouter.local_engines.base.Engine through it.

    A subclass sets `id`, `sample_rate`, the chunk sizes, `_modules`, `_numbers`,
    `_import_failure` (and `_extra_options` if it takes more) and supplies the hooks
    `_weights_missing`, `_load_model` and `_generate`; `_more_options` and `_unload`
    are optional. Every engine has the built-in "default" voice plus the clips in
    voices_dir, takes `seed` and `reference_audio`, and has no speed control.
    """

    id: str
    sample_rate: int
    first_chunk_chars: int
    max_chunk_chars: int
    _modules: ClassVar[tuple[tuple[str, str], ...]]  # (import name, pip name) of what the engine needs
    _numbers: ClassVar[dict[str, NumberOption]]  # numeric provider_options, besides seed, in the order they are listed
    _extra_options: ClassVar[tuple[str, ...]] = ()  # further provider_options, resolved by `_more_options`
    _import_failure: ClassVar[str]  # what `load()` reports when an import fails: "cannot import ..."
    _default_voice = EngineVoice(id=DEFAULT_VOICE, name="Default", language="en-US")  # the model's own conditioning

    def __init__(
        self,
        engine_id: str | None = None,
        *,
        weights_dir: str | None = None,
        voices_dir: str | None = None,
        device: str = "auto",
        first_chunk_chars: int | None = None,
        max_chunk_chars: int | None = None,
        **_: Any,
    ) -> None:
        self.id = self.id if engine_id is None else engine_id
        self._weights_dir = Path(weights_dir).expanduser() if weights_dir else None
        self._voices_dir = Path(voices_dir).expanduser() if voices_dir else None
        self._device = check_device(device)
        if first_chunk_chars:
            self.first_chunk_chars = first_chunk_chars
        if max_chunk_chars:
            self.max_chunk_chars = max_chunk_chars
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one generation at a time: torch parallelises inside it
        self._model: Any = None
        self._unload()

    # --- what is installed -------------------------------------------------------------------------

    def missing(self) -> str | None:
        """Everything that stops the engine here, joined with "; " (weights first, then packages), or None."""
        if self._model is not None:
            return None
        reasons = []
        if problem := weights_dir_problem(self._weights_dir):
            reasons.append(problem)
        elif self._weights_dir is not None:
            reasons += self._weights_missing(self._weights_dir)
        reasons += modules_missing(self._modules)
        return "; ".join(reasons) or None

    def load(self) -> None:
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            if reason := self.missing():
                raise EngineNotInstalled(f"{self.id}: {reason}")
            try:
                model = self._load_model()
            except EngineNotInstalled:
                raise
            except ImportError as exc:
                raise EngineNotInstalled(f"{self.id}: {self._import_failure}: {exc}") from exc
            except Exception as exc:  # corrupt or mismatched weights, CUDA unavailable, ...
                logger.exception("%s failed to load from %s", self.id, self._weights_dir)
                raise EngineNotInstalled(f"{self.id}: loading weights from {self._weights_dir} failed: {exc}") from exc
            self._model = model  # last: a set _model is what tells other threads the engine is ready

    # --- requests ----------------------------------------------------------------------------------

    def voices(self) -> list[EngineVoice]:
        return [self._default_voice, *(clip.voice for clip in scan_voices(self._voices_dir).values())]

    def utterance(self, voice: str, speed: float | None, options: dict[str, Any]) -> Utterance:
        """Validate a request. `Utterance.options` holds the resolved `_numbers` and seed (None when not
        given), reference_audio (ReferenceClip | None), voice_clip (Path | None) and `_more_options`."""
        clips = scan_voices(self._voices_dir)
        clip = clips.get(voice)
        if voice == DEFAULT_VOICE:
            engine_voice = self._default_voice
        elif clip is not None:
            engine_voice = clip.voice
        else:
            known = ", ".join([DEFAULT_VOICE, *clips])
            raise UnknownVoice(
                f"{self.id} has no voice {voice!r}; it has {known} (or clone one with provider_options.reference_audio)"
            )
        require_unit_speed(self.id, speed)
        reject_unknown(self.id, options, (*self._numbers, "seed", "reference_audio", *self._extra_options))
        resolved: dict[str, Any] = {name: number.resolve(options, name) for name, number in self._numbers.items()}
        resolved["seed"] = _SEED.resolve(options, "seed")
        raw_reference = options.get("reference_audio")
        reference = decode_reference_audio(raw_reference) if raw_reference is not None else None
        resolved["reference_audio"] = reference
        resolved["voice_clip"] = clip.path if clip is not None else None
        resolved.update(self._more_options(options, clip, reference))
        return Utterance(voice=engine_voice, speed=1.0, options=resolved)

    def synthesize(self, text: str, utterance: Utterance) -> np.ndarray:
        if not text.strip():
            # The models refuse empty text, or worse, speak a stock line ("You need to add some text for me to talk.").
            return np.zeros(0, dtype=np.float32)
        self.load()
        options = utterance.options
        with self._generate_lock:
            model = self._model
            if model is None:
                raise EngineNotInstalled(f"{self.id}: the engine was closed")
            if options.get("seed") is not None:
                seed_everything(options["seed"])
            wave, rate = self._generate(model, text, options)
        return resample(to_mono_float32(wave), rate, self.sample_rate)

    def close(self) -> None:
        with self._load_lock, self._generate_lock:
            loaded = self._model is not None
            self._model = None
            self._unload()
        if loaded:
            with contextlib.suppress(Exception):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    # --- what each engine supplies -------------------------------------------------------------------

    def _weights_missing(self, weights_dir: Path) -> list[str]:
        """What is absent from an existing `weights_dir`, one reason per entry."""
        raise NotImplementedError

    def _load_model(self) -> Any:
        """Load and return the model; runs once, under the load lock, after `missing()` found nothing.

        May set the engine's other state (the model itself is stored by `load()`); raises
        EngineNotInstalled for a problem it names itself.
        """
        raise NotImplementedError

    def _more_options(self, options: dict[str, Any], clip: VoiceClip | None, reference: ReferenceClip | None) -> dict[str, Any]:
        """The resolved `_extra_options`: validated `options`, given the voice's clip and the request's reference clip."""
        return {}

    def _generate(self, model: Any, text: str, options: dict[str, Any]) -> tuple[Any, int]:
        """(audio as the model returns it, its sample rate) for `text`; under the generate lock, RNGs already seeded."""
        raise NotImplementedError

    def _unload(self) -> None:
        """Reset what `_load_model` keeps besides the model to its unloaded value; from __init__ and close()."""
