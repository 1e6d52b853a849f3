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
from pathlib import Path
from typing import Any

from voxrouter.local_engines import _torch
from voxrouter.local_engines.base import EngineNotInstalled, UnknownVoice

logger = logging.getLogger("voxrouter.engines")

SAMPLE_RATE = 24_000  # S3GEN_SR in chatterbox
WEIGHT_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")
_CONDS_CACHE = 8  # voice clips / reference clips whose conditioning is kept


class ChatterboxEngine(_torch.TorchEngine):
    """Chatterbox on torch. Text is passed to the model unchanged.

    Inline paralinguistic tags such as "[laugh]", "[sigh]" or "[cough]" are not stripped
    or rewritten: Chatterbox's newer checkpoints (Chatterbox-Turbo) voice them; the
    original English checkpoint loaded here was not trained on them and may read them out.

    `Utterance.options` holds exaggeration, cfg_weight, temperature (floats), seed (int | None),
    reference_audio (ReferenceClip | None) and voice_clip (Path | None).
    """

    id = "chatterbox"
    sample_rate = SAMPLE_RATE
    # Chatterbox takes ~1 s of GPU time per call whatever the length, so pieces are sentence-sized.
    first_chunk_chars = 60
    max_chunk_chars = 300
    _modules = (("torch", "torch"), ("chatterbox", "chatterbox-tts"))
    _numbers = {
        "exaggeration": _torch.NumberOption(0.25, 2.0, 0.5),
        "cfg_weight": _torch.NumberOption(0.0, 1.0, 0.5),
        "temperature": _torch.NumberOption(0.05, 5.0, 0.8),
    }
    _import_failure = "cannot import chatterbox-tts or one of its dependencies"
    _default_conds: Any  # the built-in voice's conditioning, from conds.pt
    _conds: collections.OrderedDict[tuple[Any, ...], Any]  # clip conditioning, least recently used first

    def _weights_missing(self, weights_dir: Path) -> list[str]:
        absent = _torch.files_missing(weights_dir, WEIGHT_FILES)
        return [f"weights_dir {weights_dir} lacks {', '.join(absent)}"] if absent else []

    def _load_model(self) -> Any:
        from chatterbox.tts import ChatterboxTTS

        device = _torch.pick_device(self._device)
        logger.info("loading %s from %s on %s", self.id, self._weights_dir, device)
        model = ChatterboxTTS.from_local(str(self._weights_dir), device)
        if getattr(model, "conds", None) is None:
            raise EngineNotInstalled(f"{self.id}: {self._weights_dir}/conds.pt gave no built-in voice")
        if int(getattr(model, "sr", SAMPLE_RATE)) != self.sample_rate:
            logger.warning("%s: model reports %s Hz; resampling to %s Hz", self.id, model.sr, self.sample_rate)
        self._default_conds = model.conds
        return model

    def _generate(self, model: Any, text: str, options: dict[str, Any]) -> tuple[Any, int]:
        model.conds = self._conditionals(model, options)
        wav = model.generate(
            text,
            exaggeration=options.get("exaggeration", 0.5),
            cfg_weight=options.get("cfg_weight", 0.5),
            temperature=options.get("temperature", 0.8),
        )
        return wav, int(getattr(model, "sr", SAMPLE_RATE))

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

    def _unload(self) -> None:
        self._default_conds = None
        self._conds = collections.OrderedDict()
