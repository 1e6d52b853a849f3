"""Resemble AI's Chatterbox (English, 0.5B) through the `chatterbox-tts` package, on PyTorch.

Neither torch, `chatterbox-tts` nor the weights ship with the gateway: on a machine
without them the engine is listed with its reason (`missing()`) and answers 503. To run
it, install `torch` and `chatterbox-tts` (a GPU is strongly advised) and configure:

    weights_dir  directory holding the files `ChatterboxTTS.from_local` loads:
                 ve.safetensors, t3_cfg.safetensors, s3gen.safetensors, tokenizer.json,
                 and conds.pt (the built-in "default" voice). They are the files of the
                 Hugging Face repo ResembleAI/chatterbox.
    voices_dir   optional directory of reference clips, each one a voice:
                 <id>.wav | <id>.flac | <id>.mp3, with an optional sidecar <id>.json
                 {"name": "...", "language": "en-US", "gender": "female|male|neutral"}.
    device       "auto" (CUDA when torch sees a GPU, else CPU), "cpu", "cuda", "cuda:1", "mps".

provider_options (all optional):
    exaggeration     0.25-2.0, default 0.5: emotion intensity (the Chatterbox demo's range)
    cfg_weight       0-1, default 0.5: classifier-free guidance; lower is slower, calmer speech
    temperature      0.05-5, default 0.8
    seed             0-4294967295: reproducible sampling for this request
    reference_audio  base64 wav/flac/mp3 (<= 10 MB decoded): clone this voice for this request only

Chatterbox has no speed control; a speed other than 1.0 is refused.

API used (checked against resemble-ai/chatterbox `src/chatterbox/tts.py`):
`ChatterboxTTS.from_local(ckpt_dir, device)`; `model.sr` (24 kHz); `model.conds` (the
conditioning `generate` uses, loaded from conds.pt); `model.prepare_conditionals(path,
exaggeration=...)`, which *replaces* `model.conds`; and `model.generate(text,
audio_prompt_path=None, exaggeration=0.5, cfg_weight=0.5, temperature=0.8)` -> a (1, N)
float tensor. Because `generate` with a prompt overwrites `model.conds`, this engine sets
`model.conds` itself before every call (cached per voice clip), so one request's clone
never leaks into the next request's "default" voice.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from local_engines import _torch
from local_engines.base import EngineNotInstalled, EngineVoice, UnknownVoice, Utterance

logger = logging.getLogger("voxrouter.engines")

SAMPLE_RATE = 24_000  # S3GEN_SR in chatterbox
WEIGHT_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")
_MODULES = (("torch", "torch"), ("chatterbox", "chatterbox-tts"))
OPTIONS = ("exaggeration", "cfg_weight", "temperature", "seed", "reference_audio")
_CONDS_CACHE = 8  # voice clips / reference clips whose conditioning is kept

# The built-in voice: the model's own conditioning (no reference clip).
_DEFAULT = EngineVoice(id=_torch.DEFAULT_VOICE, name="Default", language="en-US")


class ChatterboxEngine:
    """Chatterbox on torch. Text is passed to the model unchanged.

    Inline paralinguistic tags such as "[laugh]", "[sigh]" or "[cough]" are not stripped
    or rewritten: Chatterbox's newer checkpoints (Chatterbox-Turbo) voice them; the
    original English checkpoint loaded here was not trained on them and may read them out.
    """

    id = "chatterbox"
    sample_rate = SAMPLE_RATE
    # Chatterbox takes ~1 s of GPU time per call whatever the length, so pieces are sentence-sized.
    first_chunk_chars = 60
    max_chunk_chars = 300

    def __init__(
        self,
        engine_id: str = "chatterbox",
        *,
        weights_dir: str | None = None,
        voices_dir: str | None = None,
        device: str = "auto",
        first_chunk_chars: int | None = None,
        max_chunk_chars: int | None = None,
        **_: Any,
    ) -> None:
        self.id = engine_id
        self._weights_dir = Path(weights_dir).expanduser() if weights_dir else None
        self._voices_dir = Path(voices_dir).expanduser() if voices_dir else None
        self._device = _torch.check_device(device)
        if first_chunk_chars:
            self.first_chunk_chars = first_chunk_chars
        if max_chunk_chars:
            self.max_chunk_chars = max_chunk_chars
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()  # one generate() at a time: torch parallelises inside it
        self._model: Any = None
        self._default_conds: Any = None
        self._conds: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()

    # --- what is installed ---------------------------------------------------------------------

    def missing(self) -> str | None:
        """Everything that stops the engine here, joined with "; " (weights first, then packages), or None."""
        if self._model is not None:
            return None
        reasons = []
        if problem := _torch.weights_dir_problem(self._weights_dir):
            reasons.append(problem)
        elif self._weights_dir is not None and (absent := _torch.files_missing(self._weights_dir, WEIGHT_FILES)):
            reasons.append(f"weights_dir {self._weights_dir} lacks {', '.join(absent)}")
        reasons += _torch.modules_missing(_MODULES)
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
                from chatterbox.tts import ChatterboxTTS

                device = _torch.pick_device(self._device)
                logger.info("loading %s from %s on %s", self.id, self._weights_dir, device)
                model = ChatterboxTTS.from_local(str(self._weights_dir), device)
            except ImportError as exc:
                raise EngineNotInstalled(f"{self.id}: cannot import chatterbox-tts or one of its dependencies: {exc}") from exc
            except Exception as exc:  # corrupt or mismatched weights, CUDA unavailable, ...
                logger.exception("%s failed to load from %s", self.id, self._weights_dir)
                raise EngineNotInstalled(f"{self.id}: loading weights from {self._weights_dir} failed: {exc}") from exc
            if getattr(model, "conds", None) is None:
                raise EngineNotInstalled(f"{self.id}: {self._weights_dir}/conds.pt gave no built-in voice")
            if int(getattr(model, "sr", SAMPLE_RATE)) != self.sample_rate:
                logger.warning("%s: model reports %s Hz; resampling to %s Hz", self.id, model.sr, self.sample_rate)
            self._default_conds = model.conds
            self._model = model

    # --- requests ----------------------------------------------------------------------------------

    def voices(self) -> list[EngineVoice]:
        return [_DEFAULT, *(clip.voice for clip in _torch.scan_voices(self._voices_dir).values())]

    def utterance(self, voice: str, speed: float | None, options: dict[str, Any]) -> Utterance:
        """Validate a request. `Utterance.options` holds the resolved values:
        exaggeration, cfg_weight, temperature (floats), seed (int | None),
        reference_audio (ReferenceClip | None) and voice_clip (Path | None)."""
        clips = _torch.scan_voices(self._voices_dir)
        if voice == _torch.DEFAULT_VOICE:
            engine_voice, clip_path = _DEFAULT, None
        elif voice in clips:
            engine_voice, clip_path = clips[voice].voice, clips[voice].path
        else:
            known = ", ".join([_torch.DEFAULT_VOICE, *clips])
            raise UnknownVoice(
                f"{self.id} has no voice {voice!r}; it has {known} (or clone one with provider_options.reference_audio)"
            )
        _torch.require_unit_speed(self.id, speed)
        _torch.reject_unknown(self.id, options, OPTIONS)
        reference = options.get("reference_audio")
        resolved = {
            "exaggeration": _torch.float_option(options, "exaggeration", 0.25, 2.0, 0.5),
            "cfg_weight": _torch.float_option(options, "cfg_weight", 0.0, 1.0, 0.5),
            "temperature": _torch.float_option(options, "temperature", 0.05, 5.0, 0.8),
            "seed": _torch.int_option(options, "seed", 0, _torch.MAX_SEED),
            "reference_audio": _torch.decode_reference_audio(reference) if reference is not None else None,
            "voice_clip": clip_path,
        }
        return Utterance(voice=engine_voice, speed=1.0, options=resolved)

    def synthesize(self, text: str, utterance: Utterance) -> np.ndarray:
        if not text.strip():
            return np.zeros(0, dtype=np.float32)  # generate("") would say "You need to add some text for me to talk."
        self.load()
        options = utterance.options
        with self._generate_lock:
            model = self._model
            if model is None:
                raise EngineNotInstalled(f"{self.id}: the engine was closed")
            if options.get("seed") is not None:
                _torch.seed_everything(options["seed"])
            model.conds = self._conditionals(model, options)
            wav = model.generate(
                text,
                exaggeration=options.get("exaggeration", 0.5),
                cfg_weight=options.get("cfg_weight", 0.5),
                temperature=options.get("temperature", 0.8),
            )
            rate = int(getattr(model, "sr", SAMPLE_RATE))
        return _torch.resample(_torch.to_mono_float32(wav), rate, self.sample_rate)

    def _conditionals(self, model: Any, options: dict[str, Any]) -> Any:
        """The conditioning for this request's voice: built-in, a voices_dir clip, or a one-off clip (cached)."""
        reference: _torch.ReferenceClip | None = options.get("reference_audio")
        clip: Path | None = options.get("voice_clip")
        if reference is not None:
            key: tuple[Any, ...] = ("reference", reference.digest)
        elif clip is not None:
            try:
                stat = clip.stat()
            except OSError:
                raise UnknownVoice(f"{self.id}: the clip for voice {clip.stem!r} is gone from {clip.parent}") from None
            key = ("clip", str(clip), stat.st_mtime_ns, stat.st_size)
        else:
            return self._default_conds
        if key in self._conds:
            self._conds.move_to_end(key)
            return self._conds[key]
        import torch

        source = _torch.clip_file(reference) if reference is not None else contextlib.nullcontext(clip)
        with source as path, torch.no_grad():
            model.prepare_conditionals(str(path), exaggeration=options.get("exaggeration", 0.5))
        self._conds[key] = model.conds
        while len(self._conds) > _CONDS_CACHE:
            self._conds.popitem(last=False)
        return model.conds

    def close(self) -> None:
        with self._load_lock, self._generate_lock:
            model, self._model = self._model, None
            self._default_conds = None
            self._conds.clear()
        if model is not None:
            del model
            with contextlib.suppress(Exception):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
