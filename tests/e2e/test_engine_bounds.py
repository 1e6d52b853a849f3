"""Bounded work per request for the local engines (issue 14): client faults are client faults,
every piece and every inference is bounded, budgets end a stream, cancelling stops work."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from voxrouter.local_engines.base import EngineTimeout, EngineVoice, NothingToSpeak, Utterance
from voxrouter.local_engines.runner import EngineRunner, RunnerSettings
from voxrouter.local_engines.text import budget_chars
from voxrouter.providers.base import ErrorKind, ProviderError, SynthesisRequest
from voxrouter.providers.local import LocalProvider
from voxrouter.router.config import ModelSpec, ProviderSpec

VOICE = EngineVoice(id="v", name="V", language="en-US")


class FakeEngine:
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


# --- the real engines -----------------------------------------------------------------------------

CJK = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(3000))

_MEASURE = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from voxrouter.local_engines.runner import EngineRunner, RunnerSettings

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) // 1024

    kind, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if kind == "piper":
        from voxrouter.local_engines.piper import PiperEngine as Engine
        voice = "en_US-joe-medium"
    else:
        from voxrouter.local_engines.kokoro import KokoroEngine as Engine
        voice = "jf_alpha"
    engine = Engine(threads=2)
    runs, renders = [], []
    plan, render = engine.plan, engine.render
    def counting_plan(text, u):
        out = plan(text, u); runs.extend(len(r) for r in out); return out
    def timed_render(run, u):
        t = time.perf_counter(); out = render(run, u); renders.append(round(time.perf_counter() - t, 2)); return out
    engine.plan, engine.render = counting_plan, timed_render
    text = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(n))

    async def main():
        runner = EngineRunner(engine, RunnerSettings())
        await runner.ensure_loaded()
        idle = hwm()
        stream = runner.stream(text, runner.utterance(voice, None, {}))
        started, audio, error = time.monotonic(), 0, None
        try:
            async for chunk in stream:
                audio += len(chunk)
                if time.monotonic() - started > seconds:
                    break
        except Exception as exc:
            error = type(exc).__name__
        finally:
            await stream.aclose()
        closed, count = time.monotonic(), len(renders)
        await asyncio.sleep(max(renders or [1]) + 1.0)
        print(json.dumps({"idle_mb": idle, "peak_mb": hwm(), "runs": runs, "renders": renders, "after_close": len(renders) - count,
                          "audio_s": audio / 48000, "error": error, "max_phonemes": engine.max_phonemes}))
    asyncio.run(main())
    """
)


def _measure(kind: str, n: int, seconds: float) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, kind, str(n), str(seconds)], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_piper_cjk_without_spaces_stays_bounded_in_memory_and_time():
    result = _measure("piper", 3000, 12.0)
    assert result["audio_s"] > 5 and result["error"] is None, result
    assert max(result["runs"]) <= result["max_phonemes"], result
    assert result["peak_mb"] - result["idle_mb"] < 600, result  # was 22 GB and the OOM killer
    assert max(result["renders"]) < 10.0, result  # each inference: a few seconds at most
    assert result["after_close"] <= 1, result  # closing the stream stops work between runs


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kokoro_cjk_is_cut_into_bounded_inferences_and_cancelling_stops_them():
    result = _measure("kokoro", 1002, 15.0)
    assert result["audio_s"] > 1, result
    assert max(result["runs"]) <= result["max_phonemes"], result
    assert max(result["renders"]) < 15.0, result  # was ~190 s for one piece
    assert result["peak_mb"] - result["idle_mb"] < 600, result
    assert result["after_close"] <= 1, result
