"""The user's path, as separate processes: `voxrouter admin create-key`, `voxrouter serve`,
provider keys and base URLs from the environment, the OpenAI SDK in front."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.audio_checks import decoded_duration_s
from tests.emulators import openai_emu
from tests.emulators.behaviour import EmulatorState
from tests.emulators.server import LoopbackServer

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxrouter.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            httpx.get(url + "/v1/status", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("gateway did not start")


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL")) and not k.startswith("VOXROUTER_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_serve_with_env_keys_and_the_openai_sdk(tmp_path, clean_env):
    state = EmulatorState(api_key=f"sk-{uuid.uuid4().hex}")
    with LoopbackServer(openai_emu.create_app(state)) as emulator:
        env = {**clean_env, "OPENAI_API_KEY": state.api_key, "OPENAI_BASE_URL": emulator.url + "/v1"}
        key = subprocess.run(
            [sys.executable, "-m", "voxrouter.cli", "admin", "create-key", "--org", "acme", "--name", "dev", "--credit-usd", "5"],
            env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
        ).stdout.strip()
        assert (tmp_path / "voxrouter.db").exists()  # the default sqlite:///./voxrouter.db
        proc, url = _serve(env, tmp_path)
        try:
            client = OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            audio = client.audio.speech.create(model="openai/tts-1", voice="alloy", input="Hello")
            assert audio.content[:3] == b"ID3" or audio.content[0] == 0xFF  # an MP3 stream
            with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="alloy", input="Hello") as response:
                assert response.headers["x-voxrouter-provider"] == "openai"
                assert sum(len(chunk) for chunk in response.iter_bytes()) > 1000
            credits = httpx.get(url + "/v1/credits", headers={"Authorization": f"Bearer {key}"}).json()
            assert credits == {"balanceMicros": 5_000_000 - 75 - 60, "reservedMicros": 0}
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_serve_without_any_provider_key(tmp_path, clean_env):
    clean_env["VOXROUTER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'fresh.db'}"
    key = subprocess.run(
        [sys.executable, "-m", "voxrouter.cli", "admin", "create-key", "--org", "o", "--name", "n"],
        env=clean_env, cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()
    proc, url = _serve(clean_env, tmp_path)
    try:
        status = httpx.get(url + "/v1/status", headers={"Authorization": f"Bearer {key}"}).json()
        remote = [s for s in status if s["id"] in ("openai", "elevenlabs", "cartesia")]
        assert remote and all(s == {"id": s["id"], "state": "unavailable", "reason": "missing_api_key"} for s in remote)
        providers = httpx.get(url + "/v1/providers", headers={"Authorization": f"Bearer {key}"}).json()
        assert {"openai", "elevenlabs", "cartesia", "local"} <= {p["id"] for p in providers}
        # The local engines speak with no key at all: an unmodified OpenAI SDK app works.
        deadline = time.monotonic() + 120
        while True:
            status = {s["id"]: s for s in httpx.get(url + "/v1/status", headers={"Authorization": f"Bearer {key}"}).json()}
            if status["local/kokoro"]["state"] == status["local/piper"]["state"] == "available":
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        client = OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        for model in ("tts-1", "tts-1-hd"):
            with client.audio.speech.with_streaming_response.create(model=model, voice="alloy", input="Hello there.") as response:
                assert response.headers["x-voxrouter-provider"] == "local"
                assert decoded_duration_s(response.read(), "mp3") > 0.4
        credits = httpx.get(url + "/v1/credits", headers={"Authorization": f"Bearer {key}"}).json()
        assert credits["reservedMicros"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode in (0, -15)
