"""Each area documents its API routes beside them; the spec is built from the routing table."""

from __future__ import annotations

import pytest
from starlette.responses import Response
from starlette.routing import Route

from voxrouter.router import schemas
from voxrouter.router.http.app import ROUTES
from voxrouter.router.http.openapi import api_routes, build_spec
from voxrouter.router.http.operation import ApiRoute, Operation


async def _endpoint(request: object) -> Response:
    return Response()


def test_every_api_path_and_method_in_the_spec_comes_from_a_route() -> None:
    spec = build_spec()
    documented = {(path, method) for path, methods in spec["paths"].items() for method in methods}
    routed = {(r.path, r.method) for r in api_routes()}
    assert documented == routed
    assert ("/v1/audio/speech", "post") in routed and ("/v1/keys/{key_id}", "delete") in routed


def test_path_parameters_come_from_the_route_path() -> None:
    revoke = build_spec()["paths"]["/v1/keys/{key_id}"]["delete"]
    assert [p["name"] for p in revoke["parameters"] if p["in"] == "path"] == ["key_id"]


def test_a_schema_route_without_an_operation_is_refused() -> None:
    stray = Route("/v1/stray", _endpoint, methods=["GET"])
    with pytest.raises(RuntimeError, match="/v1/stray"):
        api_routes([*ROUTES, stray])
    hidden = Route("/stray-page", _endpoint, methods=["GET"], include_in_schema=False)
    assert len(api_routes([*ROUTES, hidden])) == len(api_routes())


def test_an_api_route_carries_its_method_and_operation() -> None:
    op = Operation("getThing", "A thing.", schemas.CreditsOut)
    route = ApiRoute("/v1/thing", _endpoint, method="GET", operation=op)
    assert route.method == "get" and route.operation is op and route.methods == {"GET", "HEAD"}
