"""The `voxrouter` user commands as a user runs them: subprocesses against a live gateway,
checking stdout, stderr and the exit code; billing against mocked routes in-process."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import av
import httpx
import pytest
import respx
from click.testing import CliRunner

from tests.audio_checks import decoded_duration_s
from tests.conftest import Gateway, emulated_config, running_gateway
from tests.emulators import stripe_emu
from tests.emulators.server import LoopbackServer
from tests.emulators.stripe_emu import StripeState
from tests.processes import ROOT, clean_env, free_port
from voxrouter import saved_login as cli_config
from voxrouter import user_commands as commands
from voxrouter.cli import main
from voxrouter.router.http.app import create_app
from voxrouter.router.settings import Settings

PASSWORD = "correct horse battery"
SPEECH = ("--voice", "alloy", "--model", "openai/tts-1")


@dataclasses.dataclass
class Run:
    code: int
    raw: bytes
    err: str

    @property
    def out(self) -> str:
        return self.raw.decode()


class Voxrouter:
    """`python -m voxrouter.cli ...` with a clean environment: this gateway, this key, a config
    directory of the test's own."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "voxrouter.cli", *args]

    def environ(self, **env: str | None) -> dict[str, str]:
        merged = {**self.env, **env}
        return {k: v for k, v in merged.items() if v is not None}

    def __call__(self, *args: str, stdin: bytes | None = None, **env: str | None) -> Run:
        done = subprocess.run(self.argv(*args), env=self.environ(**env), cwd=ROOT, capture_output=True, input=stdin, timeout=60)
        return Run(done.returncode, done.stdout, done.stderr.decode())

    def popen(self, *args: str, **env: str | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv(*args), env=self.environ(**env), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # A shell may start background jobs with SIGINT ignored; a user's terminal does not.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def _cli(tmp_path: Path, **env: str) -> Voxrouter:
    return Voxrouter(clean_env(VOXROUTER_CONFIG_DIR=str(tmp_path / "voxrouter-config"), **env))


# The CLI sees only HTTP, so its subprocess tests run against the SQLite gateway alone (both
# databases behind these routes are covered by test_accounts.py and test_client.py); CI has 2 cores.
sqlite_only = pytest.mark.parametrize("database_engine", ["sqlite"], indirect=True)


@pytest.fixture
def vox(gateway, api_key, tmp_path) -> Voxrouter:
    return _cli(tmp_path, VOXROUTER_BASE_URL=gateway.url, VOXROUTER_API_KEY=api_key)


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def _wire(gateway, path: str, token: str) -> Any:
    response = httpx.get(gateway.url + path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()


def _register(url: str) -> dict[str, Any]:
    email = f"cli{uuid.uuid4().hex[:10]}@example.com"
    response = httpx.post(url + "/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return {**response.json(), "email": email}


def _save_session(vox: Voxrouter, base_url: str, token: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(cli_config.CONFIG_DIR_ENV, vox.env[cli_config.CONFIG_DIR_ENV])
    return cli_config.save({"base_url": base_url, "session_token": token, "expires_at": "2099-01-01T00:00:00.000Z", "user_id": "usr_x"})


def _parallel(vox: Voxrouter, argvs: list[list[str]], envs: list[dict[str, str | None]] | None = None) -> list[Run]:
    """Independent commands side by side: most of each run is the interpreter starting."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda i: vox(*argvs[i], **(envs[i] if envs else {})), range(len(argvs))))


def _lines(text: str) -> list[str]:
    return text.splitlines()


# --- data plane -------------------------------------------------------------------------------


@sqlite_only
def test_read_commands_print_the_wire_json(vox, gateway, api_key):
    reads = [
        (["voices", "--json"], "/v1/voices"),
        (["voices", "--provider", "openai,cartesia", "--language", "en", "--gender", "female", "--json"],
         "/v1/voices?provider=openai,cartesia&language=en&gender=female"),
        (["providers", "--json"], "/v1/providers"),
        (["status", "--json"], "/v1/status"),
        (["credits", "--json"], "/v1/credits"),
        (["activity", "--limit", "5", "--json"], "/v1/credits/activity?limit=5"),
        (["usage", "--days", "2", "--limit", "3", "--json"], "/v1/usage?days=2&limit=3"),  # with the key: no session saved
        (["whoami", "--json"], "/v1/auth/whoami"),
    ]
    runs = _parallel(vox, [args for args, _ in reads])
    for (args, path), run in zip(reads, runs):
        assert (run.code, run.err) == (0, ""), (args, run.err)
        assert json.loads(run.out) == _wire(gateway, path, api_key), args
    filtered = json.loads(runs[1].out)["voices"]
    assert filtered and {v["provider"] for v in filtered} <= {"openai", "cartesia"}
    assert all(v["labels"]["gender"] == "female" and v["language"].lower().startswith("en") for v in filtered)

    # The flag wins over VOXROUTER_BASE_URL, on the group or on the command.
    group = vox("--base-url", gateway.url, "status", "--json", VOXROUTER_BASE_URL=_closed_url())
    command = vox("status", "--json", "--base-url", gateway.url + "/", VOXROUTER_BASE_URL=_closed_url())
    assert group.code == command.code == 0 and json.loads(group.out) == json.loads(command.out) == _wire(gateway, "/v1/status", api_key)


@sqlite_only
def test_read_commands_print_tables_with_dollars(vox):
    credits = vox("credits")
    assert credits.code == 0 and [line.split() for line in _lines(credits.out)] == [
        ["BALANCE", "RESERVED", "AVAILABLE"],
        ["$5.0000", "$0.0000", "$5.0000"],
    ]
    activity = vox("activity")
    assert _lines(activity.out)[0].split() == ["CREATED", "KIND", "AMOUNT", "BALANCE", "AFTER", "SOURCE"]
    assert _lines(activity.out)[1].split()[1:] == ["topup", "+$5.0000", "$5.0000", "admin"]
    voices = vox("voices", "--provider", "openai")
    assert _lines(voices.out)[0].split() == ["ID", "PROVIDER", "NAME", "LANGUAGE", "GENDER"]
    assert any(line.split()[:2] == ["alloy", "openai"] for line in _lines(voices.out))
    providers = vox("providers")
    assert any(line.split()[:2] == ["openai", "tts-1"] and "$0.0150" in line for line in _lines(providers.out))
    status = vox("status")
    assert any(line.split()[:2] == ["openai", "available"] for line in _lines(status.out))
    whoami = vox("whoami")
    assert whoami.code == 0 and re.search(r"^auth\s+api_key$", whoami.out, re.M)


@sqlite_only
def test_speech_to_a_file_and_to_stdout(vox, emulators, tmp_path):
    out = tmp_path / "hello.mp3"
    run = vox("speech", "Hello from the command line.", *SPEECH, "--out", str(out), "--provider-options", '{"seed": 7}')
    assert run.code == 0, run.err
    assert run.raw == b""
    assert _lines(run.err) == ["served by openai", f"wrote {out.stat().st_size} bytes to {out}"]
    with av.open(str(out)) as container:
        assert container.format.name == "mp3" and container.streams.audio[0].codec_context.name.startswith("mp3")
    assert decoded_duration_s(out.read_bytes(), "mp3") > 0.5
    assert emulators["openai"].state.requests[-1].body["seed"] == 7  # provider_options reached the provider

    piped = vox("speech", "-", *SPEECH, "--format", "pcm", stdin=b"Read from standard input.")
    assert piped.code == 0 and piped.err == "served by openai\n"
    assert len(piped.raw) % 2 == 0 and 0.5 < decoded_duration_s(piped.raw, "pcm") < 2
    assert emulators["openai"].state.requests[-1].body["input"] == "Read from standard input."


@sqlite_only
def test_speech_shows_progress_only_on_a_terminal(vox, tmp_path):
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        vox.argv("speech", "Progress, please.", *SPEECH, "--out", str(tmp_path / "p.mp3")),
        env=vox.environ(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
    )
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        assert ready, "no output from the command"
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the command closed its end
            break
        if not data:
            break
        seen += data
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    assert b"served by openai" in seen and re.search(rb"\r\d+\.\d KiB received", seen)


@sqlite_only
def test_sigint_during_speech_exits_130_and_leaves_no_partial_file(vox, emulators, tmp_path):
    emulators["openai"].state.behaviour.stream_time_s = 5
    out = tmp_path / "long.mp3"
    proc = vox.popen("speech", "A long story. " * 20, *SPEECH, "--out", str(out))
    try:
        deadline = time.monotonic() + 20
        while not (out.exists() and out.stat().st_size > 0):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no audio arrived"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert stdout == b"" and stderr.decode().splitlines() == ["served by openai", "Interrupted"]
    assert not out.exists()
    deadline = time.monotonic() + 5  # closing the stream made the gateway cancel the upstream
    while emulators["openai"].state.cancelled == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emulators["openai"].state.cancelled == 1 and emulators["openai"].state.completed == 0


# --- errors -----------------------------------------------------------------------------------


def test_usage_errors_exit_2_before_any_network_call(tmp_path):
    # The gateway URL is a closed port: reaching the network at all would be exit 1.
    vox = _cli(tmp_path, VOXROUTER_BASE_URL=_closed_url(), VOXROUTER_API_KEY="pk_not_checked")
    out = str(tmp_path / "a.mp3")
    no_key: dict[str, str | None] = {"VOXROUTER_API_KEY": None}
    cases: list[tuple[list[str], dict[str, str | None], str]] = [
        (["voices"], {"VOXROUTER_API_KEY": " "}, "VOXROUTER_API_KEY is not set"),
        (["speech", "hi", *SPEECH, "--out", out], no_key, "VOXROUTER_API_KEY is not set"),
        (["speech", "hi", *SPEECH, "--out", out, "--provider-options", "[1, 2]"], {}, "must be a JSON object, got list"),
        (["speech", "hi", *SPEECH, "--out", out, "--provider-options", "{nope"], {}, "not valid JSON"),
        (["speech", "hi", "--model", "openai/tts-1", "--out", out], {}, "Missing option '--voice'"),
        (["speech", *SPEECH, "--out", out], {}, "Missing argument 'TEXT'"),
        (["speech", "hi", *SPEECH, "--format", "ogg", "--out", out], {}, "'ogg' is not one of"),
        (["speech", "hi", *SPEECH, "--out", str(tmp_path / "no" / "a.mp3")], {}, "does not exist"),
        (["speech", "  ", *SPEECH, "--out", out], {}, "the text is empty"),
        (["activity", "--limit", "0"], {}, "0 is not in the range 1<=x<=100"),
        (["usage", "--by", "model"], {}, "'model' is not one of 'provider', 'error', 'recent'"),
        (["usage", "--days", "366"], {}, "366 is not in the range 1<=x<=365"),
        (["usage"], no_key, "not logged in"),
        (["whoami"], no_key, "not logged in"),
        (["keys", "list"], {}, "not logged in to"),
        (["keys", "create"], {}, "Missing argument 'NAME'"),
        (["keys", "create", "ci", "--daily-limit-usd", "-1"], {}, "non-negative"),
        (["billing", "balance"], {}, "run `voxrouter login`"),
        (["billing", "topup", "--amount", "12.345"], {}, "whole cents"),
        (["billing", "topup", "--amount", "ten"], {}, "not an amount in dollars"),
        (["billing", "topup", "--amount", "25", "--payment-method", "card_1"], {}, "pm_"),
        (["login", "--timeout", "0"], {}, "0 is not in the range x>=1"),
        (["--base-url", "ftp://example.test", "voices"], {}, "must be an http:// or https:// URL"),
        (["voices", "--bogus"], {}, "No such option '--bogus'"),
        (["nope"], {}, "No such command 'nope'"),
    ]
    runs = _parallel(vox, [case[0] for case in cases], [case[1] for case in cases])
    for (args, _, message), run in zip(cases, runs):
        assert run.code == 2, (args, run.code, run.err)
        assert message in run.err, (args, run.err)
        assert run.raw == b"" and "connection_error" not in run.err
    assert not (tmp_path / "a.mp3").exists()


@sqlite_only
def test_api_errors_are_one_line_and_exit_1(vox, gateway, key_factory, tmp_path):
    out = tmp_path / "never.mp3"
    unknown = vox("speech", "hi", "--voice", "alloy", "--model", "nope/x", "--out", str(out))
    assert (unknown.code, unknown.err, unknown.raw) == (1, "Error 400 invalid_model - unknown_provider: nope\n", b"")
    assert not out.exists()
    broke = vox("speech", "hi", *SPEECH, VOXROUTER_API_KEY=key_factory(0.0))
    assert broke.code == 1 and len(_lines(broke.err)) == 1 and broke.err.startswith("Error 402 insufficient_credit - ")
    wrong = vox("voices", VOXROUTER_API_KEY="pk_wrong")
    assert wrong.code == 1 and len(_lines(wrong.err)) == 1 and wrong.err.startswith("Error 401 unauthorized - ")  # no login hint: a key
    closed = _closed_url()
    offline = vox("credits", VOXROUTER_BASE_URL=closed)
    assert (offline.code, offline.err) == (1, f"Error 0 connection_error - could not reach {closed}\n")


# --- account, keys, usage, billing (session) --------------------------------------------------


@sqlite_only
def test_session_commands(vox, gateway, monkeypatch):
    account = _register(gateway.url)
    token = account["session_token"]
    config = _save_session(vox, gateway.url, token, monkeypatch)

    created = vox("keys", "create", "ci-bot", "--max-concurrency", "2", "--daily-limit-usd", "1.5")
    assert created.code == 0, created.err
    secret = created.out.strip()
    assert created.out == secret + "\n" and secret.startswith("pk_") and secret not in created.err
    listed = _wire(gateway, "/v1/keys", token)
    assert [(k["name"], k["maxConcurrency"], k["dailyLimitMicros"], k["keySuffix"]) for k in listed] == [("ci-bot", 2, 1_500_000, secret[-4:])]
    key_id = listed[0]["id"]
    assert created.err == f"Created key {key_id} ('ci-bot', ending in {secret[-4:]}); the secret is shown only once.\n"
    # A request the new key cannot pay for: usage has an error row to show.
    refused = httpx.post(
        gateway.url + "/v1/audio/speech", json={"model": "openai/tts-1", "voice": "alloy", "input": "hi"}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert refused.status_code == 402

    reads = _parallel(vox, [
        ["whoami", "--json"], ["whoami"], ["keys", "list", "--json"], ["keys", "list"], ["usage", "--json"], ["usage"],
        ["usage", "--by", "error"], ["usage", "--by", "recent", "--limit", "1"], ["billing", "balance", "--json"],
        ["billing", "methods"], ["billing", "topup", "--amount", "10", "--payment-method", "pm_1"],
    ])
    me, me_table, keys, keys_table, usage, report, by_error, recent, balance, methods, topup = reads
    assert all(run.code == 0 for run in reads[:9]), [run.err for run in reads]
    assert json.loads(me.out) == _wire(gateway, "/v1/auth/whoami", token) and json.loads(me.out)["auth"] == "session"
    assert re.search(rf"^email\s+{re.escape(account['email'])}$", me_table.out, re.M)
    assert json.loads(keys.out) == _wire(gateway, "/v1/keys", token)  # lastUsedAt is set by now
    assert _lines(keys_table.out)[0].split()[:4] == ["ID", "NAME", "ENDS", "IN"]
    assert _lines(keys_table.out)[1].split()[:3] == [key_id, "ci-bot", secret[-4:]]
    assert json.loads(usage.out) == _wire(gateway, "/v1/usage", token)
    rows = [line.split() for line in _lines(report.out)]
    assert rows[:2] == [["REQUESTS", "COST", "ERRORS"], ["1", "$0.0000", "1"]]
    assert ["PROVIDER", "REQUESTS", "COST"] in rows and ["insufficient_credit", "1"] in rows
    assert [line.split() for line in _lines(by_error.out)] == [["ERROR", "COUNT"], ["insufficient_credit", "1"]]
    assert len(_lines(recent.out)) == 2
    assert _lines(recent.out)[1].split()[1:] == ["402", "openai", "openai/tts-1", "$0.0000", "insufficient_credit"]
    assert json.loads(balance.out) == _wire(gateway, "/v1/credits", token) == {"balanceMicros": 0, "reservedMicros": 0}
    # The billing routes may not be deployed on this gateway (404), or have no Stripe keys (503).
    for billing in (methods, topup):
        assert billing.code == 1 and len(_lines(billing.err)) == 1, billing.err
        assert re.match(r"Error (404 not_found|503 \w+) - ", billing.err)

    as_json = json.loads(vox("keys", "create", "second", "--json").out)
    assert as_json["secret"].startswith("pk_") and as_json["key"]["name"] == "second"
    deleted = vox("keys", "delete", key_id)
    assert (deleted.code, deleted.out) == (0, f"Revoked key {key_id}\n")
    again = vox("keys", "delete", key_id)
    assert again.code == 1 and _lines(again.err) == [f"Error 404 not_found - no key {key_id!r} in your organization"]

    # A session issued by another gateway is never sent to this one.
    _save_session(vox, "http://elsewhere.test", token, monkeypatch)
    elsewhere = vox("keys", "list")
    assert elsewhere.code == 2 and "the saved session is for http://elsewhere.test" in elsewhere.err
    _save_session(vox, gateway.url, token, monkeypatch)

    logout = vox("logout")
    assert (logout.code, logout.err) == (0, "Logged out.\n")
    assert json.loads(config.read_text()) == {"base_url": gateway.url}
    assert httpx.get(gateway.url + "/v1/auth/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert vox("logout").err == "Not logged in.\n"


@sqlite_only
def test_a_401_on_a_session_command_hints_at_login(vox, gateway, monkeypatch):
    _save_session(vox, gateway.url, "vr_session_revoked-or-made-up", monkeypatch)
    for args in (["keys", "list"], ["usage"], ["billing", "balance"]):
        run = vox(*args)
        assert run.code == 1 and run.raw == b""
        assert len(_lines(run.err)) == 2 and run.err.startswith("Error 401 unauthorized - "), run.err
        assert _lines(run.err)[1] == "Hint: run `voxrouter login`"


@pytest.fixture
def stripe_gateway(emulators, tmp_path) -> Iterator[tuple[Gateway, StripeState]]:
    """A SQLite gateway that takes payments, through a loopback Stripe emulator."""
    state = StripeState(api_key=f"sk_test_{uuid.uuid4().hex}")
    with LoopbackServer(stripe_emu.create_app(state)) as stripe:
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'billing.db'}",
            config=emulated_config(emulators),
            stripe_api_key=state.api_key,
            stripe_webhook_secret=f"whsec_test_{uuid.uuid4().hex}",
            stripe_api_base=stripe.url,
        )
        with LoopbackServer(create_app(settings), lifespan="on") as server:
            yield Gateway(server, settings), state


def test_billing_amounts_out_of_bounds_are_refused_by_the_gateway(stripe_gateway, tmp_path, monkeypatch):
    # The bounds are the gateway's config (`billing:`); the CLI keeps no copy and shows the refusal.
    gateway, stripe = stripe_gateway
    vox = _cli(tmp_path, VOXROUTER_BASE_URL=gateway.url)
    _save_session(vox, gateway.url, _register(gateway.url)["session_token"], monkeypatch)
    topup_bounds = "Error 400 invalid_body - amountCents: must be from 1000 to 100000 ($10.00 to $1,000.00)\n"
    cases = [
        (["billing", "topup", "--amount", "5", "--payment-method", "pm_1"], topup_bounds),
        (["billing", "topup", "--amount", "1000.01", "--payment-method", "pm_1"], topup_bounds),
        (["billing", "checkout", "--amount", "4.99"], "Error 400 invalid_body - amountCents: must be from 500 to 100000 ($5.00 to $1,000.00)\n"),
    ]
    runs = _parallel(vox, [args for args, _ in cases])
    for (args, message), run in zip(cases, runs):
        assert (run.code, run.err, run.raw) == (1, message, b""), args
    assert stripe.calls == [] and stripe.intents_created == 0  # refused before any payment was started


# --- device login -----------------------------------------------------------------------------


def _read_user_code(proc: subprocess.Popen[bytes], timeout_s: float = 20) -> tuple[str, list[str]]:
    """The user code `login` prints on stderr (read unbuffered, so what follows stays for communicate())."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            data = os.read(fd, 4096)
            assert data, f"login ended early: {seen!r}"
            seen += data
            if match := re.search(rb"confirm the code ([A-Z]{4}-[A-Z]{4})\n", seen):
                return match.group(1).decode(), seen.decode().splitlines()
    raise AssertionError(f"no user code printed: {seen!r}")


@pytest.fixture(scope="module")
def quick_login_gateway(emulators, tmp_path_factory) -> Iterator[Any]:
    """A gateway whose device codes ask to be polled every second (the default is 5)."""
    config = emulated_config(emulators)
    config = config.model_copy(update={"auth": config.auth.model_copy(update={"device_poll_interval_s": 1})})
    with running_gateway(tmp_path_factory.mktemp("login"), config) as gw:
        yield gw


def test_device_login_end_to_end(quick_login_gateway, tmp_path):
    gw = quick_login_gateway
    vox = _cli(tmp_path, VOXROUTER_BASE_URL=gw.url)
    account = _register(gw.url)
    approver = {"Authorization": f"Bearer {account['session_token']}"}

    proc = vox.popen("login", "--timeout", "30")
    try:
        user_code, printed = _read_user_code(proc)
        assert printed == [f"To sign in, open {gw.url}/device?user_code={user_code}", f"and confirm the code {user_code}"]
        approved = httpx.post(gw.url + "/v1/auth/device/approve", json={"user_code": user_code}, headers=approver)
        assert approved.status_code == 200, approved.text
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    config_dir = Path(vox.env[cli_config.CONFIG_DIR_ENV])
    config_file = config_dir / "config.json"
    assert proc.returncode == 0, stderr
    assert stdout == b"" and stderr.decode() == f"Logged in as {account['email']} (org {account['org_id']}); session saved in {config_file}\n"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600 and stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    saved = json.loads(config_file.read_text())
    assert set(saved) == {"base_url", "session_token", "expires_at", "user_id"}
    assert saved["base_url"] == gw.url and saved["user_id"] == account["user_id"] and saved["session_token"].startswith("vr_session_")
    assert [p.name for p in config_dir.iterdir()] == ["config.json"]  # no temporary file left behind

    me = vox("whoami", "--json")
    assert me.code == 0 and json.loads(me.out) == _wire(gw, "/v1/auth/whoami", saved["session_token"])
    assert json.loads(me.out)["user_id"] == account["user_id"]
    assert vox("keys", "list", "--json").out.strip() == "[]"

    # Denied in the browser: the CLI stops at the next poll and keeps the session it had.
    proc = vox.popen("login", "--timeout", "30")
    try:
        user_code, _ = _read_user_code(proc)
        httpx.post(gw.url + "/v1/auth/device/approve", json={"user_code": user_code, "approve": False}, headers=approver)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 1 and stderr.decode().splitlines()[-1] == "Error 400 access_denied - the user denied this login"
    assert json.loads(config_file.read_text()) == saved


# --- in-process, against mocked routes --------------------------------------------------------

MOCK = "http://vox.test"
METHODS = [
    {"id": "pm_visa", "brand": "visa", "last4": "4242", "expMonth": 4, "expYear": 2031},
    {"id": "pm_mc", "brand": "mastercard", "last4": "4444", "expMonth": 12, "expYear": 2030},
]


CHECKOUT = {"id": "cs_1", "url": "https://checkout.stripe.test/c/1", "amountCents": 5000, "bonusPercent": 15, "creditMicros": 57_500_000}


@pytest.fixture
def runner(tmp_path, monkeypatch) -> CliRunner:
    for name in ("VOXROUTER_API_KEY", "VOXROUTER_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(cli_config.CONFIG_DIR_ENV, str(tmp_path / "cfg"))
    return CliRunner()


@pytest.fixture
def logged_in(runner) -> CliRunner:
    cli_config.save({"base_url": MOCK, "session_token": "vr_session_mock", "expires_at": "2099-01-01T00:00:00.000Z", "user_id": "usr_1"})
    return runner


def test_billing_methods_and_checkout(logged_in):
    with respx.mock(base_url=MOCK) as mock:
        mock.get("/v1/billing/methods").respond(200, json=METHODS)
        mock.post("/v1/billing/checkout").respond(200, json=CHECKOUT)
        table = logged_in.invoke(main, ["billing", "methods"])
        as_json = logged_in.invoke(main, ["billing", "methods", "--json"])
        checkout = logged_in.invoke(main, ["billing", "checkout", "--amount", "50"])
        checkout_json = logged_in.invoke(main, ["billing", "checkout", "--amount", "50", "--json"])
        assert mock.calls[0].request.headers["authorization"] == "Bearer vr_session_mock"
        assert json.loads(mock.calls[-1].request.content) == {"amountCents": 5000}
    assert table.exit_code == 0 and [line.split() for line in _lines(table.stdout)] == [
        ["ID", "BRAND", "LAST", "4", "EXPIRES"],
        ["pm_visa", "visa", "4242", "04/2031"],
        ["pm_mc", "mastercard", "4444", "12/2030"],
    ]
    assert json.loads(as_json.stdout) == METHODS
    assert (checkout.exit_code, checkout.stdout) == (0, "https://checkout.stripe.test/c/1\n")
    assert checkout.stderr == "Pay $50.0000 on this page; $57.5000 is credited once the payment succeeds.\n"
    assert json.loads(checkout_json.stdout) == CHECKOUT


def test_billing_topup_charges_the_first_saved_card_by_default(logged_in):
    with respx.mock(base_url=MOCK) as mock:
        methods = mock.get("/v1/billing/methods").respond(200, json=METHODS)
        topup = mock.post("/v1/billing/topup").respond(200, json={"payment_intent_id": "pi_1", "status": "succeeded"})
        first = logged_in.invoke(main, ["billing", "topup", "--amount", "25"])
        second = logged_in.invoke(main, ["billing", "topup", "--amount", "$10.50", "--payment-method", "pm_mc", "--json"])
        bodies = [json.loads(call.request.content) for call in topup.calls]
        assert methods.call_count == 1  # an explicit card needs no look-up
    assert first.exit_code == 0, first.output
    assert first.stdout == "Top-up of $25.0000 with pm_visa: succeeded (pi_1)\n"
    assert json.loads(second.stdout) == {"payment_intent_id": "pi_1", "status": "succeeded"}
    assert [(b["amountCents"], b["paymentMethodId"]) for b in bodies] == [(2500, "pm_visa"), (1050, "pm_mc")]
    keys = [b["idempotencyKey"] for b in bodies]
    assert keys[0] != keys[1] and all(uuid.UUID(k).version == 4 for k in keys)


def test_billing_topup_failures(logged_in):
    with respx.mock(base_url=MOCK) as mock:
        mock.get("/v1/billing/methods").respond(200, json=[])
        none_saved = logged_in.invoke(main, ["billing", "topup", "--amount", "20"])
        route = mock.post("/v1/billing/topup")
        route.respond(402, json={"error": "card_declined", "details": "Your card was declined."})
        declined = logged_in.invoke(main, ["billing", "topup", "--amount", "20", "--payment-method", "pm_visa"])
        route.respond(402, json={"error": "stripe_3ds_required", "details": "the card needs 3-D Secure; use `billing checkout`"})
        three_ds = logged_in.invoke(main, ["billing", "topup", "--amount", "20", "--payment-method", "pm_visa"])
        route.respond(401, json={"error": "unauthorized", "details": "invalid or expired session"})
        expired = logged_in.invoke(main, ["billing", "topup", "--amount", "20", "--payment-method", "pm_visa"])
        assert route.call_count == 3
    assert none_saved.exit_code == 1 and "no saved payment method" in none_saved.stderr and none_saved.stdout == ""
    assert (declined.exit_code, declined.stderr) == (1, "Error 402 card_declined - Your card was declined.\n")
    assert three_ds.exit_code == 1 and three_ds.stderr.startswith("Error 402 stripe_3ds_required - ")
    assert expired.exit_code == 1 and _lines(expired.stderr) == [
        "Error 401 unauthorized - invalid or expired session",
        "Hint: run `voxrouter login`",
    ]


def _device_code(interval: int = 5) -> dict[str, Any]:
    return {
        "device_code": "vr_device_1", "user_code": "BCDF-GHJK", "verification_uri": f"{MOCK}/device",
        "verification_uri_complete": f"{MOCK}/device?user_code=BCDF-GHJK", "expires_in": 900, "interval": interval,
    }


def _poll_error(code: str) -> httpx.Response:
    return httpx.Response(400, json={"error": code, "details": code.replace("_", " ")})


class _FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time(monkeypatch) -> _FakeTime:
    clock = _FakeTime()
    monkeypatch.setattr(commands, "_sleep", clock.sleep)
    monkeypatch.setattr(commands, "_clock", lambda: clock.now)
    return clock


def test_login_polls_at_the_interval_and_slows_down(runner, fake_time):
    session = {"session_token": "vr_session_new", "expires_at": "2099-01-01T00:00:00.000Z", "user_id": "usr_1"}
    with respx.mock(base_url=MOCK) as mock:
        mock.post("/v1/auth/device-code").respond(200, json=_device_code())
        mock.post("/v1/auth/poll").mock(
            side_effect=[_poll_error("authorization_pending"), _poll_error("slow_down"), httpx.Response(502), httpx.Response(200, json=session)]
        )
        mock.get("/v1/auth/whoami").respond(200, json={"user_id": "usr_1", "auth": "session", "org_id": "org_1", "email": "a@b.test"})
        result = runner.invoke(main, ["--base-url", MOCK, "login"])
    assert result.exit_code == 0, result.output
    assert fake_time.sleeps == [5, 5, 10, 10]  # slow_down adds 5 seconds for good; a 502 is retried
    assert result.stderr.splitlines()[-1].startswith("Logged in as a@b.test (org org_1)")
    assert cli_config.load() == {"base_url": MOCK, **session}


def test_login_gives_up(runner, fake_time):
    with respx.mock(base_url=MOCK) as mock:
        mock.post("/v1/auth/device-code").respond(200, json=_device_code())
        poll = mock.post("/v1/auth/poll")
        poll.mock(side_effect=lambda request: _poll_error("authorization_pending"))
        timed_out = runner.invoke(main, ["--base-url", MOCK, "login", "--timeout", "12"])
        poll.mock(side_effect=lambda request: _poll_error("expired_token"))
        expired = runner.invoke(main, ["--base-url", MOCK, "login"])
    assert timed_out.exit_code == 1 and "not approved in time" in timed_out.stderr
    assert fake_time.sleeps[:3] == [5, 5, 2]
    assert expired.exit_code == 1 and expired.stderr.splitlines()[-1] == "Error 400 expired_token - expired token"
    assert cli_config.load() == {}
