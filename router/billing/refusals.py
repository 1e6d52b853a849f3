"""A wallet's refusal to hold credit, as the 402 the client gets (speech and transcription alike)."""

from __future__ import annotations

from voxrouter.router.billing.wallet import InsufficientCredit, SpendLimitExceeded
from voxrouter.router.http.errors import ApiError


def credit_refusal(exc: InsufficientCredit | SpendLimitExceeded, micros: int, what: str = "request") -> ApiError:
    """402 `insufficient_credit` or `spend_limit_exceeded` for a `what` that needed `micros`."""
    if isinstance(exc, SpendLimitExceeded):
        return ApiError(
            402,
            "spend_limit_exceeded",
            f"this {what} ({micros} micro-dollars) would pass the key's {exc.period} spend limit of {exc.limit_micros}",
        )
    return ApiError(402, "insufficient_credit", f"this {what} needs {micros} micro-dollars of available credit; top up and retry")
