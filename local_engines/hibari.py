"""Hibari (`hibari-tts`): a 6M-parameter int8 ONNX English voice distilled from Kokoro-82M.

Weights: the one voice offered is `heart` (en-US, female, Kokoro's af_heart as teacher), the
model `assets/hibari.onnx` inside the package itself (Apache-2.0, 7.9 MB), checked at load
against the sha256 in the package's own voice registry. hibari's other voices (emma, fenrir,
fable, kore) are downloaded from a model hub on first use; this engine never offers them and
never goes through the package's voice lookup (`hibari.voices.voice_path`, the code that would
download): the model path is handed to `hibari.Hibari(model=...)` directly. Phonemes come from
hibari's own G2P (a port of misaki's English rules with its lexicons, a tagger and a small OOV
net, all bundled): no espeak-ng, no spaCy. Output is 24 kHz. The session is hibari's own
(onnxruntime on the CPU, `threads` intra-op threads): its API takes no session of ours, and a
model this small gains nothing on a GPU, so `device` is ignored (a warning for "cuda").

Speed: on one CPU core, about 0.05 s of inference per 100 phonemes (some 6 s of audio), over
100x realtime (22.7 s of audio in 0.17 s, RTF 0.007, on one thread of a shared two-core machine);
the first piece of a request ("Hello there.", 1.4 s of audio) takes about 11 ms.

Bounded work: inference time and memory grow with the phoneme count (the model and hibari's
host-side vocoder take some 0.35 MB per phoneme: 3,200 phonemes need over 1 GB), and hibari itself
only cuts long sentences at clause punctuation. So a piece is phonemised sentence by sentence and
cut into runs of at most `max_phonemes` (default 256: some 15 s of audio, 0.1-0.3 s and 100 MB)
at clause punctuation, else at a word boundary, else between phonemes; each run is one inference
(`plan` / `render`). Every run's noise component is seeded the same way, so `synthesize` is its
runs rendered one by one, and the same text gives the same audio every time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from voxrouter.local_engines import _onnx
from voxrouter.local_engines.base import EngineBase, EngineNotInstalled, EngineVoice, InvalidOption, UnknownVoice, Utterance

# No usage reports to onnxruntime's vendor: read when onnxruntime is first imported, which is
# later (hibari imports it in `load`; nothing above does). The package's __init__ sets it too.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

logger = logging.getLogger("voxrouter.engines")

SAMPLE_RATE = 24_000
VOICE = EngineVoice(id="heart", name="Heart", language="en-US", gender="female", accent="American")
_MODEL_FILE = "hibari.onnx"  # the bundled `heart` voice, in the package's assets/
_SPEED = (0.5, 2.0)  # hibari's documented range ("0.5 slow .. 2.0 fast")
_SEED = 0  # the noise component of every run: deterministic audio
_CLAUSE = re.compile(r"(?<=[,;:—])\s+")  # where hibari itself cuts a long sentence


class HibariEngine(EngineBase):
    id = "hibari"
    sample_rate = SAMPLE_RATE
    first_chunk_chars = 48  # ~20 ms of inference: most sentences are one piece, never cut
    max_chunk_chars = 300
    piece_growth = 100.0  # ~100x real time: after the first piece, whole sentences
    max_phonemes = 256  # per inference

    def __init__(
        self,
        engine_id: str = "hibari",
        *,
        threads: int | None = None,
        device: str = "auto",
        first_chunk_chars: int | None = None,
        max_chunk_chars: int | None = None,
        max_phonemes: int | None = None,
        **_: Any,
    ) -> None:
        self.id = engine_id
        self._threads = threads
        self._device = device
        if first_chunk_chars:
            self.first_chunk_chars = first_chunk_chars
        if max_chunk_chars:
            self.max_chunk_chars = max_chunk_chars
        if max_phonemes:
            self.max_phonemes = max(1, int(max_phonemes))
        self._lock = threading.Lock()
        self._g2p_lock = threading.Lock()  # hibari's G2P is plain Python with lazy parts: one call at a time
        self._tts: Any = None

    # --- what is installed ---------------------------------------------------------------

    def missing(self) -> str | None:
        if importlib.util.find_spec("hibari") is None:
            return "hibari-tts is not installed"
        if reason := _onnx.onnxruntime_missing():
            return reason
        model = bundled_model()
        if model is None or not model.is_file():
            return f"hibari-tts has no bundled voice model (assets/{_MODEL_FILE})"
        return None

    # --- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        self._loaded()

    def _loaded(self) -> Any:
        """The `hibari.Hibari` instance, built and warmed up on first use (under the lock)."""
        with self._lock:
            if self._tts is not None:
                return self._tts
            if reason := self.missing():
                raise EngineNotInstalled(f"hibari: {reason}")
            model = bundled_model()
            assert model is not None
            _check_bundled(model)
            if self._device == "cuda":
                logger.warning("hibari: runs on the CPU only (the hibari package builds its own session); device 'cuda' ignored")
            from hibari import Hibari

            # `model=` keeps hibari from looking the voice up (`voices.voice_path`, which downloads
            # any voice that is not in the package): only the bundled file is ever opened.
            tts = Hibari(model=str(model), threads=self._threads or 1)
            with self._g2p_lock:
                _ = tts.g2p.oov  # build the lazy parts now, not on some worker thread mid-request
            for run in self._runs(tts, "Ready."):  # warm-up: a session's first run is slow
                self._infer(tts, run, 1.0)
            self._tts = tts
            return tts

    # --- voices and requests ----------------------------------------------------------------

    def voices(self) -> list[EngineVoice]:
        return [VOICE]

    def utterance(self, voice: str, speed: float | None, options: dict[str, Any]) -> Utterance:
        if voice != VOICE.id:
            raise UnknownVoice(f"hibari has no voice {voice!r}; it has {VOICE.id}")
        if options:
            raise InvalidOption(f"hibari does not take provider_options {', '.join(sorted(options))} (it takes none)")
        low, high = _SPEED
        if speed is not None and not low <= speed <= high:
            raise InvalidOption(f"hibari speaks at speed {low:g} to {high:g}, not {speed:g}")
        return Utterance(voice=VOICE, speed=speed or 1.0)

    # --- inference ---------------------------------------------------------------------------

    def synthesize(self, text: str, utterance: Utterance) -> np.ndarray:
        parts = [self.render(run, utterance) for run in self.plan(text, utterance)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def plan(self, text: str, utterance: Utterance) -> list[str]:
        """The piece's phonemes, sentence by sentence, in runs of at most `max_phonemes`."""
        return self._runs(self._loaded(), text)

    def render(self, run: str, utterance: Utterance) -> np.ndarray:
        return self._infer(self._loaded(), run, utterance.speed)

    def _runs(self, tts: Any, text: str) -> list[str]:
        runs: list[str] = []
        for sentence in tts.split_sentences(text):
            with self._g2p_lock:
                phonemes = tts.g2p(sentence)
            runs += phoneme_runs(phonemes, self.max_phonemes)
        return runs

    @staticmethod
    def _infer(tts: Any, phonemes: str, speed: float) -> np.ndarray:
        audio = tts.from_ids(tts.ids(phonemes), speed, np.random.default_rng(_SEED))
        return np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)

    def close(self) -> None:
        with self._lock:
            self._tts = None


def bundled_model() -> Path | None:
    """Where the package keeps its `heart` model, found without importing it."""
    spec = importlib.util.find_spec("hibari")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "assets" / _MODEL_FILE


def _check_bundled(model: Path) -> None:
    """The package's own registry must list `heart` as in the package, in this file, with this sha256."""
    from hibari.voices import VOICES

    entry = VOICES.get(VOICE.id) or {}
    if not entry.get("bundled") or entry.get("file") != _MODEL_FILE:
        raise EngineNotInstalled(f"hibari: this hibari-tts does not ship the {VOICE.id} voice as assets/{_MODEL_FILE}")
    digest = hashlib.sha256()
    with open(model, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != entry.get("sha256"):
        raise EngineNotInstalled(f"hibari: {model} fails its sha256 check; reinstall hibari-tts")


def phoneme_runs(phonemes: str, most: int) -> list[str]:
    """One sentence's phonemes in runs of at most `most` characters: whole clauses (cut after
    , ; : —) packed greedily, a clause too long for one run cut at word boundaries, a word too
    long cut between phonemes. No run is empty or has leading, trailing or double spaces; joined
    with spaces, the runs are the phonemes with their whitespace collapsed (unless a word had to
    be cut)."""
    units: list[str] = []
    for clause in _CLAUSE.split(" ".join(phonemes.split())):
        if len(clause) <= most:
            units.append(clause)
            continue
        for word in clause.split(" "):
            units += [word[i : i + most] for i in range(0, len(word), most)]
    runs: list[str] = []
    current = ""
    for unit in units:
        if not unit:
            continue
        if current and len(current) + 1 + len(unit) > most:
            runs.append(current)
            current = unit
        else:
            current = f"{current} {unit}" if current else unit
    if current:
        runs.append(current)
    return runs
