"""Schema-driven fuzzing: schemathesis generates requests for every operation in openapi.yaml
(schema-valid and schema-invalid ones) and sends them, with real credentials, to a live gateway.

Every answer must be documented: no 5xx, a status code the operation lists, a body valid
against that status's schema, every non-2xx the `{error, details}` wire shape, and an
operation that declares security must refuse the same request without (or with a wrong)
credential. One test per operation and database engine, so a finding names its route.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import struct
import uuid
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.transport.serialization import Binary
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_openapi import _validate
from voxrouter.router.accounts.passwords import hash_password_sync
from voxrouter.router.store import open_store

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())


def _load_schema(allow_x00: bool):
    schema = schemathesis.openapi.from_path(SPEC_PATH)
    # Credentials are real (added per operation below), never generated; and an unknown query
    # parameter is not a schema violation in OpenAPI (the gateway ignores them, as is usual),
    # so schemathesis must not count a request that only adds one as "negative".
    schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False, allow_x00=allow_x00)
    return schema


# The gateway refuses U+0000 in any JSON string with 400 invalid_body (PostgreSQL text cannot
# hold it): test_nul_characters_never_fail_the_server probes that on every route, and the
# fuzzer leaves NUL out so that its schema-valid requests stay valid.
SCHEMA = _load_schema(allow_x00=False)
SCHEMAS = {"sqlite": SCHEMA, "postgres": SCHEMA}

EXAMPLES = 40  # per operation and engine; each example is one generated request (plus auth probes)
PASSWORD = "fuzzing password 1"
# The billing operations need Stripe behind the gateway, which the shared one has not:
# tests/integration/test_billing.py fuzzes them with these checks on a gateway with a Stripe emulator (its
# webhook, authenticated by a signature no schema can generate, is tested there on its own).
OPERATIONS = [
    pytest.param(path, method, id=operation["operationId"])
    for path, methods in SPEC["paths"].items()
    for method, operation in methods.items()
    if not path.startswith("/v1/billing/")
]
# Schema-valid requests the gateway rightly refuses with 400: the schema cannot say which
# model ids exist, how long an input each model takes, nor that a device code is pending.
_POSITIVE_400 = {
    ("/v1/audio/speech", "post"): {"invalid_model", "invalid_body"},
    # ... nor that a generated file is not audio, nor which options need which response_format.
    ("/v1/audio/transcriptions", "post"): {"invalid_model", "invalid_body", "invalid_audio"},
    ("/v1/audio/translations", "post"): {"invalid_model", "invalid_body", "invalid_audio"},
    ("/v1/auth/poll", "post"): {"authorization_pending", "slow_down", "expired_token", "access_denied", "invalid_device_code"},
}


# Operations whose input the schema constrains (a body, or bounded integers in the query):
# schemathesis can make their requests invalid, and the gateway must refuse those with a 4xx.
# The others take no input, free strings or a free-string path id, so every request is valid.
_HAS_INVALID_INPUT = {
    (path, method)
    for path, methods in SPEC["paths"].items()
    for method, operation in methods.items()
    if "requestBody" in operation or any(p["schema"].get("type") == "integer" for p in operation.get("parameters", []))
}


@dataclasses.dataclass(frozen=True)
class Credentials:
    gateway: Any
    engine: str
    email: str
    user_id: str
    session: str
    api_key: str  # minted by the user with POST /v1/keys
    operator_key: str  # minted by the operator (`voxrouter admin create-key`), with the credit
    operator_key_id: str

    def for_scheme(self, scheme: str) -> str:
        return self.api_key if scheme == "apiKey" else self.session


async def _create_account(url: str, org: str, email: str, password: str) -> str:
    store = await open_store(url)
    try:
        return (await store.create_account(org, email, hash_password_sync(password))).id
    finally:
        await store.close()


def _login(base_url: str, email: str) -> str:
    response = httpx.post(base_url + "/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()["session_token"]


@pytest.fixture(scope="module")
def credentials(gateway, database_engine: str) -> Credentials:
    org, email = f"fuzz-{uuid.uuid4().hex[:8]}", f"fuzz-{uuid.uuid4().hex[:8]}@example.com"
    user_id = asyncio.run(_create_account(gateway.settings.database_url, org, email, PASSWORD))
    operator_key = gateway.new_key(1_000.0, org)  # same organization: plenty of credit for the speech cases
    session = _login(gateway.url, email)
    minted = httpx.post(gateway.url + "/v1/keys", json={"name": "fuzz"}, headers=_bearer(session))
    assert minted.status_code == 201, minted.text
    keys = httpx.get(gateway.url + "/v1/keys", headers=_bearer(session)).json()
    (operator_key_id,) = [k["id"] for k in keys if k["createdBy"] is None]
    return Credentials(gateway, database_engine, email, user_id, session, minted.json()["secret"], operator_key, operator_key_id)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _error_shape(ctx, response, case) -> None:
    """Every non-2xx answer is the wire error: exactly `{error, details}`, both non-empty strings."""
    if 200 <= response.status_code < 300:
        return None
    assert _media_type(response) == "application/json", response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error", "details"}, body
    assert isinstance(body["error"], str) and body["error"] and isinstance(body["details"], str) and body["details"], body
    return None


def _media_type(response) -> str:
    return (response.headers.get("content-type") or [""])[0].split(";")[0].strip()


def _response_schema_conformance(ctx, response, case) -> None:
    """schemathesis' check, except for server-sent events: openapi.yaml documents the SSE
    body as `{type: string}`, which schemathesis 4 reads (OAS < 3.2, no `itemSchema`) as the
    schema of each parsed event `{event, data}` and so can never match. The events are
    checked here against what they are documented to be instead (SpeechAudioDelta/Timestamps/Done,
    TranscriptTextDelta/Done);
    `test_sse_events_need_an_item_schema` keeps the spec gap visible."""
    if _media_type(response) != "text/event-stream":
        return response_schema_conformance(ctx, response, case)
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert events and events[-1]["type"] in ("speech.audio.done", "transcript.text.done"), response.text[-300:]
    for event in events:
        _validate(event, {"$ref": f"#/components/schemas/{_SSE_EVENTS[event['type']]}"})
    return None


_SSE_EVENTS = {
    "speech.audio.delta": "SpeechAudioDelta",
    "speech.audio.timestamps": "SpeechAudioTimestamps",
    "speech.audio.done": "SpeechAudioDone",
    "transcript.text.delta": "TranscriptTextDelta",
    "transcript.text.done": "TranscriptTextDone",
}


def _regex_dialect_gap(case) -> bool:
    """An email the spec's pattern `^[^@\\s]+@[^@\\s]+$` judges differently from the server:
    JSON Schema patterns are ECMA-262, whose `\\s` excludes U+0085 and includes U+FEFF, while
    pydantic-core's (Rust) `\\s` is Unicode White_Space: the other way round. See
    test_register_email_pattern_dialects for the finding."""
    body = case.body if isinstance(case.body, dict) else {}
    email = body.get("email")
    return case.operation.path == "/v1/auth/register" and isinstance(email, str) and bool(set(email) & _DIALECT_GAP)


_DIALECT_GAP = {"\x85", "\ufeff"}


def _positive_data_acceptance(ctx, response, case) -> None:
    """schemathesis' check, except for the 400s the schema cannot rule out (see _POSITIVE_400)."""
    allowed = _POSITIVE_400.get((case.operation.path, case.operation.method.lower()), set())
    if response.status_code == 400 and (response.json().get("error") in allowed or _regex_dialect_gap(case)):
        return None
    return positive_data_acceptance(ctx, response, case)


def _negative_data_rejection(ctx, response, case) -> None:
    if _regex_dialect_gap(case):
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    _response_schema_conformance,
    response_headers_conformance,
    _negative_data_rejection,
    ignored_auth,
    _positive_data_acceptance,
    _error_shape,
]


def _strategy(operation, mode: GenerationMode):
    try:
        return operation.as_strategy(generation_mode=mode)
    except Exception:  # noqa: BLE001 - an operation with nothing to make invalid has no negative cases
        return None


def _prepare(case, creds: Credentials, data: st.DataObject) -> dict[str, str]:
    """Make the generated request reach the interesting code: real credentials per the
    operation's security, and (for schema-valid cases) sometimes real ids and codes."""
    path, method = case.operation.path, case.operation.method.lower()
    spec = SPEC["paths"][path][method]
    schemes = [name for requirement in spec["security"] for name in requirement]
    headers: dict[str, str] = {}
    if (path, method) == ("/v1/auth/logout", "post"):
        # Logging out revokes the calling session: never the shared one, a fresh one each time
        # (or, sometimes, one already logged out: logout is idempotent).
        headers = _bearer(_fresh_session(creds, reuse=data.draw(st.booleans(), label="reuse_logged_out")))
    elif schemes:
        headers = _bearer(creds.for_scheme(data.draw(st.sampled_from(schemes), label="scheme")))
    if not case.meta.generation.mode.is_positive or not data.draw(st.booleans(), label="use_real_values"):
        return headers
    base = creds.gateway.url
    if (path, method) == ("/v1/keys/{key_id}", "delete"):
        # A key this user minted (200), or the operator-minted key of its org (403: not its creator).
        if data.draw(st.booleans(), label="own_key"):
            minted = httpx.post(base + "/v1/keys", json={"name": "fuzz"}, headers=_bearer(creds.session))
            case.path_parameters = {"key_id": minted.json()["key"]["id"]}
        else:
            case.path_parameters = {"key_id": creds.operator_key_id}
    elif (path, method) in {("/v1/auth/device/approve", "post"), ("/v1/auth/poll", "post")}:
        pending = httpx.post(base + "/v1/auth/device-code").json()
        if path.endswith("approve"):
            case.body["user_code"] = pending["user_code"]
        else:
            if data.draw(st.booleans(), label="approved"):  # else: authorization_pending
                approved = httpx.post(base + "/v1/auth/device/approve", json={"user_code": pending["user_code"]}, headers=_bearer(creds.session))
                assert approved.status_code == 200, approved.text
            case.body["device_code"] = pending["device_code"]
    elif (path, method) == ("/v1/auth/login", "post"):
        case.body.update(email=creds.email, password=PASSWORD)
    elif (path, method) == ("/v1/audio/speech", "post"):
        case.body.update(model="openai/tts-1", voice="alloy", input=case.body["input"][:200])
        case.body.pop("provider_options", None)
        if case.body.get("stream_format") != "sse":  # timestamps go with SSE only (else 400 invalid_body)
            case.body.pop("timestamps", None)
    elif (path, method) == ("/v1/audio/transcriptions", "post"):
        # Real audio (half a second of a tone: Whisper hears nothing in it) for a real model,
        # with the options that go together and a language it knows; the prompt stays generated.
        case.body.update(file=Binary(_TONE_WAV), model="whisper-1")  # Binary: still schema-valid
        case.body.pop("language", None)
        if language := data.draw(st.sampled_from(["", "en", "en-US"]), label="language"):
            case.body["language"] = language
        if case.body.get("response_format") != "verbose_json":
            case.body.pop("timestamp_granularities[]", None)
        if case.body.get("response_format") not in (None, "json", "text"):
            case.body.pop("stream", None)
    elif (path, method) == ("/v1/audio/translations", "post"):
        # The same tone, to the model that translates behind the shared gateway (the OpenAI emulator).
        case.body.update(file=Binary(_TONE_WAV), model="openai/whisper-1")
    return headers


def _tone_wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16_000)
        wav.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 16_000 * 2 * math.pi * 440))) for i in range(8000)))
    return out.getvalue()


_TONE_WAV = _tone_wav()


_LOGGED_OUT: dict[str, str] = {}


def _fresh_session(creds: Credentials, reuse: bool) -> str:
    if reuse and creds.gateway.url in _LOGGED_OUT:
        return _LOGGED_OUT[creds.gateway.url]
    token = _login(creds.gateway.url, creds.email)
    _LOGGED_OUT[creds.gateway.url] = token
    return token


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_every_operation_answers_as_documented(credentials: Credentials, path: str, method: str):
    operation = SCHEMAS[credentials.engine][path][method.upper()]
    strategies = [s for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if (s := _strategy(operation, mode)) is not None]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(case=st.one_of(strategies), data=st.data())
    def fuzz(case, data):
        # The mode it was generated in: schemathesis re-judges a body _prepare edited, and counts
        # one holding binary it did not generate itself (a real audio file) as negative.
        mode = case.meta.generation.mode.value
        headers = _prepare(case, credentials, data)
        response = case.call_and_validate(base_url=credentials.gateway.url, headers=headers, checks=CHECKS, timeout=10)
        seen[mode].add(response.status_code)

    seen: dict[str, set[int]] = {"positive": set(), "negative": set()}
    fuzz()
    print(f"{method.upper()} {path}: statuses seen {seen}")
    # The run reached the operation's success path, and (where the schema allows invalid input) its refusals.
    success = int(next(code for code in SPEC["paths"][path][method]["responses"] if code.startswith("2")))
    assert success in seen["positive"], seen
    if (path, method) in _HAS_INVALID_INPUT:
        assert seen["negative"] and all(400 <= code < 500 for code in seen["negative"]), seen

    # The shared credentials still work: nothing the fuzzer sent revoked them.
    assert httpx.get(credentials.gateway.url + "/v1/keys", headers=_bearer(credentials.session)).status_code == 200
    assert httpx.get(credentials.gateway.url + "/v1/credits", headers=_bearer(credentials.api_key)).json()["reservedMicros"] == 0


@pytest.mark.xfail(
    strict=True,
    reason="spec gap: openapi.yaml gives createSpeech's text/event-stream `schema: {type: string}`; "
    "schemathesis 4 (like OAS 3.2) reads an SSE `schema` without `itemSchema` as one event's schema, "
    "and an event is the object {event, data}, so every SSE answer fails ST108 'SSE event violates schema'. "
    "Fix in router/openapi.py: document the event (itemSchema, data: contentSchema oneOf SpeechAudioDelta/Done).",
)
def test_sse_events_need_an_item_schema(credentials: Credentials):
    operation = SCHEMA["/v1/audio/speech"]["POST"]
    case = operation.Case(body={"model": "openai/gpt-4o-mini-tts", "voice": "alloy", "input": "Events.", "stream_format": "sse"})
    response = case.call(base_url=credentials.gateway.url, headers=_bearer(credentials.api_key), timeout=10)
    assert response.status_code == 200 and _media_type(response) == "text/event-stream"
    case.validate_response(response, checks=[response_schema_conformance])


def test_whoami_with_an_operator_minted_key(credentials: Credentials):
    case = SCHEMA["/v1/auth/whoami"]["GET"].Case()
    response = case.call(base_url=credentials.gateway.url, headers=_bearer(credentials.operator_key), timeout=10)
    assert response.status_code == 200
    case.validate_response(response, checks=[response_schema_conformance])


def test_register_email_pattern_dialects(credentials: Credentials):
    # The pattern uses explicit ranges, so the spec's regex and the server's agree on these.
    for char, status in (("\x85", 201), ("\ufeff", 201), (" ", 400), ("\x7f", 400)):
        case = SCHEMA["/v1/auth/register"]["POST"].Case(body={"email": f"{char}{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD})
        response = case.call(base_url=credentials.gateway.url, timeout=10)
        assert response.status_code == status, (char, response.text)


_NUL_PROBES = [  # (method, path, body, credential): every place a request string reaches SQL
    ("POST", "/v1/auth/register", {"email": "nul{}@example.com", "password": PASSWORD, "organization": "a\x00b"}, None),
    ("POST", "/v1/auth/register", {"email": "a\x00{}@example.com", "password": PASSWORD}, None),
    ("POST", "/v1/auth/login", {"email": "a\x00b@example.com", "password": PASSWORD}, None),
    ("POST", "/v1/auth/device/approve", {"user_code": "ab\x00c"}, "session"),
    ("POST", "/v1/keys", {"name": "a\x00b"}, "session"),
    ("DELETE", "/v1/keys/key_%00", None, "session"),
]
_NUL_SPEECH = ("POST", "/v1/audio/speech", {"model": "openai/tts\x00", "voice": "alloy", "input": "Nul."}, "api_key")


def test_nul_characters_never_fail_the_server(credentials: Credentials, request: pytest.FixtureRequest):
    statuses = []
    for method, path, body, credential in [*_NUL_PROBES, _NUL_SPEECH]:
        if isinstance(body, dict) and "{}" in body.get("email", ""):
            body = {**body, "email": body["email"].format(uuid.uuid4().hex[:8])}
        headers = _bearer(credentials.session if credential == "session" else credentials.api_key) if credential else {}
        response = httpx.request(method, credentials.gateway.url + path, json=body, headers=headers, timeout=10)
        statuses.append((method, path, response.status_code, response.text[:80]))
    assert all(status < 500 for *_, status, _ in statuses), statuses
    assert all(status in (400, 404) for *_, status, _ in statuses), statuses  # refused, never stored


def test_a_model_id_that_cannot_be_a_header(credentials: Credentials):
    key = credentials.gateway.new_key(1.0)  # an organization of its own, to read its wallet alone
    headers = _bearer(key)
    for model in ("openai/tts\n1", "openai/tts\u20ac"):
        try:
            response = httpx.post(
                credentials.gateway.url + "/v1/audio/speech", json={"model": model, "voice": "alloy", "input": "Header."}, headers=headers, timeout=10
            )
        except httpx.RemoteProtocolError as exc:
            pytest.fail(f"{model!r}: the gateway closed the connection without answering ({exc}); charged anyway")
        assert response.status_code < 500, (model, response.status_code, response.text)
        assert httpx.get(credentials.gateway.url + "/v1/credits", headers=headers).json()["reservedMicros"] == 0
