"""The user commands of `voxrouter`: the data plane (an API key from VOXROUTER_API_KEY), the
account (a session from `voxrouter login`), billing and usage. Every call goes through
`voxrouter.client`; this module only parses flags, picks the credential and prints.

Exit codes: 0 ok, 1 an API or runtime error (one stderr line `Error <status> <code> - <details>`),
2 a usage error, always found before any network call. `--json` prints the body as the gateway
sent it; otherwise a table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import click

from voxrouter import money
from voxrouter import saved_login as cli_config
from voxrouter.client import (
    AUDIO_FORMATS,
    DEFAULT_BASE_URL,
    Activity,
    AudioFormat,
    Checkout,
    Client,
    CreatedKey,
    Credits,
    Key,
    PaymentMethod,
    Provider,
    Session,
    SpeechStream,
    Usage,
    VoicesResponse,
    VoxRouterError,
    WhoAmI,
)

API_KEY_ENV = "VOXROUTER_API_KEY"
BASE_URL_ENV = "VOXROUTER_BASE_URL"
LOGIN_HINT = "Hint: run `voxrouter login`"
INTERRUPTED = 130  # 128 + SIGINT, as shells report it
_META_BASE_URL = "voxrouter.base_url"

# The device flow waits on these; tests swap them to run it without waiting.
_sleep: Callable[[float], None] = time.sleep
_clock: Callable[[], float] = time.monotonic

T = TypeVar("T")


# --- errors ---------------------------------------------------------------------------------


class ApiFailure(click.ClickException):
    """A `VoxRouterError` on its way out: one stderr line, exit 1, and the login hint for a 401
    on a session."""

    def __init__(self, error: VoxRouterError, hint: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.hint = hint

    def show(self, file: Any = None) -> None:
        click.echo(" ".join(str(self.error).splitlines()), err=True)
        if self.hint:
            click.echo(LOGIN_HINT, err=True)


@contextlib.contextmanager
def _api(session: bool = False) -> Iterator[None]:
    try:
        yield
    except VoxRouterError as exc:
        raise ApiFailure(exc, hint=session and exc.status == 401) from None


# --- where, and as whom ---------------------------------------------------------------------


def _remember_base_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:  # the subcommand's flag is parsed after the group's, so it wins
        ctx.meta[_META_BASE_URL] = value


base_url_option = click.option(
    "--base-url",
    metavar="URL",
    expose_value=False,
    callback=_remember_base_url,
    help=f"The gateway (default: ${BASE_URL_ENV}, else the saved config, else {DEFAULT_BASE_URL}).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the gateway's JSON exactly as it was sent.")


@dataclasses.dataclass(frozen=True)
class _Target:
    base_url: str
    saved: cli_config.SavedConfig

    @property
    def session(self) -> str | None:
        """The saved session, if it was issued by this gateway (it is never sent to another)."""
        token = self.saved.get("session_token")
        issuer = self.saved.get("base_url", DEFAULT_BASE_URL).rstrip("/")
        return token if token and issuer == self.base_url else None


def _target(ctx: click.Context) -> _Target:
    try:
        saved = cli_config.load()
    except cli_config.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    base_url = ctx.meta.get(_META_BASE_URL) or os.environ.get(BASE_URL_ENV) or saved.get("base_url") or DEFAULT_BASE_URL
    base_url = base_url.strip().rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise click.UsageError(f"--base-url must be an http:// or https:// URL, got {base_url!r}")
    return _Target(base_url, saved)


def _not_logged_in(target: _Target) -> click.UsageError:
    issuer = target.saved.get("base_url")
    if target.saved.get("session_token") and issuer and issuer.rstrip("/") != target.base_url:
        return click.UsageError(f"not logged in to {target.base_url} (the saved session is for {issuer}); run `voxrouter login`")
    return click.UsageError(f"not logged in to {target.base_url}; run `voxrouter login`")


def _api_key() -> str | None:
    return os.environ.get(API_KEY_ENV, "").strip() or None


def _key_client(ctx: click.Context) -> Client:
    target = _target(ctx)
    key = _api_key()
    if key is None:
        raise click.UsageError(f"{API_KEY_ENV} is not set; create a key with `voxrouter keys create NAME` and export it")
    return Client(target.base_url, key)


def _session_client(ctx: click.Context) -> Client:
    target = _target(ctx)
    if target.session is None:
        raise _not_logged_in(target)
    return Client(target.base_url, target.session)


def _session_or_key_client(ctx: click.Context) -> tuple[Client, bool]:
    """The session if there is one, else the API key; and whether it is the session."""
    target = _target(ctx)
    if target.session is not None:
        return Client(target.base_url, target.session), True
    key = _api_key()
    if key is None:
        raise click.UsageError(f"not logged in to {target.base_url} and {API_KEY_ENV} is not set; run `voxrouter login`")
    return Client(target.base_url, key), False


# --- output ---------------------------------------------------------------------------------


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [list(headers), *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip())


def _fields(pairs: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        click.echo(f"{name.ljust(width)}  {_cell(value)}")


def _show(data: T, as_json: bool, render: Callable[[T], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        render(data)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python's json would take NaN and Infinity


def _json_object(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value, parse_constant=_no_constant)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"must be a JSON object, got {type(parsed).__name__}")
    return parsed


# --- data plane (API key) -------------------------------------------------------------------


@click.command()
@click.option("--provider", metavar="A,B", help="Only these providers (comma-separated ids).")
@click.option("--language", help="Language prefix, e.g. en or en-US.")
@click.option("--gender", help="e.g. female.")
@_json_option
@base_url_option
@click.pass_context
def voices(ctx: click.Context, provider: str | None, language: str | None, gender: str | None, as_json: bool) -> None:
    """List voices across providers."""
    with _key_client(ctx) as client, _api():
        data = client.voices(provider=provider, language=language, gender=gender)
    _show(data, as_json, _voices_table)


def _voices_table(data: VoicesResponse) -> None:
    rows = [(v["id"], v["provider"], v["name"], v["language"], v["labels"].get("gender")) for v in data["voices"]]
    _table(["ID", "PROVIDER", "NAME", "LANGUAGE", "GENDER"], rows)


@click.command()
@click.argument("text")
@click.option("--voice", required=True, metavar="ID", help="A voice id (see `voxrouter voices`) or an alias's voice.")
@click.option("--model", required=True, metavar="PROVIDER/MODEL", help="e.g. openai/tts-1, local/kokoro, or an alias.")
@click.option("--format", "response_format", type=click.Choice(AUDIO_FORMATS), default="mp3", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the audio to this file (default: stdout).")
@click.option("--provider-options", callback=_json_object, metavar="JSON", help="A JSON object passed to the provider.")
@base_url_option
@click.pass_context
def speech(
    ctx: click.Context,
    text: str,
    voice: str,
    model: str,
    response_format: AudioFormat,
    out: Path | None,
    provider_options: dict[str, Any] | None,
) -> None:
    """Synthesize TEXT ("-" reads it from stdin), streaming the audio as it arrives."""
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise click.BadParameter("the text is empty", param_hint="TEXT")
    if out is None and sys.stdout.isatty():
        raise click.UsageError("refusing to write audio to a terminal; use --out FILE or redirect stdout")
    if out is not None and not out.parent.is_dir():
        raise click.BadParameter(f"directory {str(out.parent)!r} does not exist", param_hint="--out")
    client = _key_client(ctx)
    try:
        with client, _api():
            with client.speech(text, voice=voice, model=model, response_format=response_format, provider_options=provider_options) as audio:
                click.echo(f"served by {audio.provider or 'unknown'}", err=True)
                size = _receive(audio, out)
    except KeyboardInterrupt:
        click.echo("Interrupted", err=True)
        ctx.exit(INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`| head -c`): stop, and keep Python from failing again on exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise click.ClickException("the output was closed before the audio ended") from None
    if out is not None:
        click.echo(f"wrote {size} bytes to {out}", err=True)


class _Progress:
    """Bytes received so far, redrawn in place on a terminal's stderr."""

    def __init__(self) -> None:
        self._drawn = 0.0

    def update(self, size: int) -> None:
        now = time.monotonic()
        if now - self._drawn >= 0.1:
            self._drawn = now
            click.echo(f"\r{size / 1024:.1f} KiB received", err=True, nl=False)

    def done(self, size: int) -> None:
        click.echo(f"\r{size / 1024:.1f} KiB received", err=True)


def _receive(audio: SpeechStream, out: Path | None) -> int:
    """Copy the audio to `out` (removed again if the copy does not finish) or to stdout."""
    progress = _Progress() if sys.stderr.isatty() else None
    sink = out.open("wb") if out is not None else sys.stdout.buffer
    size = 0
    try:
        for chunk in audio.iter_bytes():
            sink.write(chunk)
            sink.flush()  # whoever reads the pipe or the file gets each chunk as it arrives
            size += len(chunk)
            if progress:
                progress.update(size)
    except BaseException:
        if out is not None:
            sink.close()
            out.unlink(missing_ok=True)
        raise
    if out is not None:
        sink.close()
    if progress:
        progress.done(size)
    return size


@click.command()
@_json_option
@base_url_option
@click.pass_context
def providers(ctx: click.Context, as_json: bool) -> None:
    """List providers and their models (price per 1,000 characters)."""
    with _key_client(ctx) as client, _api():
        data = client.providers()
    _show(data, as_json, _providers_table)


def _providers_table(data: list[Provider]) -> None:
    rows = [
        (p["id"], m["id"], ",".join(m["response_formats"]), money.format_usd(m["price_micros_per_1k_chars"]), m["max_input_chars"])
        for p in data
        for m in p["models"]
    ]
    _table(["PROVIDER", "MODEL", "FORMATS", "PRICE/1K CHARS", "MAX CHARS"], rows)


@click.command()
@_json_option
@base_url_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Live health of each provider."""
    with _key_client(ctx) as client, _api():
        data = client.status()
    _show(data, as_json, lambda rows: _table(["PROVIDER", "STATE", "REASON"], [(s["id"], s["state"], s.get("reason")) for s in rows]))


def _wallet_table(data: Credits) -> None:
    balance, reserved = data["balanceMicros"], data["reservedMicros"]
    _table(["BALANCE", "RESERVED", "AVAILABLE"], [(money.format_usd(balance), money.format_usd(reserved), money.format_usd(balance - reserved))])


@click.command()
@_json_option
@base_url_option
@click.pass_context
def credits(ctx: click.Context, as_json: bool) -> None:
    """The wallet: balance, money on hold, available."""
    with _key_client(ctx) as client, _api():
        data = client.credits()
    _show(data, as_json, _wallet_table)


@click.command()
@click.option("--limit", type=click.IntRange(1, 100), default=None, help="Rows, newest first (1-100; default 20).")
@_json_option
@base_url_option
@click.pass_context
def activity(ctx: click.Context, limit: int | None, as_json: bool) -> None:
    """The wallet's ledger: top-ups, holds, commits and refunds."""
    with _key_client(ctx) as client, _api():
        data = client.activity(limit=limit)
    _show(data, as_json, _activity_table)


def _activity_table(data: list[Activity]) -> None:
    rows = [
        (a["createdAt"], a["kind"], money.format_usd(a["microsDelta"], signed=True), money.format_usd(a["microsBalanceAfter"]), a["source"])
        for a in data
    ]
    _table(["CREATED", "KIND", "AMOUNT", "BALANCE AFTER", "SOURCE"], rows)


# --- account (session) ----------------------------------------------------------------------


@click.command()
@click.option("--timeout", type=click.IntRange(min=1), default=None, metavar="SECONDS", help="Give up after this long (default: when the code expires).")
@base_url_option
@click.pass_context
def login(ctx: click.Context, timeout: int | None) -> None:
    """Sign in with a browser (RFC 8628 device flow) and save the session."""
    target = _target(ctx)
    with Client(target.base_url) as client, _api():
        start = client.device_code()
        click.echo(f"To sign in, open {start['verification_uri_complete']}", err=True)
        click.echo(f"and confirm the code {start['user_code']}", err=True)
        session = _await_approval(client, start["device_code"], start["interval"], start["expires_in"], timeout)
    path = cli_config.save(
        {
            "base_url": target.base_url,
            "session_token": session["session_token"],
            "expires_at": session["expires_at"],
            "user_id": session["user_id"],
        }
    )
    try:
        with Client(target.base_url, session["session_token"]) as client:
            me = client.whoami()
        who = f"{me.get('email') or session['user_id']} (org {me['org_id']})"
    except VoxRouterError:
        who = session["user_id"]
    click.echo(f"Logged in as {who}; session saved in {path}", err=True)


def _await_approval(client: Client, device_code: str, interval: int, expires_in: int, timeout: int | None) -> Session:
    interval = max(1, interval)
    deadline = _clock() + (expires_in if timeout is None else min(timeout, expires_in))
    while (remaining := deadline - _clock()) > 0:
        _sleep(min(interval, remaining))
        try:
            return client.poll(device_code)
        except VoxRouterError as exc:
            if exc.code == "slow_down":
                interval += 5  # RFC 8628 3.5: for this and every later poll
            elif exc.code != "authorization_pending" and not (exc.status == 0 or exc.status >= 500):
                raise  # denied, expired, unknown: polling again cannot help
    raise click.ClickException("the code was not approved in time; run `voxrouter login` again")


@click.command()
def logout() -> None:
    """End the saved session (on the gateway, then here)."""
    try:
        saved = cli_config.load()
    except cli_config.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    token = saved.get("session_token")
    if not token:
        click.echo("Not logged in.", err=True)
        return
    with Client(saved.get("base_url", DEFAULT_BASE_URL), token) as client, _api(session=True):
        revoked = client.logout()["revoked"]
    cli_config.forget_session()
    click.echo("Logged out." if revoked else "Logged out (the session had already ended).", err=True)


@click.command()
@_json_option
@base_url_option
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """Who the saved session (else VOXROUTER_API_KEY) belongs to."""
    client, is_session = _session_or_key_client(ctx)
    with client, _api(session=is_session):
        data = client.whoami()
    _show(data, as_json, _whoami_fields)


def _whoami_fields(me: WhoAmI) -> None:
    _fields([("user_id", me["user_id"]), ("email", me.get("email")), ("org_id", me["org_id"]), ("auth", me["auth"]), ("expires_at", me.get("expires_at"))])


@click.group()
def keys() -> None:
    """API keys of your organization (needs `voxrouter login`)."""


@keys.command("list")
@_json_option
@base_url_option
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """List the organization's active keys."""
    with _session_client(ctx) as client, _api(session=True):
        data = client.list_keys()
    _show(data, as_json, _keys_table)


def _keys_table(data: list[Key]) -> None:
    rows = [(k["id"], k["name"], k["keySuffix"], k["createdAt"], k["lastUsedAt"], k["maxConcurrency"]) for k in data]
    _table(["ID", "NAME", "ENDS IN", "CREATED", "LAST USED", "MAX CONCURRENCY"], rows)


def _usd_micros_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    try:
        return None if value is None else money.usd_to_micros(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@keys.command("create")
@click.argument("name")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=None, help="Streams at once.")
@click.option("--daily-limit-usd", callback=_usd_micros_option, metavar="USD", help="Spend cap per UTC day.")
@click.option("--monthly-limit-usd", callback=_usd_micros_option, metavar="USD", help="Spend cap per UTC month.")
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's JSON (secret included) instead.")
@base_url_option
@click.pass_context
def keys_create(
    ctx: click.Context, name: str, max_concurrency: int | None, daily_limit_usd: int | None, monthly_limit_usd: int | None, as_json: bool
) -> None:
    """Create a key; prints only the secret on stdout (it is never shown again)."""
    with _session_client(ctx) as client, _api(session=True):
        data = client.create_key(
            name, max_concurrency=max_concurrency, daily_limit_micros=daily_limit_usd, monthly_limit_micros=monthly_limit_usd
        )
    _show(data, as_json, _print_secret)


def _print_secret(data: CreatedKey) -> None:
    key = data["key"]
    click.echo(f"Created key {key['id']} ({key['name']!r}, ending in {key['keySuffix']}); the secret is shown only once.", err=True)
    click.echo(data["secret"])


@keys.command("delete")
@click.argument("key_id", metavar="ID")
@_json_option
@base_url_option
@click.pass_context
def keys_delete(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Revoke a key you created."""
    with _session_client(ctx) as client, _api(session=True):
        data = client.delete_key(key_id)
    _show(data, as_json, lambda revoked: click.echo(f"Revoked key {revoked['id']}"))


# --- billing and usage (session) ------------------------------------------------------------


def _cents(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    # Only the form is checked here: the bounds are the gateway's config, and its 400 names them.
    try:
        return money.usd_to_cents(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _payment_method(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.startswith("pm_"):
        raise click.BadParameter(f"a saved card's id looks like pm_..., got {value!r} (see `voxrouter billing methods`)")
    return value


@click.group()
def billing() -> None:
    """The wallet, saved cards and top-ups (needs `voxrouter login`)."""


@billing.command("balance")
@_json_option
@base_url_option
@click.pass_context
def billing_balance(ctx: click.Context, as_json: bool) -> None:
    """The organization's wallet."""
    with _session_client(ctx) as client, _api(session=True):
        data = client.credits()
    _show(data, as_json, _wallet_table)


@billing.command("methods")
@_json_option
@base_url_option
@click.pass_context
def billing_methods(ctx: click.Context, as_json: bool) -> None:
    """Saved payment methods."""
    with _session_client(ctx) as client, _api(session=True):
        data = client.billing_methods()
    _show(data, as_json, _methods_table)


def _methods_table(data: list[PaymentMethod]) -> None:
    _table(["ID", "BRAND", "LAST 4", "EXPIRES"], [(m["id"], m["brand"], m["last4"], f"{m['expMonth']:02d}/{m['expYear']}") for m in data])


@billing.command("topup")
@click.option("--amount", required=True, callback=_cents, metavar="USD", help="Dollars, e.g. 25 or 10.50; the gateway refuses an amount outside its bounds.")
@click.option("--payment-method", callback=_payment_method, metavar="pm_...", help="A saved card (default: the first of `billing methods`).")
@_json_option
@base_url_option
@click.pass_context
def billing_topup(ctx: click.Context, amount: int, payment_method: str | None, as_json: bool) -> None:
    """Charge a saved card; the wallet is credited once the payment succeeds."""
    with _session_client(ctx) as client, _api(session=True):
        if payment_method is None:
            methods = client.billing_methods()
            if not methods:
                raise click.ClickException("no saved payment method; add a card with `voxrouter billing checkout --amount USD`")
            payment_method = methods[0]["id"]
        # One key per attempt: a retry of this very request is then never charged twice.
        data = client.billing_topup(amount, payment_method)
    charged = f"Top-up of {money.format_usd(amount * money.MICROS_PER_CENT)} with {payment_method}"
    _show(data, as_json, lambda topup: click.echo(f"{charged}: {topup['status']} ({topup['payment_intent_id']})"))


@billing.command("checkout")
@click.option("--amount", required=True, callback=_cents, metavar="USD", help="Dollars, e.g. 25 or 10.50; the gateway refuses an amount outside its bounds.")
@_json_option
@base_url_option
@click.pass_context
def billing_checkout(ctx: click.Context, amount: int, as_json: bool) -> None:
    """Pay in the browser (and save the card); prints the checkout page's URL."""
    with _session_client(ctx) as client, _api(session=True):
        data = client.billing_checkout(amount)
    _show(data, as_json, _print_checkout)


def _print_checkout(data: Checkout) -> None:
    paid = money.format_usd(data["amountCents"] * money.MICROS_PER_CENT)
    click.echo(f"Pay {paid} on this page; {money.format_usd(data['creditMicros'])} is credited once the payment succeeds.", err=True)
    click.echo(data["url"])


_BREAKDOWNS = ("provider", "error", "recent")


@click.command()
@click.option("--days", type=click.IntRange(1, 365), default=None, help="The window (1-365; default 30).")
@click.option("--limit", type=click.IntRange(1, 1000), default=None, help="Recent requests listed (1-1000; default 20).")
@click.option("--by", "breakdown", type=click.Choice(_BREAKDOWNS), default=None, help="Print only this table.")
@_json_option
@base_url_option
@click.pass_context
def usage(ctx: click.Context, days: int | None, limit: int | None, breakdown: str | None, as_json: bool) -> None:
    """Requests, cost and errors over recent days (the session, else VOXROUTER_API_KEY)."""
    client, is_session = _session_or_key_client(ctx)
    with client, _api(session=is_session):
        data = client.usage(days=days, limit=limit)
    _show(data, as_json, lambda report: _usage_tables(report, breakdown))


def _usage_tables(data: Usage, breakdown: str | None) -> None:
    tables: dict[str, Callable[[], None]] = {
        "provider": lambda: _table(
            ["PROVIDER", "REQUESTS", "COST"], [(p["provider"], p["requests"], money.format_usd(p["costMicros"])) for p in data["byProvider"]]
        ),
        "error": lambda: _table(["ERROR", "COUNT"], [(e["code"], e["count"]) for e in data["byErrorCode"]]),
        "recent": lambda: _table(
            ["CREATED", "STATUS", "PROVIDER", "MODEL", "COST", "ERROR"],
            [(r["createdAt"], r["status"], r["provider"], r["model"], money.format_usd(r["costMicros"]), r["code"]) for r in data["recent"]],
        ),
    }
    if breakdown is not None:
        return tables[breakdown]()
    totals = data["totals"]
    _table(["REQUESTS", "COST", "ERRORS"], [(totals["requests"], money.format_usd(totals["costMicros"]), totals["errorCount"])])
    for name in _BREAKDOWNS:
        click.echo()
        tables[name]()


COMMANDS: tuple[click.Command, ...] = (
    voices, speech, providers, status, credits, activity, login, logout, whoami, keys, billing, usage,
)


def register(group: click.Group) -> None:
    """Add the user commands to the `voxrouter` group."""
    for command in COMMANDS:
        group.add_command(command)
