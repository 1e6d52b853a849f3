"""Organizations, users, sessions and the device login: their records and the store's interface."""

from __future__ import annotations

import dataclasses
from typing import Literal, Protocol


@dataclasses.dataclass(frozen=True)
class OrgRecord:
    id: str
    name: str
    created_at: str


@dataclasses.dataclass(frozen=True)
class UserRecord:
    id: str
    org_id: str
    email: str
    password_hash: str | None
    created_at: str


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    id: str
    user_id: str
    org_id: str
    token_hash: str
    kind: str  # cli | web
    created_at: str
    expires_at: str
    revoked_at: str | None


DevicePollOutcome = Literal["approved", "authorization_pending", "slow_down", "expired_token", "access_denied", "invalid_device_code"]


@dataclasses.dataclass(frozen=True)
class DevicePoll:
    outcome: DevicePollOutcome
    interval_s: int
    user_id: str | None = None


class AccountStore(Protocol):
    # --- organizations and users ---
    async def ensure_org(self, name: str) -> str: ...

    async def create_org(self, name: str) -> str:
        """Conflict if the name is taken."""
        ...

    async def find_org(self, name: str) -> OrgRecord | None: ...

    async def create_user(self, org_id: str, email: str, password_hash: str | None) -> UserRecord:
        """Conflict if the email is taken."""
        ...

    async def create_account(self, org_name: str, email: str, password_hash: str | None) -> UserRecord:
        """A new organization and its first user, together or not at all (Conflict)."""
        ...

    async def find_user(self, email: str) -> UserRecord | None: ...

    async def get_user(self, user_id: str) -> UserRecord | None: ...

    # --- sessions and device login ---
    async def create_session(self, user_id: str, token_hash: str, kind: str, expires_at: str) -> SessionRecord: ...

    async def find_session(self, token_hash: str) -> SessionRecord | None: ...

    async def revoke_session(self, token_hash: str) -> bool: ...

    async def create_device_code(self, device_code_hash: str, user_code: str, expires_at_ms: int, interval_s: int) -> None: ...

    async def decide_device_code(self, user_code: str, user_id: str, approve: bool, now_ms: int) -> bool:
        """Approve or deny a pending, unexpired code; False if it is not one."""
        ...

    async def poll_device_code(
        self, device_code_hash: str, now_ms: int, session_hash: str, session_expires_at: str
    ) -> DevicePoll:
        """RFC 8628 polling; on approval the session is created and the code consumed, atomically."""
        ...
