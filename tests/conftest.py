"""Shared fixtures: loopback emulators for every remote provider and a live gateway in front."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from tests.databases import ENGINES, fresh_database, postgres_unavailable  # noqa: E402
from tests.emulators import cartesia_emu, elevenlabs_emu, openai_emu  # noqa: E402
from tests.emulators.behaviour import EmulatorState  # noqa: E402
from tests.emulators.server import LoopbackServer  # noqa: E402
from voxrouter.router.config import Config, load_config  # noqa: E402
from voxrouter.router.http.app import create_app  # noqa: E402
from voxrouter.router.server_commands import create_key  # noqa: E402
from voxrouter.router.settings import Settings  # noqa: E402

EMULATORS = {"openai": openai_emu, "elevenlabs": elevenlabs_emu, "cartesia": cartesia_emu}
# The emulators mount their routes where the real vendors do, so base URLs differ in the same way.
BASE_PATHS = {"openai": "/v1", "elevenlabs": "", "cartesia": ""}
FIRST_BYTE_TIMEOUT_S = 2.0  # generous: a loaded 2-core CI machine must not turn a slow first byte into a 504


class Emulator:
    def __init__(self, provider_id: str, state: EmulatorState, server: LoopbackServer) -> None:
        self.provider_id = provider_id
        self.state = state
        self.server = server

    @property
    def base_url(self) -> str:
        return self.server.url + BASE_PATHS[self.provider_id]


@pytest.fixture(scope="session")
def emulators() -> Iterator[dict[str, Emulator]]:
    running: dict[str, Emulator] = {}
    servers = []
    try:
        for pid, module in EMULATORS.items():
            state = EmulatorState(api_key=f"test-{pid}-key-{uuid.uuid4().hex[:8]}")
            server = LoopbackServer(module.create_app(state)).__enter__()
            servers.append(server)
            running[pid] = Emulator(pid, state, server)
        yield running
    finally:
        for server in servers:
            server.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _fresh_emulators(request: pytest.FixtureRequest) -> None:
    if "emulators" in request.fixturenames or "gateway" in request.fixturenames:
        for emulator in request.getfixturevalue("emulators").values():
            emulator.state.reset()


def emulated_config(emulators: dict[str, Emulator], **provider_overrides: object) -> Config:
    config = load_config()
    providers = {}
    for pid, spec in config.providers.items():
        update: dict[str, object] = {"base_url_env": None, "api_key_env": None}
        if pid in emulators:
            update |= {
                "base_url": emulators[pid].base_url,
                "api_key": emulators[pid].state.api_key,
                "first_byte_timeout_s": FIRST_BYTE_TIMEOUT_S,
            }
        if spec.adapter == "local":  # engines load on first use in tests, not at every gateway start
            update["options"] = {**spec.options, "preload": []}
        update |= provider_overrides
        providers[pid] = spec.model_copy(update=update)
    # Every test shares 127.0.0.1: the per-client login and sign-up throttles are tested on
    # gateways of their own (test_accounts.py, test_accounts_hardening.py).
    auth = config.auth.model_copy(update={"login_failures_per_client": 1_000_000, "registrations_per_client": 1_000_000})
    # The session-wide gateway sees faults injected by many tests: one test's 500s must not
    # open a breaker for the next, nor retries double an error test's upstream calls.
    # Breakers, retries and probes are tested on gateways of their own (test_resilience.py).
    resilience = config.resilience.model_copy(
        update={
            "breaker": config.resilience.breaker.model_copy(update={"enabled": False}),
            "retry": config.resilience.retry.model_copy(update={"attempts": 1}),
            "probe_interval_s": 3600.0,
        }
    )
    return config.model_copy(update={"providers": providers, "auth": auth, "resilience": resilience})


class Gateway:
    def __init__(self, server: LoopbackServer, settings: Settings) -> None:
        self.server = server
        self.settings = settings

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def internals(self) -> Any:
        """The running `voxrouter.router.gateway.Gateway` (its limiter, health board, wallet)."""
        return self.server.app.state.gateway

    def new_key(self, credit_usd: float = 5.0, org: str | None = None, **limits: Any) -> str:
        micros = round(credit_usd * 1_000_000)
        return asyncio.run(create_key(self.settings, org or f"org-{uuid.uuid4().hex[:10]}", "test", micros, **limits))


@contextlib.contextmanager
def running_gateway(tmp_path: Path, config: Config, database_url: str | None = None) -> Iterator[Gateway]:
    """A live gateway on a loopback port with its own database (a SQLite file by default)."""
    settings = Settings(database_url=database_url or f"sqlite:///{tmp_path / 'gateway.db'}", config=config)
    with LoopbackServer(create_app(settings), lifespan="on") as server:
        yield Gateway(server, settings)


def _engine(request: pytest.FixtureRequest) -> str:
    engine = request.param
    if engine == "postgres" and (reason := postgres_unavailable()):
        pytest.skip(reason)
    return engine


@pytest.fixture(scope="session", params=ENGINES)
def database_engine(request: pytest.FixtureRequest) -> str:
    """Every test that touches the database runs once per engine."""
    return _engine(request)


@pytest.fixture
def database_url(database_engine: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the current engine for one test."""
    with fresh_database(database_engine, tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def gateway(emulators: dict[str, Emulator], database_engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gw")
    with fresh_database(database_engine, tmp) as url, running_gateway(tmp, emulated_config(emulators), url) as running:
        yield running


@pytest.fixture
def api_key(gateway: Gateway) -> str:
    return gateway.new_key(5.0)


@pytest.fixture
def key_factory(gateway: Gateway) -> Callable[..., str]:
    return gateway.new_key
