"""Local engines through the gateway, with the real weights from the package registry."""

from __future__ import annotations

import io
import threading
import time
import wave

import httpx
import numpy as np
import pytest
from openai import OpenAI

from tests.audio_checks import decoded_duration_s
from tests.conftest import emulated_config, running_gateway

FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
SENTENCE = "The quick brown fox jumps over the lazy dog, then it runs away."


def _client(gateway, key: str) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def _decode(data: bytes, fmt: str) -> np.ndarray:
    """Mono float samples in [-1, 1] at 24 kHz, whatever the container."""
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    import av

    chunks = []
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=24_000)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks)


def assert_speech(samples: np.ndarray, text: str) -> None:
    """Real speech: a duration that fits the text, voiced energy well above silence, not
    clipped, and not noise (speech has pauses: its loudness varies a lot over time)."""
    duration = len(samples) / 24_000
    words = len(text.split())
    assert words * 0.15 <= duration <= words * 0.8 + 1.0, (duration, words)
    rms = float(np.sqrt(np.mean(samples**2)))
    assert rms > 0.02, rms
    assert np.mean(np.abs(samples) > 0.99) < 0.001, "clipped"
    frames = samples[: len(samples) // 480 * 480].reshape(-1, 480)  # 20 ms frames
    energy = np.sqrt(np.mean(frames**2, axis=1))
    assert np.mean(energy < 0.01) > 0.03, "no pauses at all: noise, not speech"
    assert np.mean(energy > 0.03) > 0.35, "mostly silent"
    # Zero-crossing rate of white noise is ~0.5; voiced speech is far lower.
    voiced = frames[energy > 0.03]
    zcr = np.mean(np.abs(np.diff(np.signbit(voiced), axis=1)))
    assert zcr < 0.3, zcr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model,voice", [("local/piper", "en_US-joe-medium"), ("local/kokoro", "jf_alpha")])
def test_real_speech_in_every_format(gateway, api_key, model, voice, fmt):
    raw = _client(gateway, api_key).audio.speech.with_raw_response.create(model=model, voice=voice, input=SENTENCE, response_format=fmt)
    assert raw.headers["x-voxrouter-provider"] == "local"
    assert_speech(_decode(raw.content, fmt), SENTENCE)
    if fmt != "pcm":
        assert abs(decoded_duration_s(raw.content, fmt) - len(_decode(raw.content, fmt)) / 24_000) < 0.1


def test_openai_aliases_speak_locally(gateway, api_key):
    client = _client(gateway, api_key)
    served = {("tts-1", "alloy"): "local/piper", ("tts-1", "nova"): "local/hibari", ("tts-1", "onyx"): "local/kokoro", ("tts-1-hd", "nova"): "local/kokoro"}
    for (model, voice), engine in served.items():
        raw = client.audio.speech.with_raw_response.create(model=model, voice=voice, input="Hello from a fresh install.")
        assert raw.headers["x-voxrouter-provider"] == "local", model
        assert raw.headers["x-voxrouter-model"] == engine, (model, voice)
        assert_speech(_decode(raw.content, "mp3"), "Hello from a fresh install.")


def test_joins_between_pieces_do_not_click(gateway, api_key):
    text = "First part, second part; third part. Another sentence here! And a question, right?"
    pcm = _client(gateway, api_key).audio.speech.create(model="local/piper", voice="en_US-joe-medium", input=text, response_format="pcm").content
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    assert_speech(samples, text)
    # A click is a jump between neighbouring samples far beyond what the speech itself has.
    jumps = np.abs(np.diff(samples))
    assert jumps.max() < 0.5, jumps.max()
    # There are silent gaps (the pauses inserted at the joins), at least one per piece boundary.
    silent = np.abs(samples) < 1e-4
    runs = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
    gaps = [(end - start) / 24_000 for start, end in zip(np.flatnonzero(runs == 1), np.flatnonzero(runs == -1))]
    assert sum(1 for g in gaps if g >= 0.05) >= 2, gaps


def test_voices_have_language_and_gender(gateway, api_key):
    response = httpx.get(gateway.url + "/v1/voices", params={"provider": "local"}, headers={"Authorization": f"Bearer {api_key}"})
    voices = {v["id"]: v for v in response.json()["voices"]}
    assert voices["en_US-joe-medium"]["language"] == "en-US"
    assert voices["en_US-joe-medium"]["labels"]["gender"] == "male"
    assert voices["en_US-joe-medium"]["model_compatibility"] == ["piper"]
    assert voices["jf_alpha"]["language"] == "ja-JP" and voices["jf_alpha"]["labels"]["gender"] == "female"
    assert voices["jm_kumo"]["labels"]["gender"] == "male"
    # Kokoro's English voice packs (npm kokoro-js) and hibari, with accents.
    assert voices["en_US-joe-medium"]["labels"]["accent"] == "American"
    assert (voices["af_heart"]["language"], voices["af_heart"]["labels"]["gender"], voices["af_heart"]["labels"]["accent"]) == ("en-US", "female", "American")
    assert (voices["bm_fable"]["language"], voices["bm_fable"]["labels"]["gender"], voices["bm_fable"]["labels"]["accent"]) == ("en-GB", "male", "British")
    assert voices["heart"]["model_compatibility"] == ["hibari"] and voices["heart"]["labels"]["accent"] == "American"
    english = [v for v in voices.values() if v["language"].startswith("en-")]
    assert sum(v["labels"].get("gender") == "female" for v in english) >= 3 and sum(v["labels"].get("gender") == "male" for v in english) >= 3
    female_en = httpx.get(
        gateway.url + "/v1/voices", params={"language": "en", "gender": "male"}, headers={"Authorization": f"Bearer {api_key}"}
    ).json()["voices"]
    assert "en_US-joe-medium" in {v["id"] for v in female_en}


def test_status_lists_engines_and_missing_weights(gateway, api_key):
    status = httpx.get(gateway.url + "/v1/status", headers={"Authorization": f"Bearer {api_key}"}).json()
    by_id = {s["id"]: s for s in status}
    assert by_id["local/kokoro"]["state"] == "available"
    assert by_id["local/piper"]["state"] == "available"
    assert by_id["local/chatterbox"] == {"id": "local/chatterbox", "state": "unavailable", "reason": "model_not_installed"}
    assert by_id["local/moss-tts-nano"]["reason"] == "model_not_installed"


def test_missing_weights_is_a_clear_503(gateway, api_key):
    response = httpx.post(
        gateway.url + "/v1/audio/speech",
        json={"model": "local/chatterbox", "voice": "default", "input": "Hello."},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 503
    assert response.json()["error"] == "provider_unavailable"
    assert "model_not_installed" in response.json()["details"]
    assert response.headers["retry-after"]


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"model": "local/piper", "voice": "nobody"}, "no voice 'nobody'"),
        ({"model": "local/kokoro", "voice": "alloy"}, "no voice 'alloy'"),
        ({"model": "local/piper", "voice": "en_US-joe-medium", "provider_options": {"temperature": 1}}, "temperature"),
        ({"model": "local/piper", "voice": "en_US-joe-medium", "provider_options": {"noise_scale": "x"}}, "noise_scale"),
        ({"model": "local/kokoro", "voice": "jf_alpha", "speed": 3.0}, "speed"),
        ({"model": "local/nope", "voice": "x"}, "unknown_model"),
    ],
)
def test_bad_voice_and_options_are_400(gateway, api_key, body, fragment):
    response = httpx.post(
        gateway.url + "/v1/audio/speech", json={"input": "Hello.", **body}, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ("invalid_body", "invalid_model")
    assert fragment in response.json()["details"]


def _busy_config(emulators, **engine):
    config = emulated_config(emulators)
    local = config.providers["local"]
    piper = {**local.options["engines"]["piper"], **engine}
    options = {"preload": ["piper"], "engines": {"piper": piper}}
    return config.model_copy(update={"providers": {**config.providers, "local": local.model_copy(update={"options": options})}})


LONG = " ".join(f"Sentence number {i} is here to keep the engine talking for a while." for i in range(200))


def test_queue_full_is_429_and_the_slot_comes_back(emulators, tmp_path):
    with running_gateway(tmp_path, _busy_config(emulators, max_streams=1, max_queue=0)) as gw:
        key = gw.new_key(1.0)
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": "local/piper", "voice": "en_US-joe-medium", "response_format": "pcm"}
        with httpx.Client(base_url=gw.url, headers=headers, timeout=30) as client:
            with client.stream("POST", "/v1/audio/speech", json={**body, "input": LONG}) as first:
                assert first.status_code == 200
                chunks = first.iter_raw()  # kept: a dropped iterator closes the response
                next(chunks)
                busy = client.post("/v1/audio/speech", json={**body, "input": "Hello."})
                assert busy.status_code == 429
                assert busy.json()["error"] == "concurrency_limited"
                assert int(busy.headers["retry-after"]) >= 1
            # The first stream was abandoned: its slot is free again.
            deadline = time.monotonic() + 5
            while True:
                again = client.post("/v1/audio/speech", json={**body, "input": "Hello again."})
                if again.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert again.status_code == 200, again.text
            assert len(again.content) > 24_000  # real audio


def test_queue_wait_timeout_is_503_with_retry_after(emulators, tmp_path):
    with running_gateway(tmp_path, _busy_config(emulators, max_streams=1, max_queue=1, queue_timeout_s=0.3)) as gw:
        key = gw.new_key(1.0)
        with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            body = {"model": "local/piper", "voice": "en_US-joe-medium", "response_format": "pcm"}
            with client.stream("POST", "/v1/audio/speech", json={**body, "input": LONG}) as first:
                assert first.status_code == 200, first.read()
                chunks = first.iter_raw()  # kept: a dropped iterator closes the response
                next(chunks)
                waited = client.post("/v1/audio/speech", json={**body, "input": "Hello."})
            assert waited.status_code == 503
            assert waited.json()["error"] == "provider_unavailable"
            assert waited.headers["retry-after"]


def test_client_disconnect_stops_synthesis(emulators, tmp_path):
    with running_gateway(tmp_path, _busy_config(emulators, max_streams=2)) as gw:
        key = gw.new_key(1.0)
        provider = gw.server._server.config.app.state.gateway.providers["local"]
        runner = provider._runners["piper"]
        calls = 0
        original = runner.engine.render  # one inference: a piece is planned into runs of phonemes

        def counting(run, utterance):
            nonlocal calls
            calls += 1
            return original(run, utterance)

        runner.engine.render = counting
        with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            with client.stream(
                "POST", "/v1/audio/speech", json={"model": "local/piper", "voice": "en_US-joe-medium", "input": LONG, "response_format": "pcm"}
            ) as response:
                chunks = response.iter_raw()
                next(chunks)
            time.sleep(1.0)
            after_close = calls
            time.sleep(1.0)
        pieces = sum(1 for _ in LONG.split(". "))
        assert after_close < 10, after_close  # one piece in flight at a time: nothing ran ahead
        assert calls > 0
        assert calls == after_close, "synthesis went on after the client left"
        assert calls < pieces
        assert runner.gate.active == 0


def test_long_input_streams_with_flat_memory(gateway, api_key):
    """Tens of thousands of characters: audio starts at once and the process does not grow
    with the text (one piece in flight; the gateway never holds the whole audio)."""
    import resource

    text = LONG * 2  # ~28,000 characters, ~40 minutes of speech: read only the first part
    # Warm up first: the engine's load and its first full-size pieces set the process's
    # high-water mark (ru_maxrss), whatever the text's length; growth after that would be the text's.
    warm = {"model": "local/piper", "voice": "en_US-joe-medium", "input": LONG[:2000], "response_format": "pcm"}
    httpx.post(gateway.url + "/v1/audio/speech", json=warm, headers={"Authorization": f"Bearer {api_key}"}, timeout=120)
    started = time.perf_counter()
    first_at = None
    received = 0
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as client:
        with client.stream(
            "POST", "/v1/audio/speech", json={"model": "local/piper", "voice": "en_US-joe-medium", "input": text, "response_format": "pcm"}
        ) as response:
            assert response.status_code == 200
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            for chunk in response.iter_raw():
                if first_at is None:
                    first_at = time.perf_counter() - started
                received += len(chunk)
                if received > 24_000 * 2 * 60:  # a minute of audio
                    break
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert first_at is not None and first_at < 2.0, first_at
    assert (rss_after - rss_before) * 1024 < 64 * 1024 * 1024, (rss_before, rss_after)


def test_many_concurrent_streams_all_speak(gateway, api_key):
    results: list[bytes] = []

    def one(i: int) -> None:
        pcm = _client(gateway, api_key).audio.speech.create(
            model="local/piper", voice="en_US-joe-medium", input=f"Request number {i} speaks now.", response_format="pcm"
        ).content
        results.append(pcm)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    for pcm in results:
        assert_speech(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0, "Request number 1 speaks now.")


def test_wav_header_matches_audio(gateway, api_key):
    data = _client(gateway, api_key).audio.speech.create(model="local/piper", voice="en_US-joe-medium", input="Hello.", response_format="wav").content
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getframerate() == 24_000 and wav.getnchannels() == 1 and wav.getsampwidth() == 2
