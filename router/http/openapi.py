"""Generate `openapi.yaml` from the routing table (each area's `ApiRoute`s and their operations) and the pydantic models.

    python -m voxrouter.router.http.openapi > openapi.yaml

A test fails when the committed file differs from what this prints, and another
validates live responses against it.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute, Route

from voxrouter.router import schemas
from voxrouter.router.http.app import ROUTES
from voxrouter.router.http.operation import ApiRoute

_ERRORS = {
    400: "invalid_body or invalid_model",
    401: "unauthorized",
    402: "insufficient_credit or spend_limit_exceeded",
    403: "forbidden or registration_closed",
    404: "not_found",
    409: "conflict",
    413: "invalid_body (body too large)",
    429: "rate_limited or concurrency_limited (Retry-After)",
    500: "internal_error",
    502: "upstream_error",
    503: "provider_unavailable (Retry-After: seconds until its circuit half-opens)",
    504: "upstream_error (deadline)",
}


# Models that no operation names as its body or response, but the wire uses.
_EXTRA_MODELS: tuple[type[BaseModel], ...] = (
    schemas.ErrorBody,
    schemas.SpeechAudioDelta,
    schemas.SpeechAudioTimestamps,
    schemas.SpeechAudioDone,
    schemas.TranscriptTextDelta,
    schemas.TranscriptTextDone,
)


def api_routes(routes: list[BaseRoute] = ROUTES) -> list[ApiRoute]:
    """The API's routes; a route in the schema that carries no operation is a mistake, not a gap."""
    undocumented = [r.path for r in routes if isinstance(r, Route) and r.include_in_schema and not isinstance(r, ApiRoute)]
    if undocumented:
        raise RuntimeError(f"routes without an OpenAPI operation (use ApiRoute, or include_in_schema=False): {undocumented}")
    return [route for route in routes if isinstance(route, ApiRoute)]


def _models(routes: list[ApiRoute]) -> tuple[list[type[BaseModel]], set[type[BaseModel]]]:
    """Every model the operations name, in the routing table's order, and which are request bodies."""
    models: list[type[BaseModel]] = []
    requests: set[type[BaseModel]] = set()
    for route in routes:
        op = route.operation
        response = op.response[1] if isinstance(op.response, tuple) else op.response
        for model in (op.body, response, *op.response_variants):
            if isinstance(model, type) and model not in models:
                models.append(model)
        if op.body is not None:
            requests.add(op.body)
    models += [model for model in _EXTRA_MODELS if model not in models]
    return models, requests


_RATE_HEADERS = {
    "X-RateLimit-Limit": {"schema": {"type": "integer"}, "description": "The key's requests per minute."},
    "X-RateLimit-Remaining": {"schema": {"type": "integer"}, "description": "Requests left in the current minute."},
    "X-RateLimit-Reset": {"schema": {"type": "integer"}, "description": "Unix seconds when the allowance is full again."},
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}

_AUDIO_TYPES = ["audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav", "audio/l16"]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _response_schema(response: Any) -> dict[str, Any]:
    if isinstance(response, tuple):
        return {"type": "array", "items": _ref(response[1])}
    return _ref(response)


def _operation(route: ApiRoute) -> dict[str, Any]:
    op = route.operation
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "security": [{name: []} for name in op.security]}
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in route.param_convertors]
    if parameters or op.query:
        out["parameters"] = parameters + list(op.query)
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {op.body_media_type: {"schema": _ref(op.body)}}}
    if op.response == "audio":
        content: dict[str, Any] = {t: {"schema": {"type": "string", "format": "binary"}} for t in _AUDIO_TYPES}
        content["text/event-stream"] = {"schema": {"type": "string"}}
        ok = {
            "description": "Chunked audio as the upstream produces it.",
            "headers": {
                "X-VoxRouter-Provider": {"schema": {"type": "string"}, "description": "The provider that served."},
                "X-VoxRouter-Model": {"schema": {"type": "string"}, "description": "The provider/model that served."},
                "X-Request-Id": {"schema": {"type": "string"}},
            },
            "content": content,
        }
    else:
        schema = _response_schema(op.response)
        if op.response_variants:
            schema = {"oneOf": [schema, *(_ref(model) for model in op.response_variants)]}
        ok = {"description": "OK", "content": {"application/json": {"schema": schema}}}
        for media_type in op.text_media_types:
            ok["content"][media_type] = {"schema": {"type": "string"}}
    # An API key's requests count against its limits: 429 possible, X-RateLimit-* on every answer.
    counted = "apiKey" in op.security
    errors = sorted({*op.errors, 429}) if counted else op.errors
    rate_headers = _RATE_HEADERS if counted else {}
    ok["headers"] = {**ok.get("headers", {}), **rate_headers}
    if not ok["headers"]:
        del ok["headers"]
    responses: dict[Any, Any] = {str(op.status): ok}
    for status in errors:
        error: dict[str, Any] = {"description": dict(op.notes).get(status, _ERRORS[status])}
        headers = {**rate_headers, **(_RETRY_AFTER if status in op.retry_after else {})}
        if headers and status != 401:
            error["headers"] = headers
        error["content"] = {"application/json": {"schema": _ref(schemas.ErrorBody)}}
        responses[str(status)] = error
    out["responses"] = responses
    return out


def build_spec() -> dict[str, Any]:
    routes = api_routes()
    models, requests = _models(routes)
    _, definitions = models_json_schema(
        [(model, "validation" if model in requests else "serialization") for model in models],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "VoxRouter",
            "version": "0.1.0",
            "description": "One OpenAI-compatible API across every TTS provider. Money is USD micro-dollars.",
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "pk_... API key"},
                "session": {"type": "http", "scheme": "bearer", "description": "vr_session_... from the device login"},
            },
        },
    }


def render() -> str:
    return yaml.safe_dump(build_spec(), sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
