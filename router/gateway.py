"""Everything a request handler needs, built once at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, Mapping

import httpx

from voxrouter.providers import build_provider, build_transcribers
from voxrouter.providers.base import Provider
from voxrouter.providers.transcription import Transcriber
from voxrouter.router.accounts.auth import Authenticator
from voxrouter.router.accounts.passwords import PasswordHasher
from voxrouter.router.accounts.revocation import READY_WAIT_S, RevocationBus
from voxrouter.router.accounts.throttle import FailureThrottle, LoginThrottle
from voxrouter.router.billing.stripe_client import StripeGateway
from voxrouter.router.billing.wallet import Wallet
from voxrouter.router.catalog.routes import Catalog
from voxrouter.router.config import Config
from voxrouter.router.limits.state import LimitState, open_limit_state
from voxrouter.router.ops import metrics
from voxrouter.router.resilience.dispatch import Dispatcher
from voxrouter.router.resilience.health import HealthBoard
from voxrouter.router.settings import Settings
from voxrouter.router.store import open_store
from voxrouter.router.store.base import Store

if TYPE_CHECKING:
    from voxrouter.local_engines.whisper import WhisperEngine

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
    limits: LimitState
    dispatcher: Dispatcher
    login: LoginThrottle  # failed logins per client, per (client, email), per email (router/throttle.py)
    registrations: FailureThrottle  # sign-ups per client address
    passwords: PasswordHasher  # scrypt, auth.password_hash_concurrency at once
    stripe: StripeGateway | None = None  # None: no STRIPE_API_KEY, billing routes answer 503
    stripe_webhook_secret: str | None = dataclasses.field(default=None, repr=False)
    revocations: RevocationBus | None = None  # None: no Redis; other replicas rely on auth.key_cache_ttl_s
    transcribers: dict[str, Transcriber] = dataclasses.field(default_factory=dict)  # speech to text, by provider id
    # The local Whisper engine that hears our own speech for word timestamps; None: not installed.
    aligner: WhisperEngine | None = None


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
    health = HealthBoard(config, providers)
    catalog = Catalog(config, providers, health)
    wallet = Wallet(store, config.wallet.reservation_lease_s)
    limits = await open_limit_state(settings.redis_url, lease_s=config.limits.slot_lease_s, prefix=settings.redis_prefix)
    auth = config.auth
    gateway = Gateway(
        config=config,
        store=store,
        wallet=wallet,
        providers=providers,
        health=health,
        catalog=catalog,
        auth=Authenticator(store, auth.key_cache_ttl_s),
        limits=limits,
        dispatcher=Dispatcher(config, health, catalog),
        login=LoginThrottle(
            per_client=auth.login_failures_per_client,
            per_client_email=auth.login_failures_per_client_email,
            per_email=auth.login_failures_per_email,
            window_s=auth.login_window_s,
            email_backoff_s=auth.login_email_backoff_s,
        ),
        registrations=FailureThrottle(auth.registrations_per_client, auth.registration_window_s),
        passwords=PasswordHasher(auth.password_hash_concurrency),
        stripe=_stripe(settings, config),
        stripe_webhook_secret=settings.stripe_webhook_secret,
        revocations=RevocationBus(settings.redis_url, settings.redis_prefix) if settings.redis_url else None,
        transcribers=build_transcribers(config.transcription.local, config.providers, _stt_providers(config)),
    )
    own_aligner = _aligner(gateway)
    if gateway.revocations is not None:
        gateway.auth.publish = gateway.revocations.publish
    for provider in providers.values():
        provider.on_engine_rtf(metrics.observe_engine_rtf)
        await provider.start()  # local engines preload their weights
    chores = [
        asyncio.create_task(_every(config.wallet.sweep_interval_s, wallet.sweep_expired, "reservation sweep")),
        asyncio.create_task(_every(config.wallet.reservation_lease_s / 4, wallet.renew, "reservation renewal")),
        asyncio.create_task(_every(auth.last_used_flush_s, gateway.auth.flush_last_used, "lastUsedAt flush")),
        asyncio.create_task(_every(config.limits.slot_lease_s / 4, limits.renew, "concurrency slot renewal")),
        asyncio.create_task(_every(min(1.0, config.resilience.probe_interval_s), health.probe_due, "health probes")),
    ]
    if gateway.revocations is not None:
        chores.append(asyncio.create_task(gateway.revocations.listen(gateway.auth.forget, gateway.auth.forget_all)))
    try:
        if gateway.revocations is not None:
            try:  # serve once subscribed; an unreachable Redis delays start-up this long at most
                await asyncio.wait_for(gateway.revocations.subscribed.wait(), READY_WAIT_S)
            except asyncio.TimeoutError:
                logger.warning("revocation channel not subscribed yet: other replicas' revocations apply within auth.key_cache_ttl_s")
        yield gateway
    finally:
        for chore in chores:
            chore.cancel()
        for chore in chores:
            with contextlib.suppress(asyncio.CancelledError):
                await chore
        with contextlib.suppress(Exception):
            await gateway.auth.flush_last_used()
        for provider in providers.values():
            await provider.aclose()
        for transcriber in gateway.transcribers.values():
            await transcriber.aclose()
        if own_aligner is not None:
            own_aligner.close()
        if gateway.stripe is not None:
            await gateway.stripe.aclose()
        if gateway.revocations is not None:
            await gateway.revocations.aclose()
        await limits.aclose()
        await store.close()
        metrics.process_exiting()


def _aligner(gateway: Gateway) -> WhisperEngine | None:
    """Set `gateway.aligner`: the local transcriber's Whisper engine (sharing its workers), else one of
    its own built from `transcription.local`; returns the engine built here, for closing."""
    from voxrouter.providers.local_stt import LocalTranscriber

    built = None
    engine = next((t.engine for t in gateway.transcribers.values() if isinstance(t, LocalTranscriber)), None)
    if engine is None:
        engine = built = LocalTranscriber("local", gateway.config.transcription.local).engine
    gateway.aligner = engine if engine.missing() is None else None
    return built


def _stt_providers(config: Config) -> set[str]:
    """The providers `transcription.models` names (each needs a speech-to-text adapter)."""
    return {name.partition("/")[0] for name in config.transcription.models}


def _stripe(settings: Settings, config: Config) -> StripeGateway | None:
    if not settings.stripe_api_key:
        return None
    billing = config.billing
    return StripeGateway(
        settings.stripe_api_key,
        api_base=settings.stripe_api_base,
        timeout_s=billing.timeout_s,
        max_network_retries=billing.max_network_retries,
    )


async def _every(interval_s: float, chore: Callable[[], Awaitable[object]], name: str) -> None:
    while True:
        try:
            await chore()
        except Exception:
            logger.exception("%s failed", name)
        await asyncio.sleep(interval_s)
