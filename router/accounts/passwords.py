"""Password hashing with scrypt (memory-hard, in the standard library).

Stored as `scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>` so the cost can be raised later
without invalidating existing hashes. Hashing takes ~50 ms and 16 MiB: run it off the loop,
and at most `auth.password_hash_concurrency` at once (`PasswordHasher`): a burst of sign-ups or
logins waits its turn instead of costing 16 MiB and a thread each.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import anyio

_N, _R, _P = 2**14, 8, 1
_LENGTH = 32
MIN_LENGTH = 8
MAX_LENGTH = 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * n * r * p, dklen=_LENGTH)


def hash_password_sync(password: str) -> str:
    salt = secrets.token_bytes(16)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(_derive(password, salt, _N, _R, _P))}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """A stored hash's n, r, p, salt and hash; ValueError if it is not one `hash_password_sync` wrote."""
    fields = stored.split("$")
    if len(fields) != 6 or fields[0] != "scrypt":
        raise ValueError("not an scrypt password hash")
    _, n, r, p, salt, expected = fields
    return int(n), int(r), int(p), base64.b64decode(salt), base64.b64decode(expected)


def verify_password_sync(password: str, stored: str | None) -> bool:
    """Constant-time check; with no stored hash (unknown user) it still spends the same work."""
    if stored is None:
        _derive(password, b"\0" * 16, _N, _R, _P)
        return False
    try:
        n, r, p, salt, expected = _parse(stored)
        derived = _derive(password, salt, n, r, p)
    except ValueError:  # binascii.Error and scrypt's bad parameters are ValueErrors too
        return False
    return hmac.compare_digest(derived, expected)


async def hash_password(password: str, limiter: anyio.CapacityLimiter | None = None) -> str:
    return await anyio.to_thread.run_sync(hash_password_sync, password, limiter=limiter)


async def verify_password(password: str, stored: str | None, limiter: anyio.CapacityLimiter | None = None) -> bool:
    return await anyio.to_thread.run_sync(verify_password_sync, password, stored, limiter=limiter)


class PasswordHasher:
    """Hashing and verifying with at most `concurrency` KDF runs at once in this process;
    the rest wait (in the event loop, holding no thread and no KDF memory). Build it on
    the event loop that will use it."""

    def __init__(self, concurrency: int) -> None:
        self._limiter = anyio.CapacityLimiter(concurrency)

    async def hash(self, password: str) -> str:
        return await hash_password(password, self._limiter)

    async def verify(self, password: str, stored: str | None) -> bool:
        return await verify_password(password, stored, self._limiter)
