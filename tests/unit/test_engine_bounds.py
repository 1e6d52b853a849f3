"""Bounded work per request for the local engines (issue 14), on fake engines: client faults are
client faults, every piece and every inference is bounded, budgets end a stream, cancelling
stops work. The real engines under the same bounds are tests/e2e/test_engine_bounds.py."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from voxrouter.local_engines.base import EngineBase, EngineTimeout, EngineVoice, NothingToSpeak, Utterance
from voxrouter.local_engines.runner import EngineRunner, RunnerSettings
from voxrouter.local_engines.text import budget_chars
from voxrouter.providers.base import ErrorKind, ProviderError, SynthesisRequest
from voxrouter.providers.local import LocalProvider
from voxrouter.providers.spec import ModelSpec, ProviderSpec

VOICE = EngineVoice(id="v", name="V", language="en-US")


class FakeEngine(EngineBase):
    """Synthesises each piece as `seconds_per_piece` of tone after sleeping `delay_s`."""

    id = "fake"
    sample_rate = 24_000
    first_chunk_chars = 12
    max_chunk_chars = 60

    def __init__(self, delay_s: float = 0.0, silent: bool = False) -> None:
        self.delay_s = delay_s
        self.silent = silent
        self.calls: list[str] = []

    def missing(self):
        return None

    def load(self):
        pass

    def voices(self):
        return [VOICE]

    def utterance(self, voice, speed, options):
        return Utterance(voice=VOICE)

    def synthesize(self, text, utterance):
        self.calls.append(text)
        time.sleep(self.delay_s)
        if self.silent:
            return np.zeros(0, dtype=np.float32)
        return (0.3 * np.sin(np.arange(2400) / 5.0)).astype(np.float32)

    def close(self):
        pass


class PlanningEngine(FakeEngine):
    """An engine with runs (`plan` / `render`), like Piper and Kokoro: each piece is `runs` runs."""

    def __init__(self, runs: int = 20, delay_s: float = 0.05) -> None:
        super().__init__(delay_s)
        self.runs = runs
        self.rendered = 0

    def plan(self, text, utterance):
        return [text] * self.runs

    def render(self, run, utterance):
        self.rendered += 1
        return self.synthesize(run, utterance)


async def _collect(runner: EngineRunner, text: str, limit: int | None = None) -> bytes:
    out = b""
    stream = runner.stream(text, Utterance(voice=VOICE))
    try:
        async for chunk in stream:
            out += chunk
            if limit is not None and len(out) >= limit:
                break
    finally:
        await stream.aclose()
    return out


@pytest.mark.parametrize("text", ["😀🎉👍🏽", "... !!! ???", "\ue000\ue001\U000f0000", "— – -", "\u200d\u0301"])
def test_nothing_speakable_is_a_client_error_not_an_empty_stream(text):
    engine = FakeEngine()
    with pytest.raises(NothingToSpeak):
        asyncio.run(_collect(EngineRunner(engine), text))
    assert engine.calls == []  # refused before any work


def test_pieces_without_audio_are_skipped_and_all_silent_is_a_client_error():
    with pytest.raises(NothingToSpeak):
        asyncio.run(_collect(EngineRunner(FakeEngine(silent=True)), "Hello there. How are you today?"))

    class Some(FakeEngine):
        def synthesize(self, text, utterance):
            return np.zeros(0, dtype=np.float32) if "silent" in text else super().synthesize(text, utterance)

    pcm = asyncio.run(_collect(EngineRunner(Some()), "This piece is silent. This one speaks."))
    assert len(pcm) >= 2400 * 2


def test_the_request_budget_ends_the_stream_with_engine_timeout():
    engine = FakeEngine(delay_s=0.1)
    settings = RunnerSettings(budget_base_s=0.3, budget_per_char_s=0.0, piece_budget_base_s=10.0)
    text = " ".join(f"Sentence {i} is here." for i in range(100))
    started = time.monotonic()
    with pytest.raises(EngineTimeout, match="budget"):
        asyncio.run(_collect(EngineRunner(engine, settings), text))
    assert time.monotonic() - started < 3.0
    assert 2 <= len(engine.calls) <= 6


def test_a_piece_stuck_past_its_budget_ends_the_stream_at_once():
    engine = FakeEngine(delay_s=3.0)
    settings = RunnerSettings(piece_budget_base_s=0.3, piece_budget_per_char_s=0.0)
    started = time.monotonic()
    with pytest.raises(EngineTimeout, match="piece"):
        asyncio.run(_collect(EngineRunner(engine, settings), "One long piece."))
    assert time.monotonic() - started < 2.0  # not the 3 s the engine takes


def test_budgets_are_proportional_to_the_text_and_count_cjk_more():
    settings = RunnerSettings()
    assert settings.request_budget_s(4000) > settings.request_budget_s(100) > settings.budget_base_s
    assert budget_chars("日本語") == 9 and budget_chars("abc") == 3


def test_runs_are_jobs_of_their_own_and_cancelling_stops_between_them():
    engine = PlanningEngine(runs=50, delay_s=0.05)

    async def main() -> int:
        runner = EngineRunner(engine)
        await _collect(runner, "Hello there, this is one piece.", limit=2400 * 2 * 3)
        rendered = engine.rendered
        await asyncio.sleep(0.5)
        assert runner.gate.active == 0
        return rendered

    rendered = asyncio.run(main())
    assert rendered <= 5, rendered
    assert engine.rendered <= rendered + 1  # at most the run that was in flight


def test_other_streams_are_served_between_the_runs_of_a_long_piece():
    heavy = PlanningEngine(runs=40, delay_s=0.1)

    async def main() -> float:
        runner = EngineRunner(heavy, RunnerSettings(workers=1))
        hog = asyncio.ensure_future(_collect(runner, "A heavy piece."))
        await asyncio.sleep(0.35)
        started = time.monotonic()
        await _collect(runner, "Hi.", limit=1)
        waited = time.monotonic() - started
        hog.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hog
        return waited

    assert asyncio.run(main()) < 1.0  # one run of the other stream, not all 40


def _provider() -> LocalProvider:
    spec = ProviderSpec(
        adapter="local",
        name="Local",
        website="https://example.invalid",
        response_formats=["pcm"],
        default_model=ModelSpec(price_micros_per_1k_chars=0, max_input_chars=4096),
        options={"engines": {"piper": {"engine": "piper", "budget_base_s": 0.3, "budget_per_char_s": 0.0}}},
    )
    return LocalProvider("local", spec)


def test_spoken_characters_count_the_normalised_text():
    provider = _provider()
    assert provider.spoken_characters("piper", "\ufdfa" * 20) >= 360
    assert provider.spoken_characters("nope", "\ufdfa" * 20) >= 360
    assert provider.spoken_characters("piper", "I have 42 apples") == len("I have forty-two apples")
    assert provider.spoken_characters("piper", "a  \n b") == len("a  \n b")  # never fewer than sent
    assert provider.spoken_characters("piper", "Hello ı.e. world") >= 16


def test_provider_maps_budget_to_timeout_and_nothing_to_speak_to_bad_request():
    provider = _provider()
    runner = provider._runners["piper"]
    assert runner.settings.budget_base_s == 0.3
    runner.engine = FakeEngine(delay_s=0.1)

    async def speak(text: str) -> None:
        request = SynthesisRequest(model="piper", voice="v", input=text, response_format="pcm")
        async for _ in provider.synthesize(request):
            pass

    with pytest.raises(ProviderError) as info:
        asyncio.run(speak(" ".join(f"Sentence {i} is here." for i in range(100))))
    assert info.value.kind is ErrorKind.timeout
    with pytest.raises(ProviderError) as info:
        asyncio.run(speak("😀 !!! \ue000"))
    assert info.value.kind is ErrorKind.bad_request and "nothing to speak" in info.value.message
