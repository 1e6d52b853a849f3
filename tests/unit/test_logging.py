"""Log lines name their request: the filter, the text and JSON formats, uvicorn's log config."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config

import pytest

from voxrouter.router.ops.logging import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    bind_request_id,
    current_request_id,
    log_format,
    unbind_request_id,
    uvicorn_log_config,
)


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger(f"test.logging.{id(out)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def _json_lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_the_bound_request_id_and_nothing_outside_a_request():
    logger, out = _logger(JsonFormatter())
    logger.warning("before")
    token = bind_request_id("abc-123")
    try:
        logger.info("upstream %s answered %d", "openai", 503)
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            logger.exception("failed")
    finally:
        unbind_request_id(token)
    logger.warning("after")
    before, answered, failed, after = _json_lines(out)  # one JSON object a line, tracebacks included
    assert "request_id" not in before and "request_id" not in after
    assert answered["request_id"] == failed["request_id"] == "abc-123"
    assert answered["message"] == "upstream openai answered 503"
    assert answered["level"] == "INFO" and answered["logger"] == logger.name
    assert answered["ts"].endswith("Z")
    assert "RuntimeError: boom" in failed["exc_info"] and failed["level"] == "ERROR"
    assert current_request_id() is None


def test_an_explicit_request_id_wins_over_the_bound_one():
    logger, out = _logger(JsonFormatter())
    token = bind_request_id("bound")
    try:
        logger.error("handled outside the middleware", extra={"request_id": "explicit"})
    finally:
        unbind_request_id(token)
    assert _json_lines(out)[0]["request_id"] == "explicit"


def test_tasks_started_by_a_request_keep_its_id():
    logger, out = _logger(JsonFormatter())

    async def request(request_id: str) -> None:
        bind_request_id(request_id)  # each request runs in a task of its own
        await asyncio.sleep(0)
        await asyncio.create_task(child())
        await asyncio.to_thread(logger.info, "in a worker thread")

    async def child() -> None:
        logger.info("in a child task")

    async def main() -> None:
        await asyncio.gather(request("req-a"), request("req-b"))

    asyncio.run(main())
    ids = sorted(line["request_id"] for line in _json_lines(out))
    assert ids == ["req-a", "req-a", "req-b", "req-b"]


def test_uvicorns_access_line_is_split_into_fields():
    logger, out = _logger(JsonFormatter())
    access = logging.getLogger("uvicorn.access")
    record = access.makeRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/v1/audio/speech", "1.1", 200),
        None,
    )
    token = bind_request_id("abc-123")
    try:
        logger.handlers[0].handle(record)
    finally:
        unbind_request_id(token)
    line = _json_lines(out)[0]
    assert line["message"] == '127.0.0.1:5000 - "POST /v1/audio/speech HTTP/1.1" 200'
    assert (line["method"], line["path"], line["status"], line["request_id"]) == ("POST", "/v1/audio/speech", 200, "abc-123")


def test_text_lines_name_the_request_as_a_key_value():
    logger, out = _logger(TextFormatter())
    logger.warning("outside")
    token = bind_request_id("abc-123")
    try:
        logger.warning("inside")
    finally:
        unbind_request_id(token)
    outside, inside = out.getvalue().splitlines()
    assert "request_id=" not in outside and outside.endswith(f"WARNING {logger.name} outside")
    assert inside.endswith(f"WARNING {logger.name} request_id=abc-123 inside")


def test_the_format_comes_from_the_environment():
    assert log_format({}) == "text"
    assert log_format({"VOXROUTER_LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(ValueError, match="VOXROUTER_LOG_FORMAT"):
        log_format({"VOXROUTER_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError):
        uvicorn_log_config("info", "xml")


def test_uvicorn_log_config_routes_every_logger_through_the_filter_and_format(monkeypatch: pytest.MonkeyPatch):
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "voxrouter.speech")
    saved = {name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled) for name in names for lg in [logging.getLogger(name)]}
    err, out = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr("sys.stdout", out)
    try:
        logging.config.dictConfig(uvicorn_log_config("info", "json"))
        token = bind_request_id("abc-123")
        try:
            logging.getLogger("voxrouter.speech").info("speech request ended")
            logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/healthz", "1.1", 200)
            logging.getLogger("uvicorn.error").error("Exception in ASGI application")
        finally:
            unbind_request_id(token)
        logging.getLogger("voxrouter.speech").debug("below the level")
    finally:
        for name, (handlers, level, propagate, disabled) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers, lg.level, lg.propagate, lg.disabled = handlers, level, propagate, disabled
    stderr_lines = [json.loads(line) for line in err.getvalue().splitlines()]
    stdout_lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["logger"], line["request_id"]) for line in stderr_lines] == [
        ("voxrouter.speech", "abc-123"),
        ("uvicorn.error", "abc-123"),
    ]
    assert [(line["logger"], line["path"], line["request_id"]) for line in stdout_lines] == [
        ("uvicorn.access", "/healthz", "abc-123")
    ]
