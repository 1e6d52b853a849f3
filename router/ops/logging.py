"""Log lines that name their request.

`RequestIdMiddleware` (router/http/app.py) binds each request's id in a context variable;
`RequestIdFilter` copies it onto every record a handler sees, so a line logged anywhere on the
request's path (its task, the tasks and threads it starts) carries it as `request_id`. Lines
outside any request (sweepers, probes, start-up) have none.

`voxrouter serve` writes plain text lines by default and JSON lines (one object a line) with
`VOXROUTER_LOG_FORMAT=json`; uvicorn's access log goes through the same formatter.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
from typing import Any

LOG_FORMAT_ENV = "VOXROUTER_LOG_FORMAT"
LOG_FORMATS = ("text", "json")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("voxrouter_request_id", default=None)

# uvicorn's access line is `'%s - "%s %s HTTP/%s" %d'` with these arguments.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def bind_request_id(request_id: str) -> contextvars.Token[str | None]:
    """Name the current request in this context (and the tasks and threads it starts)."""
    return REQUEST_ID.set(request_id)


def unbind_request_id(token: contextvars.Token[str | None]) -> None:
    REQUEST_ID.reset(token)


def current_request_id() -> str | None:
    return REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Sets `record.request_id` to the current request's id (None outside a request); an id
    passed explicitly (`extra={"request_id": ...}`) is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`2026-12-01T10:00:00.123Z WARNING voxrouter.speech request_id=abc-123 the message`."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        line = f"{_timestamp(record)} {record.levelname} {record.name}"
        if request_id:
            line += f" request_id={request_id}"
        line += f" {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `ts`, `level`, `logger`, `message`, `request_id` when there is
    one, `exc_info` when there is a traceback, and the fields of uvicorn's access line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            payload["request_id"] = request_id
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == len(_ACCESS_FIELDS):
            payload.update(zip(_ACCESS_FIELDS, record.args))
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


def log_format(environ: dict[str, str] | None = None) -> str:
    """The format `VOXROUTER_LOG_FORMAT` asks for ("text" when unset); ValueError for another."""
    value = (os.environ if environ is None else environ).get(LOG_FORMAT_ENV, "").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV} must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value


def uvicorn_log_config(level: str, fmt: str | None = None) -> dict[str, Any]:
    """A `logging.config.dictConfig` for `uvicorn.run(log_config=...)`: uvicorn applies it in
    every worker process. Like uvicorn's own, the access log goes to stdout and the rest to
    stderr; unlike it, the application's loggers print too (at `level`), and every line goes
    through the request-id filter and the chosen format."""
    fmt = fmt or log_format()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    level_name = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"line": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
                "filters": ["request_id"],
            },
            "access": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "line",
                "filters": ["request_id"],
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level_name, "propagate": False},
            "uvicorn.error": {"level": level_name},
            "uvicorn.access": {"handlers": ["access"], "level": level_name, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": level_name},
    }
