"""The `voxrouter` command: `serve` the gateway, and offline `admin` tasks on its database."""

from __future__ import annotations

import asyncio
import decimal
import sys

import click

from router.settings import Settings

MICROS_PER_USD = 1_000_000


def usd_to_micros(value: str) -> int:
    try:
        micros = decimal.Decimal(value) * MICROS_PER_USD
    except decimal.InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount in dollars") from None
    if micros < 0 or micros != micros.to_integral_value():
        raise click.BadParameter(f"{value!r}: use a non-negative amount with at most 6 decimals")
    return int(micros)


@click.group()
def main() -> None:
    """VoxRouter: one OpenAI-compatible endpoint for every TTS provider."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--log-level", default="info", show_default=True)
def serve(host: str, port: int, log_level: str) -> None:
    """Run the gateway (database from VOXROUTER_DATABASE_URL, config from VOXROUTER_CONFIG)."""
    import uvicorn

    uvicorn.run("router.app:create_app", factory=True, host=host, port=port, log_level=log_level)


@main.group()
def admin() -> None:
    """Offline operator tasks against the configured database."""


@admin.command("create-key")
@click.option("--org", required=True, help="Organization name (created if new).")
@click.option("--name", required=True, help="A name for the key.")
@click.option("--credit-usd", default="0", show_default=True, help="Credit to grant the organization.")
def create_key(org: str, name: str, credit_usd: str) -> None:
    """Create an API key; prints only the secret on stdout (it is never shown again)."""
    credit = usd_to_micros(credit_usd)
    secret = asyncio.run(_create_key(Settings.from_env(), org, name, credit))
    click.echo(secret)


async def _create_key(settings: Settings, org: str, name: str, credit_micros: int) -> str:
    from router.auth import new_api_key
    from router.store import open_store

    store = await open_store(settings.database_url)
    try:
        org_id = await store.ensure_org(org)
        key = new_api_key()
        record = await store.create_api_key(org_id, name, key.key_hash, key.suffix)
        if credit_micros:
            await store.topup(org_id, credit_micros, "admin")
        click.echo(f"created key {record.id} (…{key.suffix}) for {org}; credit +{credit_micros} micro-dollars", err=True)
        return key.secret
    finally:
        await store.close()


@admin.command("grant-credit")
@click.option("--org", required=True)
@click.option("--usd", required=True, help="Amount in dollars.")
def grant_credit(org: str, usd: str) -> None:
    """Top up an organization's wallet (a `topup` ledger row with source `admin`)."""
    micros = usd_to_micros(usd)
    if micros == 0:
        raise click.BadParameter("amount must be positive", param_hint="--usd")
    balance = asyncio.run(_grant(Settings.from_env(), org, micros))
    click.echo(f"{org}: balance {balance} micro-dollars", err=True)


async def _grant(settings: Settings, org: str, micros: int) -> int:
    from router.store import open_store

    store = await open_store(settings.database_url)
    try:
        org_id = await store.ensure_org(org)
        return (await store.topup(org_id, micros, "admin")).balance_micros
    finally:
        await store.close()


@main.group("engine")
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

    from local_engines.registry import build_engine
    from local_engines.runner import EngineRunner
    from local_engines.server import create_engine_app
    from providers.local import LocalOptions
    from router.config import load_config

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


if __name__ == "__main__":
    sys.exit(main())
