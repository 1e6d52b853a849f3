"""`voxrouter engine serve`: the engine service a gateway reaches through an engine's `url:`.

Real synthesis uses Piper (fast on CPU); Kokoro is exercised only in the slow test.
Fake engines are used only to provoke failures a real engine will not produce on demand.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest

from tests.audio_checks import decoded_duration_s, pcm_rms
from tests.conftest import emulated_config, running_gateway
from tests.emulators.server import LoopbackServer
from voxrouter.local_engines.base import EngineBase, EngineVoice, Utterance
from voxrouter.local_engines.registry import build_engine
from voxrouter.local_engines.runner import EngineRunner, RunnerSettings
from voxrouter.router.engine_node import create_engine_app

ROOT = Path(__file__).resolve().parents[2]
PIPER_VOICE = "en_US-joe-medium"
HELLO = "Hello from the engine server."
BYTES_PER_SECOND = 24_000 * 2
# Long enough (minutes of audio) that its stream is still synthesising while a test looks.
LONG_TEXT = " ".join(f"This is sentence number {n} of a long text that keeps the engine busy for a while." for n in range(1, 120))


def speech_body(**overrides: Any) -> dict[str, Any]:
    return {"model": "piper", "input": HELLO, "voice": PIPER_VOICE, "response_format": "pcm", **overrides}


def piper_runner(settings: RunnerSettings = RunnerSettings()) -> EngineRunner:
    return EngineRunner(build_engine("piper", "piper", {"threads": 1}), settings)


def assert_error(response: httpx.Response, status: int, code: str, reason: str | None = None) -> dict[str, str]:
    """The error body: `error` and `details`, plus the `reason` the gateway reads where one is given."""
    assert response.status_code == status, (response.headers.get("content-type"), response.content[:300])
    body = response.json()
    assert set(body) == {"error", "details"} | ({"reason"} if reason else set()) and body["error"] == code, body
    assert body.get("reason") == reason, body
    return body


@pytest.fixture(scope="module")
def piper_server() -> Iterator[tuple[LoopbackServer, EngineRunner]]:
    runner = piper_runner()
    with LoopbackServer(create_engine_app({"piper": runner}), lifespan="on") as server:
        yield server, runner


# --- speech -----------------------------------------------------------------------------------------


def test_speech_streams_real_pcm(piper_server):
    server, runner = piper_server
    assert runner.loaded  # preloaded by the lifespan, before the first request
    response = httpx.post(server.url + "/v1/audio/speech", json=speech_body(), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/l16; rate=24000; channels=1"
    assert response.headers.get("transfer-encoding") == "chunked"
    pcm = response.content
    assert len(pcm) % 2 == 0
    assert 1.0 <= len(pcm) / BYTES_PER_SECOND <= 4.0, len(pcm) / BYTES_PER_SECOND
    assert pcm_rms(pcm) > 500  # speech, not silence (full scale is 32767)


def test_speed_and_options_reach_the_engine(piper_server):
    server, _ = piper_server
    normal = httpx.post(server.url + "/v1/audio/speech", json=speech_body(), timeout=30)
    fast = httpx.post(server.url + "/v1/audio/speech", json=speech_body(speed=2.0), timeout=30)
    slow = httpx.post(server.url + "/v1/audio/speech", json=speech_body(provider_options={"length_scale": 2.0}), timeout=30)
    assert normal.status_code == fast.status_code == slow.status_code == 200
    assert len(fast.content) < 0.75 * len(normal.content)
    assert len(slow.content) > 1.5 * len(normal.content)


def test_voices_status_and_health(piper_server):
    server, _ = piper_server
    voices = httpx.get(server.url + "/v1/voices").json()["voices"]
    joe = next(v for v in voices if v["id"] == PIPER_VOICE)
    assert joe == {
        "id": PIPER_VOICE,
        "name": "Joe",
        "language": "en-US",
        "labels": {"gender": "male", "accent": "American", "engine": "piper"},
        "model_compatibility": ["piper"],
    }
    assert httpx.get(server.url + "/v1/status").json() == [{"id": "piper", "state": "available"}]
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code", "detail"),
    [
        ({"json": speech_body(model="nope")}, 400, "invalid_model", "piper"),
        ({"json": speech_body(model="local/piper")}, 400, "invalid_model", "unknown_model"),
        ({"json": speech_body(voice="en_US-nobody")}, 400, "invalid_body", "en_US-nobody"),
        ({"json": speech_body(response_format="mp3")}, 400, "invalid_body", "response_format"),
        ({"json": {k: v for k, v in speech_body().items() if k != "response_format"}}, 400, "invalid_body", "response_format"),
        ({"json": speech_body(stream_format="sse")}, 400, "invalid_body", "stream_format"),
        ({"json": speech_body(input="")}, 400, "invalid_body", "input"),
        ({"json": speech_body(input="   \n ")}, 400, "invalid_body", "nothing to speak"),
        ({"json": speech_body(speed=9.0)}, 400, "invalid_body", "speed"),
        ({"json": speech_body(provider_options={"bogus": 1})}, 400, "invalid_body", "bogus"),
        ({"content": b'{"model": "piper", ', "headers": {"content-type": "application/json"}}, 400, "invalid_body", "JSON"),
        ({"content": b"[1, 2]"}, 400, "invalid_body", ""),
        ({"content": b'{"input": "' + b"a" * (1024 * 1024) + b'"}'}, 413, "invalid_body", "larger"),
    ],
    ids=[
        "unknown-model",
        "gateway-model-name",
        "unknown-voice",
        "format-mp3",
        "format-missing",
        "extra-field",
        "empty-input",
        "blank-input",
        "speed-out-of-range",
        "bad-provider-option",
        "malformed-json",
        "not-an-object",
        "body-too-large",
    ],
)
def test_speech_errors(piper_server, request_kwargs, status, code, detail):
    server, _ = piper_server
    response = httpx.post(server.url + "/v1/audio/speech", timeout=30, **request_kwargs)
    body = assert_error(response, status, code)
    assert detail in body["details"]
    assert not response.headers["content-type"].startswith("audio/")


def test_wrong_method_and_path_use_the_error_shape(piper_server):
    server, _ = piper_server
    assert_error(httpx.get(server.url + "/v1/audio/speech"), 405, "method_not_allowed")
    assert_error(httpx.get(server.url + "/v1/models"), 404, "not_found")


# --- engines that cannot run, fail, or are busy ---------------------------------------------------------


def test_engine_not_installed_is_a_503_the_gateway_recognises():
    runner = EngineRunner(build_engine("chatterbox", "chatterbox", {"weights_dir": None}))
    assert runner.missing()  # this machine has no Chatterbox weights
    with LoopbackServer(create_engine_app({"chatterbox": runner}), lifespan="on") as server:
        response = httpx.post(server.url + "/v1/audio/speech", json=speech_body(model="chatterbox", voice="default"), timeout=30)
        body = assert_error(response, 503, "provider_unavailable", reason="model_not_installed")
        assert "model_not_installed" in body["details"]
        assert int(response.headers["retry-after"]) >= 1
        status = httpx.get(server.url + "/v1/status").json()
        assert status == [{"id": "chatterbox", "state": "unavailable", "reason": "model_not_installed"}]
        assert httpx.get(server.url + "/v1/voices").json() == {"voices": []}


class FakeEngine(EngineBase):
    """Speaks a tone per piece; `fail_at` makes the n-th synthesize call (1-based) raise."""

    id = "fake"
    sample_rate = 24_000
    first_chunk_chars = 20
    max_chunk_chars = 40

    def __init__(self, *, fail_at: int | None = None, fail_load: bool = False) -> None:
        self.fail_at = fail_at
        self.fail_load = fail_load
        self.calls = 0

    def missing(self) -> str | None:
        return None

    def load(self) -> None:
        if self.fail_load:
            raise RuntimeError("cannot open /secret/weights.bin")

    def voices(self) -> list[EngineVoice]:
        return [EngineVoice(id="tone", name="Tone", language="en-US")]

    def utterance(self, voice: str, speed: float | None, options: dict[str, Any]) -> Utterance:
        return Utterance(voice=self.voices()[0], speed=speed or 1.0, options=options)

    def synthesize(self, text: str, utterance: Utterance) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("CUDA error at /secret/path/kernel.cu:42")
        return (0.3 * np.sin(np.arange(4800) * 0.1)).astype(np.float32)

    def close(self) -> None:
        pass


def test_engine_failure_before_audio_is_a_generic_500(caplog):
    runner = EngineRunner(FakeEngine(fail_at=1))
    with LoopbackServer(create_engine_app({"fake": runner}), lifespan="on") as server:
        response = httpx.post(server.url + "/v1/audio/speech", json=speech_body(model="fake", voice="tone"), timeout=30)
    body = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "fake" in body["details"]
    assert any(record.exc_info and "kernel.cu" in str(record.exc_info[1]) for record in caplog.records)  # logged here, in full


def test_engine_failure_mid_stream_breaks_the_stream():
    """A stream cut short must not look complete: the gateway then refunds instead of charging."""
    runner = EngineRunner(FakeEngine(fail_at=2))
    with LoopbackServer(create_engine_app({"fake": runner}), lifespan="on") as server:
        text = "First piece here. Second piece here. Third piece here."
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", server.url + "/v1/audio/speech", json=speech_body(model="fake", voice="tone", input=text)) as r:
                assert r.status_code == 200
                for _ in r.iter_raw():
                    pass


def test_engine_that_failed_to_load_is_unavailable():
    runner = EngineRunner(FakeEngine(fail_load=True))
    with LoopbackServer(create_engine_app({"fake": runner}), lifespan="on") as server:  # starts despite the failure
        assert httpx.get(server.url + "/v1/status").json() == [{"id": "fake", "state": "unavailable", "reason": "model_not_installed"}]
        response = httpx.post(server.url + "/v1/audio/speech", json=speech_body(model="fake", voice="tone"), timeout=30)
    body = assert_error(response, 503, "provider_unavailable", reason="model_not_installed")
    assert "model_not_installed" in body["details"] and "secret" not in body["details"]


def _wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_busy_engine_answers_429_and_a_hang_up_frees_the_slot():
    runner = piper_runner(RunnerSettings(max_streams=1, max_queue=0))
    engine = runner.engine
    calls = 0
    original = engine.synthesize

    def counting(text: str, utterance: Utterance) -> np.ndarray:
        nonlocal calls
        calls += 1
        return original(text, utterance)

    engine.synthesize = counting  # type: ignore[method-assign]
    with LoopbackServer(create_engine_app({"piper": runner}), lifespan="on") as server, httpx.Client(timeout=30) as client:
        url = server.url + "/v1/audio/speech"
        with client.stream("POST", url, json=speech_body(input=LONG_TEXT)) as held:
            assert held.status_code == 200
            audio = held.iter_raw()  # kept: dropping the iterator would close the response
            assert next(audio)  # first audio: the stream holds the only slot now
            assert runner.gate.active == 1
            busy = httpx.post(url, json=speech_body(), timeout=30)
            body = assert_error(busy, 429, "concurrency_limited")
            assert "busy" in body["details"]
            assert int(busy.headers["retry-after"]) >= 1
        # The client hung up mid-stream: synthesis stops and the slot is released.
        assert _wait_for(lambda: runner.gate.active == 0), "the disconnect did not stop the stream"
        stopped_at = calls
        assert stopped_at < 20  # far from the whole text (over 100 sentences)
        time.sleep(0.5)
        assert calls == stopped_at  # nothing more is synthesised for the gone client
        again = httpx.post(url, json=speech_body(), timeout=30)
        assert again.status_code == 200 and pcm_rms(again.content) > 500


def test_no_slot_within_the_queue_timeout_is_a_503_without_model_not_installed():
    runner = piper_runner(RunnerSettings(max_streams=1, max_queue=1, queue_timeout_s=0.3))
    with LoopbackServer(create_engine_app({"piper": runner}), lifespan="on") as server, httpx.Client(timeout=30) as client:
        url = server.url + "/v1/audio/speech"
        with client.stream("POST", url, json=speech_body(input=LONG_TEXT)) as held:
            audio = held.iter_raw()
            assert next(audio)
            started = time.monotonic()
            waited = httpx.post(url, json=speech_body(), timeout=30)
            assert time.monotonic() - started >= 0.25  # it queued before giving up
        body = assert_error(waited, 503, "provider_unavailable")
        assert "model_not_installed" not in body["details"]
        assert int(waited.headers["retry-after"]) >= 1


def test_a_client_that_hangs_up_while_queued_leaves_the_queue():
    """The gateway gives up after its first-byte timeout; the queued request must not then
    take a slot and synthesise for nobody."""
    runner = piper_runner(RunnerSettings(max_streams=1, max_queue=1, queue_timeout_s=60))
    with LoopbackServer(create_engine_app({"piper": runner}), lifespan="on") as server, httpx.Client(timeout=30) as client:
        url = server.url + "/v1/audio/speech"
        with client.stream("POST", url, json=speech_body(input=LONG_TEXT)) as held:
            audio = held.iter_raw()
            assert next(audio)
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url, json=speech_body(), timeout=httpx.Timeout(30, read=0.5))
            assert _wait_for(lambda: runner.gate.waiting == 0, timeout_s=5), "the queued request stayed after its client left"
            assert runner.gate.active == 1  # the held stream is untouched


def test_bearer_token_guards_everything_but_healthz(monkeypatch):
    monkeypatch.setenv("VOXROUTER_ENGINE_TOKEN", "s3cret-token")
    runner = EngineRunner(FakeEngine())
    with LoopbackServer(create_engine_app({"fake": runner}, preload=False), lifespan="on") as server:
        assert not runner.loaded  # preload=False: loaded on first use instead
        assert httpx.get(server.url + "/healthz").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            response = httpx.get(server.url + "/v1/voices", headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(httpx.post(server.url + "/v1/audio/speech", json=speech_body(model="fake", voice="tone")), 401, "unauthorized")
        auth = {"Authorization": "Bearer s3cret-token"}
        assert httpx.get(server.url + "/v1/status", headers=auth).json() == [{"id": "fake", "state": "available"}]
        spoken = httpx.post(server.url + "/v1/audio/speech", headers=auth, json=speech_body(model="fake", voice="tone"))
        assert spoken.status_code == 200 and len(spoken.content) >= 4800 * 2
        assert runner.loaded


# --- the gateway in front -------------------------------------------------------------------------------


def test_gateway_speaks_through_a_remote_engine(emulators, tmp_path):
    piper = piper_runner(RunnerSettings(max_streams=1, max_queue=0))
    chatterbox = EngineRunner(build_engine("chatterbox", "chatterbox", {"weights_dir": None}))
    with LoopbackServer(create_engine_app({"piper": piper, "chatterbox": chatterbox}), lifespan="on") as engine_server:
        config = emulated_config(emulators)
        local = config.providers["local"]
        engines = {
            "piper": {"engine": "piper", "url": engine_server.url},
            "chatterbox": {"engine": "chatterbox", "url": engine_server.url},
        }
        local = local.model_copy(update={"options": {**local.options, "preload": [], "engines": engines}, "first_byte_timeout_s": 30})
        config = config.model_copy(update={"providers": {**config.providers, "local": local}})
        with running_gateway(tmp_path, config) as gateway:
            auth = {"Authorization": f"Bearer {gateway.new_key()}"}
            with httpx.Client(base_url=gateway.url, headers=auth, timeout=60) as client:
                response = client.post(
                    "/v1/audio/speech",
                    json={"model": "local/piper", "voice": PIPER_VOICE, "input": HELLO, "response_format": "wav"},
                )
                assert response.status_code == 200, response.text
                assert response.headers["x-voxrouter-provider"] == "local"
                assert response.headers["x-voxrouter-model"] == "local/piper"
                wav = response.content
                assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt "
                channels, rate, bits = struct.unpack("<H I 6x H", wav[22:36])
                assert (channels, rate, bits) == (1, 24_000, 16)
                duration = decoded_duration_s(wav, "wav")  # streamed: the header cannot hold the length
                assert 1.0 <= duration <= 4.0, duration
                assert pcm_rms(wav[wav.index(b"data") + 8 :]) > 500

                # The node is busy (its one stream slot held by another client): 429 with Retry-After at the gateway.
                with httpx.stream("POST", engine_server.url + "/v1/audio/speech", json=speech_body(input=LONG_TEXT)) as held:
                    audio = held.iter_raw()
                    assert next(audio)
                    busy = client.post("/v1/audio/speech", json={"model": "local/piper", "voice": PIPER_VOICE, "input": HELLO})
                    assert_error(busy, 429, "concurrency_limited")
                    assert int(busy.headers["retry-after"]) >= 1

                voices = client.get("/v1/voices", params={"provider": "local"}).json()["voices"]
                assert [(v["id"], v["model_compatibility"]) for v in voices] == [(PIPER_VOICE, ["piper"])]

                missing = client.post(
                    "/v1/audio/speech",
                    json={"model": "local/chatterbox", "voice": "default", "input": HELLO, "response_format": "wav"},
                )
                body = assert_error(missing, 503, "provider_unavailable")
                assert "model_not_installed" in body["details"]
                status = {s["id"]: s for s in client.get("/v1/status").json()}
                assert status["local/chatterbox"]["state"] == "unavailable"
                assert status["local/chatterbox"]["reason"] == "model_not_installed"
                assert status["local/piper"]["state"] != "unavailable"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_engine_serve_runs_a_working_engine_server(tmp_path):
    """The real process: `voxrouter engine serve --engine piper` with a token set."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXROUTER_")}
    env |= {"PYTHONPATH": str(ROOT), "VOXROUTER_ENGINE_TOKEN": "node-token"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxrouter.cli", "engine", "serve", "--engine", "piper", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        assert _wait_for(lambda: _healthy(url) or proc.poll() is not None, timeout_s=60) and proc.poll() is None, "".join(output)
        assert httpx.get(url + "/v1/status").status_code == 401
        auth = {"Authorization": "Bearer node-token"}
        assert httpx.get(url + "/v1/status", headers=auth).json() == [{"id": "piper", "state": "available"}]
        response = httpx.post(url + "/v1/audio/speech", headers=auth, json=speech_body(), timeout=30)
        assert response.status_code == 200 and 1.0 <= len(response.content) / BYTES_PER_SECOND <= 4.0
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal.
    assert proc.returncode in (0, -signal.SIGTERM), "".join(output)
    assert "Traceback" not in "".join(output)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# --- Kokoro -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kokoro_engine_server_speaks():
    runner = EngineRunner(build_engine("kokoro", "kokoro", {}))
    if runner.missing():
        pytest.fail(f"kokoro weights are expected in the test environment: {runner.missing()}")
    with LoopbackServer(create_engine_app({"kokoro": runner}), lifespan="on") as server:
        voices = httpx.get(server.url + "/v1/voices").json()["voices"]
        assert voices and all(v["model_compatibility"] == ["kokoro"] for v in voices)
        assert "jf_alpha" in {v["id"] for v in voices}
        response = httpx.post(
            server.url + "/v1/audio/speech",
            json={"model": "kokoro", "input": "Hello from Kokoro on the engine server.", "voice": "jf_alpha", "response_format": "pcm"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert 1.0 <= len(response.content) / BYTES_PER_SECOND <= 5.0
        assert pcm_rms(response.content) > 300


def test_gateway_reaches_a_token_protected_node_under_another_engine_id(emulators, tmp_path, monkeypatch):
    piper = piper_runner(RunnerSettings())
    chatterbox = EngineRunner(build_engine("chatterbox", "chatterbox", {"weights_dir": None}))
    monkeypatch.setenv("TEST_ENGINE_TOKEN", "node-secret")
    app = create_engine_app({"piper": piper, "chatterbox": chatterbox}, token="node-secret")
    with LoopbackServer(app, lifespan="on") as engine_server:
        config = emulated_config(emulators)
        local = config.providers["local"]
        remote = {"url": engine_server.url, "token_env": "TEST_ENGINE_TOKEN"}
        engines = {
            "piper-gpu": {"engine": "piper", "remote_model": "piper", **remote},
            "chatterbox": {"engine": "chatterbox", **remote},
        }
        models = {**local.models, "piper-gpu": local.models["piper"]}  # each engine id is a priced model
        local = local.model_copy(
            update={"options": {**local.options, "preload": [], "engines": engines}, "first_byte_timeout_s": 30, "models": models}
        )
        config = config.model_copy(update={"providers": {**config.providers, "local": local}})
        with running_gateway(tmp_path, config) as gateway:
            auth = {"Authorization": f"Bearer {gateway.new_key()}"}
            with httpx.Client(base_url=gateway.url, headers=auth, timeout=60) as client:
                # The node's status is asked at start-up: no request had to fail first.
                deadline = time.monotonic() + 10
                while True:
                    status = {s["id"]: s for s in client.get("/v1/status").json()}
                    if status["local/chatterbox"].get("reason") == "model_not_installed" or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert status["local/chatterbox"] == {"id": "local/chatterbox", "state": "unavailable", "reason": "model_not_installed"}
                assert status["local/piper-gpu"]["state"] == "available"

                response = client.post(
                    "/v1/audio/speech", json={"model": "local/piper-gpu", "voice": PIPER_VOICE, "input": HELLO, "response_format": "pcm"}
                )
                assert response.status_code == 200, response.text
                assert 1.0 <= len(response.content) / BYTES_PER_SECOND <= 4.0
                voices = client.get("/v1/voices", params={"provider": "local"}).json()["voices"]
                assert [(v["id"], v["model_compatibility"]) for v in voices] == [(PIPER_VOICE, ["piper-gpu"])]

            monkeypatch.setenv("TEST_ENGINE_TOKEN", "wrong")  # read at start-up: the running gateway keeps the right one
            assert httpx.post(engine_server.url + "/v1/audio/speech", json=speech_body()).status_code == 401
