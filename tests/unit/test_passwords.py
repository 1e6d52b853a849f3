"""Password hashes: what verifies, what is refused, and that the refusal does not depend on
`assert` (which `python -O` strips)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from voxrouter.router.accounts import passwords
from voxrouter.router.accounts.passwords import hash_password_sync, verify_password_sync

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password_sync(PASSWORD)  # scrypt once for the module


def test_the_right_password_verifies_and_a_wrong_one_does_not(stored: str) -> None:
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert verify_password_sync(PASSWORD, stored)
    assert not verify_password_sync(PASSWORD + "!", stored)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: "bcrypt" + s.removeprefix("scrypt"),  # another scheme, the right hash
        lambda s: s + "$extra",
        lambda s: s.rsplit("$", 1)[0],
        lambda s: s.replace("$16384$", "$lots$"),
        lambda s: s.replace("$16384$", "$3$"),  # scrypt's n must be a power of two
        lambda s: "garbage",
        lambda s: "",
    ],
    ids=["other-scheme", "extra-field", "missing-field", "non-integer-cost", "bad-cost", "garbage", "empty"],
)
def test_a_stored_value_that_is_not_our_scrypt_hash_never_verifies(stored: str, mangle) -> None:
    assert not verify_password_sync(PASSWORD, mangle(stored))


def test_an_unknown_user_is_refused() -> None:
    assert not verify_password_sync(PASSWORD, None)


def test_the_checks_hold_under_python_dash_O(stored: str) -> None:
    # The module as `python -O` compiles it (asserts stripped), without starting a process.
    optimized = types.ModuleType("passwords_optimized")
    source = Path(passwords.__file__).read_text(encoding="utf-8")
    exec(compile(source, passwords.__file__, "exec", optimize=2), optimized.__dict__)
    assert optimized.verify_password_sync(PASSWORD, stored)
    assert not optimized.verify_password_sync(PASSWORD, "bcrypt" + stored.removeprefix("scrypt"))
