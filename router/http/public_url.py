"""The gateway's public base URL, for the links it hands out."""

from __future__ import annotations

import urllib.parse

from starlette.requests import Request

from voxrouter.router.config import AuthSpec
from voxrouter.router.http.errors import ApiError


def public_base(request: Request, auth: AuthSpec) -> str:
    """The gateway's own base URL for links it hands out (the device-login page, Stripe's
    return pages): `auth.public_url`, else this request's base URL, but only when its Host
    (port stripped) is in `auth.trusted_hosts`; an attacker's Host header is never reflected
    into a link (400 otherwise)."""
    if auth.public_url:
        return auth.public_url.rstrip("/")
    host = _host_name(request.headers.get("host", ""))
    if host is None or host not in {_bare(h) for h in auth.trusted_hosts}:
        raise ApiError(
            400,
            "invalid_body",
            "this gateway cannot tell its own address from this request's Host header: "
            "set auth.public_url in the config (or add the host to auth.trusted_hosts)",
        )
    return str(request.base_url).rstrip("/")


def _bare(host: str) -> str:
    return host.strip().lower().removeprefix("[").removesuffix("]")


def _host_name(header: str) -> str | None:
    """The host of a Host header without its port (IPv6 without brackets), lowercased; None if malformed."""
    if not header or any(c in header for c in "/\\?#@ \t"):
        return None
    try:
        parts = urllib.parse.urlsplit("//" + header)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    return parts.hostname or None
