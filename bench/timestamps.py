"""Word timestamps by forced alignment: what they add to a speech request, and how fast the local
Whisper engine hears.

Against one `voxrouter serve` process (SQLite, default config), for each model (tts-1: Piper,
tts-1-hd: Kokoro), the same paragraph as SSE, alternately without and with `timestamps: "word"`:
time to the first audio delta, to the first `speech.audio.timestamps` event, and to
`speech.audio.done` (medians over --repeat runs, after one warm-up of each). The added latency is
done(with) - done(without); the audio itself is not held up (first audio is the same).
Then the local Whisper engine (tiny.en, word timestamps) in this process on that audio: x real
time = seconds of audio / seconds to transcribe.

    python bench/timestamps.py [--model tts-1 tts-1-hd] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import httpx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engines import _start_gateway  # noqa: E402  (one way to start a gateway and wait for its engines)

PARAGRAPH = (
    "Long before computers, inventors built bellows and reeds that could imitate a few vowels, "
    "and audiences paid to hear a machine say simple words. In the twentieth century, engineers "
    "found ways to describe the voice as a set of changing resonances, which made it possible to "
    "store and rebuild speech electronically."
)
VOICES = {"tts-1": "alloy", "tts-1-hd": "nova"}
RATE = 24_000


def _speak(url: str, key: str, model: str, timestamps: bool) -> tuple[float, float | None, float, bytes]:
    """(first delta, first timestamps event or None, done) in seconds from the request; the PCM."""
    body = {"model": model, "voice": VOICES[model], "input": PARAGRAPH, "response_format": "pcm", "stream_format": "sse"}
    if timestamps:
        body["timestamps"] = "word"
    first = stamped = done = None
    audio = bytearray()
    started = time.perf_counter()
    with httpx.stream("POST", url + "/v1/audio/speech", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: "):])
            now = time.perf_counter() - started
            if event["type"] == "speech.audio.delta":
                first = first if first is not None else now
                audio += base64.b64decode(event["audio"])
            elif event["type"] == "speech.audio.timestamps":
                stamped = stamped if stamped is not None else now
            elif event["type"] == "speech.audio.done":
                done = now
    assert first is not None and done is not None
    return first, stamped, done, bytes(audio)


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=list(VOICES), choices=list(VOICES))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    audio: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, key = _start_gateway(tmp)
        try:
            print(f"{'model':9} {'audio s':>7} {'first audio ms':>15} {'(with)':>7} {'first stamps ms':>16} {'done ms':>8} {'(with)':>7} {'added ms':>9}")
            for model in args.model:
                _speak(url, key, model, False), _speak(url, key, model, True)  # warm-up: weights, Whisper
                plain, stamped = [], []
                for _ in range(args.repeat):
                    plain.append(_speak(url, key, model, False))
                    stamped.append(_speak(url, key, model, True))
                audio[model] = plain[-1][3]
                seconds = len(audio[model]) / 2 / RATE
                added = [w[2] - p[2] for p, w in zip(plain, stamped)]
                print(
                    f"{model:9} {seconds:7.1f} {_ms([p[0] for p in plain]):>15} {_ms([w[0] for w in stamped]):>7} "
                    f"{_ms([w[1] for w in stamped if w[1] is not None]):>16} {_ms([p[2] for p in plain]):>8} "
                    f"{_ms([w[2] for w in stamped]):>7} {_ms(added):>9}"
                )
        finally:
            proc.terminate()
            proc.wait(30)

    from voxrouter.local_engines.whisper import WhisperEngine
    from voxrouter.router.speech.timestamps import pcm_to_whisper

    engine = WhisperEngine()
    engine.load()
    print(f"\nlocal Whisper ({engine.default_model}, word timestamps, {os.cpu_count()} cores): x real time")
    for model, pcm in audio.items():
        samples = pcm_to_whisper(pcm)
        runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            engine.transcribe(samples, word_timestamps=True)
            runs.append(time.perf_counter() - started)
        seconds = samples.size / 16_000
        print(f"  {model:9} {seconds:5.1f} s of audio in {statistics.median(runs):5.2f} s: {seconds / statistics.median(runs):5.1f}x real time")
    engine.close()


if __name__ == "__main__":
    main()
