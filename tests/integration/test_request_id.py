"""One request id: the client's `X-Request-Id` (or one the gateway mints) is the usage row's,
is in every log line of the request, names a 500 in its body, and goes to OpenAI."""

from __future__ import annotations

import logging
from typing import Iterator

import httpx
import pytest

from voxrouter.router.ops.logging import RequestIdFilter

BODY = {"model": "openai/tts-1", "voice": "alloy", "input": "Hello there."}


@pytest.fixture
def server_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The gateway's log records (it runs in a thread of this process), with `voxrouter serve`'s filter."""
    caplog.set_level(logging.INFO, logger="voxrouter")
    request_filter = RequestIdFilter()
    caplog.handler.addFilter(request_filter)
    yield caplog
    caplog.handler.removeFilter(request_filter)


def _speech(gateway, key: str, request_id: str | None = None, body: dict | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return httpx.post(gateway.url + "/v1/audio/speech", json=body or BODY, headers=headers, timeout=10)


def _recent(gateway, key: str) -> list[dict]:
    response = httpx.get(gateway.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["recent"]


def _lines_of(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "request_id", None) == request_id]


def test_a_client_id_is_the_usage_rows_and_in_the_requests_log_lines(gateway, emulators, api_key, server_logs):
    first = _speech(gateway, api_key, "abc-123")
    assert first.status_code == 200 and first.headers["x-request-id"] == "abc-123"
    assert emulators["openai"].state.requests[-1].headers["x-client-request-id"] == "abc-123"
    # The same id again (a client's retry, say) is a second request with a row of its own.
    second = _speech(gateway, api_key, "abc-123")
    assert second.status_code == 200 and second.headers["x-request-id"] == "abc-123"
    recent = _recent(gateway, api_key)
    assert [(r["requestId"], r["status"]) for r in recent] == [("abc-123", 200), ("abc-123", 200)]
    ended = [r for r in _lines_of(server_logs, "abc-123") if r.getMessage().startswith("speech request ended")]
    assert len(ended) == 2 and all(r.name == "voxrouter.speech" for r in ended)
    assert all("200 ok on openai" in r.getMessage() for r in ended)


def test_a_minted_id_is_returned_and_recorded(gateway, api_key, server_logs):
    response = _speech(gateway, api_key)
    minted = response.headers["x-request-id"]
    assert response.status_code == 200 and minted.startswith("req_")
    assert [r["requestId"] for r in _recent(gateway, api_key)] == [minted]
    assert _lines_of(server_logs, minted)


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "naïve", ""])
def test_an_unfit_client_id_is_replaced_by_a_minted_one(gateway, api_key, bad):
    headers = {"Authorization": f"Bearer {api_key}", "X-Request-Id": bad.encode("utf-8")}
    response = httpx.post(gateway.url + "/v1/audio/speech", json=BODY, headers=headers, timeout=10)
    minted = response.headers["x-request-id"]
    assert response.status_code == 200 and minted.startswith("req_") and minted != bad
    assert [r["requestId"] for r in _recent(gateway, api_key)] == [minted]


def test_a_refused_request_keeps_its_id_on_its_row_and_log_lines(gateway, emulators, api_key, server_logs):
    emulators["openai"].state.behaviour.fail_status = 503
    response = _speech(gateway, api_key, "refused-1")
    assert response.status_code == 502 and response.headers["x-request-id"] == "refused-1"
    assert set(response.json()) == {"error", "details"}
    assert [(r["requestId"], r["status"], r["code"]) for r in _recent(gateway, api_key)] == [("refused-1", 502, "upstream_error")]
    assert any("502 upstream_error" in r.getMessage() for r in _lines_of(server_logs, "refused-1"))


def test_only_openai_is_sent_the_id(gateway, emulators, api_key):
    body = {"model": "cartesia/sonic-2", "voice": "a0e99841-438c-4a64-b679-ae501e7d6091", "input": "Hi"}
    assert _speech(gateway, api_key, "cartesia-1", body).status_code == 200
    assert "x-client-request-id" not in emulators["cartesia"].state.requests[-1].headers


def test_an_unexpected_error_names_its_request_in_the_body_header_and_log(gateway, api_key, server_logs, monkeypatch):
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the gateway")

    monkeypatch.setattr(gateway.internals.dispatcher, "start", broken)
    response = _speech(gateway, api_key, "bug-1")
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-1"
    body = response.json()
    assert set(body) == {"error", "details"} and body["error"] == "internal_error"
    assert "bug-1" in body["details"] and "a bug in the gateway" not in body["details"]
    traceback = [r for r in _lines_of(server_logs, "bug-1") if r.levelno == logging.ERROR and r.exc_info]
    assert traceback and "RuntimeError" in server_logs.text
