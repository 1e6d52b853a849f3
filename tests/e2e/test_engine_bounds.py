"""Bounded work per request for the real local engines (issue 14), each measured in a process of
its own: CJK text without spaces stays bounded in memory and time, and closing the stream stops
the inferences. The same bounds on fake engines are tests/unit/test_engine_bounds.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

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
