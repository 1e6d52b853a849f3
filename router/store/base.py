"""What the gateway keeps in its database: records, and the store interface over them."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal, Protocol


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    """UTC, millisecond ISO 8601 with a Z: sorts as text, so both databases compare it as text."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow_iso() -> str:
    return iso(utcnow())


class Conflict(Exception):
    """A unique value (organization name, email) is already taken."""


class TooManyKeys(Exception):
    """The organization already has as many live (unrevoked) API keys as it may."""


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


@dataclasses.dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    org_id: str
    name: str
    key_hash: str
    key_suffix: str
    max_concurrency: int | None
    created_at: str
    revoked_at: str | None
    created_by: str | None = None
    daily_limit_micros: int | None = None
    monthly_limit_micros: int | None = None
    last_used_at: str | None = None
    requests_per_minute: int | None = None
    characters_per_minute: int | None = None


@dataclasses.dataclass(frozen=True)
class NewApiKeyRecord:
    org_id: str
    name: str
    key_hash: str
    key_suffix: str
    created_by: str | None = None
    max_concurrency: int | None = None
    daily_limit_micros: int | None = None
    monthly_limit_micros: int | None = None
    requests_per_minute: int | None = None
    characters_per_minute: int | None = None


@dataclasses.dataclass(frozen=True)
class WalletSnapshot:
    balance_micros: int
    reserved_micros: int

    @property
    def available_micros(self) -> int:
        return self.balance_micros - self.reserved_micros


@dataclasses.dataclass(frozen=True)
class LedgerRow:
    created_at: str
    kind: str  # topup | reserve | commit | refund | stripe_refund | chargeback
    micros_delta: int
    micros_balance_after: int
    source: str


@dataclasses.dataclass(frozen=True)
class SpendLimits:
    """A key's caps and the calendar periods (UTC) they count in."""

    key_id: str
    day: str  # "2026-11-21"
    month: str  # "2026-11"
    daily_micros: int | None
    monthly_micros: int | None


ReserveOutcome = Literal["reserved", "insufficient_credit", "daily_limit", "monthly_limit"]


@dataclasses.dataclass(frozen=True)
class UsageStart:
    """The part of a usage row known when a request is admitted."""

    request_id: str
    org_id: str
    key_id: str | None
    provider: str | None
    model: str | None
    characters: int


@dataclasses.dataclass(frozen=True)
class UsageEnd:
    status: int
    error_code: str | None
    cost_micros: int
    latency_ms: int
    attempts: str = "[]"  # JSON list of {provider, model, voice, outcome, reason}
    provider: str | None = None  # the provider that served, when a fallback did (None: unchanged)
    model: str | None = None


@dataclasses.dataclass(frozen=True)
class UsageRow:
    created_at: str
    status: int | None
    provider: str | None
    model: str | None
    cost_micros: int
    error_code: str | None


@dataclasses.dataclass(frozen=True)
class UsageSummary:
    requests: int
    cost_micros: int
    error_count: int
    by_provider: list[tuple[str, int, int]]  # provider, requests, cost
    by_error_code: list[tuple[str, int]]
    recent: list[UsageRow]


DevicePollOutcome = Literal["approved", "authorization_pending", "slow_down", "expired_token", "access_denied", "invalid_device_code"]


@dataclasses.dataclass(frozen=True)
class DevicePoll:
    outcome: DevicePollOutcome
    interval_s: int
    user_id: str | None = None


@dataclasses.dataclass(frozen=True)
class DeviceCodeRecord:
    id: str
    user_code: str
    expires_at_ms: int
    state: str
    user_id: str | None


@dataclasses.dataclass(frozen=True)
class StripeCredit:
    """A succeeded Stripe payment to credit to an organization's wallet, once."""

    payment_id: str  # the payment intent (a checkout session's own id when it has none): the once-only key
    source_id: str  # the object whose event credits it: pi_... (top-up) or cs_... (checkout)
    org_id: str
    kind: Literal["topup", "checkout"]
    paid_cents: int
    credited_micros: int  # paid, plus a checkout's bonus


@dataclasses.dataclass(frozen=True)
class StripeReversal:
    """Money Stripe took back from a credited payment: a refund or a dispute, applied once.

    A refund's amount is the charge's cumulative `amount_refunded`, so the events of several
    partial refunds may arrive in any order, or twice, and still take back the right total."""

    id: str  # the dispute's id, or "<charge id>:refunded:<cumulative cents>": the once-only key
    payment_id: str
    kind: Literal["stripe_refund", "chargeback"]
    amount_cents: int
    note: str


@dataclasses.dataclass(frozen=True)
class ReversalResult:
    # applied; duplicate (seen before: nothing done); pending (its payment is not credited yet:
    # kept, and applied when the payment's credit arrives)
    outcome: Literal["applied", "duplicate", "pending"]
    micros: int = 0  # taken from the wallet now


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def missing_migrations(self) -> list[int]: ...

    # --- organizations and users ---
    async def ensure_org(self, name: str) -> str: ...

    async def create_org(self, name: str) -> str: ...

    async def find_org(self, name: str) -> OrgRecord | None: ...

    async def create_user(self, org_id: str, email: str, password_hash: str | None) -> UserRecord: ...

    async def create_account(self, org_name: str, email: str, password_hash: str | None) -> UserRecord: ...

    async def find_user(self, email: str) -> UserRecord | None: ...

    async def get_user(self, user_id: str) -> UserRecord | None: ...

    # --- sessions and device login ---
    async def create_session(self, user_id: str, token_hash: str, kind: str, expires_at: str) -> SessionRecord: ...

    async def find_session(self, token_hash: str) -> SessionRecord | None: ...

    async def revoke_session(self, token_hash: str) -> bool: ...

    async def create_device_code(self, device_code_hash: str, user_code: str, expires_at_ms: int, interval_s: int) -> None: ...

    async def find_device_code(self, user_code: str) -> DeviceCodeRecord | None: ...

    async def decide_device_code(self, user_code: str, user_id: str, approve: bool, now_ms: int) -> bool:
        """Approve or deny a pending, unexpired code; False if it is not one."""
        ...

    async def poll_device_code(
        self, device_code_hash: str, now_ms: int, session_hash: str, session_expires_at: str
    ) -> DevicePoll:
        """RFC 8628 polling; on approval the session is created and the code consumed, atomically."""
        ...

    # --- API keys ---
    async def create_api_key(self, new: NewApiKeyRecord, *, max_live: int | None = None) -> ApiKeyRecord:
        """`max_live`: raise TooManyKeys instead when the organization already has that many
        unrevoked keys (checked and inserted in one transaction)."""
        ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    async def list_api_keys(self, org_id: str) -> list[ApiKeyRecord]: ...

    async def get_api_key(self, org_id: str, key_id: str) -> ApiKeyRecord | None: ...

    async def revoke_api_key(self, key_id: str) -> bool: ...

    async def touch_api_keys(self, last_used: dict[str, str]) -> None: ...

    # --- wallet and ledger ---
    async def topup(self, org_id: str, micros: int, source: str, note: str | None = None) -> WalletSnapshot: ...

    async def reserve(
        self,
        reservation_id: str,
        micros: int,
        expires_at_ms: int,
        usage: UsageStart,
        limits: SpendLimits | None = None,
        source: str = "speech",
    ) -> ReserveOutcome:
        """Hold `micros` if the wallet and the key's caps allow; nothing is written when they don't."""
        ...

    async def settle(self, reservation_id: str, charge_micros: int | None, source: str, usage: UsageEnd | None) -> bool:
        """Commit (charge up to the hold) or refund (charge None) and finish the usage row;
        False if already settled."""
        ...

    async def record_usage(self, start: UsageStart, end: UsageEnd) -> None: ...

    async def renew_reservations(self, reservation_ids: list[str], expires_at_ms: int) -> None: ...

    async def expired_reservations(self, now_ms: int) -> list[str]: ...

    async def wallet(self, org_id: str) -> WalletSnapshot: ...

    async def activity(self, org_id: str, limit: int) -> list[LedgerRow]: ...

    async def usage_summary(self, org_id: str, since: str, limit: int) -> UsageSummary: ...

    # --- billing (Stripe) ---
    async def billing_customer(self, org_id: str) -> str | None:
        """The organization's Stripe customer id, if it has one yet."""
        ...

    async def save_billing_customer(self, org_id: str, customer_id: str) -> str:
        """Remember the organization's customer; the one already stored wins (returned)."""
        ...

    async def credit_stripe_payment(self, credit: StripeCredit) -> WalletSnapshot | None:
        """Credit the wallet, write its `topup` ledger row (source stripe, the payment id as note) and
        apply any reversal that arrived first, in one transaction; None if this payment was
        credited before. LookupError for an unknown organization."""
        ...

    async def reverse_stripe_payment(self, reversal: StripeReversal) -> ReversalResult:
        """Take a refund or dispute back from the wallet (the balance may go negative), once per id,
        never more than the payment credited in all."""
        ...
