"""router/client.py: every route's request on the wire (respx), error mapping, and both clients
against a live gateway."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import respx

from tests.audio_checks import decoded_duration_s
from tests.processes import free_port
from voxrouter.client import USER_AGENT, AsyncClient, Client, VoxRouterError
from voxrouter.router.http.app import ROUTES

BASE = "http://vox.test"
TOKEN = "vr_session_test"
PASSWORD = "correct horse battery"

# (method name, args, kwargs, HTTP method, route template, path sent, query, JSON body (None: no body), authenticated)
CASES: list[tuple[str, tuple[Any, ...], dict[str, Any], str, str, str, dict[str, str], Any, bool]] = [
    ("voices", (), {}, "GET", "/v1/voices", "/v1/voices", {}, None, True),
    (
        "voices", (), {"provider": ["openai", "cartesia"], "language": "en-US", "gender": "female"},
        "GET", "/v1/voices", "/v1/voices", {"provider": "openai,cartesia", "language": "en-US", "gender": "female"}, None, True,
    ),
    ("voices", (), {"provider": "elevenlabs"}, "GET", "/v1/voices", "/v1/voices", {"provider": "elevenlabs"}, None, True),
    ("providers", (), {}, "GET", "/v1/providers", "/v1/providers", {}, None, True),
    ("status", (), {}, "GET", "/v1/status", "/v1/status", {}, None, True),
    ("credits", (), {}, "GET", "/v1/credits", "/v1/credits", {}, None, True),
    ("activity", (), {"limit": 7}, "GET", "/v1/credits/activity", "/v1/credits/activity", {"limit": "7"}, None, True),
    ("usage", (), {"days": 3, "limit": 50}, "GET", "/v1/usage", "/v1/usage", {"days": "3", "limit": "50"}, None, True),
    ("usage", (), {}, "GET", "/v1/usage", "/v1/usage", {}, None, True),
    (
        "register", ("a@b.test", "pw12345678"), {"organization": "acme"}, "POST", "/v1/auth/register", "/v1/auth/register", {},
        {"email": "a@b.test", "password": "pw12345678", "organization": "acme"}, False,
    ),
    (
        "login", ("a@b.test", "pw12345678"), {}, "POST", "/v1/auth/login", "/v1/auth/login", {},
        {"email": "a@b.test", "password": "pw12345678"}, False,
    ),
    ("device_code", (), {}, "POST", "/v1/auth/device-code", "/v1/auth/device-code", {}, None, False),
    ("poll", ("vr_device_x",), {}, "POST", "/v1/auth/poll", "/v1/auth/poll", {}, {"device_code": "vr_device_x"}, False),
    (
        "approve_device", ("BCDF-GHJK",), {"approve": False}, "POST", "/v1/auth/device/approve", "/v1/auth/device/approve", {},
        {"user_code": "BCDF-GHJK", "approve": False}, True,
    ),
    ("whoami", (), {}, "GET", "/v1/auth/whoami", "/v1/auth/whoami", {}, None, True),
    ("logout", (), {}, "POST", "/v1/auth/logout", "/v1/auth/logout", {}, None, True),
    ("list_keys", (), {}, "GET", "/v1/keys", "/v1/keys", {}, None, True),
    ("create_key", ("ci",), {}, "POST", "/v1/keys", "/v1/keys", {}, {"name": "ci"}, True),
    (
        "create_key", ("ci",), {"max_concurrency": 2, "daily_limit_micros": 5, "monthly_limit_micros": 6, "requests_per_minute": 7,
                                "characters_per_minute": 8},
        "POST", "/v1/keys", "/v1/keys", {},
        {"name": "ci", "maxConcurrency": 2, "dailyLimitMicros": 5, "monthlyLimitMicros": 6, "requestsPerMinute": 7, "charactersPerMinute": 8},
        True,
    ),
    ("delete_key", ("key_1/../x",), {}, "DELETE", "/v1/keys/{key_id}", "/v1/keys/key_1%2F..%2Fx", {}, None, True),
    ("billing_methods", (), {}, "GET", "/v1/billing/methods", "/v1/billing/methods", {}, None, True),
    (
        "billing_topup", (2500, "pm_1"), {"idempotency_key": "idem-1"}, "POST", "/v1/billing/topup", "/v1/billing/topup", {},
        {"amountCents": 2500, "paymentMethodId": "pm_1", "idempotencyKey": "idem-1"}, True,
    ),
    ("billing_checkout", (5000,), {}, "POST", "/v1/billing/checkout", "/v1/billing/checkout", {}, {"amountCents": 5000}, True),
]
_IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]
# (method, path, kwargs, form fields expected besides `file`, whether the 2xx body is text)
MULTIPART_CASES: list[tuple[str, str, dict[str, Any], dict[str, list[str]], bool]] = [
    ("transcribe", "/v1/audio/transcriptions", {}, {"model": ["whisper-1"]}, False),
    (
        "transcribe", "/v1/audio/transcriptions",
        {"model": "local/whisper-tiny.en", "language": "en", "response_format": "verbose_json", "temperature": 0.2,
         "timestamp_granularities": ["word", "segment"]},
        {"model": ["local/whisper-tiny.en"], "language": ["en"], "response_format": ["verbose_json"], "temperature": ["0.2"],
         "timestamp_granularities[]": ["word", "segment"]},
        False,
    ),
    ("transcribe", "/v1/audio/transcriptions", {"response_format": "srt"}, {"model": ["whisper-1"], "response_format": ["srt"]}, True),
    ("translate", "/v1/audio/translations", {"model": "openai/whisper-1", "prompt": "Hi"}, {"model": ["openai/whisper-1"], "prompt": ["Hi"]}, False),
]


def _form(request: httpx.Request) -> tuple[dict[str, list[str]], bytes]:
    """The multipart request's plain fields, and its `file` part's bytes."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + request.content
    )
    fields: dict[str, list[str]] = {}
    audio = b""
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name == "file":
            audio = part.get_payload(decode=True)
        else:
            fields.setdefault(name, []).append(part.get_content().strip())
    return fields, audio


@pytest.mark.parametrize("case", MULTIPART_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(MULTIPART_CASES)])
def test_multipart_requests_on_the_wire(case):
    name, path, kwargs, fields, text = case
    with respx.mock(base_url=BASE) as mock:
        if text:
            mock.route().respond(200, text="1\n00:00:00,000 --> 00:00:01,000\nHi\n")
        else:
            mock.route().respond(200, json={"text": "Hi"})
        with Client(BASE, TOKEN) as client:
            result = getattr(client, name)(b"RIFF-audio", **kwargs)
        request = mock.calls.last.request
    assert result == ("1\n00:00:00,000 --> 00:00:01,000\nHi\n" if text else {"text": "Hi"})
    assert request.method == "POST" and request.url.path == path
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert _form(request) == (fields, b"RIFF-audio")



def _check(request: httpx.Request, case: tuple[Any, ...]) -> None:
    _, _, _, method, _, path, query, body, authenticated = case
    assert request.method == method
    assert request.url.raw_path.decode().split("?")[0] == path
    assert dict(request.url.params) == query
    assert (json.loads(request.content) if request.content else None) == body
    assert request.headers["user-agent"] == USER_AGENT and USER_AGENT.startswith("voxrouter-cli/")
    # Sign-up and the device flow never see the token, even when the client has one.
    assert request.headers.get("authorization") == (f"Bearer {TOKEN}" if authenticated else None)


def test_every_api_route_has_a_client_method():
    api = {(method, route.path) for route in ROUTES if route.include_in_schema for method in route.methods - {"HEAD"}}
    api.discard(("POST", "/v1/billing/webhook"))  # Stripe calls it, not clients
    covered = {(c[3], c[4]) for c in CASES} | {("POST", "/v1/audio/speech")} | {("POST", c[1]) for c in MULTIPART_CASES}
    assert api <= covered, api - covered
    assert {("GET", "/v1/billing/methods"), ("POST", "/v1/billing/topup"), ("POST", "/v1/billing/checkout")} <= covered


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_sync_requests_on_the_wire(case):
    name, args, kwargs = case[:3]
    with respx.mock(base_url=BASE) as mock:
        mock.route().respond(200, json={"wire": [1]})
        with Client(BASE, TOKEN) as client:
            assert getattr(client, name)(*args, **kwargs) == {"wire": [1]}
        _check(mock.calls.last.request, case)


def test_async_requests_on_the_wire():
    async def run(mock: respx.MockRouter) -> None:
        async with AsyncClient(BASE, TOKEN) as client:
            for case in CASES:
                name, args, kwargs = case[:3]
                assert await getattr(client, name)(*args, **kwargs) == {"wire": [1]}
                _check(mock.calls.last.request, case)

    with respx.mock(base_url=BASE) as mock:
        mock.route().respond(200, json={"wire": [1]})
        asyncio.run(run(mock))


def test_a_topup_without_a_key_gets_a_fresh_one_each_time():
    with respx.mock(base_url=BASE) as mock:
        mock.post("/v1/billing/topup").respond(200, json={"payment_intent_id": "pi_1", "status": "succeeded"})
        with Client(BASE, TOKEN) as client:
            assert client.billing_topup(1000, "pm_1") == {"payment_intent_id": "pi_1", "status": "succeeded"}
            client.billing_topup(1000, "pm_1")
        keys = [json.loads(call.request.content)["idempotencyKey"] for call in mock.calls]
    assert keys[0] != keys[1] and all(uuid.UUID(k).version == 4 for k in keys)


def test_speech_request_and_stream():
    chunks = [b"ID3" + b"a" * 100, b"b" * 100, b"c" * 50]
    with respx.mock(base_url=BASE) as mock:
        mock.post("/v1/audio/speech").respond(
            200, stream=httpx.ByteStream(b"".join(chunks)), headers={"X-VoxRouter-Provider": "openai", "Content-Type": "audio/mpeg"}
        )
        with Client(BASE, "pk_test") as client:
            with client.speech(
                "Hi", voice="alloy", model="openai/tts-1", response_format="mp3", provider_options={"seed": 7}, models=["local/kokoro"]
            ) as audio:
                assert (audio.provider, audio.content_type) == ("openai", "audio/mpeg")
                assert b"".join(audio.iter_bytes()) == b"".join(chunks)
        sent = mock.calls.last.request
    assert json.loads(sent.content) == {
        "model": "openai/tts-1", "input": "Hi", "voice": "alloy", "response_format": "mp3",
        "provider_options": {"seed": 7}, "models": ["local/kokoro"],
    }
    assert sent.headers["authorization"] == "Bearer pk_test"


def test_errors_carry_status_code_and_details():
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/credits").respond(402, json={"error": "insufficient_credit", "details": "top up"})
        mock.get("/v1/status").respond(429, json={"error": "rate_limited", "details": "slow"}, headers={"Retry-After": "3"})
        mock.get("/v1/providers").respond(502, text="<html><body>Bad gateway</body></html>")
        mock.get("/v1/voices").respond(200, text="not json")
        mock.get("/v1/keys").mock(side_effect=httpx.ReadTimeout("slow"))
        mock.post("/v1/audio/speech").respond(400, json={"error": "invalid_model", "details": "unknown_provider: nope"})
        with Client(BASE, TOKEN) as client:
            with pytest.raises(VoxRouterError) as credit:
                client.credits()
            with pytest.raises(VoxRouterError) as limited:
                client.status()
            with pytest.raises(VoxRouterError) as proxy:
                client.providers()
            with pytest.raises(VoxRouterError) as garbled:
                client.voices()
            with pytest.raises(VoxRouterError) as slow:
                client.list_keys()
            with pytest.raises(VoxRouterError) as bad_model:
                with client.speech("x", voice="v", model="nope/x"):
                    raise AssertionError("no stream on an error")
    assert (credit.value.status, credit.value.code, credit.value.details) == (402, "insufficient_credit", "top up")
    assert str(credit.value) == "Error 402 insufficient_credit - top up"
    assert (limited.value.code, limited.value.retry_after) == ("rate_limited", "3")
    assert (proxy.value.status, proxy.value.code, proxy.value.details) == (502, "http_error", "<html><body>Bad gateway</body></html>")
    assert (garbled.value.status, garbled.value.code) == (200, "invalid_response")
    assert (slow.value.status, slow.value.code) == (0, "connection_error") and "timed out" in slow.value.details
    assert str(bad_model.value) == "Error 400 invalid_model - unknown_provider: nope"


def test_an_unreachable_gateway_is_status_0():
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(VoxRouterError) as sync_error:
        client.status()
    assert str(sync_error.value) == f"Error 0 connection_error - could not reach {url}"

    async def run() -> VoxRouterError:
        async with AsyncClient(url) as client:
            try:
                async with client.speech("x", voice="v", model="m"):
                    pass
            except VoxRouterError as exc:
                return exc
        raise AssertionError("expected an error")

    async_error = asyncio.run(run())
    assert (async_error.status, async_error.code) == (0, "connection_error")


# --- live --------------------------------------------------------------------------------------


def _email() -> str:
    return f"c{uuid.uuid4().hex[:10]}@example.com"


def test_sync_client_against_the_gateway(gateway, api_key):
    def wire(path: str, token: str) -> Any:
        return httpx.get(gateway.url + path, headers={"Authorization": f"Bearer {token}"}).json()

    with Client(gateway.url, api_key) as vox:
        with vox.speech("Hello from the client.", voice="alloy", model="openai/tts-1", response_format="mp3") as audio:
            assert audio.provider == "openai" and audio.content_type == "audio/mpeg" and audio.request_id
            chunks = list(audio.iter_bytes())
        assert len(chunks) > 1 and decoded_duration_s(b"".join(chunks), "mp3") > 0.5
        assert vox.voices(provider="openai") == wire("/v1/voices?provider=openai", api_key)
        assert {v["provider"] for v in vox.voices(provider="openai")["voices"]} == {"openai"}
        assert vox.providers() == wire("/v1/providers", api_key)
        assert vox.status() == wire("/v1/status", api_key)
        assert vox.credits() == wire("/v1/credits", api_key)
        assert [a["kind"] for a in vox.activity(limit=2)] == ["commit", "reserve"]
        assert vox.usage(days=1)["totals"]["requests"] == 1
        assert vox.whoami()["auth"] == "api_key"
        with pytest.raises(VoxRouterError) as refused:
            vox.list_keys()
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")

    with Client(gateway.url) as anonymous:
        email = _email()
        account = anonymous.register(email, PASSWORD)
        assert anonymous.login(email, PASSWORD)["user_id"] == account["user_id"]
        start = anonymous.device_code()
        with pytest.raises(VoxRouterError) as pending:
            anonymous.poll(start["device_code"])
        assert (pending.value.status, pending.value.code) == (400, "authorization_pending")

    with Client(gateway.url, account["session_token"]) as session:
        assert session.approve_device(start["user_code"]) == {"user_code": start["user_code"], "state": "approved"}
        with Client(gateway.url) as anonymous:
            device_session = anonymous.poll(start["device_code"])
        assert device_session["user_id"] == account["user_id"]
        created = session.create_key("client-test", max_concurrency=2)
        assert created["secret"].startswith("pk_") and created["key"]["maxConcurrency"] == 2
        assert session.list_keys() == wire("/v1/keys", account["session_token"])
        assert [k["id"] for k in session.list_keys()] == [created["key"]["id"]]
        assert session.delete_key(created["key"]["id"]) == {"id": created["key"]["id"], "revoked": True}
        assert session.list_keys() == []
        assert session.usage(days=1, limit=5) == wire("/v1/usage?days=1&limit=5", account["session_token"])
        assert session.credits() == {"balanceMicros": 0, "reservedMicros": 0}
        with pytest.raises(VoxRouterError) as billing:
            session.billing_methods()
        # Until the billing routes are deployed: not found (or, without Stripe keys, unavailable).
        assert billing.value.status in (404, 503)
        assert session.logout() == {"revoked": True}
        assert session.logout() == {"revoked": False}


def test_async_client_against_the_gateway(gateway, api_key):
    async def run() -> None:
        async with AsyncClient(gateway.url, api_key) as vox:
            async with vox.speech("Streams as it arrives.", voice="alloy", model="openai/tts-1", response_format="pcm") as audio:
                assert audio.provider == "openai"
                pcm = b"".join([chunk async for chunk in audio.aiter_bytes()])
            assert len(pcm) % 2 == 0 and 0.5 < decoded_duration_s(pcm, "pcm") < 2
            assert (await vox.voices(provider="cartesia"))["voices"]
            with pytest.raises(VoxRouterError) as bad:
                async with vox.speech("x", voice="alloy", model="nope/x"):
                    pass
            assert (bad.value.status, bad.value.code, bad.value.details) == (400, "invalid_model", "unknown_provider: nope")

        async with AsyncClient(gateway.url) as anonymous:
            account = await anonymous.register(_email(), PASSWORD)
            start = await anonymous.device_code()
            with pytest.raises(VoxRouterError) as pending:
                await anonymous.poll(start["device_code"])
            assert pending.value.code == "authorization_pending"

        async with AsyncClient(gateway.url, account["session_token"]) as session:
            created = await session.create_key("async")
            assert [k["id"] for k in await session.list_keys()] == [created["key"]["id"]]
            assert (await session.delete_key(created["key"]["id"]))["revoked"] is True
            assert (await session.whoami())["user_id"] == account["user_id"]
            usage = await session.usage(days=1)
            assert usage["totals"] == {"requests": 0, "costMicros": 0, "errorCount": 0}

    asyncio.run(run())
