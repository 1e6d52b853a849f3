"""`voxrouter serve` as real processes: the edge's limits from the config, per-key limits shared by
three replicas through Redis, and metrics that add up across uvicorn workers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import Emulator, emulated_config
from tests.databases import REDIS_URL, delete_redis_prefix, redis_unavailable
from tests.integration.test_edge import SLACK_S, connect, get, read_response, read_until_closed
from tests.integration.test_limits import _get, _speak
from tests.integration.test_metrics import _samples, _value
from tests.processes import GatewayProcess, write_config
from voxrouter.router.config import load_config
from voxrouter.router.server_commands import create_key
from voxrouter.router.settings import Settings


# moved from tests/integration/test_edge.py (it starts processes)
def test_voxrouter_serve_enforces_the_config_server_limits(tmp_path: Path):
    config = load_config()
    providers = {
        pid: spec.model_copy(update={"options": {**spec.options, "preload": []}}) if spec.adapter == "local" else spec
        for pid, spec in config.providers.items()
    }
    server = config.server.model_copy(
        update={"header_timeout_s": 1.0, "keep_alive_timeout_s": 1.0, "max_header_bytes": 8192, "max_connections_per_client": 6}
    )
    path = write_config(config.model_copy(update={"providers": providers, "server": server}), tmp_path / "config.yaml")
    with GatewayProcess(path, f"sqlite:///{tmp_path / 'gw.db'}", tmp_path / "gateway.log").start() as gateway:
        # Idle keep-alive from the config (the --timeout-keep-alive default).
        kept = connect(gateway.port)
        kept.sendall(get("/healthz"))
        assert read_response(kept).startswith(b"HTTP/1.1 200 ")
        data, elapsed = read_until_closed(kept, 1.0 + SLACK_S)
        assert data == b"" and elapsed <= 1.0 + SLACK_S
        # A head that never ends.
        slow = connect(gateway.port)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        answer, elapsed = read_until_closed(slow, 1.0 + SLACK_S)
        assert answer.startswith(b"HTTP/1.1 408 ") and elapsed <= 1.0 + SLACK_S, answer
        # An oversized one.
        big = connect(gateway.port)
        big.sendall(get("/healthz", b"X-Big: " + b"a" * 65536 + b"\r\n"))
        answer, _ = read_until_closed(big, 5)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        # Connections from one address.
        held = [connect(gateway.port) for _ in range(6)]
        refused = connect(gateway.port)
        answer, _ = read_until_closed(refused, 5)
        assert answer.startswith(b"HTTP/1.1 429 "), answer
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert httpx.get(gateway.url + "/healthz").status_code == 200


# moved from tests/integration/test_limits.py (it starts processes)
@pytest.mark.skipif(bool(redis_unavailable()), reason=redis_unavailable() or "")
def test_three_gateway_processes_sharing_redis_enforce_one_global_limit(
    tmp_path: Path, emulators: dict[str, Emulator]
) -> None:
    prefix = f"vrtest{uuid.uuid4().hex[:8]}"
    database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    settings = Settings(database_url=database_url)
    rpm_key = asyncio.run(create_key(settings, "acme", "rpm", 1_000_000, requests_per_minute=30))
    slot_key = asyncio.run(create_key(settings, "acme", "slots", 5_000_000, max_concurrency=4))
    config_path = write_config(emulated_config(emulators), tmp_path / "config.yaml")
    emulators["openai"].state.behaviour.stream_time_s = 1.0
    env = {"VOXROUTER_REDIS_URL": REDIS_URL, "VOXROUTER_REDIS_PREFIX": prefix}
    processes = [GatewayProcess(config_path, database_url, tmp_path / f"gw{i}.log", env=env) for i in range(3)]
    try:
        for process in processes:
            process.start()
        urls = [p.url for p in processes]
        ready = httpx.get(urls[0] + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok", ready.text

        # 90 requests, 30 to each process, all at once: the key allows 30 a minute in all.
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
            codes = list(pool.map(lambda i: _get(urls[i % 3], rpm_key).status_code, range(90)))
        refill = (time.monotonic() - started) * 30 / 60
        assert 30 <= codes.count(200) <= 30 + refill + 1, codes
        assert codes.count(429) == 90 - codes.count(200)

        # 12 concurrent streams over three processes; the key allows 4 at once in all.
        with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(lambda i: _speak(urls[i % 3], slot_key).status_code, range(12)))
        assert results.count(200) == 4, results
        assert results.count(429) == 8
        assert _speak(urls[0], slot_key).status_code == 200  # all four slots came back
    finally:
        for process in processes:
            process.stop()
        delete_redis_prefix(prefix)


# moved from tests/integration/test_metrics.py (it starts processes)
def test_metrics_add_up_across_uvicorn_workers(tmp_path: Path, emulators: dict[str, Emulator]) -> None:
    """Two workers of one `voxrouter serve --workers 2` share PROMETHEUS_MULTIPROC_DIR: a scrape
    (answered by either worker) counts every request, whichever worker served it."""
    config = write_config(emulated_config(emulators), tmp_path / "config.yaml")
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    process = GatewayProcess(
        config, f"sqlite:///{tmp_path / 'gw.db'}", tmp_path / "gw.log", env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}, workers=2
    )
    with process:
        process.start()
        key = process.create_key()
        emulators["openai"].state.behaviour.stream_time_s = 0.5

        def one(_: int) -> int:
            body = {"model": "openai/tts-1", "voice": "alloy", "input": "Two workers."}
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.post(process.url + "/v1/audio/speech", json=body, headers=headers, timeout=30).status_code

        # Twelve at once, each on its own connection, so that both workers accept some; the
        # kernel does not promise to share them out, so again until both have (a loaded machine
        # can leave one worker every connection of a batch).
        sent = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
            while sent < 60 and (sent == 0 or len(list(multiproc.glob("counter_*.db"))) < 2):
                assert list(pool.map(one, range(12))) == [200] * 12
                sent += 12
        assert len(list(multiproc.glob("counter_*.db"))) == 2, f"one worker accepted all {sent} connections"
        labels = {"provider": "openai", "model": "openai/tts-1", "status": "200", "code": ""}
        deadline = time.monotonic() + 5
        while (total := _value(_samples(process.url), "voxrouter_requests_total", **labels)) != sent and time.monotonic() < deadline:
            time.sleep(0.1)
        assert total == sent  # a scrape answered by either worker counts both workers' requests

