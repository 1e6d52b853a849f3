"""A route of the public API carries its OpenAPI operation, so each area documents its own routes.

`router/http/openapi.py` turns the `ApiRoute`s of the routing table into `openapi.yaml`; plain
Starlette `Route`s (HTML pages, probes, the metrics scrape) are not API operations.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from pydantic import BaseModel
from starlette.routing import Route

# Who may call an operation: any of these bearer schemes; () for public routes.
API_KEY = ("apiKey",)
SESSION = ("session",)
API_KEY_OR_SESSION = ("apiKey", "session")

Response = type[BaseModel] | tuple[str, type[BaseModel]] | str  # a model, ("array", model), or "audio"


@dataclasses.dataclass(frozen=True)
class Operation:
    operation_id: str
    summary: str
    response: Response
    body: type[BaseModel] | None = None
    body_media_type: str = "application/json"  # multipart/form-data for uploads
    query: tuple[dict[str, Any], ...] = ()
    errors: tuple[int, ...] = (401, 500)
    security: tuple[str, ...] = API_KEY
    status: int = 200
    notes: tuple[tuple[int, str], ...] = ()  # error descriptions that differ from the defaults
    retry_after: tuple[int, ...] = (429, 503)  # error statuses that carry Retry-After
    response_variants: tuple[type[BaseModel], ...] = ()  # other JSON shapes the 200 may take (oneOf)
    text_media_types: tuple[str, ...] = ()  # text bodies the 200 may be instead (text/plain, SSE)


class ApiRoute(Route):
    """One method on one path of the public API, with its operation."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, method: str, operation: Operation) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method.lower()
        self.operation = operation


def query_int(name: str, low: int, high: int, default: int, description: str | None = None) -> dict[str, Any]:
    """An optional integer query parameter, as `int_param` in the handlers reads it."""
    parameter: dict[str, Any] = {
        "name": name, "in": "query", "required": False,
        "schema": {"type": "integer", "minimum": low, "maximum": high, "default": default},
    }
    if description:
        parameter["description"] = description
    return parameter
