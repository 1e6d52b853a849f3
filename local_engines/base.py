"""The protocol every local engine implements, and the errors it raises.

An engine turns one short piece of text into float32 mono samples, blocking; it knows
nothing of HTTP, queues or streaming. `voxrouter.local_engines.runner` splits the text, schedules
the pieces on the engine's worker threads and joins the audio.

An engine may also cut a piece into runs that each fit one bounded inference (`plan`, then
`render` per run); the runner schedules each run as its own job, so no job holds a worker
for long, whatever the piece turns into once phonemised. `EngineBase` gives the optional
parts their defaults (the whole piece is one run, read in its voice's language).

This package is inference only: it imports nothing of the gateway or its providers.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

# What every engine's stream ends as, resampled by the runner: s16le mono at this rate.
# It is the gateway's one raw format too (`voxrouter.providers.base` uses it from here).
PCM_SAMPLE_RATE = 24_000


class EngineError(Exception):
    """Base for what an engine reports to the local provider."""


class EngineNotInstalled(EngineError):
    """Weights or the runtime are absent: the engine is listed, but cannot speak."""


class UnknownVoice(EngineError):
    """The client asked for a voice this engine does not have."""


class InvalidOption(EngineError):
    """A `provider_options` value the engine cannot use (the client's fault)."""


class NothingToSpeak(EngineError):
    """The text has nothing to say: no letter or digit once normalised (only punctuation,
    symbols, emoji, private-use characters), or no piece of it gave any audio. The client's fault."""


class EngineTimeout(EngineError):
    """A stream used up its time budget (per request or per piece, proportional to the text)
    and was ended; the audio sent so far is all there is."""


@dataclasses.dataclass(frozen=True)
class EngineVoice:
    id: str
    name: str
    language: str  # BCP 47, e.g. "en-US", "ja-JP"
    gender: str | None = None
    accent: str | None = None  # "American", "British", ... where the language tag says it


_ACCENTS = {"en-US": "American", "en-GB": "British", "en-AU": "Australian", "en-IN": "Indian", "pt-BR": "Brazilian", "es-MX": "Mexican"}


def accent_of(language: str) -> str | None:
    """The accent a BCP 47 tag with a region names (en-GB: British), else None."""
    return _ACCENTS.get(language)


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One request, resolved against the engine: what `synthesize` is called with for each piece."""

    voice: EngineVoice
    speed: float = 1.0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


class Engine(Protocol):
    id: str  # "kokoro": the model id after "local/"
    sample_rate: int
    # How big the first piece of text may be: small enough that its audio is ready fast.
    first_chunk_chars: int
    # Larger pieces after the first: whole sentences up to this many characters.
    max_chunk_chars: int
    # How much larger each piece after the first may be than the one before (`text.cut`): small
    # for a slow engine, whose next piece must be ready before the one playing ends; large for a
    # fast one, so that it cuts a sentence only once (every cut costs some intelligibility).
    piece_growth: float

    def missing(self) -> str | None:
        """Why the engine cannot run here (weights or runtime absent), or None. Cheap: no loading."""
        ...

    def load(self) -> None:
        """Load weights and warm up; blocking, idempotent, safe to call from several threads."""
        ...

    def voices(self) -> list[EngineVoice]: ...

    def utterance(self, voice: str, speed: float | None, options: dict[str, Any]) -> Utterance:
        """Validate a request's voice and options (raises UnknownVoice / InvalidOption)."""
        ...

    def synthesize(self, text: str, utterance: Utterance) -> np.ndarray:
        """Audio for one piece of text: float32 mono in [-1, 1] at `sample_rate`. Blocking."""
        ...

    def close(self) -> None: ...

    def plan(self, text: str, utterance: Utterance) -> list[Any]:
        """One piece of text as runs, each one inference of bounded time and memory (Piper and
        Kokoro: at most `max_phonemes` phonemes). Blocking but cheap (phonemisation).
        `synthesize(text, u)` must equal the concatenation of `render(run, u)` over the runs."""
        ...

    def render(self, run: Any, utterance: Utterance) -> np.ndarray:
        """Audio for one run, as `synthesize` gives it. Blocking: one inference."""
        ...

    def text_language(self, text: str, utterance: Utterance) -> str:
        """The language the text is normalised in (numbers, abbreviations) before it is cut."""
        ...


class EngineBase:
    """The optional part of `Engine`, for an engine that cannot bound one inference below a
    whole piece and reads every text in its voice's language."""

    piece_growth: float = 2.5

    def synthesize(self, text: str, utterance: Utterance) -> np.ndarray:
        raise NotImplementedError

    def plan(self, text: str, utterance: Utterance) -> list[Any]:
        return [text]

    def render(self, run: Any, utterance: Utterance) -> np.ndarray:
        return self.synthesize(run, utterance)

    def text_language(self, text: str, utterance: Utterance) -> str:
        return utterance.voice.language
