"""MOSS-TTS-Nano (OpenMOSS, 0.1B, multilingual, 48 kHz) on PyTorch through transformers' remote code.

The model has no pip package of its own: its code ships inside the Hugging Face
checkpoints and is loaded with `trust_remote_code=True`, so the weights directory is
code the operator chooses to trust. Neither torch nor the weights ship with the gateway;
without them the engine is listed with its reason (`missing()`) and answers 503. To run
it, install `torch`, `torchaudio`, `transformers` and `sentencepiece` (upstream pins
torch 2.7.0 / transformers 4.57.1) and configure:

    weights_dir  directory holding the two upstream checkpoints side by side:
                   MOSS-TTS-Nano-100M/        (HF OpenMOSS-Team/MOSS-TTS-Nano-100M; the
                                               name MOSS-TTS-Nano/ is accepted too):
                                               config.json, tokenizer.model, the weights
                                               (*.safetensors or pytorch_model*.bin), *.py
                   MOSS-Audio-Tokenizer-Nano/ (HF OpenMOSS-Team/MOSS-Audio-Tokenizer-Nano):
                                               config.json, the weights, *.py
    voices_dir   optional directory of reference clips, each one a voice:
                 <id>.wav | <id>.flac | <id>.mp3, with an optional sidecar <id>.json
                 {"name": "...", "language": "zh-CN", "gender": "female|male|neutral",
                  "transcript": "what is said in the clip (improves cloning)"}.
    device       "auto" (CUDA when torch sees a GPU, else CPU), "cpu", "cuda", "cuda:1", "mps".

Voices: "default" is the model's plain TTS ("continuation" mode with no prompt); every
clip voice, and any request with `reference_audio`, uses "voice_clone" mode.

provider_options (all optional):
    temperature         0.05-2.0: text and audio sampling temperature (defaults 1.0 / 0.8)
    top_p               0.01-1.0: text and audio nucleus sampling (defaults 1.0 / 0.95)
    top_k               1-1000: text and audio top-k (defaults 50 / 25)
    repetition_penalty  1.0-2.0: audio repetition penalty (default 1.2)
    seed                0-4294967295: reproducible sampling for this request
    reference_audio     base64 wav/flac/mp3 (<= 10 MB decoded): clone this voice for this request only
    reference_text      transcript of the reference clip (reference_audio's, or the voice's own)

MOSS-TTS-Nano has no speed control; a speed other than 1.0 is refused.

API used (checked against OpenMOSS/MOSS-TTS-Nano `moss_tts_nano_runtime.py` and `infer.py`):
`AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True)`, `.to(device=,
dtype=)`, `._set_attention_implementation("sdpa", local_attn_implementation="sdpa")`;
the audio tokenizer by `AutoModel.from_pretrained(..., trust_remote_code=True)` with
`set_attention_implementation` / `set_compute_dtype`; then `model.inference(text=...,
output_audio_path=..., mode="voice_clone"|"continuation", prompt_text=...,
prompt_audio_path=..., text_tokenizer_path=checkpoint, audio_tokenizer=..., device=...,
max_new_frames=..., do_sample=True, use_kv_cache=True, text_/audio_ sampling kwargs)`,
which returns a dict with "waveform" (2-channel) and "sample_rate" (48000), and also
writes a wav file: it goes to a private temp directory that is removed after each call.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from voxrouter.local_engines import _torch
from voxrouter.local_engines.base import InvalidOption, UnknownVoice

logger = logging.getLogger("voxrouter.engines")

SAMPLE_RATE = 48_000
CHECKPOINT_DIRS = ("MOSS-TTS-Nano-100M", "MOSS-TTS-Nano")
AUDIO_TOKENIZER_DIRS = ("MOSS-Audio-Tokenizer-Nano",)
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")
_FRAME_S = 0.08  # one generated audio frame is 80 ms (12.5 frames per second)
_MIN_FRAMES = 375  # upstream's default max_new_frames (30 s)
_MAX_FRAMES = 1500


class MossTtsNanoEngine(_torch.TorchEngine):
    """MOSS-TTS-Nano on torch: 48 kHz (the model's two channels are averaged to mono).

    `Utterance.options` holds temperature, top_p, top_k, repetition_penalty (None when not given),
    seed (int | None), reference_audio (ReferenceClip | None), voice_clip (Path | None) and
    reference_text (str | None: the option, else the clip's transcript).
    """

    id = "moss-tts-nano"
    sample_rate = SAMPLE_RATE
    first_chunk_chars = 60
    max_chunk_chars = 300
    _modules = (
        ("torch", "torch"),
        ("torchaudio", "torchaudio"),
        ("transformers", "transformers"),
        ("sentencepiece", "sentencepiece"),
    )
    _numbers = {
        "temperature": _torch.NumberOption(0.05, 2.0),
        "top_p": _torch.NumberOption(0.01, 1.0),
        "top_k": _torch.NumberOption(1, 1000, whole=True),
        "repetition_penalty": _torch.NumberOption(1.0, 2.0),
    }
    _extra_options = ("reference_text",)
    _import_failure = "cannot import torch/transformers or a module the checkpoint's code needs"
    _audio_tokenizer: Any
    _torch_device: Any
    _checkpoint: Path | None

    # --- what is installed ---------------------------------------------------------------------

    def _subdir(self, names: tuple[str, ...]) -> Path | None:
        if self._weights_dir is None:
            return None
        for name in names:
            if (self._weights_dir / name).is_dir():
                return self._weights_dir / name
        return None

    def _weights_missing(self, weights_dir: Path) -> list[str]:
        reasons = []
        for names, required, what in (
            (CHECKPOINT_DIRS, ("config.json", "tokenizer.model"), "the OpenMOSS-Team/MOSS-TTS-Nano-100M checkpoint"),
            (AUDIO_TOKENIZER_DIRS, ("config.json",), "the OpenMOSS-Team/MOSS-Audio-Tokenizer-Nano checkpoint"),
        ):
            directory = self._subdir(names)
            if directory is None:
                reasons.append(f"weights_dir {weights_dir} has no {' or '.join(n + '/' for n in names)} ({what})")
            elif absent := _torch.files_missing(directory, required, any_of=(_WEIGHTS,)):
                reasons.append(f"{directory} lacks {', '.join(absent)}")
        return reasons

    def _load_model(self) -> Any:
        import torch
        from transformers import AutoModel, AutoModelForCausalLM

        checkpoint = self._subdir(CHECKPOINT_DIRS)
        tokenizer_dir = self._subdir(AUDIO_TOKENIZER_DIRS)
        device = torch.device(_torch.pick_device(self._device))
        dtype = _dtype(torch, device)
        logger.info("loading %s from %s on %s (%s)", self.id, self._weights_dir, device, dtype)
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint), trust_remote_code=True, local_files_only=True)
        model.to(device=device, dtype=dtype)
        if hasattr(model, "_set_attention_implementation"):
            model._set_attention_implementation("sdpa", local_attn_implementation="sdpa")
        model.eval()
        audio_tokenizer = AutoModel.from_pretrained(str(tokenizer_dir), trust_remote_code=True, local_files_only=True)
        audio_tokenizer = audio_tokenizer.to(device)
        if hasattr(audio_tokenizer, "set_attention_implementation"):
            audio_tokenizer.set_attention_implementation("sdpa")
        if hasattr(audio_tokenizer, "set_compute_dtype"):
            audio_tokenizer.set_compute_dtype("fp32")  # upstream's choice with sdpa attention
        audio_tokenizer.eval()
        self._torch_device = device
        self._checkpoint = checkpoint
        self._audio_tokenizer = audio_tokenizer
        return model

    # --- requests ----------------------------------------------------------------------------------

    def _more_options(
        self, options: dict[str, Any], clip: _torch.VoiceClip | None, reference: _torch.ReferenceClip | None
    ) -> dict[str, Any]:
        reference_text = _torch.str_option(options, "reference_text", 2000)
        if reference_text is not None and reference is None and clip is None:
            raise InvalidOption(
                "provider_options.reference_text is the transcript of a reference clip: send reference_audio too, or use a clip voice"
            )
        if reference_text is None and reference is None and clip is not None:
            reference_text = clip.transcript
        return {"reference_text": reference_text}

    def _generate(self, model: Any, text: str, options: dict[str, Any]) -> tuple[Any, int]:
        reference: _torch.ReferenceClip | None = options.get("reference_audio")
        clip: Path | None = options.get("voice_clip")
        if clip is not None and reference is None and not clip.is_file():
            raise UnknownVoice(f"{self.id}: the clip for voice {clip.stem!r} is gone from {clip.parent}")
        prompt = _torch.clip_file(reference) if reference is not None else contextlib.nullcontext(clip)
        with tempfile.TemporaryDirectory(prefix="voxrouter-moss-") as out_dir, prompt as prompt_path:
            try:
                result = model.inference(
                    text=text,
                    output_audio_path=str(Path(out_dir) / "out.wav"),
                    mode="continuation" if prompt_path is None else "voice_clone",
                    prompt_text=options.get("reference_text") if prompt_path is not None else None,
                    prompt_audio_path=None if prompt_path is None else str(prompt_path),
                    text_tokenizer_path=str(self._checkpoint),
                    audio_tokenizer=self._audio_tokenizer,
                    device=self._torch_device,
                    max_new_frames=_max_frames(text),
                    do_sample=True,
                    use_kv_cache=True,
                    **_sampling(options),
                )
            except Exception:
                # As upstream's runtime does: a failed inference may leave the model half-converted; reload next time.
                logger.exception("%s inference failed; the model will be reloaded", self.id)
                self._model = None
                self._unload()
                raise
        return result["waveform"], int(result.get("sample_rate") or self.sample_rate)

    def _unload(self) -> None:
        self._audio_tokenizer = None
        self._torch_device = None
        self._checkpoint = None


def _dtype(torch: Any, device: Any) -> Any:
    """Upstream's "auto" dtype: bfloat16 (else float16) on CUDA, float32 elsewhere."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _sampling(options: dict[str, Any]) -> dict[str, Any]:
    """The text-layer and audio-layer sampling kwargs: a request's value applies to both layers (as upstream's --temperature)."""

    def pick(name: str, default: Any) -> Any:
        return default if options.get(name) is None else options[name]

    return {
        "text_temperature": pick("temperature", 1.0),
        "text_top_p": pick("top_p", 1.0),
        "text_top_k": pick("top_k", 50),
        "audio_temperature": pick("temperature", 0.8),
        "audio_top_p": pick("top_p", 0.95),
        "audio_top_k": pick("top_k", 25),
        "audio_repetition_penalty": pick("repetition_penalty", 1.2),
    }


def _max_frames(text: str) -> int:
    """Room for slow speech (0.4 s a character covers Chinese), at least upstream's default, bounded."""
    return max(_MIN_FRAMES, min(_MAX_FRAMES, int(len(text) * 0.4 / _FRAME_S)))
