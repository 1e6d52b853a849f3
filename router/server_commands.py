"""The server's commands of `voxrouter`: `serve` the gateway, `engine serve` local engines, and
offline `admin` tasks on the gateway's database. voxrouter/cli.py loads this module only when
one of them is invoked, so the client-only install never imports the server."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Awaitable, Callable, TypeVar

import click

from voxrouter import money
from voxrouter.router.store.base import Conflict, NewApiKeyRecord, Store

if TYPE_CHECKING:  # the gateway's settings load its config: only the commands that need it pay for it
    from voxrouter.router.settings import Settings

T = TypeVar("T")


def _usd_micros(value: str) -> int:
    try:
        return money.usd_to_micros(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(min=1),
    help="Worker processes; set PROMETHEUS_MULTIPROC_DIR so /metrics adds theirs up.",
)
@click.option(
    "--timeout-keep-alive", default=None, type=click.FloatRange(min=0, min_open=True),
    help="Seconds an idle client connection stays open (default: config server.keep_alive_timeout_s, 75); "
    "longer than clients' and load balancers' own (60 s).",
)
def serve(host: str, port: int, log_level: str, workers: int, timeout_keep_alive: float | None) -> None:
    """Run the gateway (database from VOXROUTER_DATABASE_URL, config from VOXROUTER_CONFIG).

    The HTTP edge (config `server:`, router/http/edge.py) bounds header size and time, connections
    in all and per client address, idle keep-alive and stalled writes. Log lines name their
    request (request_id); VOXROUTER_LOG_FORMAT=json writes them as JSON lines."""
    import uvicorn

    from voxrouter.router.http.edge import EdgeLimits, EdgeProtocol, raise_open_files_limit, set_process_limits
    from voxrouter.router.ops.logging import uvicorn_log_config
    from voxrouter.router.settings import Settings

    try:
        server = Settings.from_env().load_config().server
        log_config = uvicorn_log_config(log_level)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"config: {exc}") from None
    limits = EdgeLimits.from_spec(server)
    set_process_limits(limits)  # a spawned worker (--workers > 1) loads the same config itself
    raise_open_files_limit(limits)  # before uvicorn opens anything; workers inherit it
    uvicorn.run(
        "voxrouter.router.http.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config,
        workers=workers,
        http=EdgeProtocol,
        ws="none",  # no WebSocket routes; an upgrade would leave the edge's limits behind
        timeout_keep_alive=timeout_keep_alive if timeout_keep_alive is not None else server.keep_alive_timeout_s,
    )


@click.group()
def admin() -> None:
    """Offline operator tasks against the configured database."""


def _run_admin(fn: Callable[[Store], Awaitable[T]]) -> T:
    """Open the configured database (migrating it if needed), run `fn`, close it."""

    async def run() -> T:
        from voxrouter.router.settings import Settings
        from voxrouter.router.store import open_store

        store = await open_store(Settings.from_env().database_url)
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (Conflict, LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


async def _org_id(store: Store, org: str, create: bool) -> str:
    if create:
        return await store.ensure_org(org)
    found = await store.find_org(org)
    if found is None:
        raise LookupError(f"no organization named {org!r}")
    return found.id


@admin.command("create-org")
@click.argument("name")
def create_org(name: str) -> None:
    """Create an organization (with an empty wallet); prints its id."""
    click.echo(_run_admin(lambda store: store.create_org(name)))


@admin.command("create-user")
@click.option("--org", required=True, help="Organization name (created if new).")
@click.option("--email", required=True)
@click.password_option(help="Prompted for when not given; VOXROUTER_ADMIN_PASSWORD also works.", envvar="VOXROUTER_ADMIN_PASSWORD")
def create_user(org: str, email: str, password: str) -> None:
    """Create a user who can sign in on the web page and with `voxrouter login`; prints the user id."""
    from voxrouter.router.accounts.passwords import MIN_LENGTH, hash_password_sync
    from voxrouter.router.accounts.routes import normalize_email

    if len(password) < MIN_LENGTH:
        raise click.BadParameter(f"use at least {MIN_LENGTH} characters", param_hint="--password")
    password_hash = hash_password_sync(password)

    async def run(store: Store) -> str:
        user = await store.create_user(await _org_id(store, org, True), normalize_email(email), password_hash)
        return user.id

    click.echo(_run_admin(run))


@admin.command("create-key")
@click.option("--org", required=True, help="Organization name (created if new).")
@click.option("--name", required=True, help="A name for the key.")
@click.option("--user", "email", default=None, help="Email of the user who owns (and may revoke) the key.")
@click.option("--credit-usd", default="0", show_default=True, help="Credit to grant the organization.")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=None)
@click.option("--daily-limit-usd", default=None, help="Spend cap per UTC day.")
@click.option("--monthly-limit-usd", default=None, help="Spend cap per UTC month.")
@click.option("--requests-per-minute", type=click.IntRange(min=1), default=None, help="Default: the organization's, from the config.")
@click.option("--characters-per-minute", type=click.IntRange(min=1), default=None, help="Default: the organization's, from the config.")
def create_key_command(
    org: str,
    name: str,
    email: str | None,
    credit_usd: str,
    max_concurrency: int | None,
    daily_limit_usd: str | None,
    monthly_limit_usd: str | None,
    requests_per_minute: int | None,
    characters_per_minute: int | None,
) -> None:
    """Create an API key; prints only the secret on stdout (it is never shown again)."""
    from voxrouter.router.settings import Settings

    credit = _usd_micros(credit_usd)
    daily = _usd_micros(daily_limit_usd) if daily_limit_usd is not None else None
    monthly = _usd_micros(monthly_limit_usd) if monthly_limit_usd is not None else None
    try:
        secret = asyncio.run(
            create_key(
                Settings.from_env(), org, name, credit, email, max_concurrency, daily, monthly, requests_per_minute, characters_per_minute
            )
        )
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(secret)


async def create_key(
    settings: Settings,
    org: str,
    name: str,
    credit_micros: int,
    email: str | None = None,
    max_concurrency: int | None = None,
    daily_limit_micros: int | None = None,
    monthly_limit_micros: int | None = None,
    requests_per_minute: int | None = None,
    characters_per_minute: int | None = None,
) -> str:
    """Create an API key in `org` (created if new), granting `credit_micros` to its wallet; returns
    the secret, which is never stored. `email` names an existing user of `org` who owns the key
    (LookupError if there is none). A note of what was made goes to stderr."""
    from voxrouter.router.accounts.auth import new_api_key
    from voxrouter.router.store import open_store

    store = await open_store(settings.database_url)
    try:
        org_id = await store.ensure_org(org)
        user_id = None
        if email is not None:
            user = await store.find_user(email.strip().lower())
            if user is None or user.org_id != org_id:
                raise LookupError(f"no user {email!r} in organization {org!r}")
            user_id = user.id
        key = new_api_key()
        record = await store.create_api_key(
            NewApiKeyRecord(
                org_id=org_id,
                name=name,
                key_hash=key.hash,
                key_suffix=key.suffix,
                created_by=user_id,
                max_concurrency=max_concurrency,
                daily_limit_micros=daily_limit_micros,
                monthly_limit_micros=monthly_limit_micros,
                requests_per_minute=requests_per_minute,
                characters_per_minute=characters_per_minute,
            )
        )
        if credit_micros:
            await store.topup(org_id, credit_micros, "admin", "granted with the key")
        click.echo(f"created key {record.id} (…{key.suffix}) for {org}; credit +{credit_micros} micro-dollars", err=True)
        return key.secret
    finally:
        await store.close()


def _adjust_credit(org: str, micros: int, reason: str) -> None:
    async def run(store: Store) -> int:
        return (await store.topup(await _org_id(store, org, False), micros, "admin", reason)).balance_micros

    balance = _run_admin(run)
    click.echo(f"{org}: balance {balance} micro-dollars", err=True)


def _credit_command(name: str, sign: int, summary: str) -> None:
    @admin.command(name, help=summary)
    @click.option("--org", required=True)
    @click.option("--usd", required=True, help="Amount in dollars.")
    @click.option("--reason", required=True, help="Kept on the ledger row.")
    def command(org: str, usd: str, reason: str) -> None:
        micros = _usd_micros(usd)
        if micros == 0:
            raise click.BadParameter("amount must be positive", param_hint="--usd")
        _adjust_credit(org, sign * micros, reason)


_credit_command("grant-credit", 1, "Top up an organization's wallet (a `topup` ledger row with source `admin`).")
_credit_command(
    "revoke-credit", -1, "Take credit back (a negative `topup` row, source `admin`); never below the money on hold."
)


@admin.command("balance")
@click.option("--org", required=True)
def balance(org: str) -> None:
    """Print the wallet as JSON: {balanceMicros, reservedMicros}."""

    async def run(store: Store) -> dict[str, int]:
        snap = await store.wallet(await _org_id(store, org, False))
        return {"balanceMicros": snap.balance_micros, "reservedMicros": snap.reserved_micros}

    click.echo(json.dumps(_run_admin(run)))


@click.group("engine")
def engine_group() -> None:
    """Run local engines as an HTTP service that gateways reach through an engine's `url:`."""


@engine_group.command("serve")
@click.option("--engine", "engine_ids", multiple=True, required=True, help="An engine of the `local` provider's config (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, type=int)
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False), help="Config file (default: VOXROUTER_CONFIG, else the packaged default).")
@click.option("--log-level", default="info", show_default=True)
def engine_serve(engine_ids: tuple[str, ...], host: str, port: int, config_path: str | None, log_level: str) -> None:
    """Serve the named engines (settings from the `local` provider's `options.engines`; `url` is ignored).

    Set VOXROUTER_ENGINE_TOKEN to require `Authorization: Bearer <token>` on every route but /healthz.
    """
    import uvicorn

    from voxrouter.local_engines.registry import build_engine
    from voxrouter.local_engines.runner import EngineRunner
    from voxrouter.providers.local import LocalOptions
    from voxrouter.router.config import load_config
    from voxrouter.router.engine_node import create_engine_app

    try:
        config = load_config(config_path)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    local = [spec for spec in config.providers.values() if spec.adapter == "local"]
    if not local:
        raise click.UsageError("the config has no provider with `adapter: local`")
    configured = LocalOptions.model_validate(local[0].options).engines
    runners: dict[str, EngineRunner] = {}
    for engine_id in dict.fromkeys(engine_ids):
        spec = configured.get(engine_id)
        if spec is None:
            raise click.BadParameter(
                f"unknown engine {engine_id!r}; configured: {', '.join(configured) or 'none'}", param_hint="--engine"
            )
        try:
            engine = build_engine(spec.engine, engine_id, spec.engine_settings())
        except Exception as exc:
            raise click.ClickException(f"engine {engine_id}: {exc}") from None
        runners[engine_id] = EngineRunner(engine, spec.runner_settings())
    uvicorn.run(create_engine_app(runners), host=host, port=port, log_level=log_level)


# The commands voxrouter/cli.py loads by name (its SERVER_COMMANDS lists them without importing this module).
COMMANDS: dict[str, click.Command] = {"serve": serve, "engine": engine_group, "admin": admin}
