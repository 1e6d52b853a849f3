"""Everything a request handler needs, built once at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import AsyncIterator, Mapping

import httpx

from providers import build_provider
from providers.base import Provider
from router.auth import Authenticator
from router.catalog import Catalog
from router.config import Config
from router.health import HealthBoard
from router.settings import Settings
from router.store import open_store
from router.store.base import Store
from router.wallet import Wallet

logger = logging.getLogger("voxrouter")


@dataclasses.dataclass
class Gateway:
    config: Config
    store: Store
    wallet: Wallet
    providers: dict[str, Provider]
    health: HealthBoard
    catalog: Catalog
    auth: Authenticator


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings, *, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
) -> AsyncIterator[Gateway]:
    """Open the store, build the adapters, run the reservation sweeper; undo it all on exit."""
    config = settings.load_config()
    store = await open_store(settings.database_url)
    providers = {
        pid: build_provider(pid, spec, transport=(transports or {}).get(pid)) for pid, spec in config.providers.items()
    }
    health = HealthBoard()
    wallet = Wallet(store, config.wallet.reservation_ttl_s)
    gateway = Gateway(
        config, store, wallet, providers, health, Catalog(config, providers, health), Authenticator(store, config.auth.key_cache_ttl_s)
    )
    for provider in providers.values():
        start = getattr(provider, "start", None)  # local engines preload their weights
        if start is not None:
            await start()
    sweeper = asyncio.create_task(_sweep_forever(wallet, config.wallet.sweep_interval_s))
    try:
        yield gateway
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        for provider in providers.values():
            await provider.aclose()
        await store.close()


async def _sweep_forever(wallet: Wallet, interval_s: float) -> None:
    while True:
        try:
            await wallet.sweep_expired()
        except Exception:
            logger.exception("reservation sweep failed")
        await asyncio.sleep(interval_s)
